"""The CPU attention patch for PaddleX (same numbers, bounded memory) and ``backend: auto``."""

from __future__ import annotations

import numpy as np
import pytest

from inference.backends import BackendConfig, auto, paddlex_attention
from inference.imaging import ImageOptions, prepare_image

paddle = pytest.importorskip("paddle")
siglip = pytest.importorskip(paddlex_attention.MODULE)


@pytest.fixture(autouse=True)
def _stock_attention():
    paddlex_attention.revert()
    yield
    paddlex_attention.revert()


def _qkv(b: int, h: int, n: int, d: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [paddle.to_tensor(rng.standard_normal((b, h, n, d), dtype=np.float32)) for _ in "qkv"]


@pytest.mark.parametrize("with_mask", [False, True])
def test_chunked_attention_equals_paddlex_eager_bit_for_bit(with_mask: bool) -> None:
    q, k, v = _qkv(1, 2, 301, 16)
    mask = None
    if with_mask:
        rng = np.random.default_rng(1)
        mask = paddle.to_tensor(np.where(rng.random((1, 1, 301, 301)) < 0.2, -1e4, 0.0), "float32")
    module = siglip.SiglipAttention.__new__(siglip.SiglipAttention)
    module.training = False
    stock, _ = siglip.eager_attention_forward(module, q, k, v, mask, scaling=0.25)
    # 4 * 1 * 2 * 301 bytes per query row: a 40 KB budget gives blocks of 16 rows (19 blocks)
    ours, weights = paddlex_attention.chunked_attention(
        module, q, k, v, mask, scaling=0.25, chunk_bytes=40_000
    )
    assert weights is None
    assert ours.shape == stock.shape == [1, 301, 2, 16]
    np.testing.assert_array_equal(ours.numpy(), stock.numpy())


def test_apply_is_checked_idempotent_and_reverts(monkeypatch: pytest.MonkeyPatch) -> None:
    original = siglip.eager_attention_forward
    assert paddlex_attention.apply() and paddlex_attention.apply()
    assert siglip.eager_attention_forward is not original
    assert siglip.eager_attention_forward.__wrapped__ is original
    paddlex_attention.revert()
    assert siglip.eager_attention_forward is original

    # another PaddleX version: its own attention stays, with a warning
    monkeypatch.setattr(paddlex_attention, "STOCK_SHA256", "0" * 64)
    assert not paddlex_attention.apply()
    assert siglip.eager_attention_forward is original


def test_paddlex_backend_generates_the_same_tokens_with_the_patch(
    tiny_model_dir, test_images, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on the tiny model: stock PaddleX attention vs the patch, same text."""
    from inference.backends.paddlex_backend import PaddleXModelBackend

    calls = []
    chunked = paddlex_attention.chunked_attention

    def counting(*args, **kwargs):
        calls.append(kwargs["chunk_bytes"])
        return chunked(*args, **kwargs)

    monkeypatch.setattr(paddlex_attention, "chunked_attention", counting)

    opts = ImageOptions(min_pixels=28 * 28 * 64, max_pixels=28 * 28 * 256)
    image = prepare_image(test_images[1], opts).image
    prompt = 'OCR:{"发票号码":""}'
    backend = PaddleXModelBackend(tiny_model_dir, device="cpu")  # applies the patch
    try:
        assert paddlex_attention.is_applied()
        paddlex_attention.apply(chunk_bytes=64 << 10)  # several blocks at this size
        patched = backend.generate(image, prompt)
        paddlex_attention.revert()
        stock = backend.generate(image, prompt)
    finally:
        backend.close()
    assert calls and set(calls) == {64 << 10}  # the patched path ran (once per layer)
    assert patched.text == stock.text and patched.n_tokens == stock.n_tokens


def test_auto_picks_the_fastest_engine_for_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    present: set[str] = set()
    monkeypatch.setattr(auto, "_importable", lambda *names: set(names) <= present)

    present.update({"paddle", "paddlex"})  # the Paddle environment (.venv)
    assert auto.choose_engine("cpu").backend == "paddlex"
    assert "make setup-torch" in auto.choose_engine("cpu").reason
    assert auto.choose_engine("gpu:0").backend == "paddlex"

    present.update({"torch", "transformers"})
    assert auto.choose_engine("cpu").backend == "transformers"
    assert auto.choose_engine("gpu:1") == auto.EngineChoice(
        "paddlex", "gpu:1", "GPU: PaddleX's own CUDA kernels"
    )
    present.difference_update({"paddle", "paddlex"})  # the torch environment on a GPU box
    choice = auto.choose_engine("gpu:1")
    assert (choice.backend, choice.device) == ("transformers", "cuda:1")
    assert auto.choose_engine("cpu", has_endpoint=True).backend == "openai"

    cfg = auto.resolve(BackendConfig(model_dir="m", device="cpu"))
    assert (cfg.backend, cfg.device, cfg.model_dir) == ("transformers", "cpu", "m")
    assert BackendConfig().backend == "auto"
