"""``backend: auto`` — the fastest correct engine for PaddleOCR-VL on this device.

================  ===============================================================  =========
where             engine                                                           why
================  ===============================================================  =========
an endpoint set   ``openai`` (vLLM / FastDeploy serving the model)                 batching
GPU               ``paddlex`` (PaddleX's own CUDA kernels, SDPA from CUDA 8.0);    as built
                  ``transformers`` on ``cuda:N`` where Paddle is not installed
CPU               ``transformers`` (torch SDPA) when torch + transformers import   fastest
                  (``.venv-torch``, ``make setup-torch``), else ``paddlex`` with
                  the memory-bounded SigLIP attention (``paddlex_attention``)
================  ===============================================================  =========

The CPU choice is measured by ``benchmarks/backends.py`` on the same exported model and
image, generated token ids asserted identical. On the tiny model, invoice photo b0.jpg,
2 shared cores under heavy load (load average 7-9; medians of 2 interleaved rounds, so
read the ratios): at the default pixel bounds (1932x1428 px, 3,519 visual tokens)
transformers 12.1 s, patched PaddleX 37.3 s (x3.1), stock PaddleX 93.8 s (x7.8); at a
small budget (504x364 px, 234 tokens) PaddleX 0.89 s and transformers 2.02 s (x2.3).
Paddle's CPU attention materialises the score matrix and its softmax is slow; the patch
bounds the memory and removes a copy (x2.5 at the default bounds) but cannot close the
gap to torch's fused SDPA. Full pages are what the service gets, hence transformers. The Paddle environment (``.venv``) cannot hold torch next to
PaddleFormers, so there ``auto`` means the patched ``paddlex`` and says how to get faster.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class EngineChoice:
    backend: str
    device: str
    reason: str


def _importable(*names: str) -> bool:
    return all(importlib.util.find_spec(n) is not None for n in names)


def is_cpu(device: str) -> bool:
    return device.split(":")[0].strip().lower() == "cpu"


def torch_device(device: str) -> str:
    """PaddleX device names (``gpu:0``) in torch's spelling (``cuda:0``)."""
    kind, _, index = device.partition(":")
    if kind.strip().lower() in ("gpu", "cuda"):
        return f"cuda:{index or 0}"
    return device


def choose_engine(device: str = "cpu", *, has_endpoint: bool = False) -> EngineChoice:
    """The engine ``backend: auto`` runs, and why (see the module table)."""
    if has_endpoint:
        return EngineChoice("openai", device, "an endpoint is configured (vLLM / FastDeploy)")
    has_torch = _importable("torch", "transformers")
    if not is_cpu(device):
        if _importable("paddlex", "paddle"):
            return EngineChoice("paddlex", device, "GPU: PaddleX's own CUDA kernels")
        if has_torch:
            return EngineChoice(
                "transformers", torch_device(device), "GPU without Paddle: transformers"
            )
        return EngineChoice("paddlex", device, "GPU (neither engine importable)")
    if has_torch:
        return EngineChoice("transformers", device, "CPU: transformers (torch SDPA) is fastest")
    return EngineChoice(
        "paddlex",
        device,
        "CPU without torch: PaddleX with memory-bounded attention; transformers is faster "
        "on CPU (make setup-torch, then run with .venv-torch/bin/python)",
    )


def resolve(cfg: Any) -> Any:
    """``cfg`` (a ``BackendConfig``) with ``backend: auto`` replaced by :func:`choose_engine`."""
    choice = choose_engine(cfg.device, has_endpoint=cfg.endpoint is not None)
    log.info("backend auto -> %s on %s (%s)", choice.backend, choice.device, choice.reason)
    return replace(cfg, backend=choice.backend, device=choice.device)
