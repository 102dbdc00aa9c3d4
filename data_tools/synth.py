"""Synthetic Chinese VAT invoices: the project's embedded default data.

A user's clone has no invoices, yet `make demo`, the CPU training run, the tests and the
benchmarks need some. `synth_fields(rng)` draws canonical `vat_invoice` fields
(`configs/schemas/vat_invoice.yaml`, the keys and order of the hand-checked fixtures) that a
real invoice could carry:

* 发票代码 (10 digits: region, year, batch, kind) and 发票号码 (8 digits); the title names the
  region the code belongs to; 开票日期 `YYYY年MM月DD日`;
* buyer and seller in a coherent city (district, phone area code, bank branch) with an
  18-character unified social credit code: its organisation-code part carries a valid
  GB 11714 check character and the whole code a valid GB 32100-2015 one;
* 1-5 line items of one kind of business (goods, transport, services, a small-scale
  seller), tax-classified names (`*计算机*笔记本电脑`) from 2018 on, tax rates as they were on
  the invoice date (17/16/13 %, 11/10/9 %, 6 %, 3 %), unit prices either exact or derived
  from a tax-inclusive price (8 decimals, as printed), an optional discount line with negative
  amounts;
* exact arithmetic: 金额 = round(数量 × 单价, 2), 税额 = round(金额 × 税率, 2), line amounts and
  taxes add up to 合计, 合计 金额 + 税额 = 价税合计（小写） = 价税合计（大写）;
* a 4 × 27-character 密码区 and three clerks' names.

`render_invoice` draws the fields as an invoice image with a CJK font (`$INVOICE_FONT`, or a
system font such as Debian's `fonts-wqy-zenhei`); every labelled value is printed in full
(long names wrap, text shrinks to fit), so an image never hides part of its label.

    python -m data_tools.synth --out-dir DIR --n 24 --seed 0 [--size 1400x900] [--no-images]

writes `DIR/images/<id>.jpg` and `DIR/labels.jsonl` (image paths relative to it), the labels
last, each file atomically. Record `i` depends only on `(seed, i)`: the same seed gives the
same records and the same image bytes, and `--n 100` extends `--n 20`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from data_tools.jsonl import atomic_writer, write_jsonl_atomic
from data_tools.normalize import amount_to_words
from data_tools.qa import USCC_CHARS, uscc_check_char
from data_tools.records import LabelRecord

log = logging.getLogger("data_tools.synth")

DEFAULT_SIZE = (1400, 900)
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # Debian/Ubuntu fonts-wqy-zenhei
    "/usr/share/fonts/wqy-zenhei/wqy-zenhei.ttc",  # Fedora
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",  # macOS
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",  # Windows
    "C:/Windows/Fonts/simhei.ttf",
)
FONT_HELP = (
    "install one (Debian/Ubuntu: `sudo apt-get install fonts-wqy-zenhei`, which `make setup` "
    "does when run as root) or point INVOICE_FONT at a .ttf/.ttc/.otf with Chinese glyphs"
)

# ---------------------------------------------------------------- vocabulary

_CENT = Decimal("0.01")
_PRICE8 = Decimal("0.00000001")
_CIPHER = "0123456789+-*/<>"


@dataclass(frozen=True)
class City:
    region: str  # the invoice title's region (广东, 深圳, ...)
    region_code: str  # first 4 digits of 发票代码
    name: str
    area_code: str  # telephone
    districts: tuple[tuple[str, str], ...]  # (district, 6-digit administrative division code)


_CITIES = (
    City("广东", "4400", "广州市", "020", (("天河区", "440106"), ("越秀区", "440104"),
         ("海珠区", "440105"), ("黄埔区", "440112"), ("番禺区", "440113"))),
    City("广东", "4400", "佛山市", "0757", (("禅城区", "440604"), ("南海区", "440605"),
         ("顺德区", "440606"))),
    City("广东", "4400", "东莞市", "0769", (("南城街道", "441900"), ("松山湖", "441900"))),
    City("深圳", "4403", "深圳市", "0755", (("福田区", "440304"), ("罗湖区", "440303"),
         ("南山区", "440305"), ("宝安区", "440306"), ("龙岗区", "440307"), ("龙华区", "440309"))),
    City("北京", "1100", "北京市", "010", (("东城区", "110101"), ("西城区", "110102"),
         ("朝阳区", "110105"), ("丰台区", "110106"), ("海淀区", "110108"))),
    City("上海", "3100", "上海市", "021", (("黄浦区", "310101"), ("徐汇区", "310104"),
         ("静安区", "310106"), ("闵行区", "310112"), ("浦东新区", "310115"))),
    City("浙江", "3300", "杭州市", "0571", (("西湖区", "330106"), ("滨江区", "330108"),
         ("余杭区", "330110"))),
    City("江苏", "3200", "南京市", "025", (("玄武区", "320102"), ("鼓楼区", "320106"),
         ("江宁区", "320115"))),
    City("江苏", "3200", "苏州市", "0512", (("吴中区", "320506"), ("姑苏区", "320508"))),
    City("四川", "5100", "成都市", "028", (("锦江区", "510104"), ("金牛区", "510106"),
         ("武侯区", "510107"))),
    City("湖北", "4200", "武汉市", "027", (("江汉区", "420103"), ("武昌区", "420106"),
         ("洪山区", "420111"))),
    City("山东", "3700", "济南市", "0531", (("历下区", "370102"), ("市中区", "370103"))),
    City("青岛", "3702", "青岛市", "0532", (("市南区", "370202"), ("崂山区", "370212"))),
    City("厦门", "3502", "厦门市", "0592", (("思明区", "350203"), ("湖里区", "350206"))),
)  # fmt: skip

_ROADS = ("人民路", "解放路", "建设路", "中山路", "科技园路", "长江路", "黄河路", "滨江大道",
          "创业大道", "工业园凤凰三横路", "民治大道", "高新南一道", "文三路", "学院路", "金融街")  # fmt: skip
_BUILDINGS = ("科技大厦", "国际商务中心", "创新园", "金融中心", "产业园", "广场")
_NAME_HEADS = ("购机汇", "晶东", "星河", "云图", "华信", "博远", "中联", "金桥", "海创", "新达",
               "恒通", "瑞丰", "嘉禾", "远航", "汇智", "鼎盛", "锦程", "宏图", "天成", "卓越")  # fmt: skip
_NAME_TAILS = ("网络科技", "贸易", "商贸", "科技", "信息技术", "电子", "物流", "文化传媒",
               "实业", "建设工程", "餐饮管理", "办公设备", "供应链管理", "医疗器械")  # fmt: skip
_COMPANY_FORMS = ("有限公司", "有限公司", "有限公司", "股份有限公司", "有限责任公司")
_BANKS = (  # (name, account digits)
    ("中国工商银行股份有限公司{city}{branch}支行", 19),
    ("中国建设银行股份有限公司{city}{branch}支行", 20),
    ("中国农业银行{city}{branch}支行", 19),
    ("中国银行{city}{branch}支行", 12),
    ("招商银行{city}{branch}支行", 15),
    ("交通银行{city}{branch}支行", 21),
    ("工行{city}{branch}支行", 19),
)
_BRANCHES = ("园岭", "科技园", "城南", "城北", "开发区", "高新", "营业部", "新城", "中山路", "人民路")  # fmt: skip
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁宋郑谢韩唐冯"
_GIVEN = "梅雪秋燕明洋静伟婷磊芳军敏丽强平刚杰娟涛超霞勇艳华建玲红"


@dataclass(frozen=True)
class Product:
    category: str  # the tax classification printed as *category* from 2018 on
    name: str
    specs: tuple[str, ...]
    unit: str
    low: float  # unit price range, tax excluded
    high: float
    qty: tuple[int, int]  # quantity range
    qty_decimals: int = 0  # 吨, 千克: quantities with decimals
    lump_sum: bool = False  # services: often printed with no quantity, unit or price


_GOODS = (
    Product("计算机", "笔记本电脑", ("ThinkPad E14", "MateBook 14", "X1 Carbon"), "台", 3000, 15000, (1, 10)),
    Product("计算机外部设备", "激光打印机", ("M1136", "LBP2900", "P1106"), "台", 800, 3500, (1, 5)),
    Product("计算机外部设备", "显示器", ("27英寸", "24英寸 P2422H"), "台", 800, 4000, (1, 20)),
    Product("计算机外部设备", "硒鼓", ("CF388A", "CE285A", "TN-2325"), "个", 80, 600, (1, 30)),
    Product("纸制品", "A4复印纸", ("70g 500张/包", "80g"), "箱", 100, 260, (1, 50)),
    Product("家具", "办公椅", ("BG-02", "人体工学"), "把", 200, 2000, (1, 40)),
    Product("家具", "办公桌", ("1400*700", "1600*800"), "张", 500, 3000, (1, 20)),
    Product("通信设备", "小米 红米 3 全网通版 时尚金色 移动联通电信4G手机 双卡双待", ("红米3",), "个", 500, 900, (1, 10)),
    Product("通信设备", "手机", ("iPhone 13", "Mate 40"), "部", 3000, 8000, (1, 5)),
    Product("金属制品", "不锈钢螺栓", ("M8*30", "M10*40"), "个", 0.2, 5, (100, 5000)),
    Product("电线电缆", "电力电缆", ("YJV-3*4", "BV-2.5"), "米", 3, 60, (50, 2000)),
    Product("钢材", "热轧钢板", ("Q235B 10mm",), "吨", 3500, 6000, (1, 30), qty_decimals=3),
    Product("塑料制品", "聚丙烯颗粒", ("PP T30S",), "千克", 7, 15, (100, 5000), qty_decimals=2),
    Product("日用杂品", "办公用品", ("",), "批", 100, 5000, (1, 1)),
)  # fmt: skip
_REDUCED = (  # 11 % → 10 % → 9 %
    Product("运输服务", "国内道路货物运输服务", ("",), "次", 300, 20000, (1, 3), lump_sum=True),
    Product("建筑服务", "工程服务", ("",), "项", 5000, 90000, (1, 1), lump_sum=True),
    Product("谷物", "大米", ("5kg", "10kg"), "袋", 30, 120, (1, 200)),
    Product("食用植物油", "花生油", ("5L",), "桶", 80, 200, (1, 100)),
)  # fmt: skip
_SERVICES = (  # 6 %
    Product("信息技术服务", "软件开发服务", ("",), "项", 5000, 90000, (1, 1), lump_sum=True),
    Product("现代服务", "技术服务费", ("",), "项", 1000, 50000, (1, 1), lump_sum=True),
    Product("现代服务", "咨询服务费", ("",), "次", 1000, 30000, (1, 3), lump_sum=True),
    Product("现代服务", "广告服务费", ("",), "项", 2000, 60000, (1, 1), lump_sum=True),
    Product("生活服务", "会议服务费", ("",), "次", 1000, 20000, (1, 2), lump_sum=True),
    Product("餐饮服务", "餐费", ("",), "次", 100, 3000, (1, 1), lump_sum=True),
    Product("现代服务", "物业管理费", ("",), "月", 500, 8000, (1, 12)),
)  # fmt: skip
_SMALL_SCALE = (  # a small-scale taxpayer's goods at 3 %
    _GOODS[4], _GOODS[5], _GOODS[3], _GOODS[13], _REDUCED[2],
)  # fmt: skip


def _rate(kind: str, day: date) -> Decimal:
    """The VAT rate (percent) of a kind of supply on a given day."""
    if kind == "service":
        return Decimal(6)
    if kind == "small":
        return Decimal(3)
    standard = kind == "goods"
    if day < date(2018, 5, 1):
        return Decimal(17 if standard else 11)
    if day < date(2019, 4, 1):
        return Decimal(16 if standard else 10)
    return Decimal(13 if standard else 9)


# ---------------------------------------------------------------- helpers


def _r2(d: Decimal) -> Decimal:
    return d.quantize(_CENT, rounding=ROUND_HALF_UP)


def _money(d: Decimal) -> str:
    return str(_r2(d))


def _plain(d: Decimal) -> str:
    """A number as printed: no exponent, no trailing zeros after the point."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _percent(rate: Decimal) -> str:
    return f"{_plain(rate)}%"


