"""The trainer registry: one module per launcher, found at import; nothing else names them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from training.trainers import RecipeError, Trainer, get_trainer, register, trainer_names

REPO = Path(__file__).resolve().parents[2]


def test_the_three_routes_are_registered() -> None:
    assert trainer_names() == ("erniekit", "paddleformers", "transformers")
    for name in trainer_names():
        t = get_trainer(name)
        assert isinstance(t, Trainer) and t.name == name
        keys, source = t.config_keys()
        assert keys["learning_rate"] in {"float"} and source
        assert t.setup.startswith("make setup-train")


def test_unknown_launcher_names_the_choices() -> None:
    with pytest.raises(
        RecipeError,
        match=r"launcher must be one of \('erniekit', 'paddleformers', 'transformers'\)",
    ):
        get_trainer("deepspeed")


def test_two_trainers_cannot_share_a_name() -> None:
    class Twin(Trainer):
        name = "erniekit"

    with pytest.raises(ValueError, match="two trainers named 'erniekit'"):
        register(Twin)


def test_no_launcher_name_is_tested_outside_the_trainers() -> None:
    """`if launcher == "erniekit"` chains are gone: only training/trainers/ knows the names."""
    names = set(trainer_names())
    offenders = []
    for path in (REPO / "training").rglob("*.py"):
        if "trainers" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(
                isinstance(c, ast.Constant) and c.value in names for c in node.comparators
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
