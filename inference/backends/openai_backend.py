"""Any OpenAI-compatible chat server: vLLM, FastDeploy, SGLang, the PaddleX genai server.

The image goes as a ``data:`` URL (PNG, already sized by `inference.imaging`), then the
prompt as text, in one user message: the layout PaddleOCR-VL was trained on. Retries,
``Retry-After``, round robin over several servers and the in-flight cap come from
`data_tools.llm_client`. Server commands are in ``docs/serving.md``.
"""

from __future__ import annotations

import asyncio

from PIL import Image

from data_tools.llm_client import EndpointConfig, user_message
from inference.backends.base import Generation, GenerationOptions
from inference.backends.endpoint import EndpointBackend
from inference.imaging import encode_image


class OpenAIBackend(EndpointBackend):
    """Chat completions against the endpoint's `base_urls` (each ending in ``/v1``)."""

    name = "openai"

    def __init__(
        self,
        endpoint: EndpointConfig,
        *,
        image_format: str = "PNG",
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__(endpoint, options)
        self.image_format = image_format

    @property
    def model_name(self) -> str:
        return self.config.model

    async def agenerate(self, image: Image.Image, prompt: str) -> Generation:
        data, mime = await asyncio.to_thread(encode_image, image, self.image_format)
        result = await self.chat([user_message(prompt, [(data, mime)])], "server")
        return self.generation(result, result.model or self.config.model)
