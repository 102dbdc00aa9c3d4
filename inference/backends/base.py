"""What every extractor backend implements: one image + one prompt in, generated text out.

A backend does not know about requests, schemas or JSON: the `Extractor` turns a request
into a prompt, prepares the image (`inference.imaging`) and parses the text the backend
returns. That keeps the backends small and the behaviour identical across runtimes.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


class BackendError(RuntimeError):
    """The backend could not produce an answer (model failure, server refused, ...)."""


class BackendUnavailable(BackendError):
    """The backend cannot run in this environment (missing package, unpatched PaddleX)."""


@dataclass
class Generation:
    """The model's answer to one prompt."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" | None (unknown)
    n_tokens: int | None = None  # generated tokens, when known
    usage: dict[str, Any] = field(default_factory=dict)
    model: str = ""


@dataclass
class GenerationOptions:
    max_new_tokens: int = 1024
    temperature: float = 0.0


class Backend:
    """Base class: subclasses implement `generate` (local models) or `agenerate` (servers).

    Local models run one call at a time (a lock: Paddle and torch models are not
    re-entrant and use every core anyway); `agenerate` runs `generate` in a worker thread
    so an async caller (the HTTP service) stays responsive.
    """

    name = "base"
    #: how many calls may usefully run at once (servers: many; local models: 1)
    max_parallel = 1

    def __init__(self, options: GenerationOptions | None = None) -> None:
        self.options = options or GenerationOptions()
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.name

    def generate(self, image: Image.Image, prompt: str) -> Generation:
        raise NotImplementedError

    async def agenerate(self, image: Image.Image, prompt: str) -> Generation:
        def locked() -> Generation:
            with self._lock:
                return self.generate(image, prompt)

        return await asyncio.to_thread(locked)

    def close(self) -> None:
        """Free the model / connections (idempotent)."""

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name}
