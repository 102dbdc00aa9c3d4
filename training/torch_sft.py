"""PyTorch SFT of PaddleOCR-VL with transformers: the `transformers` trainer's program.

    python -m training.torch_sft CONFIG.yaml      (in .venv-torch; written by training.train)

CONFIG is one flat YAML: `TorchSftArguments` (training/trainers/transformers.py) plus
transformers' `TrainingArguments`; `HfArgumentParser` refuses any other key.

One record (ERNIEKit `text_info` or PaddleFormers `messages`, read by `data_tools.sft`)
becomes, exactly as ERNIEKit's OCR-VL-SFT builds it, the prompt text of
`data_tools.paddleocr_vl.prompt_text` (image expanded by the processor) with labels
-100, followed by each answer's tokens and `</s>` as labels; several turns alternate
(prompt turns masked, answer turns trained). Each segment is tokenized on its own and
concatenated, as ERNIEKit and PaddleFormers do. Samples longer than `max_seq_len`
are skipped and counted (never truncated: a cut answer teaches a cut JSON).

Batches are grouped by length (`train_sampling_strategy: group_by_length`, lengths
from `training.preflight.TokenCounter`, no image decoded to sort). LoRA uses peft and
is merged into the weights at the end, so `output_dir` holds a full model with the hub
key names that `training.export` reads. TensorBoard gets `train/loss`,
`train/learning_rate`, `train/interval_runtime`,
`train/interval_tokens_per_second_per_device` and `train/max_memory_allocated_gb`.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_tools.paddleocr_vl import EOS, MODEL_NAME, USER_PREFIX, assistant_prefix, prompt_text
from data_tools.sft import SftExample, read_sft
from training.trainers.transformers import TorchSftArguments

log = logging.getLogger("training.torch_sft")


class SftDataset:
    """SFT examples encoded lazily (images are read when a batch needs them)."""

    def __init__(
        self,
        examples: list[SftExample],
        processor: Any,
        max_seq_len: int,
        lengths: list[int],
        *,
        model_name: str = MODEL_NAME,
        images_kwargs: dict[str, int] | None = None,
    ) -> None:
        keep = [i for i, n in enumerate(lengths) if n <= max_seq_len]
        self.skipped = len(examples) - len(keep)
        self.examples = [examples[i] for i in keep]
        self.lengths = [lengths[i] for i in keep]
        self.processor = processor
        self.max_seq_len = max_seq_len
        self.model_name = model_name
        self.images_kwargs = images_kwargs or {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return encode(
            self.examples[i], self.processor, model_name=self.model_name, **self.images_kwargs
        )


def encode(
    ex: SftExample, processor: Any, *, model_name: str = MODEL_NAME, **images_kwargs: int
) -> dict[str, Any]:
    """input_ids / labels / pixel inputs of one example; labels -100 on every prompt token."""
    import torch
    from PIL import Image

    tok = processor.tokenizer
    with Image.open(ex.image) as im:
        image = im.convert("RGB")
    first_prompt, _ = ex.turns[0]
    inputs = processor(
        text=[prompt_text(first_prompt, model_name)],
        images=[image],
        return_tensors="pt",
        **({"images_kwargs": images_kwargs} if images_kwargs else {}),
    )
    ids = inputs["input_ids"][0].tolist()
    labels = [-100] * len(ids)
    for turn, (prompt, answer) in enumerate(ex.turns):
        if turn > 0:
            p = tok(
                f"{USER_PREFIX}{prompt}\n{assistant_prefix(model_name)}", add_special_tokens=False
            )
            ids += p["input_ids"]
            labels += [-100] * len(p["input_ids"])
        a = tok(answer + EOS, add_special_tokens=False)["input_ids"]
        ids += a
        labels += a
    out: dict[str, Any] = {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "pixel_values": inputs["pixel_values"],
        "image_grid_thw": inputs["image_grid_thw"],
    }
    if "mm_token_type_ids" in inputs:
        n_prompt = inputs["input_ids"].shape[1]
        mm = inputs["mm_token_type_ids"][0]
        out["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros(len(ids) - n_prompt)])
    return out


def collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad the token sequences; concatenate the images' patches and grids."""
    import torch

    n = max(len(b["input_ids"]) for b in batch)

    def pad(key: str, value: int) -> Any:
        return torch.stack(
            [torch.cat([b[key], b[key].new_full((n - len(b[key]),), value)]) for b in batch]
        )

    out = {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", -100),
        "attention_mask": torch.stack(
            [
                torch.cat(
                    [
                        torch.ones(len(b["input_ids"]), dtype=torch.long),
                        torch.zeros(n - len(b["input_ids"]), dtype=torch.long),
                    ]
                )
                for b in batch
            ]
        ),
        "pixel_values": torch.cat([b["pixel_values"] for b in batch]),
        "image_grid_thw": torch.cat([b["image_grid_thw"] for b in batch]),
    }
    if all("mm_token_type_ids" in b for b in batch):
        out["mm_token_type_ids"] = pad("mm_token_type_ids", 0)
    return out


def load_examples(paths: str) -> list[SftExample]:
    examples: list[SftExample] = []
    for p in (s.strip() for s in str(paths).split(",")):
        if p:
            examples.extend(ex for _, ex in read_sft(Path(p)))
    return examples


