"""Fixtures of the training tests: the tiny PaddleOCR-VL model, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_tools.paddleocr_vl import MODEL_NAME


@pytest.fixture(scope="session")
def tiny_sft_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic invoice SFT dataset (PaddleFormers messages/images format)."""
    from training.tiny_data import TinyDataSpec, build_tiny_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    return build_tiny_dataset(root, TinyDataSpec(invoices=8, variants_per_image=2))


@pytest.fixture(scope="session")
def paddlex_tiny(tiny_model_dir: Path):
    """The tiny model loaded once in PaddleX (dynamic graph, CPU)."""
    from paddlex import create_model

    return create_model(
        MODEL_NAME, model_dir=str(tiny_model_dir), engine="paddle_dynamic", device="cpu"
    )
