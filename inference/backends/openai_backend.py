"""Any OpenAI-compatible chat server: vLLM, FastDeploy, SGLang, the PaddleX genai server.

The image goes as a ``data:`` URL (PNG, already sized by `inference.imaging`), then the
prompt as text, in one user message: the layout PaddleOCR-VL was trained on. Retries,
``Retry-After``, round robin over several servers and the in-flight cap come from
`data_tools.llm_client`. Server commands are in ``docs/serving.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from PIL import Image

from data_tools.llm_client import (
    AsyncChatClient,
    EndpointConfig,
    FatalLLMError,
    LLMError,
    RequestRejected,
    user_message,
)
from data_tools.paddleocr_vl import MODEL_NAME
from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationOptions,
)
from inference.imaging import encode_image


class OpenAIBackend(Backend):
    """Chat completions against `server_urls` (each ending in ``/v1``)."""

    name = "openai"

    def __init__(
        self,
        server_urls: str | Sequence[str],
        *,
        model: str = MODEL_NAME,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_attempts: int = 4,
        image_format: str = "PNG",
        extra_body: dict[str, Any] | None = None,
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__(options)
        try:
            self.config = EndpointConfig(
                base_urls=[server_urls] if isinstance(server_urls, str) else list(server_urls),
                model=model,
                api_key=api_key,
                api_key_env=api_key_env,
                max_concurrency=max_concurrency,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                extra_body=dict(extra_body or {}),
            )
        except ValueError as e:
            raise BackendUnavailable(f"openai backend: {e}") from e
        self.max_parallel = max_concurrency
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

    async def aclose(self) -> None:
        await self._close_current()

    def close(self) -> None:
        self._clients.clear()  # clients of finished loops hold nothing open any more
