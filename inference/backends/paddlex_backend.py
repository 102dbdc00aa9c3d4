"""PaddleX backends: the DocVLM single-model predictor and the (patched) PaddleOCR-VL pipeline.

* ``paddlex`` — ``paddlex.create_model("PaddleOCR-VL-0.9B", model_dir=D)``: the query goes
  to the model unchanged and the text comes back as generated. The first choice for
  extraction.
* ``paddlex-pipeline`` — ``paddleocr.PaddleOCRVL(pipeline_version="v1")`` with
  ``use_layout_detection=False``: the whole page is one block and the prompt is passed as
  ``prompt_label``. Stock PaddleX refuses such a label; run ``make patch``
  (``python -m patches.paddlex_prompt apply``) first. PaddleX post-processes the block
  text (it truncates long repetitions, rewrites LaTeX delimiters), so ``raw_output`` may
  differ from the model's text; use it to check that a deployment built on the pipeline
  behaves like the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_tools.paddleocr_vl import MODEL_NAME
from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationOptions,
    finish_reason_from_tokens,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = MODEL_NAME


def _check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    missing = [
        f
        for f in ("config.json", "model.safetensors", "tokenizer.model", "chat_template.jinja")
        if not (path / f).is_file()
    ]
    if missing:
        raise BackendUnavailable(
            f"{path}: not a PaddleOCR-VL model dir (missing {', '.join(missing)}); "
            "export a checkpoint with `python -m training.export` or pass the right --model-dir"
        )
    if (path / "model.safetensors.index.json").exists():
        log.warning(
            "%s has model.safetensors.index.json: PaddleX loads it instead of model.safetensors",
            path,
        )
    return path


def _fast_cpu_attention(device: str) -> None:
    """On CPU, swap PaddleX's O(L^2)-memory SigLIP attention for query blocks (same numbers)."""
    if device.split(":")[0].lower() == "cpu":
        from inference.backends import paddlex_attention

        paddlex_attention.apply()


def _pixels_kept(image: Image.Image) -> dict[str, int]:
    """min/max pixels that make the processor keep this (already grid-sized) image as is."""
    w, h = image.size
    return {"min_pixels": w * h, "max_pixels": w * h}


class PaddleXModelBackend(Backend):
    """PaddleX DocVLM predictor (Paddle dynamic graph)."""

    name = "paddlex"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        model_name: str = DEFAULT_MODEL_NAME,
        device: str = "cpu",
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__(options)
        self.model_dir = _check_model_dir(model_dir)
        self._model_name = model_name
        try:
            import paddlex
        except ImportError as e:
            raise BackendUnavailable(
                f"paddlex is not importable ({e}); use the Paddle environment (.venv)"
            ) from e
        _fast_cpu_attention(device)
        self._model = paddlex.create_model(
            model_name=model_name, model_dir=str(self.model_dir), device=device
        )
        self._tokenizer = getattr(getattr(self._model, "processor", None), "tokenizer", None)

    @property
    def model_name(self) -> str:
        return f"{self._model_name}@{self.model_dir.name}"

    def _count_tokens(self, text: str) -> int | None:
        if self._tokenizer is None:
            return None
        try:
            ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        except Exception:  # counting is best effort
            return None
        return len(ids)

    def _generate(self, image: Image.Image, prompt: str) -> Generation:
        try:
            results = list(
                self._model.predict(
                    [{"image": image, "query": prompt}],
                    max_new_tokens=self.options.max_new_tokens,
                    **_pixels_kept(image),
                )
            )
        except Exception as e:
            raise BackendError(f"PaddleX DocVLM predictor failed: {type(e).__name__}: {e}") from e
        if not results:
            raise BackendError("PaddleX DocVLM predictor returned no result")
        text = results[0].get("result") or ""
        n = self._count_tokens(text)
        return Generation(
            text=text,
            finish_reason=finish_reason_from_tokens(n, self.options.max_new_tokens),
            n_tokens=n,
            usage={"completion_tokens": n} if n is not None else {},
            model=self.model_name,
        )

    def close(self) -> None:
        model = getattr(self, "_model", None)
        if model is not None and hasattr(model, "close"):
            model.close()


def pipeline_is_patched() -> bool:
    """Whether the importable PaddleX pipeline carries the custom-prompt patch."""
    from paddlex.inference.pipelines.paddleocr_vl import pipeline as module

    return hasattr(module, "_paddlex_prompt_is_custom")


class PaddleXPipelineBackend(Backend):
    """The PaddleOCR-VL pipeline (v1) with layout detection off and the prompt as label."""

    name = "paddlex-pipeline"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        model_name: str = DEFAULT_MODEL_NAME,
        device: str = "cpu",
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__(options)
        self.model_dir = _check_model_dir(model_dir)
        self._model_name = model_name
        try:
            from paddleocr import PaddleOCRVL
        except ImportError as e:
            raise BackendUnavailable(
                f"paddleocr is not importable ({e}); use the Paddle environment (.venv)"
            ) from e
        if not pipeline_is_patched():
            raise BackendUnavailable(
                "the installed PaddleX refuses custom prompt labels: run `make patch` "
                "(python -m patches.paddlex_prompt apply) or use --backend paddlex"
            )
        _fast_cpu_attention(device)
        self._pipeline = PaddleOCRVL(
            pipeline_version="v1",
            vl_rec_model_name=model_name,
            vl_rec_model_dir=str(self.model_dir),
            use_layout_detection=False,
            use_doc_orientation_classify=False,
            use_doc_unwarping=False,
            device=device,
        )

    @property
    def model_name(self) -> str:
        return f"{self._model_name}@{self.model_dir.name}(pipeline)"

    def _generate(self, image: Image.Image, prompt: str) -> Generation:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        try:
            results = list(
                self._pipeline.predict(
                    bgr,
                    use_layout_detection=False,
                    prompt_label=prompt,
                    max_new_tokens=self.options.max_new_tokens,
                    **_pixels_kept(image),
                )
            )
        except AssertionError as e:
            raise BackendError(f"PaddleX refused the prompt label: {e}") from e
        except Exception as e:
            raise BackendError(f"PaddleOCR-VL pipeline failed: {type(e).__name__}: {e}") from e
        blocks = _blocks(results)
        if not blocks:
            raise BackendError("PaddleOCR-VL pipeline returned no block")
        if blocks[0].get("block_label") != prompt:
            raise BackendError(
                f"the pipeline labelled the page {blocks[0].get('block_label')!r}, not with the "
                "prompt: is the PaddleX patch applied to the paddlex that was imported?"
            )
        return Generation(text=str(blocks[0].get("block_content") or ""), model=self.model_name)

    def close(self) -> None:
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None and hasattr(pipeline, "close"):
            pipeline.close()


def _blocks(results: list[Any]) -> list[dict[str, Any]]:
    if not results:
        return []
    res = results[0]
    data = res.json.get("res", {}) if hasattr(res, "json") else dict(res)
    return list(data.get("parsing_res_list") or [])
