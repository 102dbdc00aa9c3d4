"""A small synthetic invoice SFT dataset for the CPU demo run, made by the dataset builder.

`build_tiny_dataset(out_dir)` writes `out_dir/labels.jsonl` (canonical label records)
with rendered invoice images under `out_dir/images/`, then runs
`python -m data_tools.build_dataset` on them into `out_dir/sft/` (train.jsonl,
val.jsonl, stats.json). Everything is seeded: same arguments, same files. A dir
that already holds the dataset for the same arguments is reused.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_tools.jsonl import atomic_write_text, write_jsonl_atomic
from data_tools.prompts import project
from data_tools.synth import render_invoice, synth_fields

log = logging.getLogger(__name__)

STAMP_FILE = ".tiny_data.json"
BUILDER_VERSION = 2
# The tiny run trains on a slice of each synthetic invoice: short answers keep a CPU step
# fast and the sequence within max_seq_len. The slice is a prompt-grammar request.
TINY_REQUEST: dict[str, Any] = {
    "发票代码": "",
    "发票号码": "",
    "开票日期": "",
    "购买方": {"名称": "", "纳税人识别号": ""},
    "货物或应税劳务、服务": [{"名称": "", "数量": "", "金额": ""}],
    "价税合计（小写）": "",
    "销售方": {"名称": "", "纳税人识别号": ""},
}


@dataclass(frozen=True)
class TinyDataSpec:
    invoices: int = 24
    variants_per_image: int = 3
    seed: int = 0
    format: str = "paddleformers"
    val_ratio: float = 0.2
    width: int = 280
    height: int = 196


def tiny_fields(rng: random.Random) -> dict[str, Any]:
    """A synthetic invoice (`data_tools.synth`), cut to `TINY_REQUEST` and its first item."""
    fields = synth_fields(rng)
    fields["货物或应税劳务、服务"] = fields["货物或应税劳务、服务"][:1]
    return project(fields, TINY_REQUEST)


def _stamp(spec: TinyDataSpec) -> dict[str, Any]:
    return {"builder_version": BUILDER_VERSION, "spec": asdict(spec)}


def is_tiny_dataset(out_dir: Path, spec: TinyDataSpec) -> bool:
    stamp = out_dir / STAMP_FILE
    if not stamp.is_file() or not (out_dir / "sft" / "train.jsonl").is_file():
        return False
    try:
        return json.loads(stamp.read_text(encoding="utf-8")) == _stamp(spec)
    except (OSError, json.JSONDecodeError):
        return False


def build_tiny_dataset(out_dir: Path, spec: TinyDataSpec | None = None) -> Path:
    """Write labels, images and the SFT files; returns the SFT dir (`out_dir/sft`)."""
    from data_tools import build_dataset

    spec = spec or TinyDataSpec()
    out_dir = Path(out_dir).absolute()
    if is_tiny_dataset(out_dir, spec):
        return out_dir / "sft"
    rng = random.Random(spec.seed)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    labels = []
    for i in range(spec.invoices):
        fields = tiny_fields(rng)
        name = f"inv{i:04d}.jpg"
        render_invoice(fields, images / name, size=(spec.width, spec.height))
        labels.append(
            {
                "id": f"tiny{i:04d}",
                "image": f"images/{name}",
                "doc_type": "vat_invoice",
                "fields": fields,
                "meta": {"source": "training.tiny_data", "seed": spec.seed},
            }
        )
    labels_path = out_dir / "labels.jsonl"
    write_jsonl_atomic(labels_path, labels)
    argv = [
        "--labels",
        str(labels_path),
        "--out-dir",
        str(out_dir / "sft"),
        "--format",
        spec.format,
        "--variants-per-image",
        str(spec.variants_per_image),
        "--val-ratio",
        str(spec.val_ratio),
        "--seed",
        str(spec.seed),
    ]
    rc = build_dataset.main(argv)
    if rc != 0:
        raise RuntimeError(f"python -m data_tools.build_dataset {' '.join(argv)} failed ({rc})")
    atomic_write_text(out_dir / STAMP_FILE, json.dumps(_stamp(spec)) + "\n")
    log.info("built tiny SFT dataset in %s", out_dir / "sft")
    return out_dir / "sft"
