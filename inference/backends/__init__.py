"""Extractor backends, created by name: `make_backend(config)`.

============================  ==============================================================
name                          runs
============================  ==============================================================
``paddlex``                   PaddleX DocVLM predictor on a local model dir (Paddle)
``paddlex-pipeline``          patched PaddleOCR-VL pipeline v1, layout detection off (Paddle)
``transformers``              AutoModelForImageTextToText (torch, ``.venv-torch``)
``openai``                    any OpenAI-compatible server (vLLM, FastDeploy, PaddleX genai)
``fake``                      no model: placeholder answers (dry runs, load tests)
============================  ==============================================================

Each backend module is imported only when asked for, so the Paddle environment never
imports torch and the torch environment never imports Paddle.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from data_tools.paddleocr_vl import MODEL_NAME
from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationOptions,
)

BACKENDS = ("paddlex", "paddlex-pipeline", "transformers", "openai", "fake")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendUnavailable",
    "Generation",
    "GenerationOptions",
    "make_backend",
]


@dataclass
class BackendConfig:
    """Everything needed to build a backend (one flat block of a serve/predict YAML)."""

    backend: str = "paddlex"
    model_dir: str | None = None
    model_name: str = MODEL_NAME
    device: str = "cpu"
    server_urls: list[str] = field(default_factory=list)
    api_model: str | None = None  # model name the server knows; default model_name
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 8  # openai: requests in flight
    timeout_s: float = 120.0
    max_attempts: int = 4
    max_new_tokens: int = 2048
    fake_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")
        if isinstance(self.server_urls, str):
            self.server_urls = [self.server_urls]

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "backend") -> BackendConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def make_backend(cfg: BackendConfig) -> Backend:
    """Build the backend `cfg.backend` (raises `BackendUnavailable` with what to do)."""
    options = GenerationOptions(max_new_tokens=cfg.max_new_tokens)
    needs_dir = cfg.backend in ("paddlex", "paddlex-pipeline", "transformers")
    if needs_dir and not cfg.model_dir:
        raise BackendUnavailable(f"backend {cfg.backend!r} needs a model dir (--model-dir)")
    if cfg.backend == "paddlex":
        from inference.backends.paddlex_backend import PaddleXModelBackend

        return PaddleXModelBackend(
            cfg.model_dir, model_name=cfg.model_name, device=cfg.device, options=options
        )
    if cfg.backend == "paddlex-pipeline":
        from inference.backends.paddlex_backend import PaddleXPipelineBackend

        return PaddleXPipelineBackend(
            cfg.model_dir, model_name=cfg.model_name, device=cfg.device, options=options
        )
    if cfg.backend == "transformers":
        from inference.backends.transformers_backend import TransformersBackend

        return TransformersBackend(cfg.model_dir, device=cfg.device, options=options)
    if cfg.backend == "openai":
        if not cfg.server_urls:
            raise BackendUnavailable("backend 'openai' needs --server-url http://HOST:PORT/v1")
        from inference.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(
            cfg.server_urls,
            model=cfg.api_model or cfg.model_name,
            api_key_env=cfg.api_key_env,
            max_concurrency=cfg.max_concurrency,
            timeout_s=cfg.timeout_s,
            max_attempts=cfg.max_attempts,
            options=options,
        )
    from inference.backends.fake_backend import FakeBackend

    return FakeBackend(delay_s=cfg.fake_delay_s, options=options)
