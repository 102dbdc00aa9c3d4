"""Any OpenAI-compatible chat server: vLLM, FastDeploy, SGLang, the PaddleX genai server.

The image goes as a ``data:`` URL (PNG, already sized by `inference.imaging`), then the
prompt as text, in one user message: the layout PaddleOCR-VL was trained on. Retries,
``Retry-After``, round robin over several servers and the in-flight cap come from
`data_tools.llm_client`. Server commands are in ``docs/serving.md``.
"""

from __future__ import annotations

import asyncio

from PIL import Image

from data_tools.llm_client import (
    AsyncChatClient,
    EndpointConfig,
    FatalLLMError,
    LLMError,
    RequestRejected,
    user_message,
)
from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationOptions,
)
from inference.imaging import encode_image


class OpenAIBackend(Backend):
    """Chat completions against the endpoint's `base_urls` (each ending in ``/v1``)."""

    name = "openai"

    def __init__(
        self,
        endpoint: EndpointConfig,
        *,
        image_format: str = "PNG",
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__(options)
        self.config = endpoint
        self.max_parallel = endpoint.max_concurrency or 8
        self.image_format = image_format
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, AsyncChatClient]] = {}

    @property
    def model_name(self) -> str:
        return self.config.model

    def _client(self) -> AsyncChatClient:
        """One client per event loop (httpx pools and semaphores belong to a loop)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, AsyncChatClient(self.config))
            self._clients[id(loop)] = entry
        return entry[1]

    async def agenerate(self, image: Image.Image, prompt: str) -> Generation:
        data, mime = await asyncio.to_thread(encode_image, image, self.image_format)
        try:
            result = await self._client().chat(
                [user_message(prompt, [(data, mime)])],
                max_tokens=self.options.max_new_tokens,
                temperature=self.options.temperature,
            )
        except FatalLLMError as e:
            raise BackendUnavailable(str(e)) from e
        except RequestRejected as e:
            raise BackendError(f"server rejected the request: {e}") from e
        except LLMError as e:
            raise BackendError(str(e)) from e
        completion = result.usage.get("completion_tokens")
        return Generation(
            text=result.text,
            finish_reason=result.finish_reason,
            n_tokens=completion if isinstance(completion, int) else None,
            usage={**result.usage, "attempts": result.attempts},
            model=result.model or self.config.model,
        )

    def generate(self, image: Image.Image, prompt: str) -> Generation:
        async def once() -> Generation:
            try:
                return await self.agenerate(image, prompt)
            finally:
                await self._close_current()

        return asyncio.run(once())

    async def _close_current(self) -> None:
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()

    async def apreflight(self) -> None:
        from data_tools.llm_client import preflight

        await preflight(self._client())

    async def aclose(self) -> None:
        await self._close_current()

    def close(self) -> None:
        self._clients.clear()  # clients of finished loops hold nothing open any more
