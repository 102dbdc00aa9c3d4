"""``BackendConfig`` and ``make_backend`` (imported lazily by ``inference.backends``: the
config types pull in the OCR + LLM settings and the HTTP client, which a CLI's ``--help``
should not pay for)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_tools.llm_client import EndpointConfig
from data_tools.paddleocr_vl import MODEL_NAME
from inference.backends import BACKENDS
from inference.backends.base import (
    Backend,
    BackendUnavailable,
    GenerationOptions,
)
from inference.backends.ocr_llm import LlmPrompting, OcrSettings


@dataclass
class BackendConfig:
    """Everything needed to build a backend (the ``backend:`` block of a predict/serve YAML).

    ``endpoint`` is the one OpenAI-compatible endpoint block (``data_tools.llm_client``):
    the VLM server for ``openai``, the LLM for ``ocr-llm``. ``ocr`` and ``llm`` configure
    the OCR + LLM pipeline only.
    """

    backend: str = "auto"  # the fastest engine for the device: inference.backends.auto
    model_dir: str | None = None
    model_name: str = MODEL_NAME
    device: str = "cpu"
    max_new_tokens: int = 2048
    confidence: bool = False  # token log-probabilities → per-field confidence (openai: the server's logprobs option)
    endpoint: EndpointConfig | None = None
    ocr: OcrSettings = field(default_factory=OcrSettings)
    llm: LlmPrompting = field(default_factory=LlmPrompting)
    fake_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "backend") -> BackendConfig:
        from data_tools.config import build

        return build(cls, d, source=where)


def make_backend(cfg: BackendConfig) -> Backend:
    """Build the backend `cfg.backend` (raises `BackendUnavailable` with what to do)."""
    options = GenerationOptions(max_new_tokens=cfg.max_new_tokens, logprobs=cfg.confidence)
    if cfg.backend == "auto":
        from inference.backends.auto import resolve

        cfg = resolve(cfg)
    needs_dir = cfg.backend in ("paddlex", "paddlex-pipeline", "transformers")
    if needs_dir and not cfg.model_dir:
        raise BackendUnavailable(f"backend {cfg.backend!r} needs a model dir (--model-dir)")
    if cfg.backend in ("openai", "ocr-llm") and cfg.endpoint is None:
        what = "the VLM server" if cfg.backend == "openai" else "the LLM"
        raise BackendUnavailable(
            f"backend {cfg.backend!r} needs {what}'s endpoint: --server-url http://HOST:PORT/v1 "
            "(or backend.endpoint.base_urls in the config)"
        )
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
        from inference.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(cfg.endpoint, options=options)
    if cfg.backend == "ocr-llm":
        from inference.backends.ocr_llm import OcrLlmBackend

        return OcrLlmBackend(cfg.endpoint, ocr=cfg.ocr, llm=cfg.llm, options=options)
    from inference.backends.fake_backend import FakeBackend

    return FakeBackend(delay_s=cfg.fake_delay_s, options=options)
