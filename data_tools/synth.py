"""Synthetic Chinese VAT invoices: the project's embedded default data.

A user's clone has no invoices, yet `make demo`, the CPU training run, the tests and the
benchmarks need some. `synth_fields(rng)` draws canonical `vat_invoice` fields whose
arithmetic holds exactly (line amounts sum to 合计, amount + tax = 价税合计, 大写 = 小写,
quantity × unit price = amount) and whose taxpayer IDs carry a valid GB 32100-2015 check
character, so they pass label QA. `render_invoice` draws them as an invoice image with a
CJK font.

    python -m data_tools.synth --out-dir DIR --n 24 --seed 0 [--size 1400x900] [--no-images]

writes `DIR/images/*.jpg` and `DIR/labels.jsonl` (image paths relative to it). Same seed →
same records and the same image bytes.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import random
import sys
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from data_tools.jsonl import write_jsonl_atomic
from data_tools.normalize import amount_to_words
from data_tools.qa import USCC_CHARS, uscc_check_char
from data_tools.records import LabelRecord

log = logging.getLogger(__name__)

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
)

_PROVINCES = ("广东", "北京", "上海", "浙江", "江苏", "四川", "湖北", "山东")
_CITIES = ("深圳市", "广州市", "北京市", "上海市", "杭州市", "南京市", "成都市", "武汉市")
_DISTRICTS = ("南山区", "天河区", "海淀区", "浦东新区", "西湖区", "鼓楼区", "武侯区", "江汉区")
_STREETS = ("科技园路", "中山大道", "人民路", "建设路", "解放路", "工业园凤凰三横路", "滨江大道")
_NAME_HEADS = ("购机汇", "晶东", "星河", "云图", "华信", "博远", "中联", "金桥", "海创", "新达")
_NAME_TAILS = ("网络", "贸易", "科技", "信息技术", "电子", "物流", "文化传媒", "实业")
_BANKS = (
    "中国工商银行股份有限公司{city}{branch}支行",
    "中国建设银行{city}{branch}支行",
    "招商银行{city}{branch}支行",
    "中国银行{city}{branch}支行",
)
_BRANCHES = ("园岭", "科技园", "北京路", "中关村", "陆家嘴", "滨江", "高新")
_GOODS = (
    ("小米 红米3 全网通版 时尚金色 移动联通电信4G手机 双卡双待", "红米3", "个"),
    ("激光打印机", "M1136", "台"),
    ("打印机墨盒", "HP680", "盒"),
    ("办公椅", "BG-02", "把"),
    ("技术服务费", "", "项"),
    ("运输服务费", "", "次"),
    ("笔记本电脑", "ThinkPad E14", "台"),
    ("A4复印纸", "70g", "箱"),
    ("软件许可", "V3.0", "套"),
)
_PEOPLE = ("王梅", "张雪", "陈秋燕", "李明", "刘洋", "赵静", "孙伟", "周婷", "吴磊")
_RATES = ("13%", "9%", "6%", "3%")
_CIPHER = "0123456789+-*/<>"
_CENT = Decimal("0.01")


def _money(d: Decimal) -> str:
    return str(d.quantize(_CENT, rounding=ROUND_HALF_UP))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def taxpayer_id(rng: random.Random) -> str:
    """An 18-character unified social credit code with a valid check character."""
    head = rng.choice("9159") + rng.choice("1239")  # registration authority + entity type
    first17 = head + _digits(rng, 6) + "".join(rng.choice(USCC_CHARS) for _ in range(9))
    check = uscc_check_char(first17)
    assert check is not None
    return first17 + check


def _company(rng: random.Random) -> str:
    return f"{rng.choice(_CITIES)}{rng.choice(_NAME_HEADS)}{rng.choice(_NAME_TAILS)}有限公司"


def _party(rng: random.Random) -> dict[str, str]:
    city = rng.choice(_CITIES)
    address = f"{city}{rng.choice(_DISTRICTS)}{rng.choice(_STREETS)}{rng.randint(1, 999)}号"
    bank = rng.choice(_BANKS).format(city=city.removesuffix("市"), branch=rng.choice(_BRANCHES))
    return {
        "名称": _company(rng),
        "纳税人识别号": taxpayer_id(rng),
        "地址、电话": f"{address} {rng.choice(('0755', '020', '010', '021'))}-{_digits(rng, 8)}",
        "开户行及账号": f"{bank}{_digits(rng, rng.choice((16, 19)))}",
    }


def _items(rng: random.Random) -> list[dict[str, str]]:
    rate_str = rng.choice(_RATES)
    rate = Decimal(rate_str.rstrip("%")) / 100
    items = []
    for name, model, unit in rng.sample(_GOODS, rng.randint(1, 4)):
        qty = rng.randint(1, 20)
        price = Decimal(rng.randint(100, 500_000)) / 100
        amount = price * qty
        items.append(
            {
                "名称": name,
                "规格型号": model,
                "单位": unit,
                "数量": str(qty),
                "单价": _money(price),
                "金额": _money(amount),
                "税率": rate_str,
                "税额": _money(amount * rate),
            }
        )
    if rng.random() < 0.2:  # a discount line, as on real invoices (negative amount and tax)
        share = Decimal(rng.randint(5, 60)) / 100
        discount = -(Decimal(items[0]["金额"]) * share).quantize(_CENT, rounding=ROUND_HALF_UP)
        items.append(
            {
                "名称": f"折扣({share * 100:.0f}%)",
                "规格型号": "",
                "单位": "",
                "数量": "",
                "单价": "",
                "金额": _money(discount),
                "税率": rate_str,
                "税额": _money(discount * rate),
            }
        )
    return items


def synth_fields(rng: random.Random) -> dict[str, Any]:
    """One invoice's canonical `vat_invoice` fields; the arithmetic holds exactly."""
    items = _items(rng)
    amount = sum((Decimal(i["金额"]) for i in items), Decimal(0))
    tax = sum((Decimal(i["税额"]) for i in items), Decimal(0))
    total = amount + tax
    province = rng.choice(_PROVINCES)
    kind = rng.choice(("专用发票", "普通发票"))
    year, month, day = rng.randint(2016, 2025), rng.randint(1, 12), rng.randint(1, 28)
    cipher = "\n".join("".join(rng.choice(_CIPHER) for _ in range(27)) for _ in range(4))
    return {
        "发票名称": f"{province}增值税{kind}",
        "发票代码": _digits(rng, 10 if rng.random() < 0.8 else 12),
        "发票号码": _digits(rng, 8),
        "开票日期": f"{year}年{month:02d}月{day:02d}日",
        "购买方": _party(rng),
        "密码区": cipher,
        "货物或应税劳务、服务": items,
        "合计": {"金额": f"¥{_money(amount)}", "税额": f"¥{_money(tax)}"},
        "价税合计（大写）": amount_to_words(total),
        "价税合计（小写）": f"¥{_money(total)}",
        "销售方": _party(rng),
        "收款人": rng.choice(_PEOPLE),
        "复核": rng.choice(_PEOPLE),
        "开票人": rng.choice(_PEOPLE),
    }


