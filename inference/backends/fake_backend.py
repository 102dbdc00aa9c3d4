"""A model-free backend for dry runs and load tests of the service and the batch runner.

It answers every prompt with the JSON the grammar expects, projected from `truth` (the same
fields for every image; none: the request's empty placeholders), after `delay_s`. It exercises everything but the model: request
building, image preparation, parsing, the HTTP layer and its limits.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from PIL import Image

from data_tools.prompts import PromptError, answer_text, parse_prompt, project
from inference.backends.base import Backend, Generation, GenerationOptions


class FakeBackend(Backend):
    name = "fake"
    max_parallel = 64
    uses_image = False

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        truth: dict[str, Any] | None = None,
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__(options)
        self.delay_s = delay_s
        self.truth = truth or {}
        self.calls = 0

    def _answer(self, image: Image.Image, prompt: str) -> str:
        self.calls += 1
        try:
            request = parse_prompt(prompt)
        except PromptError:
            return json.dumps({"text": ""}, ensure_ascii=False)
        return answer_text(project(self.truth, request))

    def _generate(self, image: Image.Image, prompt: str) -> Generation:
        if self.delay_s:
            time.sleep(self.delay_s)
        return Generation(self._answer(image, prompt), "stop", model="fake")

    async def agenerate(self, image: Image.Image, prompt: str) -> Generation:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Generation(self._answer(image, prompt), "stop", model="fake")
