"""The trainer registry: one module per launcher in this package, found at import.

    from training.trainers import get_trainer, trainer_names
    get_trainer("erniekit").command(recipe, config_path, python)

Adding a trainer is one file here: a `Trainer` subclass decorated with `@register`.
Modules whose name starts with `_` and the helpers `base` and `keylist` are not trainers.
"""

from __future__ import annotations

import importlib
import pkgutil

from training.trainers.base import Finding, PackPlan, RecipeError, Trainer, find_executable

__all__ = [
    "Finding",
    "PackPlan",
    "RecipeError",
    "Trainer",
    "find_executable",
    "get_trainer",
    "register",
    "trainer_names",
]

_REGISTRY: dict[str, type[Trainer]] = {}
_HELPERS = {"base", "keylist"}
_loaded = False


def register(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make `cls` the trainer for `launcher: cls.name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two trainers named {cls.name!r}: {_REGISTRY[cls.name]} and {cls}")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _HELPERS:
            continue
        importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def trainer_names() -> tuple[str, ...]:
    _load()
    return tuple(sorted(_REGISTRY))


def get_trainer(name: object) -> Trainer:
    """The trainer for `launcher: name`; RecipeError (naming the choices) otherwise."""
    _load()
    cls = _REGISTRY.get(str(name)) if isinstance(name, str) else None
    if cls is None:
        raise RecipeError(f"launcher must be one of {trainer_names()}, got {name!r}")
    return cls()
