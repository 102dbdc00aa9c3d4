"""Loss curve and throughput of a training run, from its TensorBoard logs.

    python -m training.summary RUN_DIR [--json] [--png PATH]

RUN_DIR is searched for `events.out.tfevents.*` files (PaddleFormers, ERNIEKit and the
PyTorch route write them under `logging_dir` with `report_to: tensorboard`). Each
trainer's own tag names are understood:

  loss       train/loss (PaddleFormers, transformers), mm_train/loss (ERNIEKit multimodal)
  runtime    train/interval_runtime (PaddleFormers, transformers route),
             train/global_runtime (ERNIEKit: its trainer, a fork of PaddleNLP's, logs the
             speed of each logging interval under the prefix `global_`)
  tokens/s   train/interval_tokens_per_second_per_device, train/tokens_per_sec_per_card
  memory     every tag naming memory (`*memory*`, `*mem_*_gb`, `*mem*_gb`)

What a run did not log is listed under `missing`, never left blank. Prints a text summary
(or, with --json, one JSON object with at least steps, first_loss, last_loss and
s_per_step) and writes a PNG of loss and learning rate over steps
(default RUN_DIR/summary/loss.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOSS_TAGS = ("train/loss", "loss", "mm_train/loss", "train/mm_loss")
LR_TAGS = ("train/learning_rate", "learning_rate", "train/lr")
RUNTIME_TAGS = (
    "train/interval_runtime",
    "interval_runtime",
    "train/global_runtime",
    "global_runtime",
)
TOKENS_TAGS = (
    "train/interval_tokens_per_second_per_device",
    "interval_tokens_per_second_per_device",
    "train/tokens_per_sec_per_card",
    "tokens_per_sec_per_card",
)


def is_memory_tag(tag: str) -> bool:
    name = tag.rsplit("/", 1)[-1].lower()
    if "available" in name:
        return False
    return "memory" in name or ("mem" in name and name.endswith("_gb"))


@dataclass
class RunSummary:
    log_dirs: list[str]
    steps: int
    first_loss: float
    last_loss: float
    min_loss: float
    first_loss_avg: float  # mean over the first 10% of logged steps (at least one)
    last_loss_avg: float  # mean over the last 10%
    s_per_step: float | None
    tokens_per_s: float | None
    memory: dict[str, float] = field(default_factory=dict)  # tag -> max value logged
    tags: dict[str, str] = field(default_factory=dict)  # quantity -> the tag it was read from
    missing: list[str] = field(default_factory=list)  # quantities the run did not log
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    lr_curve: list[tuple[int, float]] = field(default_factory=list)
    png: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NoLogsError(FileNotFoundError):
    pass


def read_scalars(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[Path]]:
    """All scalar series under run_dir, merged over event files (later files win per step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise NoLogsError(
            f"no TensorBoard event files under {run_dir}; the recipe needs report_to: tensorboard "
            "and logging_dir inside the run dir"
        )
    series: dict[str, dict[int, float]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points = series.setdefault(tag, {})
            for ev in acc.Scalars(tag):
                points[int(ev.step)] = float(ev.value)  # a resumed run rewrites steps
    dirs = sorted({p.parent for p in files})
    return {tag: sorted(points.items()) for tag, points in series.items()}, dirs


def _pick(
    series: dict[str, list[tuple[int, float]]],
    tags: Sequence[str],
    found: dict[str, str] | None = None,
    what: str = "",
) -> list[tuple[int, float]]:
    for t in tags:
        if t in series:
            if found is not None:
                found[what] = t
            return series[t]
    return []


def summarize(run_dir: Path) -> RunSummary:
    series, dirs = read_scalars(run_dir)
    found: dict[str, str] = {}
    loss = _pick(series, LOSS_TAGS, found, "loss")
    if not loss:
        raise NoLogsError(
            f"{run_dir}: the TensorBoard logs have no loss scalar (looked for "
            f"{', '.join(LOSS_TAGS)}; found {', '.join(sorted(series)) or 'none'})"
        )
    values = [v for _, v in loss]
    k = max(1, len(values) // 10)
    runtime = _pick(series, RUNTIME_TAGS, found, "s_per_step")
    s_per_step = None
    if runtime:
        steps_covered, prev, total = 0, 0, 0.0
        for step, seconds in runtime:
            steps_covered += max(1, step - prev)
            prev = step
            total += seconds
        s_per_step = total / steps_covered
    tokens = _pick(series, TOKENS_TAGS, found, "tokens_per_s")
    memory = {
        tag: max(v for _, v in pts) for tag, pts in series.items() if is_memory_tag(tag) and pts
    }
    lr = _pick(series, LR_TAGS, found, "learning_rate")
    missing = [
        name
        for name, have in (
            ("s_per_step", runtime),
            ("tokens_per_s", tokens),
            ("memory", memory),
            ("learning_rate", lr),
        )
        if not have
    ]
    return RunSummary(
        log_dirs=[str(d) for d in dirs],
        steps=loss[-1][0],
        first_loss=values[0],
        last_loss=values[-1],
        min_loss=min(values),
        first_loss_avg=statistics.fmean(values[:k]),
        last_loss_avg=statistics.fmean(values[-k:]),
        s_per_step=s_per_step,
        tokens_per_s=statistics.median(v for _, v in tokens) if tokens else None,
        memory=memory,
        tags=found,
        missing=missing,
        loss_curve=loss,
        lr_curve=lr,
    )


def plot(summary: RunSummary, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps, losses = zip(*summary.loss_curve, strict=True)
    ax.plot(steps, losses, color="tab:blue", linewidth=1.2, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="tab:blue")
    ax.grid(alpha=0.3)
    if summary.lr_curve:
        ax2 = ax.twinx()
        lr_steps, lrs = zip(*summary.lr_curve, strict=True)
        ax2.plot(lr_steps, lrs, color="tab:orange", linewidth=1.0, alpha=0.7, label="learning rate")
        ax2.set_ylabel("learning rate", color="tab:orange")
    speed = f", {summary.s_per_step:.3f} s/step" if summary.s_per_step else ""
    ax.set_title(
        f"{summary.steps} steps, loss {summary.first_loss:.3f} -> {summary.last_loss:.3f}{speed}"
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png)
    return png


def format_text(s: RunSummary, rows: int = 10) -> str:
    lines = [
        f"logs:        {', '.join(s.log_dirs)}",
        f"steps:       {s.steps}",
        f"loss:        first {s.first_loss:.4f}  last {s.last_loss:.4f}  min {s.min_loss:.4f}",
        f"loss (avg of first/last 10%): {s.first_loss_avg:.4f} -> {s.last_loss_avg:.4f}",
        f"s/step:      {s.s_per_step:.4f}" if s.s_per_step else "s/step:      (not logged)",
        f"tokens/s:    {s.tokens_per_s:.0f} per device"
        if s.tokens_per_s
        else "tokens/s:    (not logged)",
    ]
    for tag, v in sorted(s.memory.items()):
        lines.append(f"memory:      {tag} max {v:.2f}")
    if not s.memory:
        lines.append("memory:      (not logged)")
    if s.missing:
        lines.append(
            f"not logged:  {', '.join(s.missing)} (tags: {', '.join(sorted(s.tags.values()))})"
        )
    stride = max(1, len(s.loss_curve) // rows)
    picked = s.loss_curve[::stride]
    if picked[-1] != s.loss_curve[-1]:
        picked.append(s.loss_curve[-1])
    lines.append("loss curve:  " + "  ".join(f"{step}:{loss:.3f}" for step, loss in picked))
    if s.png:
        lines.append(f"plot:        {s.png}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.summary", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "run_dir", type=Path, help="run dir (or any dir holding the TensorBoard logs)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--png", type=Path, help="plot path (default RUN_DIR/summary/loss.png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        s = summarize(args.run_dir)
    except NoLogsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    s.png = str(plot(s, args.png or args.run_dir / "summary" / "loss.png"))
    if args.json:
        print(json.dumps(s.to_dict(), ensure_ascii=False))
    else:
        print(format_text(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
