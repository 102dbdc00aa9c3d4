"""Training recipes: one YAML file per run type, resolved into the tool's own config.

A recipe (`configs/train/*.yaml`) has our header and the tool's config:

    launcher: erniekit            # erniekit (`erniekit train`) | paddleformers
    device: gpu                   # gpu | cpu (cpu: PaddleFormers only)
    gpus: "0"                     # CUDA_VISIBLE_DEVICES for the gpu route
    master_port: 8080             # paddle.distributed.launch's port (gpu route)
    variables:                    # paths; relative ones are made absolute (cwd)
      data_dir: data/sft
      model_dir: models/PaddleOCR-VL-0.9B
      run_dir: outputs/train/my_run
    prepare:                      # optional, CPU demo: build what is missing
      tiny_model: true
      dataset: {invoices: 24, variants_per_image: 3, seed: 0}
    config:                       # ERNIEKit / PaddleFormers keys, ${var} substituted
      train_dataset_path: ${data_dir}/train.jsonl
      ...

`key=value` overrides set a variable when `key` names one, a header field when it
names one (launcher, device, gpus, master_port), and a tool config key otherwise.
Values are parsed as YAML (`max_steps=100` is an int, `do_eval=false` a bool).
The generated tool config is exactly the recipe's `config` plus the overrides, plus
`max_steps` when the recipe says `auto` and `resume_from_checkpoint` on `--resume`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LAUNCHERS = ("erniekit", "paddleformers")
DEVICES = ("gpu", "cpu")
HEADER_FIELDS = ("launcher", "device", "gpus", "master_port")
STAGE_FOR = {"erniekit": "OCR-VL-SFT", "paddleformers": "VL-SFT"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RecipeError(ValueError):
    """The recipe itself is invalid (as opposed to data or machine problems)."""


@dataclass
class Recipe:
    """A recipe with variables resolved and overrides applied."""

    path: Path
    launcher: str
    device: str
    gpus: str
    master_port: int
    variables: dict[str, str]
    prepare: dict[str, Any]
    config: dict[str, Any]
    recipe_config_keys: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """Where our launch files and log go (the `run_dir` variable, else output_dir's parent)."""
        if "run_dir" in self.variables:
            return Path(self.variables["run_dir"])
        return Path(str(self.config["output_dir"])).parent

    @property
    def output_dir(self) -> Path:
        return Path(str(self.config["output_dir"]))

    @property
    def model_dir(self) -> Path:
        return Path(str(self.config["model_name_or_path"]))

    @property
    def n_devices(self) -> int:
        if self.device == "cpu":
            return 1
        return len([g for g in str(self.gpus).split(",") if g.strip()])

    def train_files(self) -> list[Path]:
        return _paths(self.config.get("train_dataset_path"))

    def eval_files(self) -> list[Path]:
        return _paths(self.config.get("eval_dataset_path"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": str(self.path),
            "launcher": self.launcher,
            "device": self.device,
            "gpus": self.gpus,
            "master_port": self.master_port,
            "variables": dict(self.variables),
            "prepare": copy.deepcopy(self.prepare),
            "overrides": copy.deepcopy(self.overrides),
            "config": copy.deepcopy(self.config),
        }


def _paths(value: Any) -> list[Path]:
    if not value:
        return []
    return [Path(p.strip()) for p in str(value).split(",") if p.strip()]


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` → (key, YAML-parsed value)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RecipeError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _substitute(value: Any, variables: dict[str, str], where: str) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in variables:
                raise RecipeError(
                    f"{where}: unknown variable ${{{name}}}; define it under variables:"
                )
            return variables[name]

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, f"{where}.{k}") for k, v in value.items()}
    return value


def _absolute(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).absolute())


def load_recipe(
    path: Path, overrides: list[str] | None = None, *, cwd: Path | None = None
) -> Recipe:
    """Read, override and resolve a recipe; raises RecipeError naming the file and key."""
    path = Path(path)
    base = Path(cwd) if cwd is not None else Path.cwd()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with launcher:, variables:, config:")
    unknown = set(raw) - {*HEADER_FIELDS, "variables", "prepare", "config"}
    if unknown:
        raise RecipeError(f"{path}: unknown top-level keys {sorted(unknown)}")
    header = {k: raw.get(k) for k in HEADER_FIELDS}
    variables = {str(k): str(v) for k, v in (raw.get("variables") or {}).items()}
    config = raw.get("config")
    if not isinstance(config, dict) or not config:
        raise RecipeError(f"{path}: config: must be a non-empty mapping of tool settings")
    config = dict(config)
    recipe_keys = list(config)
    applied: dict[str, Any] = {}
    for text in overrides or []:
        key, value = parse_override(text)
        applied[key] = value
        if key in variables:
            variables[key] = str(value)
        elif key in HEADER_FIELDS:
            header[key] = value
        else:
            config[key] = value

    launcher = header["launcher"]
    if launcher not in LAUNCHERS:
        raise RecipeError(f"{path}: launcher must be one of {LAUNCHERS}, got {launcher!r}")
    device = header["device"] or "gpu"
    if device not in DEVICES:
        raise RecipeError(f"{path}: device must be one of {DEVICES}, got {device!r}")
    if device == "cpu" and launcher == "erniekit":
        raise RecipeError(
            f"{path}: ERNIEKit needs a GPU; use launcher: paddleformers for device: cpu"
        )
    try:
        master_port = int(header["master_port"] or 8080)
    except (TypeError, ValueError):
        raise RecipeError(f"{path}: master_port must be an integer") from None
    gpus = str(header["gpus"] if header["gpus"] is not None else "0")

    variables = {k: _absolute(v, base) for k, v in variables.items()}
    config = _substitute(config, variables, f"{path}:config")
    for key in ("model_name_or_path", "output_dir"):
        if key not in config:
            raise RecipeError(f"{path}: config.{key} is required")
    prepare = _substitute(raw.get("prepare") or {}, variables, f"{path}:prepare")
    recipe = Recipe(
        path=path,
        launcher=launcher,
        device=device,
        gpus=gpus,
        master_port=master_port,
        variables=variables,
        prepare=prepare,
        config=config,
        recipe_config_keys=recipe_keys,
        overrides=applied,
    )
    _validate_config(recipe)
    return recipe


def _validate_config(r: Recipe) -> None:
    """Problems of the recipe itself (not of data or machine): RecipeError."""
    where = str(r.path)
    stage = r.config.get("stage")
    if stage != STAGE_FOR[r.launcher]:
        raise RecipeError(
            f"{where}: config.stage must be {STAGE_FOR[r.launcher]!r} for launcher "
            f"{r.launcher}, got {stage!r}"
        )
    if "fine_tuning" not in r.config:
        raise RecipeError(
            f"{where}: config.fine_tuning is missing; ERNIEKit and PaddleFormers then "
            "silently train LoRA. Write fine_tuning: Full (or LoRA) explicitly"
        )
    ft = str(r.config["fine_tuning"]).lower()
    if ft not in {"full", "lora"}:
        raise RecipeError(f"{where}: config.fine_tuning must be Full or LoRA, got {ft!r}")
    if r.launcher == "paddleformers" and r.config.get("template") not in (None, "paddleocr_vl"):
        raise RecipeError(
            f"{where}: config.template must be paddleocr_vl (PaddleOCR-VL-0.9B's "
            f"'Assistant: ' template), got {r.config.get('template')!r}"
        )
    steps = r.config.get("max_steps", -1)
    if steps != "auto" and not isinstance(steps, int):
        raise RecipeError(f"{where}: config.max_steps must be an integer or auto, got {steps!r}")


def render_tool_config(config: dict[str, Any]) -> str:
    """The YAML handed to the tool (keys in recipe order, CJK kept)."""
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
