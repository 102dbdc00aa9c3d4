"""Fixtures of the training tests: the tiny PaddleOCR-VL model, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight PaddleOCR-VL-0.9B dir (about 5 MB; seconds to build)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "PaddleOCR-VL-0.9B-tiny")
