"""Label QA: hard rules a correct VAT invoice label cannot break, run like a linter.

    python -m data_tools.qa --labels labels.jsonl [--schema auto|none|NAME|PATH] [--out labels.qa.jsonl]

``--schema auto`` (the default) checks each record against the schema the converter
canonicalised it through (``meta.canonicalize.schema``: ``sroie``, ``cord``, ...) or else the
one its ``doc_type`` names (``configs/schemas/<doc_type>.yaml``), and runs only the schema-free
checks on records with neither (a SROIE receipt is not a VAT invoice); ``--schema none``
runs only the schema-free checks; a name or path applies that schema to every record.

Every record gets ``meta.qa = {"verdict": "pass"|"fail", "hard": [...], "soft": [...],
"skipped": [...]}``; each reason starts with its rule's name (``sums.amount: ...``). A summary is
logged; the exit code is 1 when any record fails a hard rule (2 for unusable input), so the
command can gate a pipeline. The labeler (``data_tools.label``) calls :func:`check_fields` on
every label it writes.

Rules are small named functions in a registry (``RULES``), each ``rule(ctx) -> None`` adding
hard failures, soft warnings or a skip note to the context. For VAT invoices (schema name or
doc_type ``vat_invoice``):

=======================  ====  =================================================================
rule                     kind  what it checks
=======================  ====  =================================================================
``required``             hard  every required key of the schema is present and non-empty
``canonical``            soft  the fields are already in the schema's canonical shape
``types``                hard  every schema key has the schema's shape: an object, a list (of
                               objects or of strings) or a string (not ``合计: "abc"``, not
                               the item list as one string); an empty string for a container
                               is a soft warning
``values``               hard  amount / number / date / percent leaves read as their type
``invoice_code``         hard  发票代码 has 10 or 12 digits (may be empty on a 20-digit
                               fully digital invoice)
``invoice_number``       hard  发票号码 has 8 digits, or 20 for a fully digital invoice
``date``                 hard  开票日期 is a real date between 1990 and next year
``taxpayer_id``          hard  an 18-character 纳税人识别号 passes the GB 32100-2015 check
                               character (or the GB 11643 one of a resident ID); other lengths
                               than 15/17/18/20 are a soft warning
``sums.amount``          hard  line amounts add up to 合计.金额 (±0.01)
``sums.tax``             hard  line taxes add up to 合计.税额 (±0.01)
``total``                hard  合计.金额 + 合计.税额 = 价税合计（小写） (±0.01)
``total_in_words``       hard  价税合计（大写） spells 价税合计（小写）
``line.qty_x_price``     hard  数量 × 单价 ≈ 金额 (tolerance from the printed precision; a
                               tax-inclusive unit price is accepted)
``line.tax_rate``        soft  金额 × 税率 ≈ 税额 (±0.02)
=======================  ====  =================================================================

Other schemas get the generic rules (``required``, ``canonical``, ``types``, ``values``).
Without a schema, the schema-free rules run:

=======================  ====  =================================================================
``nonempty``             hard  at least one field holds a value (an all-empty label teaches the
                               model to answer nothing)
``key_types``            soft  (over the whole file) a key has one shape across the records:
                               ``Total`` a string on one receipt and a list on another makes
                               the dataset builder ask for both
=======================  ====  =================================================================
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from data_tools.jsonl import write_jsonl_atomic
from data_tools.normalize import (
    normalize_code,
    parse_amount,
    parse_amount_in_words,
    parse_date,
    parse_number,
)
from data_tools.records import LabelFormatError, read_labels
from data_tools.schema import (
    SCHEMA_DIR,
    CanonicalizeReport,
    FieldSpec,
    Schema,
    SchemaError,
    load_schema,
)

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
ITEMS = "货物或应税劳务、服务"
PARTIES = ("购买方", "销售方")
# Printed for tax-exempt lines instead of a tax amount.
NO_TAX_MARKS = ("***", "*", "免税", "不征税", "-")


@dataclass
class QAResult:
    """The verdict on one label."""

    hard: list[str] = field(default_factory=list)
    soft: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.hard

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def failed_rules(self) -> list[str]:
        return sorted({r.split(":", 1)[0] for r in self.hard})

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "hard": self.hard,
            "soft": self.soft,
            "skipped": self.skipped,
            "rules": self.rules,
        }


@dataclass
class Context:
    """What a rule sees: canonical fields, the schema, and where to put its findings."""

    fields: dict[str, Any]
    schema: Schema | None
    result: QAResult
    raw_fields: dict[str, Any]

    def hard(self, rule: str, msg: str) -> None:
        self.result.hard.append(f"{rule}: {msg}")

    def soft(self, rule: str, msg: str) -> None:
        self.result.soft.append(f"{rule}: {msg}")

    def skip(self, rule: str, msg: str) -> None:
        self.result.skipped.append(f"{rule}: {msg}")

    def get(self, *path: str) -> Any:
        node: Any = self.fields
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def items(self) -> list[dict[str, Any]]:
        items = self.get(ITEMS)
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or v in ({}, [])


def _digits(v: Any) -> str:
    return normalize_code(v) if isinstance(v, str) else ""


# ---------------------------------------------------------------- generic rules
def _is_digital_invoice(ctx: Context) -> bool:
    """A fully digital invoice (数电票): 20-digit number, no invoice code."""
    number = _digits(ctx.get("发票号码"))
    return len(number) == 20 and number.isdigit()


def rule_required(ctx: Context) -> None:
    for path in ctx.schema.required:
        if path == ("发票代码",) and _is_digital_invoice(ctx):
            continue
        if _blank(ctx.get(*path)):
            ctx.hard("required", f"{'.'.join(path)} is missing or empty")


def rule_canonical(ctx: Context) -> None:
    report = CanonicalizeReport()
    ctx.schema.canonicalize(ctx.raw_fields, report)
    changes = report.renamed + report.moved + report.flattened_groups + report.dropped
    if changes:
        shown = "; ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")
        ctx.soft("canonical", f"not in canonical shape ({len(changes)} change(s): {shown})")
    if report.unknown:
        ctx.soft("canonical", f"keys not in schema {ctx.schema.name!r}: {report.unknown}")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "amount": parse_amount,
    "number": parse_number,
    "date": parse_date,
    "amount_in_words": lambda s: parse_amount_in_words(s) or parse_amount(s),
    "percent": lambda s: parse_number(s.strip().rstrip("%")) if s.strip() not in ("免税",) else 0,
}


def _walk_leaves(value: Any, path: tuple[str, ...], label: str) -> Iterable[tuple[tuple, str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_leaves(v, (*path, k), f"{label}.{k}" if label else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_leaves(v, path, f"{label}[{i}]")
    else:
        yield path, label, value


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _check_types(ctx: Context, value: Any, spec: FieldSpec, label: str) -> None:
    if spec.type == "object":
        want = "an object"
    elif spec.type == "list":
        want = "a list of objects" if spec.fields else "a list of strings"
    else:
        want = "a string"
    if spec.type in ("object", "list"):
        if isinstance(value, str) and not value.strip():
            empty = "{}" if spec.type == "object" else "[]"
            ctx.soft(
                "types", f"{label} is an empty string; the schema wants {want} (empty: {empty})"
            )
            return
        ok = isinstance(value, dict) if spec.type == "object" else isinstance(value, list)
        if not ok:
            ctx.hard(
                "types", f"{label} is {_shape(value)} ({value!r:.40}); the schema wants {want}"
            )
            return
        if spec.type == "object":
            _check_type_fields(ctx, value, spec.fields, label)
            return
        for i, item in enumerate(value):
            here = f"{label}[{i}]"
            if spec.fields:
                if isinstance(item, dict):
                    _check_type_fields(ctx, item, spec.fields, here)
                else:
                    ctx.hard(
                        "types", f"{here} is {_shape(item)} ({item!r:.40}); {label} wants objects"
                    )
            elif not isinstance(item, str):
                ctx.hard("types", f"{here} is {_shape(item)}; {label} wants strings")
    elif not isinstance(value, str):
        ctx.hard("types", f"{label} is {_shape(value)}; the schema wants {want} ({spec.type})")


def _check_type_fields(
    ctx: Context, obj: dict[str, Any], specs: dict[str, FieldSpec], label: str
) -> None:
    for key, value in obj.items():
        spec = specs.get(key)
        if spec is not None:
            _check_types(ctx, value, spec, f"{label}.{key}" if label else key)


def rule_types(ctx: Context) -> None:
    if ctx.schema is not None:
        _check_type_fields(ctx, ctx.fields, ctx.schema.fields, "")


def rule_nonempty(ctx: Context) -> None:
    if all(_blank(v) for _, _, v in _walk_leaves(ctx.fields, (), "")):
        ctx.hard("nonempty", "every field is empty: nothing to train on or score against")


def rule_values(ctx: Context) -> None:
    for path, label, value in _walk_leaves(ctx.fields, (), ""):
        ftype = ctx.schema.field_type(path)
        parser = _PARSERS.get(ftype)
        if parser is None or _blank(value) or not isinstance(value, str):
            continue
        if path[-1] == "税额" and value.strip() in NO_TAX_MARKS:
            continue
        if parser(value) is None:
            ctx.hard("values", f"{label} = {value!r} does not read as a {ftype}")


# ---------------------------------------------------------------- VAT rules
def rule_invoice_code(ctx: Context) -> None:
    code = _digits(ctx.get("发票代码"))
    if not code:
        if _is_digital_invoice(ctx):
            return  # fully digital invoices (数电票) have no code
        if ctx.get("发票代码") is None:
            ctx.skip("invoice_code", "发票代码 absent")
            return
        ctx.hard("invoice_code", "发票代码 is empty (only a 20-digit 数电票 number has no code)")
        return
    if not code.isdigit() or len(code) not in (10, 12):
        hint = " (8 digits: swapped with 发票号码?)" if len(code) == 8 else ""
        ctx.hard("invoice_code", f"发票代码 {code!r} must be 10 or 12 digits{hint}")


def rule_invoice_number(ctx: Context) -> None:
    raw = ctx.get("发票号码")
    if raw is None:
        ctx.skip("invoice_number", "发票号码 absent")
        return
    number = _digits(raw)
    if not number.isdigit() or len(number) not in (8, 20):
        hint = " (10/12 digits: swapped with 发票代码?)" if len(number) in (10, 12) else ""
        ctx.hard("invoice_number", f"发票号码 {number!r} must be 8 digits (20 for 数电票){hint}")


def rule_date(ctx: Context) -> None:
    raw = ctx.get("开票日期")
    if _blank(raw):
        ctx.skip("date", "开票日期 absent")
        return
    d = parse_date(raw) if isinstance(raw, str) else None
    if d is None:
        ctx.hard("date", f"开票日期 {raw!r} is not a valid date")
    elif not dt.date(1990, 1, 1) <= d <= dt.date.today() + dt.timedelta(days=366):
        ctx.hard("date", f"开票日期 {raw!r} ({d.isoformat()}) is outside 1990..next year")


USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def uscc_check_char(first17: str) -> str | None:
    """GB 32100-2015 check character of a unified social credit code, or None if invalid."""
    if len(first17) != 17 or any(c not in USCC_CHARS for c in first17):
        return None
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31]


def is_valid_uscc(code: str) -> bool:
    code = code.upper()
    return len(code) == 18 and uscc_check_char(code[:17]) == code[17]


def is_valid_resident_id(code: str) -> bool:
    """GB 11643-1999 (18-digit resident ID, used as the taxpayer ID of individuals)."""
    code = code.upper()
    if len(code) != 18 or not code[:17].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(code[:17], _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == code[17]


def rule_taxpayer_id(ctx: Context) -> None:
    for party in PARTIES:
        raw = ctx.get(party, "纳税人识别号")
        if _blank(raw) or not isinstance(raw, str):
            continue
        tid = normalize_code(raw)
        where = f"{party}.纳税人识别号 {tid!r}"
        if len(tid) == 18:
            if not (is_valid_uscc(tid) or is_valid_resident_id(tid)):
                want = uscc_check_char(tid[:17])
                hint = f" (expected {want!r} as the 18th)" if want else " (invalid characters)"
                ctx.hard("taxpayer_id", f"{where} fails the GB 32100-2015 check character{hint}")
        elif len(tid) not in (15, 17, 20) or not tid.isalnum():
            ctx.soft(
                "taxpayer_id", f"{where} has {len(tid)} characters (15, 17, 18 or 20 expected)"
            )


def _amount(v: Any) -> Decimal | None:
    return parse_amount(v) if isinstance(v, str) and v.strip() else None


def _sum_rule(ctx: Context, rule: str, item_key: str, total_key: str) -> None:
    total_raw = ctx.get("合计", total_key)
    items = ctx.items()
    if _blank(total_raw) or not items:
        ctx.skip(rule, f"合计.{total_key} or the item list is absent")
        return
    total = _amount(total_raw)
    if total is None:
        return  # reported by rule_values
    s, used = Decimal(0), 0
    for item in items:
        raw = item.get(item_key)
        if _blank(raw) or (item_key == "税额" and str(raw).strip() in NO_TAX_MARKS):
            continue
        v = _amount(raw)
        if v is None:
            return  # reported by rule_values
        s += v
        used += 1
    if used == 0:
        ctx.hard(rule, f"no line has a {item_key} but 合计.{total_key} is {total_raw!r}")
    elif abs(s - total) > CENT:
        ctx.hard(
            rule,
            f"line {item_key}s add up to {s} but 合计.{total_key} is {total} "
            f"(off by {s - total}; a missing or extra line, e.g. a discount?)",
        )


def rule_sum_amount(ctx: Context) -> None:
    _sum_rule(ctx, "sums.amount", "金额", "金额")


def rule_sum_tax(ctx: Context) -> None:
    _sum_rule(ctx, "sums.tax", "税额", "税额")


def rule_total(ctx: Context) -> None:
    amount, tax = _amount(ctx.get("合计", "金额")), ctx.get("合计", "税额")
    total = _amount(ctx.get("价税合计（小写）"))
    tax_v = Decimal(0) if isinstance(tax, str) and tax.strip() in NO_TAX_MARKS else _amount(tax)
    if amount is None or tax_v is None or total is None:
        ctx.skip("total", "合计.金额, 合计.税额 or 价税合计（小写） absent or unreadable")
        return
    if abs(amount + tax_v - total) > CENT:
        ctx.hard(
            "total", f"合计 {amount} + 税额 {tax_v} = {amount + tax_v} ≠ 价税合计（小写） {total}"
        )


def rule_total_in_words(ctx: Context) -> None:
    words, figures = ctx.get("价税合计（大写）"), _amount(ctx.get("价税合计（小写）"))
    if _blank(words) or figures is None:
        ctx.skip("total_in_words", "价税合计（大写） or （小写） absent")
        return
    spelled = parse_amount_in_words(words) if isinstance(words, str) else None
    if spelled is None:
        ctx.hard("total_in_words", f"价税合计（大写） {words!r} is not a Chinese amount in words")
    elif abs(spelled - figures) > CENT / 2:
        ctx.hard("total_in_words", f"价税合计（大写） {words!r} = {spelled} ≠ （小写） {figures}")


def _half_ulp(raw: str) -> Decimal:
    """Half a unit of the last printed decimal (0 for an integer: taken as exact)."""
    if "." not in raw:
        return Decimal(0)
    digits = re.sub(r"\D", "", raw.split(".", 1)[1])
    return Decimal(1).scaleb(-len(digits)) / 2


def rule_qty_x_price(ctx: Context) -> None:
    for i, item in enumerate(ctx.items()):
        q_raw, p_raw, a_raw = item.get("数量"), item.get("单价"), item.get("金额")
        if any(_blank(v) or not isinstance(v, str) for v in (q_raw, p_raw, a_raw)):
            continue
        q, p, a = parse_number(q_raw), parse_number(p_raw), _amount(a_raw)
        if q is None or p is None or a is None:
            continue
        tol = CENT + abs(q) * _half_ulp(p_raw) + abs(p) * _half_ulp(q_raw)
        tax = _amount(item.get("税额")) or Decimal(0)
        if abs(q * p - a) <= tol or (tax and abs(q * p - (a + tax)) <= tol):
            continue
        ctx.hard(
            "line.qty_x_price",
            f"{ITEMS}[{i}]: 数量 {q} × 单价 {p} = {(q * p).quantize(CENT)} ≠ 金额 {a}",
        )


def rule_tax_rate(ctx: Context) -> None:
    for i, item in enumerate(ctx.items()):
        a, rate_raw, t = _amount(item.get("金额")), item.get("税率"), _amount(item.get("税额"))
        if a is None or t is None or not isinstance(rate_raw, str) or "%" not in rate_raw:
            continue
        rate = parse_number(rate_raw.strip().rstrip("%"))
        if rate is None:
            continue
        expected = (a * rate / 100).quantize(CENT)
        if abs(expected - t) > Decimal("0.02"):
            ctx.soft("line.tax_rate", f"{ITEMS}[{i}]: 金额 {a} × {rate}% = {expected} ≠ 税额 {t}")


RULES: dict[str, Callable[[Context], None]] = {
    "nonempty": rule_nonempty,
    "required": rule_required,
    "canonical": rule_canonical,
    "types": rule_types,
    "values": rule_values,
    "invoice_code": rule_invoice_code,
    "invoice_number": rule_invoice_number,
    "date": rule_date,
    "taxpayer_id": rule_taxpayer_id,
    "sums.amount": rule_sum_amount,
    "sums.tax": rule_sum_tax,
    "total": rule_total,
    "total_in_words": rule_total_in_words,
    "line.qty_x_price": rule_qty_x_price,
    "line.tax_rate": rule_tax_rate,
}
SCHEMA_FREE_RULES = ("nonempty",)
GENERIC_RULES = ("required", "canonical", "types", "values")
VAT_RULES = tuple(r for r in RULES if r not in SCHEMA_FREE_RULES)


def rules_for(schema: Schema | None, doc_type: str = "") -> tuple[str, ...]:
    if schema is None:
        return ()
    if "vat_invoice" in (schema.name, schema.doc_type, doc_type):
        return VAT_RULES
    return GENERIC_RULES


def check_fields(
    fields: dict[str, Any],
    schema: Schema | None,
    *,
    doc_type: str = "",
    rules: Sequence[str] | None = None,
    canonical: bool = False,
) -> QAResult:
    """Run the rules on one label's fields; never raises on bad values.

    The fields are canonicalised first unless ``canonical=True`` says they already are (the
    labeler's case); then the ``canonical`` rule is not run either.
    """
    result = QAResult()
    if schema is None and rules is None:
        return result
    names = tuple(rules) if rules is not None else rules_for(schema, doc_type)
    if schema is None:  # only the schema-free rules can run
        names = tuple(n for n in names if n in SCHEMA_FREE_RULES)
    if canonical or schema is None:
        names = tuple(n for n in names if n != "canonical")
        canon = fields if isinstance(fields, dict) else {}
    else:
        canon = schema.canonicalize(fields) if isinstance(fields, dict) else {}
    ctx = Context(fields=canon, schema=schema, result=result, raw_fields=fields)
    for name in names:
        try:
            RULES[name](ctx)
        except Exception as exc:  # a rule bug must not hide the other rules' findings
            ctx.hard(name, f"rule crashed: {type(exc).__name__}: {exc}")
        result.rules.append(name)
    return result


# ---------------------------------------------------------------- dataset-wide checks
def _value_shapes(value: Any, label: str, out: dict[str, str]) -> None:
    """The shape of every keyed value: `{"Total": "a list", "menu[].nm": "a string"}`."""
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{label}.{k}" if label else k
            out.setdefault(here, _shape(v))
            _value_shapes(v, here, out)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict):
                _value_shapes(v, f"{label}[]", out)


def key_type_flips(all_fields: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Per record, the soft ``key_types`` findings: keys whose shape differs from the shape
    most records give them (empty values, which fit any shape, are not counted)."""
    shapes = []
    counts: dict[str, Counter[str]] = {}
    for fields in all_fields:
        found: dict[str, str] = {}
        _value_shapes(fields, "", found)
        blank = {k for k, v in _flat_values(fields, "") if _blank(v)}
        found = {k: v for k, v in found.items() if k not in blank}
        shapes.append(found)
        for k, shape in found.items():
            counts.setdefault(k, Counter())[shape] += 1
    out = []
    for found in shapes:
        notes = []
        for k, shape in found.items():
            c = counts[k]
            if len(c) > 1:
                major, n_major = c.most_common(1)[0]
                if shape != major:
                    notes.append(
                        f"key_types: {k} is {shape} here but {major} in {n_major} other "
                        f"record(s) ({', '.join(f'{s} {n}' for s, n in c.most_common())}); "
                        "give the key one shape across the dataset"
                    )
        out.append(notes)
    return out


def _flat_values(value: Any, label: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{label}.{k}" if label else k
            yield here, v
            yield from _flat_values(v, here)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict):
                yield from _flat_values(v, f"{label}[]")


# ---------------------------------------------------------------- CLI
def _default_out(labels: Path) -> Path:
    name = labels.name[: -len(".jsonl")] if labels.name.endswith(".jsonl") else labels.name
    return labels.with_name(name + ".qa.jsonl")


class SchemaChooser:
    """The schema for each record: one for all (a name or path), none, or `auto`: the one
    the converter canonicalised the record through (`meta.canonicalize.schema`), else the
    one named by its doc_type, if the project has it."""

    def __init__(self, choice: str) -> None:
        self.choice = choice
        self._fixed: Schema | None = None
        self._by_name: dict[str, Schema | None] = {}
        if choice not in ("auto", "none"):
            self._fixed = load_schema(choice)

    def __call__(self, doc_type: str, meta: dict[str, Any] | None = None) -> Schema | None:
        if self.choice == "none":
            return None
        if self._fixed is not None:
            return self._fixed
        # the schema the converter canonicalised the record through, else its doc_type's
        canon = (meta or {}).get("canonicalize")
        name = canon.get("schema") if isinstance(canon, dict) else None
        if not isinstance(name, str) or not (SCHEMA_DIR / f"{name}.yaml").is_file():
            name = doc_type
        if name not in self._by_name:
            known = bool(name) and (SCHEMA_DIR / f"{name}.yaml").is_file()
            self._by_name[name] = load_schema(name) if known else None
        return self._by_name[name]

    def describe(self) -> str:
        if self.choice != "auto":
            return self.choice
        used = sorted(
            f"{s.name} schema" if s else f"schema-free checks for doc_type {n or '(none)'}"
            for n, s in self._by_name.items()
        )
        return "auto: " + ", ".join(used)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_tools.qa",
        description="Hard QA rules for labels; exit 1 when any record fails one.",
    )
    ap.add_argument("--labels", required=True, type=Path, help="canonical labels.jsonl")
    ap.add_argument(
        "--schema",
        default="auto",
        help="auto (default: the schema named by each record's doc_type, schema-free checks "
        "where there is none), none (schema-free checks only), or a schema name / YAML path",
    )
    ap.add_argument("--out", type=Path, help="records with meta.qa (default: L.qa.jsonl)")
    ap.add_argument("--no-out", action="store_true", help="only print the summary")
    ap.add_argument("--show", type=int, default=20, help="failing records to list (default 20)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        choose = SchemaChooser(args.schema)
        records = read_labels(args.labels)
        schemas = [choose(rec.doc_type, rec.meta) for rec in records]
    except (SchemaError, LabelFormatError, FileNotFoundError) as exc:
        log.error("error: %s", exc)
        return 2

    flips = key_type_flips([rec.fields for rec in records])
    n_fail, rule_fails, shown, n_flips = 0, Counter[str](), 0, 0
    for rec, schema, flip in zip(records, schemas, flips, strict=True):
        if schema is None:
            res = check_fields(rec.fields, None, rules=SCHEMA_FREE_RULES)
        else:
            res = check_fields(rec.fields, schema, doc_type=rec.doc_type)
        res.soft.extend(flip)
        res.rules.append("key_types")
        n_flips += bool(flip)
        rec.meta = {**rec.meta, "qa": res.to_dict()}
        if not res.passed:
            n_fail += 1
            rule_fails.update(res.failed_rules())
            if shown < args.show:
                shown += 1
                log.info("FAIL %s (%s)", rec.id, rec.image)
                for reason in res.hard:
                    log.info("    %s", reason)
    if not args.no_out:
        out = args.out or _default_out(args.labels)
        write_jsonl_atomic(out, (r.to_dict() for r in records))
        log.info("wrote %s", out)
    n = len(records)
    log.info(
        "QA %s (schema %s): %d record(s), %d pass, %d fail%s",
        args.labels,
        choose.describe(),
        n,
        n - n_fail,
        n_fail,
        ("; failing rules: " + ", ".join(f"{k}={v}" for k, v in rule_fails.most_common()))
        if rule_fails
        else "",
    )
    if n_flips:
        log.info(
            "%d record(s) give a key another shape than most records do (soft key_types "
            "warnings in meta.qa.soft)",
            n_flips,
        )
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
