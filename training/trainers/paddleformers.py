"""PaddleFormers VL-SFT (`paddleformers-cli train CFG`; on CPU its launcher in-process).

GPU: its own environment (`make setup-train-paddleformers`: Paddle GPU 3.3,
`paddleformers[paddlefleet]` >= 1.0, the first with the `paddleocr_vl` template).
CPU: PaddleFormers' `cli/launcher.py` run in this Python through `training.pf_compat`
(no `paddle.distributed.launch`, no port), as `.venv` has it. Keys are checked against
PaddleFormers' own train dataclasses when it is importable here, else against
`keys/paddleformers.json` (read from paddleformers 1.2.0).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.paddleocr_vl import PADDLEFORMERS_STAGE, PADDLEFORMERS_TEMPLATE
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


@functools.lru_cache(maxsize=1)
def _installed_keys() -> tuple[dict[str, str], str] | None:
    if importlib.util.find_spec("paddleformers") is None:
        return None
    from training.pf_compat import install_shims

    install_shims()
    try:
        from paddleformers.cli.hparams.parser import _TRAIN_ARGS
    except Exception:  # too old for VL-SFT, or broken: the maintained list decides
        return None
    import importlib.metadata as md

    return dataclass_keys(_TRAIN_ARGS), f"installed paddleformers {md.version('paddleformers')}"


@register
class PaddleFormersTrainer(Trainer):
    name = "paddleformers"
    title = "PaddleFormers VL-SFT (Paddle, GPU or CPU)"
    stage = PADDLEFORMERS_STAGE
    data_formats = ("paddleformers",)
    devices = ("gpu", "cpu")
    setup = "make setup-train-paddleformers"
    key_list = "paddleformers"

    def live_config_keys(self) -> tuple[dict[str, str], str] | None:
        return _installed_keys()

    def validate(self, recipe: Recipe) -> None:
        super().validate(recipe)
        template = recipe.config.get("template")
        if template not in (None, PADDLEFORMERS_TEMPLATE):
            raise RecipeError(
                f"{recipe.path}: config.template must be {PADDLEFORMERS_TEMPLATE} (PaddleOCR-VL-0.9B's "
                f"'Assistant: ' template), got {template!r}"
            )

    def preflight(self, recipe: Recipe, python: str) -> list[Finding]:
        from training.preflight import check_eval_files, wants_bf16

        c = recipe.config
        findings: list[Finding] = []
        if recipe.device == "gpu" and find_executable("paddleformers-cli", python) is None:
            findings.append(
                Finding(
                    "error",
                    "tools",
                    f"paddleformers-cli is neither beside {python} nor on PATH: run {self.setup} "
                    "and pass TRAIN_PY=.venv-train-paddleformers/bin/python",
                )
            )
        if recipe.device == "cpu":
            cpu = []
            if str(c.get("device", "")).lower() != "cpu":
                cpu.append(Finding("error", "device", "CPU route: set config.device: cpu"))
            if wants_bf16(c) or c.get("fp16"):
                cpu.append(
                    Finding(
                        "error",
                        "device",
                        "CPU route: set compute_type: float32 (PaddleFormers turns bf16 on unless "
                        "compute_type says otherwise; bf16: false alone is overridden)",
                    )
                )
            if c.get("_attn_implementation", "eager") != "eager":
                cpu.append(Finding("error", "device", "CPU route: set _attn_implementation: eager"))
            findings += cpu or [
                Finding("ok", "device", "CPU route (PaddleFormers launcher run in-process)")
            ]
        if (
            reports_to_tensorboard(c, findings)
            and recipe.device == "cpu"
            and importlib.util.find_spec("tensorboard") is None
        ):
            # tensorboardX, or training.pf_compat's shim over tensorboard's event writer
            findings.append(
                Finding(
                    "error", "tools", "report_to: tensorboard needs tensorboard (or tensorboardX)"
                )
            )
        if c.get("do_eval"):
            findings += check_eval_files(recipe, self)
        return findings

    def command(
        self, recipe: Recipe, config_path: Path, python: str
    ) -> tuple[list[str], dict[str, str]]:
        if recipe.device == "cpu":
            return [python, "-m", "training.pf_compat", "train", str(config_path)], {
                "CUDA_VISIBLE_DEVICES": ""
            }
        exe = find_executable("paddleformers-cli", python) or "paddleformers-cli"
        return [exe, "train", str(config_path)], self.gpu_env(recipe)
