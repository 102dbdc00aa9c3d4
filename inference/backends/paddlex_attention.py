"""Memory-bounded SigLIP attention for PaddleX's PaddleOCR-VL on CPU (a runtime patch we own).

PaddleX 3.7.2 runs the vision encoder's attention through ``scaled_dot_product_attention``
only on CUDA >= 8.0 with half precision; everywhere else (every CPU) it calls
``_siglip.eager_attention_forward``, which materialises the whole ``[B, H, L, L]`` score
matrix, copies it through a float32 -> float32 ``cast`` and runs the softmax over it. At
PaddleOCR-VL's default pixel bounds an invoice photo is ~14,000 patches: 0.8 GB per head
(the real model has 16 heads: 12.7 GB, twice over with the copy), and most of the time
goes to memory traffic, not arithmetic.

:func:`apply` swaps that function for :func:`chunked_attention`: the same operations
(``matmul(q * scale, k^T)`` -> ``+ mask`` -> float32 softmax -> ``matmul(., v)``) on blocks
of query rows, so each row sees exactly the numbers it saw before (the tests assert the
outputs are equal, bit for bit, and the generated tokens identical) while the working set
stays at ``chunk_bytes``. It is applied by the ``paddlex`` and ``paddlex-pipeline`` backends
when they run on CPU; GPU runs keep PaddleX's own kernels.

The patch is checked: it replaces the function only when its source is the one it was
written against (:data:`STOCK_SHA256`); another PaddleX version keeps its own attention
and a warning says so. :func:`revert` restores the original (for A/B benchmarks).

Measured effect and the faster alternative (transformers with SDPA, ``.venv-torch``):
``benchmarks/backends.py`` and the README.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

MODULE = "paddlex.inference.models.doc_vlm.modeling.paddleocr_vl._siglip"
FUNCTION = "eager_attention_forward"
#: sha256 of ``inspect.getsource(_siglip.eager_attention_forward)`` in paddlex 3.7.2
STOCK_SHA256 = "a4df6d292b4d2888bb2cb56fdc545fcbd38dbf7cbae80c892fcdad30bc209f10"
#: score-block budget: rows per block = chunk_bytes / (4 * B * H * L)
DEFAULT_CHUNK_BYTES = 64 << 20

_state: dict[str, Any] = {}


def source_sha256(fn: Any) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()


def chunked_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float,
    dropout: float = 0.0,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    **kwargs: Any,
) -> tuple[Any, None]:
    """``eager_attention_forward`` on blocks of query rows; same signature, same result.

    ``query/key/value``: ``[B, H, L, Dh]``; returns ``([B, L, H, Dh], None)`` like the
    original (whose second value, the full weight matrix, no caller uses).
    """
    import paddle
    import paddle.nn.functional as F

    b, h, n, _ = query.shape
    m = key.shape[2]
    rows = max(1, int(chunk_bytes // max(1, 4 * b * h * m)))
    origin_dtype = query.dtype
    scaled = query.scale(scaling)
    mask_rows = attention_mask is not None and attention_mask.shape[-2] != 1
    outs = []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        w = paddle.matmul(x=scaled[:, :, start:stop], y=key, transpose_y=True)
        if w.dtype != paddle.float32:
            w = w.cast(paddle.float32)
        if attention_mask is not None:
            w = w + (attention_mask[..., start:stop, :] if mask_rows else attention_mask)
        w = F.softmax(w, axis=-1)
        if w.dtype != origin_dtype:
            w = w.cast(origin_dtype)
        if dropout and module.training:
            w = F.dropout(w, p=dropout, training=True)
        outs.append(paddle.matmul(w, value))
    out = outs[0] if len(outs) == 1 else paddle.concat(outs, axis=2)
    return out.transpose((0, 2, 1, 3)), None


def is_applied() -> bool:
    return "original" in _state


def apply(*, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> bool:
    """Install :func:`chunked_attention` in PaddleX's SigLIP module; True when it is in place.

    Idempotent. Returns False (PaddleX keeps its own attention) when paddlex is not
    importable or its ``eager_attention_forward`` is not the version this was checked on.
    """
    if is_applied():
        _state["chunk_bytes"] = chunk_bytes
        return True
    try:
        import importlib

        siglip = importlib.import_module(MODULE)
        original = getattr(siglip, FUNCTION)
        digest = source_sha256(original)
    except (ImportError, AttributeError, OSError, TypeError) as e:
        log.warning("PaddleX SigLIP attention not patched (%s: %s)", type(e).__name__, e)
        return False
    if digest != STOCK_SHA256:
        log.warning(
            "PaddleX SigLIP attention not patched: %s.%s is not the version the patch was "
            "checked on (sha256 %s..., expected %s...); CPU attention stays O(L^2) in memory",
            MODULE,
            FUNCTION,
            digest[:12],
            STOCK_SHA256[:12],
        )
        return False

    def patched(*args: Any, **kwargs: Any) -> tuple[Any, None]:
        return chunked_attention(*args, chunk_bytes=_state["chunk_bytes"], **kwargs)

    patched.__wrapped__ = original  # type: ignore[attr-defined]
    _state.update(original=original, module=siglip, chunk_bytes=chunk_bytes)
    setattr(siglip, FUNCTION, patched)
    log.info("PaddleX SigLIP attention on CPU: query blocks of <= %d MiB", chunk_bytes >> 20)
    return True


def revert() -> None:
    """Put PaddleX's own ``eager_attention_forward`` back (no-op when not applied)."""
    if not is_applied():
        return
    setattr(_state["module"], FUNCTION, _state["original"])
    _state.clear()
