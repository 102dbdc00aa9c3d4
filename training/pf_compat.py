"""Run PaddleFormers on a machine without Triton (CPU), and load its tokenizer.

`paddleformers.transformers.paddleocr_vl.modeling` (1.2.0) imports
`paddleformers.triton_kernels`, which decorates a kernel with `@triton.jit` at import
time and so fails with `NameError: triton` when Triton is not installed. The kernel
is only used when `use_triton_in_paddle` is importable as well; otherwise the model
falls back to its Paddle implementation. On CPU we therefore register a stand-in
`triton` module (version "0.0.0", which PaddleFormers' own check rejects) before
PaddleFormers is imported, instead of installing a 200 MB GPU compiler.

`python -m training.pf_compat train CONFIG.yaml [key=value ...]` is PaddleFormers'
`cli/launcher.py` run in this process: no `paddle.distributed.launch`, no port.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STUB_VERSION = "0.0.0+stub"


def install_triton_stub() -> bool:
    """Register a no-op `triton` module when the real one is absent; True if installed."""
    if "triton" in sys.modules or importlib.util.find_spec("triton") is not None:
        return False

    def jit(fn: Any = None, **_: Any) -> Any:
        return fn if fn is not None else (lambda f: f)

    triton = types.ModuleType("triton")
    triton.__version__ = STUB_VERSION  # type: ignore[attr-defined]
    triton.jit = jit  # type: ignore[attr-defined]
    triton.next_power_of_2 = lambda n: 1 << (int(n) - 1).bit_length()  # type: ignore[attr-defined]
    language = types.ModuleType("triton.language")
    language.constexpr = type("constexpr", (), {})  # type: ignore[attr-defined]
    triton.language = language  # type: ignore[attr-defined]
    sys.modules["triton"] = triton
    sys.modules["triton.language"] = language
    log.debug("triton is not installed: registered a stand-in module for PaddleFormers")
    return True


def paddleformers_tokenizer(model_dir: Path) -> Any:
    """The tokenizer PaddleFormers' VL-SFT workflow builds for `model_dir`."""
    install_triton_stub()
    from paddleformers.transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in {"train", "export"}:
        print("usage: python -m training.pf_compat train|export CONFIG.yaml [key=value ...]")
        return 2
    install_triton_stub()
    from paddleformers.cli.launcher import launch

    sys.argv = ["launcher.py", *args]
    launch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
