"""What every trainer (one launcher: ERNIEKit, PaddleFormers, transformers) provides.

A trainer is one class in one module of `training/trainers/`, registered with
`@register`; `training.train`, `training.recipe`, `training.preflight` and
`training.launch` ask the registry and never test a launcher's name themselves.
A trainer says:

- which `config.stage` it needs, which SFT record formats it reads, which devices it runs on;
- which keys its tool accepts, and their types (`config_keys`): read from the tool's
  own argument dataclasses when the tool is importable in this Python (`TRAIN_PY`),
  else from a maintained list in `training/trainers/keys/`;
- how many samples one optimizer step consumes (`samples_per_step`), packing included;
- its own preflight checks (`preflight`), beyond the shared ones (data, model, disk, port);
- the command that runs it (`command`), with the executable found next to `TRAIN_PY`.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from data_tools.config import ConfigError

if TYPE_CHECKING:
    from training.recipe import Recipe


class RecipeError(ConfigError):
    """The recipe itself is invalid (as opposed to data or machine problems)."""


@dataclass
class Finding:
    level: str  # ok | info | warning | error
    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"[{self.level.upper():7}] {self.check}: {self.message}"


@dataclass
class PackPlan:
    """How many samples one optimizer step consumes, and the formula in words."""

    samples_per_step: float
    formula: str


def find_executable(name: str, python: str | None = None) -> str | None:
    """`name` next to the Python that runs training (a venv's bin/), else on PATH.

    `make train TRAIN_PY=.venv-train-erniekit/bin/python` works without activating
    the venv: its `erniekit` sits beside its python.
    """
    python = python or sys.executable
    beside = Path(python).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def reports_to_tensorboard(config: dict[str, Any], findings: list[Finding]) -> bool:
    """Does the tool config log to TensorBoard (what `training.summary` reads)? A warning
    in `findings` when it does not."""
    report_to = config.get("report_to", [])
    report_to = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "tensorboard" in report_to:
        return True
    findings.append(
        Finding(
            "warning",
            "tools",
            "report_to has no tensorboard: python -m training.summary reads TensorBoard logs",
        )
    )
    return False


class Trainer:
    """One launcher. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    title: ClassVar[str]  # one line for --help and docs
    stage: ClassVar[str | None] = None  # the config.stage the tool needs (None: no stage key)
    data_formats: ClassVar[tuple[str, ...]] = ("paddleformers",)  # SFT record formats it reads
    devices: ClassVar[tuple[str, ...]] = ("gpu",)
    setup: ClassVar[str] = "make setup-train"  # the one command that builds its environment
    key_list: ClassVar[str | None] = None  # training/trainers/keys/<name>.json fallback

    # ---------------------------------------------------------------- recipe

    def config_keys(self) -> tuple[dict[str, str], str] | None:
        """({key: type}, where it came from) of the tool's config; None: not checked."""
        live = self.live_config_keys()
        if live is not None:
            return live
        if self.key_list is not None:
            from training.trainers.keylist import load_key_list

            return load_key_list(
                self.key_list
            ), f"maintained list training/trainers/keys/{self.key_list}.json"
        return None

    def live_config_keys(self) -> tuple[dict[str, str], str] | None:
        """The keys of the installed tool (None when it is not importable here)."""
        return None

    def extra_keys(self) -> dict[str, str]:
        """Keys our launcher consumes beyond the tool's arguments (written for it anyway)."""
        return {}

    def validate(self, recipe: Recipe) -> None:
        """Problems of the recipe itself, as RecipeError; after keys and types are checked."""
        where = str(recipe.path)
        if recipe.device not in self.devices:
            raise RecipeError(
                f"{where}: launcher {self.name} runs on {'/'.join(self.devices)}, not "
                f"device: {recipe.device}"
            )
        if self.stage is not None and recipe.config.get("stage") != self.stage:
            raise RecipeError(
                f"{where}: config.stage must be {self.stage!r} for launcher {self.name}, "
                f"got {recipe.config.get('stage')!r}"
            )
        if "fine_tuning" not in recipe.config:
            raise RecipeError(
                f"{where}: config.fine_tuning is missing; ERNIEKit and PaddleFormers then "
                "silently train LoRA. Write fine_tuning: Full (or LoRA) explicitly"
            )
        ft = str(recipe.config["fine_tuning"]).lower()
        if ft not in {"full", "lora"}:
            raise RecipeError(f"{where}: config.fine_tuning must be Full or LoRA, got {ft!r}")

    # ---------------------------------------------------------------- steps

    def samples_per_step(self, recipe: Recipe, samples_per_pack: float | None) -> PackPlan:
        """Samples per optimizer step; `samples_per_pack` is what greedy packing achieves."""
        c = recipe.config
        g = recipe.n_devices
        accum = int(c.get("gradient_accumulation_steps", 1) or 1)
        batch = int(c.get("per_device_train_batch_size", 1) or 1)
        return PackPlan(
            g * batch * accum,
            f"devices {g} x per_device_train_batch_size {batch} x gradient_accumulation_steps {accum}",
        )

    def total_steps(self, samples: int, epochs: float, per_step: float) -> int:
        """Optimizer steps for `epochs` passes over `samples` at `per_step` samples a step.

        The Paddle tools read their data as one stream (`num_samples_each_epoch`), so the
        epochs are simply consecutive; a trainer whose data loader restarts each epoch and
        keeps its last short batch (transformers) overrides this.
        """
        return max(1, math.ceil(samples * epochs / per_step))

    def packing(self, recipe: Recipe) -> tuple[int, int] | None:
        """(max_seq_len, max samples per pack) when the tool packs samples; None otherwise."""
        return None

    # ---------------------------------------------------------------- preflight

    def preflight(self, recipe: Recipe, python: str) -> list[Finding]:
        """This launcher's own checks (tools, eval settings, ...)."""
        return []

    def output_refused(self, recipe: Recipe) -> str | None:
        """Why a non-empty output_dir without checkpoints is refused (None: it is not)."""
        return None

    # ---------------------------------------------------------------- launch

    def tool_config(self, recipe: Recipe) -> dict[str, Any]:
        """The config file the tool reads (after max_steps/resume are resolved)."""
        return dict(recipe.config)

    def command(
        self, recipe: Recipe, config_path: Path, python: str
    ) -> tuple[list[str], dict[str, str]]:
        """(argv, environment) that runs the tool on `config_path`."""
        raise NotImplementedError

    def gpu_env(self, recipe: Recipe) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": recipe.gpus, "MASTER_PORT": str(recipe.master_port)}
