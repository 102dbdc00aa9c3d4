"""The service's settings: one YAML file (`configs/serve/*.yaml`), every key optional."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from data_tools.llm_client import resolve_secret
from inference.backends import BackendConfig
from inference.imaging import ImageOptions


class ConfigError(ValueError):
    """A serve config that cannot be used; the message names the file and key."""


def _build(cls: type, d: Any, where: str) -> Any:
    if d is None:
        return cls()
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


@dataclass
class Limits:
    max_body_bytes: int = 20 * 1024 * 1024
    request_timeout_s: float = 120.0
    max_concurrency: int = 1  # extractions running at once
    max_queue: int = 32  # requests waiting for a slot; beyond: 503 + Retry-After
    retry_after_s: int = 2

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.max_concurrency < 1 or self.max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")


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
    remote_timeout_s: float = 10.0


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

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "serve config") -> ServeConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            image = ImageOptions.from_dict(d.pop("image", None))
        except ValueError as e:
            raise ConfigError(f"{where}: image: {e}") from None
        return cls(
            backend=_build(BackendConfig, d.pop("backend", None), f"{where}: backend"),
            image=image,
            limits=_build(Limits, d.pop("limits", None), f"{where}: limits"),
            auth=_build(Auth, d.pop("auth", None), f"{where}: auth"),
            urls=_build(UrlPolicy, d.pop("urls", None), f"{where}: urls"),
            **d,
        )

    @classmethod
    def load(cls, path: str | Path) -> ServeConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        return cls.from_dict(data, str(path))
