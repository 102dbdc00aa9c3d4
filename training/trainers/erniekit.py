"""ERNIEKit (`erniekit train CFG`), the published OCR-VL-SFT route for PaddleOCR-VL.

Needs a GPU and its own environment (`make setup-train-erniekit`: Paddle GPU 3.2, ERNIE
checked out at a pinned ref, PaddleFormers with `tensor_parallel_degree`). ERNIEKit's
parser silently drops unknown keys, so its keys are checked here: from its own argument
dataclasses when `erniekit` is importable in TRAIN_PY's environment, else from the
maintained list `keys/erniekit.json` (erniekit 1.3.0 + paddleformers 0.3.1 dataclasses,
plus the OCR-VL-SFT keys of ERNIE release/v1.4).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.paddleocr_vl import ERNIEKIT_STAGE
from training.trainers import register
from training.trainers.base import Finding, PackPlan, RecipeError, Trainer, find_executable
from training.trainers.keylist import dataclass_keys

if TYPE_CHECKING:
    from training.recipe import Recipe


@register
class ErnieKitTrainer(Trainer):
    name = "erniekit"
    title = "ERNIEKit OCR-VL-SFT (Paddle, GPU)"
    stage = ERNIEKIT_STAGE
    data_formats = ("erniekit",)
    devices = ("gpu",)
    setup = "make setup-train-erniekit"
    key_list = "erniekit"

    def live_config_keys(self) -> tuple[dict[str, str], str] | None:
        if importlib.util.find_spec("erniekit") is None:
            return None
        try:
            from erniekit.hparams.parser import _TRAIN_ARGS  # type: ignore[import-not-found]
        except Exception:  # an older/broken install: fall back to the maintained list
            return None
        import importlib.metadata as md

        return dataclass_keys(_TRAIN_ARGS), f"installed erniekit {md.version('erniekit')}"

    def validate(self, recipe: Recipe) -> None:
        if recipe.device == "cpu":
            raise RecipeError(
                f"{recipe.path}: ERNIEKit needs a GPU; use launcher: paddleformers or "
                "launcher: transformers for device: cpu"
            )
        super().validate(recipe)

    def packing(self, recipe: Recipe) -> tuple[int, int] | None:
        c = recipe.config
        if not c.get("packing"):
            return None
        return int(c.get("max_seq_len", 4096) or 4096), int(c.get("packing_size", 1) or 1)

    def samples_per_step(self, recipe: Recipe, samples_per_pack: float | None) -> PackPlan:
        c = recipe.config
        g = recipe.n_devices
        batch = int(c.get("batch_size", 1) or 1)
        accum = int(c.get("gradient_accumulation_steps", 1) or 1)
        if not c.get("packing"):
            return PackPlan(
                g * batch * accum,
                f"GPUs {g} x batch_size {batch} x gradient_accumulation_steps {accum}",
            )
        per_pack = samples_per_pack or float(c.get("packing_size", 1) or 1)
        return PackPlan(
            g * batch * accum * per_pack,
            f"GPUs {g} x batch_size {batch} x gradient_accumulation_steps {accum} x "
            f"{per_pack:.2f} samples per {c.get('max_seq_len')}-token pack",
        )

    def preflight(self, recipe: Recipe, python: str) -> list[Finding]:
        findings = []
        if find_executable("erniekit", python) is None:
            findings.append(
                Finding(
                    "error",
                    "tools",
                    f"erniekit is neither beside {python} nor on PATH: run {self.setup} and "
                    "pass TRAIN_PY=.venv-train-erniekit/bin/python",
                )
            )
        if recipe.config.get("eval_dataset_path") or recipe.config.get("do_eval"):
            findings.append(
                Finding(
                    "warning",
                    "dataset",
                    "ERNIEKit's OCR-VL-SFT workflow ignores eval_dataset_path/do_eval; score the "
                    "exported model with make eval instead",
                )
            )
        return findings

    def output_refused(self, recipe: Recipe) -> str | None:
        return "ERNIEKit refuses a non-empty output_dir"

    def command(
        self, recipe: Recipe, config_path: Path, python: str
    ) -> tuple[list[str], dict[str, str]]:
        exe = find_executable("erniekit", python) or "erniekit"
        return [exe, "train", str(config_path)], self.gpu_env(recipe)
