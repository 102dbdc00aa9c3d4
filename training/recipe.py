"""Training recipes: one YAML file per run type, resolved into the tool's own config.

A recipe (`configs/train/*.yaml`) has our header and the tool's config:

    launcher: erniekit            # a trainer of training/trainers/: erniekit | paddleformers | transformers
    device: gpu                   # gpu | cpu (cpu: paddleformers, transformers)
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
Values are typed as YAML 1.2 in the recipe file and in overrides alike
(`max_steps=100` is an int, `learning_rate=1e-5` a float, `do_eval=false` a bool).
Every config key must be an argument of the launcher's tool (read from the tool's
own dataclasses when it is importable, else a maintained list: `training/trainers/`),
with a value of the argument's type; an unknown key is an error naming the nearest
valid ones. The generated tool config is exactly the recipe's `config` plus the
overrides, plus `max_steps` when the recipe says `auto` and `resume_from_checkpoint`
on `--resume`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_tools.config import ConfigError, load_yaml, parse_value, suggest
from training.trainers import RecipeError, Trainer, get_trainer
from training.trainers.keylist import type_problem

__all__ = ["Recipe", "RecipeError", "load_recipe", "parse_override", "render_tool_config"]

DEVICES = ("gpu", "cpu")
HEADER_FIELDS = ("launcher", "device", "gpus", "master_port")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Recipe:
    """A recipe with variables resolved and overrides applied."""

    path: Path
    launcher: str
    device: str
    trainer: Trainer
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
    return key, parse_value(raw.strip())


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
    if not path.is_file():
        raise RecipeError(f"{path}: recipe not found")
    try:
        raw = load_yaml(path)  # YAML 1.2 values: the one config loader's grammar
    except ConfigError as e:
        raise RecipeError(str(e)) from None
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
    from_override: dict[str, str] = {}
    for text in overrides or []:
        key, value = parse_override(text)
        applied[key] = value
        from_override[key] = text
        if key in variables:
            variables[key] = str(value)
        elif key in HEADER_FIELDS:
            header[key] = value
        else:
            config[key] = value
            from_override[key] = text

    launcher = header["launcher"]
    try:
        trainer = get_trainer(launcher)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    device = header["device"] or "gpu"
    if device not in DEVICES:
        raise RecipeError(f"{path}: device must be one of {DEVICES}, got {device!r}")
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
        trainer=trainer,
        gpus=gpus,
        master_port=master_port,
        variables=variables,
        prepare=prepare,
        config=config,
        recipe_config_keys=recipe_keys,
        overrides=applied,
    )
    check_keys(recipe, {k: v for k, v in from_override.items() if k in config})
    _validate_config(recipe)
    return recipe


def check_keys(r: Recipe, from_override: dict[str, str]) -> None:
    """Every config key is an argument of the tool, with a value of its type."""
    found = r.trainer.config_keys()
    if found is None:
        return
    keys, source = found
    keys = {**keys, **r.trainer.extra_keys()}
    problems = []
    for key, value in r.config.items():
        where = f"override {from_override[key]!r}" if key in from_override else f"config.{key}"
        if key not in keys:
            problems.append(
                f"{where}: {key!r} is not an argument of {r.launcher} ({source}){suggest(key, list(keys))}"
            )
            continue
        if key == "max_steps":
            if value != "auto" and (not isinstance(value, int) or isinstance(value, bool)):
                problems.append(f"{where}: max_steps must be an integer or auto, got {value!r}")
            continue
        problem = type_problem(value, keys[key])
        if problem:
            problems.append(f"{where}: {key} {problem}")
    if problems:
        raise RecipeError(f"{r.path}: " + "\n  ".join(problems))


def _validate_config(r: Recipe) -> None:
    """Problems of the recipe itself (not of data or machine): RecipeError."""
    r.trainer.validate(r)
    steps = r.config.get("max_steps", -1)
    if steps != "auto" and not isinstance(steps, int):
        raise RecipeError(f"{r.path}: config.max_steps must be an integer or auto, got {steps!r}")


def render_tool_config(config: dict[str, Any]) -> str:
    """The YAML handed to the tool (keys in recipe order, CJK kept)."""
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
