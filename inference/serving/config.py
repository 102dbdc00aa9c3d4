"""The service's settings: one YAML file (`configs/serve/*.yaml`), every key optional.

Loaded with the project's one config loader (`data_tools.config`): YAML 1.2 values, typed,
an unknown key is an error naming the file and the nearest valid key; ``a.b=value``
overrides (``python -m inference.serve --set limits.max_queue=8``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.config import ConfigError, build, load_config
from data_tools.llm_client import resolve_secret
from inference.backends import BackendConfig
from inference.imaging import ImageOptions

__all__ = ["Auth", "ConfigError", "Limits", "ServeConfig", "UrlPolicy"]


@dataclass
class Limits:
    """What one request may send and what all requests together may hold."""

    # --- one request
    max_body_bytes: int = 20 * 1024 * 1024  # 413 beyond (declared or streamed)
    max_prompt_chars: int = 2000  # prompt / fields / request, as the prompt text sent
    max_prompt_tokens: int = 1024  # counted with the model's tokenizer when it has one
    max_json_depth: int = 16  # nesting of the body and of every field in it
    max_request_keys: int = 256  # keys in 'fields' / 'request' (all levels)
    max_key_chars: int = 256  # one key name
    request_timeout_s: float = 120.0  # 504 after this (admission to answer)
    # --- all requests together
    max_concurrency: int = 1  # model calls at once
    max_queue: int = 32  # requests admitted beyond those (body reading included); then 503
    max_buffered_body_bytes: int = 64 * 1024 * 1024  # bodies held in memory at once
    max_decode_pixels: int = 128_000_000  # pixels being decoded at once (all requests)
    cpu_threads: int = 2  # threads for decoding, JSON and parsing (off the event loop)
    retry_after_s: int = 2
    # --- connections
    header_timeout_s: float = 10.0  # request line + headers must arrive within this
    body_timeout_s: float = 60.0  # the whole body must arrive within this (408)
    keepalive_timeout_s: float = 10.0  # idle keep-alive connections are closed after this
    max_connections_per_client: int = 256  # per client address; more get 503 and close

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.max_concurrency < 1 or self.max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        if self.max_buffered_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_body_bytes ({self.max_buffered_body_bytes}) must be >= "
                f"max_body_bytes ({self.max_body_bytes})"
            )
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in (
            "max_prompt_chars",
            "max_prompt_tokens",
            "max_json_depth",
            "max_request_keys",
            "max_key_chars",
            "cpu_threads",
            "max_connections_per_client",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass
class Auth:
    api_key_env: str | None = "KIE_API_KEY"  # unset or empty variable: no auth
    api_key: str | None = None  # for tests; prefer the environment variable
    protect_metrics: bool = False

    def resolve(self) -> str | None:
        return resolve_secret(self.api_key, self.api_key_env)


@dataclass
class UrlPolicy:
    allow_file_urls: bool = False
    file_root: str | None = None  # with file URLs on: only files under this folder
    allow_remote_urls: bool = False
    remote_timeout_s: float = 10.0  # total, for the whole download (not per read)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    schema: str | None = "vat_invoice"
    backend: BackendConfig = field(default_factory=BackendConfig)
    image: ImageOptions = field(default_factory=ImageOptions)
    limits: Limits = field(default_factory=Limits)
    auth: Auth = field(default_factory=Auth)
    urls: UrlPolicy = field(default_factory=UrlPolicy)

    def __post_init__(self) -> None:
        if self.image.max_image_pixels > self.limits.max_decode_pixels:
            raise ValueError(
                f"image.max_image_pixels ({self.image.max_image_pixels}) must be <= "
                f"limits.max_decode_pixels ({self.limits.max_decode_pixels})"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "serve config") -> ServeConfig:
        return build(cls, d or {}, source=where)

    @classmethod
    def load(cls, path: str | Path | None, overrides: Sequence[str] = ()) -> ServeConfig:
        return load_config(cls, path, overrides)
