"""Value normalisation by field type: what makes `¥507.82` equal `507.82`.

Every function takes the printed string and returns a canonical one, so two values
are "the same" when their canonical strings are equal. A value that cannot be read as
its type falls back to its normalised text, so nothing ever raises here.

| type              | canonical form                                  | example                         |
| ----------------- | ----------------------------------------------- | ------------------------------- |
| `text`            | NFKC, whitespace runs → one space, no space      | `小米 红米 3` → `小米红米3`        |
|                   | next to a CJK character                          |                                 |
| `amount`          | Decimal, no sign/`RMB`/`元`/separators, no        | `¥3,495.00` → `3495`            |
|                   | trailing zeros                                   |                                 |
| `amount_in_words` | the amount it spells (大写 → Decimal)             | `叁仟肆佰玖拾伍圆整` → `3495`      |
| `number`          | Decimal without trailing zeros                   | `5.00` → `5`                    |
| `date`            | ISO `YYYY-MM-DD`                                 | `2016年06月12日` → `2016-06-12`   |
| `code`, `id`      | NFKC, no whitespace or dashes, upper case        | `4400 1541 30` → `4400154130`   |
| `percent`         | number + `%`                                     | `17 %`, `0.17` → `17%`          |
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from decimal import Decimal, InvalidOperation

FIELD_TYPES = ("text", "amount", "amount_in_words", "number", "date", "code", "id", "percent")

_CJK = (
    r"\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff"
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
)
_WS = re.compile(r"\s+")
_SPACE_NEXT_TO_CJK = re.compile(rf"(?<=[{_CJK}]) | (?=[{_CJK}])")


def normalize_text(value: str) -> str:
    """NFKC; whitespace (line breaks included) collapsed; spaces beside CJK removed."""
    s = unicodedata.normalize("NFKC", str(value))
    s = _WS.sub(" ", s).strip()
    return _SPACE_NEXT_TO_CJK.sub("", s)


def normalize_code(value: str) -> str:
    """Codes and IDs: NFKC, whitespace and dashes removed, upper case."""
    s = unicodedata.normalize("NFKC", str(value))
    return re.sub(r"[\s\-]+", "", s).upper()


# ---------------------------------------------------------------- numbers

_CURRENCY = re.compile(r"(RMB|CNY|USD|EUR|人民币|圆|元|[¥$€£₩])", re.IGNORECASE)


def _decimal_str(d: Decimal) -> str:
    s = format(d.normalize(), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def parse_number(value: str) -> Decimal | None:
    """`"1,234.50"` → Decimal("1234.50"); None when it is not a plain number."""
    s = unicodedata.normalize("NFKC", str(value)).strip().replace(",", "").replace(" ", "")
    negative = s.startswith("(") and s.endswith(")")
    if negative:
        s = s[1:-1]
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", s):
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:  # pragma: no cover - the regex already guards this
        return None
    return -d if negative else d


def parse_amount(value: str) -> Decimal | None:
    """A printed money amount → Decimal: currency signs, `RMB`, `元`, separators removed."""
    s = unicodedata.normalize("NFKC", str(value))
    s = _CURRENCY.sub("", s)
    s = s.replace("整", "").replace("正", "")
    return parse_number(s)


_DIGITS = {"零": 0, "〇": 0, "壹": 1, "贰": 2, "貳": 2, "叁": 3, "參": 3, "肆": 4, "伍": 5,
           "陆": 6, "陸": 6, "柒": 7, "捌": 8, "玖": 9, "一": 1, "二": 2, "两": 2, "三": 3,
           "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}  # fmt: skip
_SMALL_UNITS = {"拾": 10, "十": 10, "佰": 100, "百": 100, "仟": 1000, "千": 1000}
_BIG_UNITS = {"万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8}


def _parse_integer_words(s: str) -> int | None:
    total, section, digit = 0, 0, None
    for ch in s:
        if ch in _DIGITS:
            digit = _DIGITS[ch]
        elif ch in _SMALL_UNITS:
            section += (1 if digit is None else digit) * _SMALL_UNITS[ch]
            digit = None
        elif ch in _BIG_UNITS:
            section += digit or 0
            unit = _BIG_UNITS[ch]
            if unit == 10**8:
                total = (total + section) * unit
            else:
                total += section * unit
            section, digit = 0, None
        else:
            return None
    return total + section + (digit or 0)


def parse_amount_in_words(value: str) -> Decimal | None:
    """Chinese upper-case amount (大写) → Decimal: `叁仟肆佰玖拾伍圆整` → 3495.

    Accepts 圆/元, 角, 分, 整/正, a leading 人民币 or ⊗, and 负 for negatives.
    """
    s = unicodedata.normalize("NFKC", str(value))
    s = re.sub(r"[\s⊗ⓧ×(),:：]|人民币|RMB", "", s, flags=re.IGNORECASE)
    negative = s.startswith("负")
    s = s.removeprefix("负").rstrip("整正")
    if not s:
        return None
    m = re.fullmatch(r"(?:(.*?)[圆元])?零?(?:(.)角)?(?:(.)分)?", s)
    if not m or not any(m.groups()):
        return None
    int_part, jiao, fen = m.groups()
    integer = 0
    if int_part:
        parsed = _parse_integer_words(int_part)
        if parsed is None:
            return None
        integer = parsed
    cents = 0
    for ch, weight in ((jiao, 10), (fen, 1)):
        if ch is not None:
            if ch not in _DIGITS:
                return None
            cents += _DIGITS[ch] * weight
    amount = Decimal(integer) + Decimal(cents) / 100
    return -amount if negative else amount


_UPPER_DIGITS = "零壹贰叁肆伍陆柒捌玖"


def _four_digits_to_words(n: int) -> str:
    """0 < n < 10000, with 零 for inner gaps (not leading/trailing)."""
    units = ["仟", "佰", "拾", ""]
    digits = f"{n:04d}"
    out, zero = [], False
    started = False
    for d, unit in zip(digits, units, strict=True):
        if d == "0":
            zero = started
            continue
        if zero:
            out.append("零")
            zero = False
        out.append(_UPPER_DIGITS[int(d)] + unit)
        started = True
    return "".join(out)


def amount_to_words(amount: Decimal | str | int) -> str:
    """Decimal → Chinese upper-case amount as printed on invoices: 1417 → 壹仟肆佰壹拾柒圆整."""
    d = Decimal(str(amount)).quantize(Decimal("0.01"))
    negative = d < 0
    d = abs(d)
    integer = int(d)
    cents = int((d - integer) * 100)
    parts: list[str] = []
    if integer:
        sections = []
        n = integer
        while n:
            sections.append(n % 10000)
            n //= 10000
        big = ["", "万", "亿", "万亿"]
        words, need_zero = [], False
        for i in range(len(sections) - 1, -1, -1):
            sec = sections[i]
            if sec == 0:
                need_zero = bool(words)
                continue
            if words and (need_zero or sec < 1000):
                words.append("零")
            words.append(_four_digits_to_words(sec) + big[i])
            need_zero = False
        parts.append("".join(words) + "圆")
    jiao, fen = divmod(cents, 10)
    if cents == 0:
        parts.append("整")
    else:
        if jiao:
            parts.append(_UPPER_DIGITS[jiao] + "角")
        elif integer:
            parts.append("零")
        if fen:
            parts.append(_UPPER_DIGITS[fen] + "分")
        else:
            parts.append("整")
    if not integer and not cents:
        return "零圆整"
    return ("负" if negative else "") + "".join(parts)


# ---------------------------------------------------------------- dates

_DATE_PATTERNS = (
    re.compile(r"(?P<y>\d{4})\s*[年./\-]\s*(?P<m>\d{1,2})\s*[月./\-]\s*(?P<d>\d{1,2})\s*日?"),
    re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"),
    re.compile(r"(?P<d>\d{1,2})\s*[./\-]\s*(?P<m>\d{1,2})\s*[./\-]\s*(?P<y>\d{4})"),
    re.compile(r"(?P<d>\d{1,2})\s*[./\-]\s*(?P<m>\d{1,2})\s*[./\-]\s*(?P<yy>\d{2})\b"),
)


def parse_date(value: str) -> dt.date | None:
    """`2016年06月12日`, `2016-6-12`, `20160612`, `12/06/2016` (day first) → date."""
    s = unicodedata.normalize("NFKC", str(value)).strip()
    for pattern in _DATE_PATTERNS:
        m = pattern.search(s)
        if not m:
            continue
        g = m.groupdict()
        year = int(g["y"]) if g.get("y") else 2000 + int(g["yy"])
        try:
            return dt.date(year, int(g["m"]), int(g["d"]))
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------- percent


def normalize_percent(value: str) -> str:
    s = unicodedata.normalize("NFKC", str(value)).strip().replace(" ", "")
    has_sign = s.endswith("%")
    d = parse_number(s.rstrip("%"))
    if d is None:
        return normalize_text(value)
    if not has_sign and abs(d) < 1 and d != 0:
        d *= 100
    return _decimal_str(d) + "%"


# ---------------------------------------------------------------- dispatch


def normalize_value(value: object, field_type: str = "text") -> str:
    """Canonical string of a leaf value for comparison; never raises."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    if field_type == "amount":
        d = parse_amount(value)
        return _decimal_str(d) if d is not None else normalize_text(value)
    if field_type == "amount_in_words":
        d = parse_amount_in_words(value)
        if d is None:
            d = parse_amount(value)  # a figure written where words were expected
        return _decimal_str(d) if d is not None else normalize_text(value)
    if field_type == "number":
        d = parse_number(value)
        return _decimal_str(d) if d is not None else normalize_text(value)
    if field_type == "date":
        parsed = parse_date(value)
        return parsed.isoformat() if parsed else normalize_text(value)
    if field_type in ("code", "id"):
        return normalize_code(value)
    if field_type == "percent":
        return normalize_percent(value)
    return normalize_text(value)