def build_trainer(
    args: TorchSftArguments,
    targs: Any,
    *,
    model: Any = None,
    examples: list[SftExample] | None = None,
) -> tuple[Any, SftDataset]:
    """The transformers Trainer for this config (model, data, collator, logging).

    `model` / `examples` replace loading them from the config (benchmarks pass a
    random-weight model built from a config, and synthetic examples).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from training.preflight import TokenCounter

    model_dir = Path(args.model_name_or_path)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    if model is None:
        # bf16 training keeps float32 master weights: Trainer autocasts to bf16
        model = AutoModelForImageTextToText.from_pretrained(
            str(model_dir), dtype=torch.float32, attn_implementation=args.attn_implementation
        )
    if args.freeze_vision:
        for name, p in model.named_parameters():
            if ".visual." in f".{name}":
                p.requires_grad_(False)
    if args.fine_tuning.lower() == "lora":
        from peft import LoraConfig, get_peft_model

        targets = [m.strip() for m in args.lora_target_modules.split(",") if m.strip()]
        model = get_peft_model(
            model,
            LoraConfig(
                r=args.lora_rank,
                lora_alpha=args.lora_alpha,
                lora_dropout=args.lora_dropout,
                # the language model's projections only (the vision tower shares the names)
                target_modules=rf".*language_model.*\.({'|'.join(targets)})",
                task_type="CAUSAL_LM",
            ),
        )
        if targs.gradient_checkpointing:
            model.enable_input_require_grads()
    images_kwargs = {
        k: v for k, v in (("min_pixels", args.min_pixels), ("max_pixels", args.max_pixels)) if v
    }
    counter = TokenCounter(model_dir)
    if images_kwargs:
        counter.pixels.update(images_kwargs)
    if examples is None:
        examples = load_examples(args.train_dataset_path)
    train = SftDataset(
        examples,
        processor,
        args.max_seq_len,
        counter.count(examples),
        images_kwargs=images_kwargs,
    )
    if train.skipped:
        log.warning(
            "skipped %d sample(s) longer than max_seq_len %d", train.skipped, args.max_seq_len
        )
    if not len(train):
        raise SystemExit(
            f"error: no sample of {args.train_dataset_path} fits max_seq_len {args.max_seq_len}"
        )
    eval_ds = None
    if args.eval_dataset_path and targs.eval_strategy != "no":
        ev = load_examples(args.eval_dataset_path)
        eval_ds = SftDataset(
            ev, processor, args.max_seq_len, counter.count(ev), images_kwargs=images_kwargs
        )
    pad_id = processor.tokenizer.pad_token_id or 0
    trainer = _sft_trainer_class()(
        model=model,
        args=targs,
        train_dataset=train,
        eval_dataset=eval_ds,
        data_collator=functools.partial(collate, pad_id=pad_id),
        processing_class=processor,
    )
    return trainer, train


def _sft_trainer_class() -> type:
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class _SftTrainer(Trainer):
        """Length-grouped sampling from precomputed lengths; throughput and memory in the logs."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._tokens = 0
            self._t_last = time.perf_counter()
            self._step_last = 0

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy == "group_by_length" and isinstance(
                ds, SftDataset
            ):
                return LengthGroupedSampler(
                    self.args.train_batch_size * self.args.gradient_accumulation_steps,
                    lengths=ds.lengths,
                )
            return super()._get_train_sampler(train_dataset)

        def compute_loss(self, model: Any, inputs: dict[str, Any], *a: Any, **kw: Any) -> Any:
            if model.training:
                self._tokens += int(inputs["attention_mask"].sum())
            return super().compute_loss(model, inputs, *a, **kw)

        def log(self, logs: dict[str, float], *a: Any, **kw: Any) -> None:
            import torch

            if "loss" in logs:
                now = time.perf_counter()
                steps = max(1, self.state.global_step - self._step_last)
                elapsed = now - self._t_last
                logs["interval_runtime"] = round(elapsed, 4)
                logs["interval_steps_per_second"] = round(steps / elapsed, 4) if elapsed else 0.0
                logs["interval_tokens_per_second_per_device"] = (
                    round(self._tokens / elapsed, 2) if elapsed else 0.0
                )
                if torch.cuda.is_available():
                    logs["max_memory_allocated_gb"] = round(
                        torch.cuda.max_memory_allocated() / 2**30, 3
                    )
                else:
                    import resource

                    logs["max_rss_memory_gb"] = round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
                    )
                self._tokens, self._t_last, self._step_last = 0, now, self.state.global_step
            super().log(logs, *a, **kw)

    return _SftTrainer


def parse_config(path: Path) -> tuple[TorchSftArguments, Any]:
    import yaml
    from transformers import HfArgumentParser, TrainingArguments

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    parser = HfArgumentParser((TorchSftArguments, TrainingArguments))
    args, targs = parser.parse_dict(data, allow_extra_keys=False)
    return args, targs


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m training.torch_sft CONFIG.yaml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, targs = parse_config(Path(argv[0]))
    except (ValueError, TypeError) as e:  # unknown key or bad value: HfArgumentParser says which
        print(f"error: {argv[0]}: {e}", file=sys.stderr)
        return 2
    trainer, train = build_trainer(args, targs)
    log.info("%d training samples (%d skipped as too long)", len(train), train.skipped)
    trainer.train(resume_from_checkpoint=targs.resume_from_checkpoint)
    model = trainer.model
    if args.fine_tuning.lower() == "lora":
        model = model.merge_and_unload()
    model.save_pretrained(targs.output_dir)
    trainer.processing_class.save_pretrained(targs.output_dir)
    trainer.state.save_to_json(str(Path(targs.output_dir) / "trainer_state.json"))
    log.info(
        "saved the %s model to %s",
        "merged LoRA" if args.fine_tuning.lower() == "lora" else "full",
        targs.output_dir,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
