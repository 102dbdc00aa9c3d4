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
