"""Hugging Face transformers: ``AutoModelForImageTextToText`` + ``AutoProcessor`` (torch).

An optional extra that lives in its own environment: torch next to paddleformers breaks
transformers' imports, so ``make setup-torch`` builds ``.venv-torch`` and the commands
run there (``.venv-torch/bin/python -m inference.predict --backend transformers ...``).
transformers >= 5 has PaddleOCR-VL built in; the same exported model dir loads here and
in PaddleX.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from inference.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Generation,
    GenerationOptions,
)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__(options)
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise BackendUnavailable(f"{self.model_dir}: no config.json; not a model dir")
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as e:
            raise BackendUnavailable(
                f"the transformers backend needs torch + transformers ({e}); run "
                "`make setup-torch` and use .venv-torch/bin/python"
            ) from e
        self._torch = torch
        self.device = device
        self.processor = AutoProcessor.from_pretrained(str(self.model_dir))
        self.model = AutoModelForImageTextToText.from_pretrained(
            str(self.model_dir), dtype=getattr(torch, dtype)
        ).to(device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    @property
    def model_name(self) -> str:
        return f"{self.model_dir.name}(transformers)"

    def _generate(self, image: Image.Image, prompt: str) -> Generation:
        torch = self._torch
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        w, h = image.size
        try:
            text = self.processor.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            inputs = self.processor(
                text=[text],
                images=[image],
                return_tensors="pt",
                images_kwargs={"min_pixels": w * h, "max_pixels": w * h},
            ).to(self.device)
            want_scores = self.options.logprobs
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=self.options.max_new_tokens,
                    do_sample=False,
                    **(
                        {"output_scores": True, "return_dict_in_generate": True}
                        if want_scores
                        else {}
                    ),
                )
                sequences = out.sequences if want_scores else out
                # log-probability of each chosen token (greedy: the step's max after softmax)
                scores = (
                    self.model.compute_transition_scores(
                        out.sequences, out.scores, normalize_logits=True
                    )[0].tolist()
                    if want_scores
                    else None
                )
        except Exception as e:
            raise BackendError(f"transformers generate failed: {type(e).__name__}: {e}") from e
        new = sequences[0, inputs["input_ids"].shape[1] :].tolist()
        stopped = bool(new) and new[-1] in self._eos
        if stopped:
            new = new[:-1]
        tokens = None
        if scores is not None:
            from data_tools.confidence import tokens_from_ids

            tokens = tokens_from_ids(self.processor.tokenizer, new, scores[: len(new)])
        n = len(new) + (1 if stopped else 0)
        finish = "stop" if stopped or n < self.options.max_new_tokens else "length"
        decoded = self.processor.decode(new, skip_special_tokens=True)
        return Generation(
            text=decoded,
            finish_reason=finish,
            n_tokens=n,
            usage={
                "prompt_tokens": int(inputs["input_ids"].shape[1]),
                "completion_tokens": n,
            },
            model=self.model_name,
            token_logprobs=tokens,
        )

    def close(self) -> None:
        self.model = None