def org_code_check_char(first8: str) -> str:
    """GB 11714-1997 check character of an organisation code (digits and A-Z)."""
    if len(first8) != 8 or not all(c.isdigit() or "A" <= c <= "Z" for c in first8):
        raise ValueError(f"an organisation code body is 8 digits or capitals, got {first8!r}")
    values = [int(c) if c.isdigit() else ord(c) - 55 for c in first8]
    total = sum(v * w for v, w in zip(values, (3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def taxpayer_id(rng: random.Random, division: str | None = None) -> str:
    """A company's 18-character unified social credit code (统一社会信用代码).

    `9` (registered by market regulation) + `1` (enterprise) + the 6-digit division code +
    a 9-character organisation code (older all-digit codes, or the `MA` codes issued since
    2015) with its GB 11714 check character + the GB 32100-2015 check character.
    """
    division = division or rng.choice(rng.choice(_CITIES).districts)[1]
    if rng.random() < 0.5:
        body = _digits(rng, 8)
    else:
        tail = "".join(rng.choice(USCC_CHARS) for _ in range(5))
        body = "MA" + rng.choice("0123456789") + tail
    first17 = "91" + division + body + org_code_check_char(body)
    check = uscc_check_char(first17)
    if check is None:  # pragma: no cover - every character above is in the USCC alphabet
        raise AssertionError(f"not a USCC body: {first17}")
    return first17 + check


def _person(rng: random.Random) -> str:
    given = "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2, 2))))
    return rng.choice(_SURNAMES) + given


def _company(rng: random.Random, city: City) -> str:
    tail = rng.choice(_NAME_TAILS)
    return f"{city.name}{rng.choice(_NAME_HEADS)}{tail}{rng.choice(_COMPANY_FORMS)}"


def _phone(rng: random.Random, city: City) -> str:
    if rng.random() < 0.15:
        return "1" + rng.choice("3589") + _digits(rng, 9)
    number = rng.choice("2345678") + _digits(rng, 7)
    return f"{city.area_code}-{number}" if rng.random() < 0.7 else number


def _party(rng: random.Random, city: City, *, minimal: bool = False) -> dict[str, str]:
    district, division = rng.choice(city.districts)
    address = f"{city.name}{district}{rng.choice(_ROADS)}{rng.randint(1, 999)}号"
    if rng.random() < 0.4:
        address += f"{rng.choice(_BUILDINGS)}{rng.choice('ABCD')}{rng.randint(1, 30)}{rng.randint(1, 20):02d}"
    bank, digits = rng.choice(_BANKS)
    bank = bank.format(city=city.name.removesuffix("市"), branch=rng.choice(_BRANCHES))
    sep = rng.choice(("", " "))
    party = {
        "名称": _company(rng, city),
        "纳税人识别号": taxpayer_id(rng, division),
        "地址、电话": f"{address}{sep}{_phone(rng, city)}",
        "开户行及账号": f"{bank}{sep}{_digits(rng, digits)}",
    }
    if minimal:  # 普通发票: buyers often leave the address and bank blank
        for key in ("地址、电话", "开户行及账号"):
            if rng.random() < 0.35:
                party[key] = ""
    return party


def _line(rng: random.Random, product: Product, rate: Decimal, tagged: bool) -> dict[str, str]:
    name = f"*{product.category}*{product.name}" if tagged else product.name
    row = {"名称": name, "规格型号": rng.choice(product.specs), "单位": product.unit}
    if product.lump_sum and rng.random() < 0.6:  # a service billed as one sum
        amount = _r2(Decimal(str(rng.uniform(product.low, product.high))))
        row.update({"规格型号": "", "单位": "", "数量": "", "单价": ""})
    else:
        q = Decimal(rng.randint(*product.qty))
        if product.qty_decimals:
            q += Decimal(rng.randint(0, 10**product.qty_decimals - 1)).scaleb(-product.qty_decimals)
        net = Decimal(str(rng.uniform(product.low, product.high)))
        if rng.random() < 0.5:  # price typed without tax: 2 decimals, exact
            price = _r2(net)
            price_text = _money(price)
        else:  # price typed with tax, the system prints the net price to 8 decimals
            gross = _r2(net * (1 + rate / 100))
            price = (gross / (1 + rate / 100)).quantize(_PRICE8, rounding=ROUND_HALF_UP)
            price_text = _plain(price)
            price = Decimal(price_text)
        amount = _r2(q * price)
        row.update({"数量": _plain(q), "单价": price_text})
    row["金额"] = _money(amount)
    row["税率"] = _percent(rate)
    row["税额"] = _money(amount * rate / 100)
    return row


def _discount(rng: random.Random, line: dict[str, str]) -> dict[str, str] | None:
    """A discount line for `line`: negative amount and tax, named with its share."""
    share = Decimal(rng.randint(1000, 60000)).scaleb(-3)  # 1.000 .. 60.000 %
    amount = -_r2(Decimal(line["金额"]) * share / 100)
    if amount == 0:
        return None
    rate = Decimal(line["税率"].rstrip("%"))
    return {
        "名称": f"折扣({share}%)" if rng.random() < 0.7 else f"折扣行数1({share}%)",
        "规格型号": "",
        "单位": "",
        "数量": "",
        "单价": "",
        "金额": _money(amount),
        "税率": line["税率"],
        "税额": _money(amount * rate / 100),
    }


def _items(rng: random.Random, kind: str, day: date) -> list[dict[str, str]]:
    tagged = day >= date(2018, 1, 1)  # tax-classification names, mandatory since 2018
    pool = {"goods": _GOODS, "reduced": _REDUCED, "service": _SERVICES, "small": _SMALL_SCALE}[kind]
    n = rng.choices((1, 2, 3, 4, 5), weights=(35, 25, 18, 12, 10))[0]
    products = rng.sample(pool, min(n, len(pool)))
    items = [_line(rng, p, _rate(kind, day), tagged) for p in products]
    if kind == "goods" and rng.random() < 0.2:  # a goods seller's freight line at the lower rate
        items.append(_line(rng, _REDUCED[0], _rate("reduced", day), tagged))
    if rng.random() < 0.15:
        i = rng.randrange(len(items))
        discount = _discount(rng, items[i])
        if discount is not None:
            items.insert(i + 1, discount)
    return items


# ---------------------------------------------------------------- records


def synth_fields(rng: random.Random) -> dict[str, Any]:
    """One invoice's canonical `vat_invoice` fields; the arithmetic holds exactly."""
    day = date(2016, 1, 1) + timedelta(
        days=rng.randrange((date(2025, 12, 31) - date(2016, 1, 1)).days)
    )
    kind = rng.choices(("goods", "reduced", "service", "small"), weights=(45, 15, 25, 15))[0]
    special = kind != "small" and rng.random() < 0.75  # 专用发票 (a small-scale seller: 普通)
    seller_city = rng.choice(_CITIES)
    buyer_city = seller_city if rng.random() < 0.6 else rng.choice(_CITIES)
    items = _items(rng, kind, day)
    amount = sum((Decimal(i["金额"]) for i in items), Decimal(0))
    tax = sum((Decimal(i["税额"]) for i in items), Decimal(0))
    total = amount + tax
    code_year = day.year - (1 if day.month <= 3 and rng.random() < 0.5 else 0)
    code = (
        seller_city.region_code
        + f"{code_year % 100:02d}"
        + str(rng.randint(1, 4))
        + rng.choice(("130", "160", "170") if special else ("120", "320", "620"))
    )
    clerks = [_person(rng) for _ in range(3)]
    return {
        "发票名称": f"{seller_city.region}增值税{'专用' if special else '普通'}发票",
        "发票代码": code,
        "发票号码": _digits(rng, 8),
        "开票日期": f"{day.year}年{day.month:02d}月{day.day:02d}日",
        "购买方": _party(rng, buyer_city, minimal=not special),
        "密码区": "\n".join("".join(rng.choice(_CIPHER) for _ in range(27)) for _ in range(4)),
        "货物或应税劳务、服务": items,
        "合计": {"金额": f"¥{_money(amount)}", "税额": f"¥{_money(tax)}"},
        "价税合计（大写）": amount_to_words(total),
        "价税合计（小写）": f"¥{_money(total)}",
        "销售方": _party(rng, seller_city),
        "收款人": clerks[0],
        "复核": clerks[1],
        "开票人": clerks[2],
    }


def record_id(idx: int, prefix: str = "synth") -> str:
    return f"{prefix}{idx:05d}"


def synth_record(rng: random.Random, idx: int | str, image: str | None = None) -> LabelRecord:
    """A label record: id `synth00042` for `idx=42` (or `idx` itself when a string), image
    `images/<id>.jpg` unless given."""
    rid = record_id(idx) if isinstance(idx, int) else idx
    return LabelRecord(
        id=rid,
        image=image if image is not None else f"images/{rid}.jpg",
        doc_type="vat_invoice",
        fields=synth_fields(rng),
        meta={"source": "synthetic", "generator": "data_tools.synth"},
    )


def record_rng(seed: int, idx: int) -> random.Random:
    """The generator of record `idx`: records do not depend on one another."""
    return random.Random(f"data_tools.synth:{seed}:{idx}")


# ---------------------------------------------------------------- fonts


class FontNotFoundError(RuntimeError):
    """No CJK font to render invoices with; the message says how to get one."""


def find_font() -> str:
    """A font with Chinese glyphs: `$INVOICE_FONT`, known system paths, then fontconfig."""
    env = os.environ.get("INVOICE_FONT")
    if env:
        if not Path(env).is_file():
            raise FontNotFoundError(f"INVOICE_FONT={env} is not a file; {FONT_HELP}")
        return env
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return path
    found = _fontconfig_cjk_font()
    if found:
        return found
    raise FontNotFoundError(f"no CJK font found for rendering invoices: {FONT_HELP}")


def _fontconfig_cjk_font() -> str | None:
    if shutil.which("fc-list") is None:
        return None
    try:
        out = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = sorted(
        line.split(":", 1)[0].strip()
        for line in out.splitlines()
        if line.strip().lower().endswith((".ttf:", ".ttc:", ".otf:", ".ttf", ".ttc", ".otf"))
    )
    return paths[0] if paths else None


@lru_cache(maxsize=128)
def _font(path: str, size: int, mono: bool = False) -> ImageFont.FreeTypeFont:
    if mono:  # wqy-zenhei.ttc face 1 is "WenQuanYi Zen Hei Mono"; other files: face 0
        try:
            font = ImageFont.truetype(path, size, index=1)
            if "mono" in " ".join(font.getname()).lower():
                return font
        except OSError:
            pass
    return ImageFont.truetype(path, size)


# ---------------------------------------------------------------- rendering

# Everything is laid out on a 1400 x 900 grid and scaled to the requested size.
_ITEM_COLS = (  # key, header, x0, x1, alignment
    ("名称", "货物或应税劳务、服务名称", 40, 400, "l"),
    ("规格型号", "规格型号", 400, 540, "l"),
    ("单位", "单位", 540, 610, "c"),
    ("数量", "数　量", 610, 720, "r"),
    ("单价", "单　价", 720, 860, "r"),
    ("金额", "金　额", 860, 1040, "r"),
    ("税率", "税率", 1040, 1110, "c"),
    ("税额", "税　额", 1110, 1360, "r"),
)
_PARTY_LABELS = (
    ("名称", "名　　　称："),
    ("纳税人识别号", "纳税人识别号："),
    ("地址、电话", "地 址、电 话："),
    ("开户行及账号", "开户行及账号："),
)


class _Canvas:
    """Drawing on the 1400 x 900 grid, scaled; text shrinks to fit a width, never cut."""

    def __init__(self, im: Image.Image, font_path: str) -> None:
        self.im = im
        self.draw = ImageDraw.Draw(im)
        self.font_path = font_path
        self.sx, self.sy = im.width / DEFAULT_SIZE[0], im.height / DEFAULT_SIZE[1]
        self.s = min(self.sx, self.sy)

    def font(self, pt: float, mono: bool = False) -> ImageFont.FreeTypeFont:
        return _font(self.font_path, max(5, round(pt * self.s)), mono)

    def fitting_font(
        self, text: str, pt: float, max_w: float | None, mono: bool = False
    ) -> ImageFont.FreeTypeFont:
        font = self.font(pt, mono)
        if max_w is None or not text:
            return font
        limit = max_w * self.sx
        while font.getlength(text) > limit and font.size > 5:
            font = _font(self.font_path, font.size - 1, mono)
        return font

    def text(
        self,
        x: float,
        y: float,
        s: str,
        pt: float,
        fill: tuple[int, int, int],
        *,
        anchor: str = "lm",
        max_w: float | None = None,
        mono: bool = False,
    ) -> None:
        if not s:
            return
        font = self.fitting_font(s, pt, max_w, mono)
        self.draw.text((x * self.sx, y * self.sy), s, font=font, fill=fill, anchor=anchor)

    def vtext(self, x: float, y0: float, y1: float, s: str, pt: float, fill: tuple) -> None:
        """Characters stacked vertically, spread over [y0, y1]."""
        step = (y1 - y0) / (len(s) + 1)
        for i, ch in enumerate(s, start=1):
            self.text(x, y0 + i * step, ch, pt, fill, anchor="mm")

    def line(self, x0: float, y0: float, x1: float, y1: float, fill: tuple, w: float = 2) -> None:
        self.draw.line(
            (x0 * self.sx, y0 * self.sy, x1 * self.sx, y1 * self.sy),
            fill=fill,
            width=max(1, round(w * self.s)),
        )

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, outline: tuple, w: float = 2
    ) -> None:
        self.draw.rectangle(
            (x0 * self.sx, y0 * self.sy, x1 * self.sx, y1 * self.sy),
            outline=outline,
            width=max(1, round(w * self.s)),
        )

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, outline: tuple, w: float) -> None:
        self.draw.ellipse(
            ((cx - rx) * self.sx, (cy - ry) * self.sy, (cx + rx) * self.sx, (cy + ry) * self.sy),
            outline=outline,
            width=max(1, round(w * self.s)),
        )

    def wrap(self, text: str, pt: float, max_w: float) -> list[str]:
        """Greedy character wrap at this font size (grid units)."""
        font = self.font(pt)
        limit = max_w * self.sx
        lines, cur = [], ""
        for ch in text:
            if cur and font.getlength(cur + ch) > limit:
                lines.append(cur.rstrip())
                cur = ch.lstrip()
            else:
                cur += ch
        if cur:
            lines.append(cur)
        return lines or [""]


def _s(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def render_invoice(
    fields: dict[str, Any],
    path: str | Path | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    font_path: str | None = None,
    quality: int = 90,
) -> Image.Image:
    """Draw `fields` as a VAT invoice of `size` (width, height); save it as JPEG to `path`
    (atomically) when given. Missing keys are left blank. Same fields → same bytes."""
    width, height = size
    if width < 50 or height < 30:
        raise ValueError(f"invoice size must be at least 50x30, got {width}x{height}")
    font_path = font_path or find_font()
    # the look (paper tint, printer offset, QR pattern) is drawn from the fields themselves
    look = random.Random(hashlib.sha256(repr(sorted(fields.items())).encode()).digest())
    special = "专用" in _s(fields.get("发票名称"))
    paper = (246 + look.randint(-4, 4), 248 + look.randint(-4, 4), 238 + look.randint(-6, 6))
    im = Image.new("RGB", (width, height), paper)
    c = _Canvas(im, font_path)
    form = (40, 110, 90) if special else (140, 85, 45)  # pre-printed frame and captions
    ink = (25, 35, 110) if look.random() < 0.6 else (30, 30, 30)  # printed data
    red = (205, 45, 45)
    dx, dy = look.uniform(-4, 4), look.uniform(-3, 3)  # the printer's misalignment

    def data(x: float, y: float, s: Any, pt: float, **kw: Any) -> None:
        c.text(x + dx, y + dy, _s(s), pt, kw.pop("fill", ink), **kw)

    # ---- header: QR block, title with the supervision seal, code, number, date
    for i in range(9):
        for j in range(9):
            if look.random() < 0.5 or (i < 3 and j < 3) or (i < 3 and j > 5) or (i > 5 and j < 3):
                x, y = 40 + j * 9, 25 + i * 9
                c.draw.rectangle(
                    (x * c.sx, y * c.sy, (x + 8) * c.sx, (y + 8) * c.sy), fill=(40, 80, 170)
                )
    data(135, 62, fields.get("发票代码"), 30, mono=True, max_w=260)
    c.ellipse(700, 62, 95, 42, red, 2)
    c.text(700, 38, "全国统一发票监制章", 11, red, anchor="mm")
    region = _s(fields.get("发票名称"))[:2]
    c.text(700, 86, f"{region}国家税务局监制", 11, red, anchor="mm", max_w=150)
    c.text(700, 60, _s(fields.get("发票名称")), 38, form, anchor="mm", max_w=520)
    c.line(470, 100, 930, 100, form, 2)
    c.line(470, 106, 930, 106, form, 2)
    c.text(700, 124, "抵　扣　联" if special else "发　票　联", 22, form, anchor="mm")
    c.text(990, 50, "№", 30, form, anchor="lm")
    data(1035, 50, fields.get("发票号码"), 34, mono=True, max_w=190)
    data(1235, 40, fields.get("发票代码"), 15, mono=True, max_w=120)
    data(1235, 62, fields.get("发票号码"), 15, mono=True, max_w=120)
    c.text(1000, 118, "开票日期：", 17, form)
    data(1110, 118, fields.get("开票日期"), 17, max_w=240)

    # ---- the frame
    top, bottom = 145, 775
    c.rect(40, top, 1360, bottom, form, 2)
    for y in (275, 310, 560, 600, 645):
        c.line(40, y, 1360, y, form, 2 if y in (275, 600, 645) else 1)

    def party(y0: float, y1: float, title: str, p: Any, right_title: str) -> None:
        p = p if isinstance(p, dict) else {}
        c.line(80, y0, 80, y1, form, 1)
        c.vtext(60, y0, y1, title, 17, form)
        step = (y1 - y0) / 4
        for i, (key, caption) in enumerate(_PARTY_LABELS):
            y = y0 + step * (i + 0.5)
            c.text(90, y, caption, 16, form, max_w=140)
            data(235, y, p.get(key), 17 if i != 1 else 20, max_w=595, mono=i == 1)
        c.line(840, y0, 840, y1, form, 1)
        c.line(880, y0, 880, y1, form, 1)
        c.vtext(860, y0, y1, right_title, 17, form)

    party(top, 275, "购买方", fields.get("购买方"), "密码区")
    cipher = _s(fields.get("密码区")).split("\n")
    for i, row in enumerate(cipher[:4]):
        data(890, top + 18 + i * 30, row, 21, mono=True, max_w=460)

    # ---- item table
    for _key, header, x0, x1, _align in _ITEM_COLS:
        if x0 > 40:
            c.line(x0, 275, x0, 600 if x0 in (860, 1110) else 560, form, 1)
        c.text((x0 + x1) / 2, 292, header, 16, form, anchor="mm", max_w=x1 - x0 - 6)
    items = [i for i in fields.get("货物或应税劳务、服务") or [] if isinstance(i, dict)]
    pt, rows = 17.0, []
    while True:  # shrink the table's text until every wrapped name fits the body
        rows = [c.wrap(_s(item.get("名称")), pt, 350) for item in items]
        line_h = pt * 1.35
        if sum(len(r) for r in rows) * line_h <= 240 or pt <= 6:
            break
        pt -= 1
    y = 318 + line_h / 2
    for item, name_lines in zip(items, rows, strict=True):
        for k, ln in enumerate(name_lines):
            data(50, y + k * line_h, ln, pt, max_w=344)
        for key, _header, x0, x1, align in _ITEM_COLS[1:]:
            value = _s(item.get(key))
            if align == "r":
                data(x1 - 8, y, value, pt, anchor="rm", max_w=x1 - x0 - 16)
            elif align == "c":
                data((x0 + x1) / 2, y, value, pt, anchor="mm", max_w=x1 - x0 - 16)
            else:
                data(x0 + 8, y, value, pt, max_w=x1 - x0 - 16)
        y += line_h * len(name_lines)
    totals = fields.get("合计") if isinstance(fields.get("合计"), dict) else {}
    c.text(220, 580, "合　　　　计", 17, form, anchor="mm")
    data(1030, 580, totals.get("金额"), 18, anchor="rm", max_w=160)
    data(1350, 580, totals.get("税额"), 18, anchor="rm", max_w=230)

    # ---- total in words and figures
    c.line(400, 600, 400, 645, form, 1)
    c.text(220, 622, "价税合计（大写）", 17, form, anchor="mm")
    c.ellipse(430 + dx, 622 + dy, 9, 9, ink, 2)  # ⊗, drawn: many CJK fonts lack the glyph
    c.line(424 + dx, 616 + dy, 436 + dx, 628 + dy, ink, 2)
    c.line(424 + dx, 628 + dy, 436 + dx, 616 + dy, ink, 2)
    data(450, 622, fields.get("价税合计（大写）"), 19, max_w=480)
    c.text(1000, 622, "（小写）", 17, form)
    data(1080, 622, fields.get("价税合计（小写）"), 20, max_w=270)

    # ---- seller, remarks, seal, signatures
    party(645, bottom, "销售方", fields.get("销售方"), "备　注")
    remark_lines = c.wrap(_s(fields.get("备注")), 15, 460) if fields.get("备注") else []
    for i, ln in enumerate(remark_lines[:4]):
        data(890, 662 + i * 28, ln, 15, max_w=460)
    seller = fields.get("销售方") if isinstance(fields.get("销售方"), dict) else {}
    if seller.get("名称") or seller.get("纳税人识别号"):
        cx, cy = 1200 + look.uniform(-40, 40), 712 + look.uniform(-10, 10)
        c.ellipse(cx, cy, 105, 58, red, 3)
        c.text(cx, cy - 30, _s(seller.get("名称")), 15, red, anchor="mm", max_w=150)
        c.text(cx, cy + 2, _s(seller.get("纳税人识别号")), 15, red, anchor="mm", max_w=190)
        c.text(cx, cy + 32, "发票专用章", 16, red, anchor="mm")
    for x, caption, key in (
        (60, "收款人：", "收款人"),
        (420, "复核：", "复核"),
        (760, "开票人：", "开票人"),
    ):
        c.text(x, 805, caption, 17, form)
        data(x + 17 * len(caption) + 8, 805, fields.get(key), 17, max_w=200)
    c.text(1080, 805, "销售方：（章）", 17, form)
    c.vtext(1380, 150, 770, "第二联：抵扣联" if special else "第二联：发票联", 13, form)

    if path is not None:
        _save_jpeg_atomic(im, Path(path), quality)
    return im


def _save_jpeg_atomic(im: Image.Image, path: Path, quality: int) -> None:
    with atomic_writer(path, binary=True, fsync=False) as fh:  # a rerun remakes it
        im.save(fh, format="JPEG", quality=quality)


# ---------------------------------------------------------------- dataset


def write_synthetic_dataset(
    out_dir: str | Path,
    n: int,
    *,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    images: bool = True,
    id_prefix: str = "synth",
) -> Path:
    """`out_dir/labels.jsonl` (+ `out_dir/images/<id>.jpg`); returns the labels path.

    The labels file is written last, so it only ever lists images that exist. With
    `images=False` it still names `images/<id>.jpg` (build datasets with image checks off).
    """
    out_dir = Path(out_dir)
    font_path = find_font() if images else None  # fail before any work
    records = []
    start = time.perf_counter()
    for i in range(n):
        rid = record_id(i, id_prefix)
        rec = synth_record(record_rng(seed, i), rid, f"images/{rid}.jpg")
        if images:
            render_invoice(rec.fields, out_dir / rec.image, size=size, font_path=font_path)
        records.append(rec)
    labels = out_dir / "labels.jsonl"
    write_jsonl_atomic(labels, (r.to_dict() for r in records))
    log.info(
        "wrote %d synthetic invoice(s)%s to %s in %.1f s",
        n,
        " with images" if images else "",
        out_dir,
        time.perf_counter() - start,
    )
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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(
        prog="python -m data_tools.synth",
        description="Write synthetic VAT invoices (JPEG) and their canonical labels.",
    )
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--n", type=int, default=24, help="number of invoices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_size, default=DEFAULT_SIZE, help="image WIDTHxHEIGHT")
    p.add_argument("--no-images", dest="images", action="store_false", help="labels only")
    p.add_argument("--id-prefix", default="synth", help="record ids are <prefix>00000, ...")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    try:
        labels = write_synthetic_dataset(
            args.out_dir,
            args.n,
            seed=args.seed,
            size=args.size,
            images=args.images,
            id_prefix=args.id_prefix,
        )
    except FontNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} synthetic invoice(s): {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
