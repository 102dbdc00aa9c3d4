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


def test_adding_a_trainer_is_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module dropped beside the others registers itself; recipes can then name it."""
    import training.trainers as registry
    from training.recipe import load_recipe

    (tmp_path / "echo.py").write_text(
        "from training.trainers import register\n"
        "from training.trainers.base import Trainer\n\n\n"
        "@register\n"
        "class EchoTrainer(Trainer):\n"
        "    name = 'echo'\n"
        "    title = 'prints its config'\n"
        "    devices = ('cpu',)\n\n"
        "    def command(self, recipe, config_path, python):\n"
        "        return ['cat', str(config_path)], {}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    try:
        assert "echo" in trainer_names()
        recipe = tmp_path / "echo.yaml"
        recipe.write_text(
            "launcher: echo\ndevice: cpu\nconfig:\n  model_name_or_path: m\n"
            "  output_dir: o\n  fine_tuning: Full\n",
            encoding="utf-8",
        )
        r = load_recipe(recipe, cwd=tmp_path)
        assert r.trainer.name == "echo"
        assert r.trainer.command(r, Path("c.yaml"), "python") == (["cat", "c.yaml"], {})
    finally:
        import sys

        sys.modules.pop("training.trainers.echo", None)
