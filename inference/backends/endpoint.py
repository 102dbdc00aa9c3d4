"""What the backends behind an OpenAI-compatible endpoint share (``openai``, ``ocr-llm``).

One ``data_tools.llm_client.AsyncChatClient`` per event loop (httpx pools and semaphores
belong to a loop), the endpoint preflight of a batch run, the mapping of client errors to
backend errors, and a blocking ``generate`` for scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from data_tools.llm_client import (
    AsyncChatClient,
    ChatResult,
    EndpointConfig,
    FatalLLMError,
    LLMError,
    RequestRejected,
)
from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationOptions,
)


class EndpointBackend(Backend):
    """A backend whose model answers behind ``config`` (an ``EndpointConfig``)."""

    def __init__(self, config: EndpointConfig, options: GenerationOptions | None = None) -> None:
        super().__init__(options)
        self.config = config
        self.max_parallel = config.max_concurrency or 8
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, AsyncChatClient]] = {}

    def _client(self) -> AsyncChatClient:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, AsyncChatClient(self.config))
            self._clients[id(loop)] = entry
        return entry[1]

    async def chat(self, messages: Sequence[Mapping[str, Any]], what: str) -> ChatResult:
        """One chat call with the generation options; client errors as backend errors."""
        try:
            return await self._client().chat(
                messages,
                max_tokens=self.options.max_new_tokens,
                temperature=self.options.temperature,
                extra_body={"logprobs": True} if self.options.logprobs else None,
            )
        except FatalLLMError as e:
            raise BackendUnavailable(str(e)) from e
        except RequestRejected as e:
            raise BackendError(f"{what} rejected the request: {e}") from e
        except LLMError as e:
            raise BackendError(f"{what}: {e}") from e

    @staticmethod
    def generation(result: ChatResult, model: str, **info: Any) -> Generation:
        from data_tools.confidence import tokens_from_openai

        completion = result.usage.get("completion_tokens")
        return Generation(
            text=result.text,
            finish_reason=result.finish_reason,
            n_tokens=completion if isinstance(completion, int) else None,
            usage={**result.usage, "attempts": result.attempts},
            model=model,
            info=info,
            token_logprobs=tokens_from_openai(result.logprobs),
        )

    def generate(self, image: Image.Image, prompt: str) -> Generation:
        async def once() -> Generation:
            try:
                return await self.agenerate(image, prompt)
            finally:
                await self.aclose()

        return asyncio.run(once())

    async def apreflight(self) -> None:
        from data_tools.llm_client import preflight

        await preflight(self._client())

    async def aclose(self) -> None:
        entry = self._clients.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].aclose()

    def close(self) -> None:
        self._clients.clear()  # clients of finished loops hold nothing open any more