def synth_record(rng: random.Random, record_id: str, image: str) -> LabelRecord:
    return LabelRecord(
        id=record_id,
        image=image,
        doc_type="vat_invoice",
        fields=synth_fields(rng),
        meta={"source": "synthetic"},
    )


# ---------------------------------------------------------------- rendering


class FontNotFoundError(RuntimeError):
    pass


def find_font() -> str:
    """A CJK font: `$INVOICE_FONT`, else a known system path."""
    env = os.environ.get("INVOICE_FONT")
    if env:
        if not Path(env).is_file():
            raise FontNotFoundError(f"INVOICE_FONT={env} is not a file")
        return env
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return path
    raise FontNotFoundError(
        "no CJK font found for rendering invoices: install one (Debian/Ubuntu: "
        "`apt-get install fonts-wqy-zenhei`, done by `make setup` as root) or set "
        "INVOICE_FONT=/path/to/font.ttf"
    )


@lru_cache(maxsize=32)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def render_invoice(
    fields: dict[str, Any], path: str | Path | None = None, *, size: tuple[int, int] = (1400, 900)
) -> Image.Image:
    """Draw `fields` as a VAT invoice; save it as JPEG to `path` (atomically) if given."""
    font_path = find_font()
    w, h = size
    u = w / 1400  # layout unit: everything below is drawn on a 1400-wide grid
    im = Image.new("RGB", (w, h), (250, 248, 240))
    d = ImageDraw.Draw(im)
    ink, frame = (20, 20, 20), (150, 90, 60)

    def text(x: float, y: float, s: str, pt: float = 18, fill=ink, anchor: str = "la") -> None:
        d.text(
            (x * u, y * u),
            s,
            font=_font(font_path, max(6, round(pt * u))),
            fill=fill,
            anchor=anchor,
        )

    def box(x0: float, y0: float, x1: float, y1: float) -> None:
        d.rectangle((x0 * u, y0 * u, x1 * u, y1 * u), outline=frame, width=max(1, round(2 * u)))

    text(700, 30, fields.get("发票名称", ""), 34, fill=(130, 40, 30), anchor="ma")
    text(1000, 30, f"发票代码  {fields.get('发票代码', '')}", 17)
    text(1000, 58, f"发票号码  {fields.get('发票号码', '')}", 17)
    text(1000, 86, f"开票日期  {fields.get('开票日期', '')}", 17)

    def party(y: float, title: str, p: dict[str, str]) -> None:
        box(40, y, 860, y + 140)
        text(52, y + 10, title, 18, fill=frame)
        for i, key in enumerate(("名称", "纳税人识别号", "地址、电话", "开户行及账号")):
            text(150, y + 10 + i * 32, f"{key}：{p.get(key, '')}", 16)

    party(125, "购买方", fields.get("购买方", {}))
    box(860, 125, 1360, 265)
    text(872, 133, "密码区", 16, fill=frame)
    for i, line in enumerate(str(fields.get("密码区", "")).split("\n")[:4]):
        text(945, 137 + i * 31, line, 17)

    cols = (("名称", 40, 400), ("规格型号", 400, 550), ("单位", 550, 620), ("数量", 620, 700),
            ("单价", 700, 860), ("金额", 860, 1040), ("税率", 1040, 1120), ("税额", 1120, 1360))  # fmt: skip
    top = 265
    box(40, top, 1360, top + 300)
    for name, x0, _ in cols:
        text(
            x0 + 8, top + 8, "货物或应税劳务、服务名称" if name == "名称" else name, 15, fill=frame
        )
    for r, item in enumerate(fields.get("货物或应税劳务、服务", [])[:6]):
        y = top + 42 + r * 36
        for name, x0, x1 in cols:
            value = str(item.get(name, ""))
            max_chars = max(1, int((x1 - x0 - 12) / 15))
            text(x0 + 8, y, value if len(value) <= max_chars else value[: max_chars - 1] + "…", 15)
    totals = fields.get("合计", {})
    text(52, top + 262, "合　　计", 16, fill=frame)
    text(868, top + 262, str(totals.get("金额", "")), 16)
    text(1128, top + 262, str(totals.get("税额", "")), 16)

    box(40, 565, 1360, 615)
    text(52, 578, "价税合计（大写）", 17, fill=frame)
    text(250, 578, str(fields.get("价税合计（大写）", "")), 18)
    text(1000, 578, f"（小写）{fields.get('价税合计（小写）', '')}", 18)
    party(615, "销售方", fields.get("销售方", {}))
    box(860, 615, 1360, 755)
    text(872, 623, "备注", 16, fill=frame)
    text(872, 660, str(fields.get("备注", "")), 15)
    text(60, 785, f"收款人：{fields.get('收款人', '')}", 17)
    text(420, 785, f"复核：{fields.get('复核', '')}", 17)
    text(760, 785, f"开票人：{fields.get('开票人', '')}", 17)

    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    return im


