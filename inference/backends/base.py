"""What every extractor backend implements: one image + one prompt in, generated text out.

A backend does not know about requests, schemas or JSON: the `Extractor` turns a request
into a prompt, prepares the image (`inference.imaging`) and parses the text the backend
returns. That keeps the backends small and the behaviour identical across runtimes.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    info: dict[str, Any] = field(default_factory=dict)  # backend-specific, for the row's `info`
    # the generated tokens with their log-probabilities (data_tools.confidence.TokenLogprob),
    # when the options ask for them and the backend can give them
    token_logprobs: list[Any] | None = None


@dataclass
class GenerationOptions:
    max_new_tokens: int = 1024
    temperature: float = 0.0
    logprobs: bool = False  # ask for token log-probabilities (per-field confidence)


class Backend:
    """Base class: local models implement `_generate`; servers override both public calls.

    Local models run one call at a time (a lock: Paddle and torch models are not
    re-entrant and use every core anyway); `agenerate` runs `generate` in a worker thread
    so an async caller (the HTTP service) stays responsive.

    The image arrives already sized for the model (`inference.imaging.prepare_image`);
    a backend tells its processor to keep that size.
    """

    name = "base"
    #: how many calls may usefully run at once (servers: many; local models: 1)
    max_parallel = 1
    #: False: the pixels are never looked at (fake), so the image is decoded and checked
    #: but not resized to the model grid (`Extractor.prepare`)
    uses_image = True

    def __init__(self, options: GenerationOptions | None = None) -> None:
        self.options = options or GenerationOptions()
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.name

    def _generate(self, image: Image.Image, prompt: str) -> Generation:
        raise NotImplementedError

    def generate(self, image: Image.Image, prompt: str) -> Generation:
        with self._lock:
            return self._generate(image, prompt)

    async def agenerate(self, image: Image.Image, prompt: str) -> Generation:
        return await asyncio.to_thread(self.generate, image, prompt)

    async def apreflight(self) -> None:
        """Check the backend can answer before a batch run (servers: GET /models).

        Raises ``data_tools.runner.FatalError`` (``llm_client.FatalLLMError``) when it
        cannot: a wrong key or no reachable endpoint stops the run before any item."""

    async def aclose(self) -> None:
        """Async counterpart of `close` (servers close their connections on their loop)."""
        self.close()

    def close(self) -> None:
        """Free the model / connections (idempotent)."""

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name}


def finish_reason_from_tokens(n_tokens: int | None, max_new_tokens: int) -> str | None:
    """'length' when the token budget was used up, else 'stop' (None if unknown)."""
    if n_tokens is None:
        return None
    return "length" if n_tokens >= max_new_tokens else "stop"
