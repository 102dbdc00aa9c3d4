"""Fixtures of the inference tests: the tiny model, test images, a patched PaddleX copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patches.paddlex_prompt import Patcher, default_paddlex_dir
from tests.support.openai_stub import make_test_image


@pytest.fixture(scope="session")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("images")
    return [make_test_image(d / f"inv{i}.png", seed=i, size=(168, 112)) for i in range(3)]


@pytest.fixture(scope="session")
def patched_paddlex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A patched copy of the installed paddlex; put its parent first on PYTHONPATH.

    The shared environment's paddlex stays untouched.
    """
    src = default_paddlex_dir()
    root = tmp_path_factory.mktemp("paddlex_copy")
    shutil.copytree(src, root / "paddlex", ignore=shutil.ignore_patterns("__pycache__"))
    for info in src.parent.glob("paddlex-*.dist-info"):
        shutil.copytree(info, root / info.name)
    Patcher(root / "paddlex").apply()
    return root
