"""Stand-ins that let PaddleFormers 1.2.0 run on a CPU machine without GPU-only packages."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from training import pf_compat


def test_pip_stub_only_when_pip_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pf_compat.install_pip_stub() is False  # pip is installed here: left alone

    real_version = importlib.metadata.version

    def version(dist: str) -> str:
        if dist == "pip":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real_version(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.delitem(sys.modules, "pip", raising=False)
    try:
        assert pf_compat.install_pip_stub() is True
        with pytest.raises(RuntimeError, match="pip is not installed"):
            sys.modules["pip"].main(["install", "x"])
    finally:
        sys.modules.pop("pip", None)


def test_triton_stub_is_rejected_by_paddleformers_own_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    monkeypatch.delitem(sys.modules, "triton.language", raising=False)
    monkeypatch.setattr(pf_compat.importlib.util, "find_spec", lambda name, *a: None)
    try:
        assert pf_compat.install_triton_stub() is True
        triton = sys.modules["triton"]
        assert int(triton.__version__.split(".")[0]) < 3  # PaddleFormers needs >= 3 to use it

        @triton.jit
        def kernel(x):  # decorated at import time by paddleformers.triton_kernels
            return x

        assert kernel(2) == 2
        assert triton.next_power_of_2(33) == 64
    finally:
        sys.modules.pop("triton", None)
        sys.modules.pop("triton.language", None)
