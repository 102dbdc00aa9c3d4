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

from PIL import Image, ImageDraw, ImageFont

from data_tools.jsonl import atomic_write_text, write_jsonl_atomic

log = logging.getLogger(__name__)

STAMP_FILE = ".tiny_data.json"
BUILDER_VERSION = 1
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
_COMPANIES = (
    "深圳市购机汇网络有限公司",
    "广州晶东贸易有限公司",
    "北京星河科技有限公司",
    "上海云图信息技术有限公司",
)
_GOODS = ("办公用品", "打印机墨盒", "技术服务费", "手机", "运输费", "软件")


@dataclass(frozen=True)
class TinyDataSpec:
    invoices: int = 24
    variants_per_image: int = 3
    seed: int = 0
    format: str = "paddleformers"
    val_ratio: float = 0.2
    width: int = 280
    height: int = 196


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def synth_fields(rng: random.Random) -> dict[str, Any]:
    """One invoice's truth in the canonical vat_invoice schema (a subset of its keys)."""
    amount = rng.randint(100, 99999) + rng.randint(0, 99) / 100
    tax = round(amount * 0.13, 2)
    return {
        "发票代码": _digits(rng, 10),
        "发票号码": _digits(rng, 8),
        "开票日期": f"{rng.randint(2016, 2025)}年{rng.randint(1, 12):02d}月{rng.randint(1, 28):02d}日",
        "购买方": {"名称": rng.choice(_COMPANIES), "纳税人识别号": _digits(rng, 15)},
        "货物或应税劳务、服务": [
            {"名称": rng.choice(_GOODS), "数量": str(rng.randint(1, 9)), "金额": f"{amount:.2f}"}
        ],
        "价税合计（小写）": f"¥{amount + tax:.2f}",
        "销售方": {"名称": rng.choice(_COMPANIES), "纳税人识别号": _digits(rng, 15)},
    }


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def render(fields: dict[str, Any], path: Path, spec: TinyDataSpec) -> None:
    """Draw the values (and, with a CJK font, the keys) on a white page."""
    font = _font(12)
    cjk = not isinstance(font, ImageFont.ImageFont)
    img = Image.new("RGB", (spec.width, spec.height), "white")
    draw = ImageDraw.Draw(img)
    rows = [
        ("发票代码", fields["发票代码"]),
        ("发票号码", fields["发票号码"]),
        ("开票日期", fields["开票日期"]),
        ("购买方", fields["购买方"]["纳税人识别号"]),
        ("金额", fields["货物或应税劳务、服务"][0]["金额"]),
        ("价税合计", fields["价税合计（小写）"]),
        ("销售方", fields["销售方"]["纳税人识别号"]),
    ]
    for i, (key, value) in enumerate(rows):
        text = f"{key}: {value}" if cjk else value.encode("ascii", "ignore").decode()
        draw.text((8, 8 + i * 24), text, fill="black", font=font)
    img.save(path)


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
        fields = synth_fields(rng)
        name = f"inv{i:04d}.png"
        render(fields, images / name, spec)
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
