"""Run PaddleFormers 1.2.0 on a CPU machine (no Triton, tensorboardX or pip needed).

`paddleformers.transformers.paddleocr_vl.modeling` (1.2.0) imports
`paddleformers.triton_kernels`, which decorates a kernel with `@triton.jit` at import
time and so fails with `NameError: triton` when Triton is not installed. The kernel
is only used when `use_triton_in_paddle` is importable as well; otherwise the model
falls back to its Paddle implementation. On CPU we therefore register a stand-in
`triton` module (version "0.0.0", which PaddleFormers' own check rejects) before
PaddleFormers is imported, instead of installing a 200 MB GPU compiler.

`report_to: tensorboard` needs tensorboardX; when it is absent, a shim writes the
same scalar event files with the `tensorboard` package (which training.summary reads).
PaddleFormers also imports `pip`; a venv without pip gets a stand-in whose main() fails.

`python -m training.pf_compat train CONFIG.yaml [key=value ...]` is PaddleFormers'
`cli/launcher.py` run in this process: no `paddle.distributed.launch`, no port.
`paddleformers_encode` shows the token ids and labels PaddleFormers trains on.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
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
    triton.__spec__ = importlib.machinery.ModuleSpec("triton", loader=None)
    language.__spec__ = importlib.machinery.ModuleSpec("triton.language", loader=None)
    sys.modules["triton"] = triton
    sys.modules["triton.language"] = language
    log.debug("triton is not installed: registered a stand-in module for PaddleFormers")
    return True


class ScalarSummaryWriter:
    """The part of tensorboardX's SummaryWriter PaddleFormers' TensorBoardCallback uses,
    written with the `tensorboard` package's own event writer (no tensorboardX needed)."""

    def __init__(self, log_dir: str | None = None, **_: Any) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.log_dir = str(log_dir or "runs")
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(self.log_dir)

    def add_scalar(self, tag: str, value: float, global_step: int | None = None, **_: Any) -> None:
        import time

        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))]
        )
        self._writer.add_event(
            event_pb2.Event(wall_time=time.time(), step=int(global_step or 0), summary=summary)
        )

    def add_text(self, tag: str, text: str, global_step: int | None = None, **_: Any) -> None:
        """Run arguments and model config: kept out of the scalar logs."""

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def install_tensorboardx_shim() -> bool:
    """Register `tensorboardX` backed by ScalarSummaryWriter when it is not installed."""
    if "tensorboardX" in sys.modules or importlib.util.find_spec("tensorboardX") is not None:
        return False
    shim = types.ModuleType("tensorboardX")
    shim.__version__ = STUB_VERSION  # type: ignore[attr-defined]
    shim.SummaryWriter = ScalarSummaryWriter  # type: ignore[attr-defined]
    shim.__spec__ = importlib.machinery.ModuleSpec(
        "tensorboardX", loader=None
    )  # find_spec() reads it
    sys.modules["tensorboardX"] = shim
    log.debug(
        "tensorboardX is not installed: PaddleFormers logs through tensorboard's event writer"
    )
    return True


def install_pip_stub() -> bool:
    """PaddleFormers imports `pip` at import time (only to pip-install optional kernels);
    register a stand-in when the venv has no pip (uv-built venvs often do not)."""
    try:
        importlib.metadata.version("pip")  # not find_spec: that disarms setuptools' distutils shim
        return False
    except importlib.metadata.PackageNotFoundError:
        pass
    if "pip" in sys.modules:
        return False

    def main(args: Any = None) -> int:
        raise RuntimeError(f"pip is not installed in this environment (asked to run pip {args})")

    pip = types.ModuleType("pip")
    pip.__version__ = STUB_VERSION  # type: ignore[attr-defined]
    pip.main = main  # type: ignore[attr-defined]
    pip.__spec__ = importlib.machinery.ModuleSpec("pip", loader=None)
    sys.modules["pip"] = pip
    return True


def install_shims() -> None:
    """Everything PaddleFormers 1.2.0 needs on a CPU machine, before it is imported."""
    install_triton_stub()
    install_tensorboardx_shim()
    install_pip_stub()


def paddleformers_tokenizer(model_dir: Path) -> Any:
    """The tokenizer PaddleFormers' VL-SFT workflow builds for `model_dir`."""
    install_shims()
    from paddleformers.transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def paddleformers_encode(
    model_dir: Path, jsonl: Path, *, max_seq_len: int = 4096, limit: int = 1
) -> list[tuple[list[int], list[int]]]:
    """(token_ids, labels) of the first `limit` records of a messages/images JSONL file,
    encoded exactly as PaddleFormers' VL-SFT workflow does (template `paddleocr_vl`).

    Labels are already shifted by PaddleFormers: `labels[i]` is the target for
    `token_ids[i]` (the next token), -100 where no loss is taken.
    """
    install_shims()
    from paddleformers.datasets.loader import create_dataset
    from paddleformers.datasets.template.template import get_template_and_fix_tokenizer
    from paddleformers.transformers import AutoProcessor

    tokenizer = paddleformers_tokenizer(model_dir)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    # The same keys and defaults as paddleformers/cli/train/sft/workflow.py builds.
    config: dict[str, Any] = {
        "tokenizer": tokenizer,
        "processor": processor,
        "max_seq_len": max_seq_len,
        "random_seed": 0,
        "num_replicas": 1,
        "rank": 0,
        "num_samples_each_epoch": 6000000,
        "random_shuffle": False,
        "greedy_intokens": True,
        "packing": False,
        "mix_strategy": "concat",
        "encode_one_turn": True,
        "use_template": True,
        "is_pretraining": False,
        "truncate_packing": False,
        "stage": "VL-SFT",
        "template_backend": "custom",
        "split_multi_turn": False,
        "dataset_type": "iterator",
        "dtype": "float32",
        "dataset_num_proc": 1,
        "binpacking": False,
        "packing_interval": None,
        "packed_idx_cache_dir": None,
        "dataloader_num_workers": 0,
        "template": "paddleocr_vl",
        "tool_format": None,
        "default_system": None,
        "truncation_strategy": "oral",
        "skip_warmup": True,
    }
    config["template_instance"] = get_template_and_fix_tokenizer(config)
    dataset = create_dataset(
        task_group=str(jsonl), task_group_prob="1.0", sub_dataset_type="messages", **config
    )
    out = []
    for batch in dataset:
        for seq in batch if isinstance(batch, list) else [batch]:
            out.append((list(seq.token_ids), list(seq.labels)))
        if len(out) >= limit:
            break
    return out[:limit]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in {"train", "export"}:
        print("usage: python -m training.pf_compat train|export CONFIG.yaml [key=value ...]")
        return 2
    install_shims()
    from paddleformers.cli.launcher import launch

    sys.argv = ["launcher.py", *args]
    launch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
