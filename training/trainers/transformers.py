"""transformers (PyTorch) SFT of PaddleOCR-VL: the route for PyTorch GPU boxes, and CPU.

`python -m training.torch_sft CFG` runs in `.venv-torch` (`make setup-torch`; on a GPU
box `make setup-train-torch`): transformers' native PaddleOCR-VL, the same prompt-SFT
data as the Paddle routes (either format), prompt tokens masked with -100 exactly as
ERNIEKit's `mask`/`no_mask`, full fine-tuning or LoRA (peft), bf16, gradient
checkpointing, length-grouped batches, TensorBoard logs under the PaddleFormers tag
names `training.summary` reads. The tool config is one flat YAML: the keys of
`TorchSftArguments` (below) plus transformers' `TrainingArguments`, checked against
both dataclasses (the installed transformers when importable, else `keys/transformers.json`).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.trainers import register
from training.trainers.base import (
    Finding,
    RecipeError,
    Trainer,
    find_executable,
    reports_to_tensorboard,
)
from training.trainers.keylist import dataclass_keys

if TYPE_CHECKING:
    from training.recipe import Recipe


@dataclass
class TorchSftArguments:
    """Our keys of the PyTorch route's config (the rest are TrainingArguments')."""

    model_name_or_path: str
    train_dataset_path: str  # comma-separated JSONL files, ERNIEKit or PaddleFormers records
    eval_dataset_path: str | None = None
    max_seq_len: int = 16384  # longer samples are skipped (and counted in the log)
    fine_tuning: str = "Full"  # Full | LoRA
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    freeze_vision: bool = False  # train the language model and projector only
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    min_pixels: int | None = None  # override the processor's pixel bounds
    max_pixels: int | None = None


def own_keys() -> dict[str, str]:
    return {
        f.name: (f.type if isinstance(f.type, str) else f.type.__name__)
        for f in fields(TorchSftArguments)
    }


@functools.lru_cache(maxsize=1)
def _installed_keys() -> tuple[dict[str, str], str] | None:
    if importlib.util.find_spec("transformers") is None:
        return None
    try:
        from transformers import TrainingArguments
    except Exception:
        return None
    import importlib.metadata as md

    return dataclass_keys(
        [TrainingArguments]
    ), f"installed transformers {md.version('transformers')}"


@register
class TransformersTrainer(Trainer):
    name = "transformers"
    title = "transformers SFT (PyTorch, GPU or CPU)"
    stage = None
    data_formats = ("paddleformers", "erniekit")
    devices = ("gpu", "cpu")
    setup = "make setup-train-torch"
    key_list = "transformers"

    def live_config_keys(self) -> tuple[dict[str, str], str] | None:
        return _installed_keys()

    def extra_keys(self) -> dict[str, str]:
        return own_keys()

    def total_steps(self, samples: int, epochs: float, per_step: float) -> int:
        """transformers' Trainer: each epoch ends with its short last batch,
        ceil(samples / per_step) steps, so `epochs` of them (as its own max_steps for
        `num_train_epochs`)."""
        return max(1, math.ceil(epochs * math.ceil(samples / per_step)))

    def validate(self, recipe: Recipe) -> None:
        super().validate(recipe)
        c = recipe.config
        if recipe.device == "cpu" and (c.get("bf16") or c.get("fp16")):
            raise RecipeError(f"{recipe.path}: device: cpu trains in float32: set bf16: false")
        if recipe.device == "cpu" and not c.get("use_cpu"):
            raise RecipeError(f"{recipe.path}: device: cpu needs config.use_cpu: true")

    def preflight(self, recipe: Recipe, python: str) -> list[Finding]:
        findings = []
        missing = [
            m
            for m in ("torch", "transformers", "accelerate")
            + (("peft",) if str(recipe.config.get("fine_tuning")).lower() == "lora" else ())
            if importlib.util.find_spec(m) is None
        ]
        if missing:
            findings.append(
                Finding(
                    "error",
                    "tools",
                    f"{', '.join(missing)} not importable in {python}: run {self.setup} (or "
                    "make setup-torch on CPU) and pass TRAIN_PY=.venv-torch/bin/python",
                )
            )
        elif importlib.util.find_spec("transformers.models.paddleocr_vl") is None:
            findings.append(
                Finding("error", "tools", "this transformers has no PaddleOCR-VL: it needs >= 5.0")
            )
        else:
            findings.append(Finding("ok", "tools", "torch, transformers (PaddleOCR-VL) importable"))
        reports_to_tensorboard(recipe.config, findings)
        if recipe.n_devices > 1 and find_executable("torchrun", python) is None:
            findings.append(Finding("error", "tools", f"torchrun is not beside {python}"))
        return findings

    def tool_config(self, recipe: Recipe) -> dict[str, Any]:
        """The recipe's config, less `logging_dir` (transformers 5 takes it from the
        environment, TENSORBOARD_LOGGING_DIR, and deprecates the argument)."""
        return {k: v for k, v in recipe.config.items() if k != "logging_dir"}

    def command(
        self, recipe: Recipe, config_path: Path, python: str
    ) -> tuple[list[str], dict[str, str]]:
        tb = (
            {"TENSORBOARD_LOGGING_DIR": str(recipe.config["logging_dir"])}
            if recipe.config.get("logging_dir")
            else {}
        )
        if recipe.device == "cpu":
            return [python, "-m", "training.torch_sft", str(config_path)], {
                "CUDA_VISIBLE_DEVICES": "",
                **tb,
            }
        env = {**self.gpu_env(recipe), **tb}
        if recipe.n_devices > 1:
            torchrun = find_executable("torchrun", python) or "torchrun"
            return [
                torchrun,
                f"--nproc_per_node={recipe.n_devices}",
                f"--master_port={recipe.master_port}",
                "-m",
                "training.torch_sft",
                str(config_path),
            ], env
        return [python, "-m", "training.torch_sft", str(config_path)], env