# ---------------------------------------------------------------- dataset


def write_synthetic_dataset(
    out_dir: str | Path,
    n: int,
    *,
    seed: int = 0,
    size: tuple[int, int] = (1400, 900),
    images: bool = True,
    id_prefix: str = "synth",
) -> Path:
    """`out_dir/labels.jsonl` (+ `out_dir/images/*.jpg`); returns the labels path."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    records = []
    for i in range(n):
        name = f"{id_prefix}{i:05d}"
        rec = synth_record(rng, name, f"images/{name}.jpg")
        if images:
            render_invoice(rec.fields, out_dir / rec.image, size=size)
        records.append(rec)
    labels = out_dir / "labels.jsonl"
    write_jsonl_atomic(labels, (r.to_dict() for r in records))
    return labels


def _size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, got {value!r}") from None
    if w < 100 or h < 60:
        raise argparse.ArgumentTypeError("--size must be at least 100x60")
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data_tools.synth", description="Write synthetic VAT invoices + labels."
    )
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_size, default=(1400, 900), help="image WIDTHxHEIGHT")
    p.add_argument("--no-images", dest="images", action="store_false", help="labels only")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    try:
        labels = write_synthetic_dataset(
            args.out_dir, args.n, seed=args.seed, size=args.size, images=args.images
        )
    except FontNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} synthetic invoice(s): {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
