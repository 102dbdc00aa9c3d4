"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """`../shared/fixtures` beside the clone; tests that need it skip on a user's clone."""
    if not (SHARED_FIXTURES / "vat_invoices" / "ground_truth.jsonl").is_file():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def vat_invoices(shared_fixtures: Path) -> Path:
    """The three real VAT invoice photos with hand-checked truth."""
    return shared_fixtures / "vat_invoices"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight PaddleOCR-VL-0.9B dir (about 5 MB; seconds to build), shared by
    the training and inference tests."""
    from training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "PaddleOCR-VL-0.9B-tiny")
