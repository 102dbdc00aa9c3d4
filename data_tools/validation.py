"""Validation of every extraction: the label-QA rules of `data_tools.qa`, run on a prediction.

    from data_tools.validation import validate_prediction

    v = validate_prediction(row["prediction"], schema, request=extraction.request)
    v.passed, v.failed[0].rule, v.failed[0].fields, v.to_dict()
    # {"passed": false, "failed": [{"rule": "invoice_code", "fields": ["发票代码"],
    #   "message": "发票代码 '12270242' must be 10 or 12 digits (8 digits: swapped ...)"}],
    #  "rules": ["values", "invoice_code", ...]}

The rules a correct VAT invoice cannot break (GB 32100 check characters, line sums,
金额 + 税额 = 价税合计, 大写 = 小写, date and code formats) are the ones QA runs on labels: the
same functions (`data_tools.qa.check_fields`), so a rule fixed there is fixed here. Only hard
failures count; soft warnings are kept apart (``warnings``). ``required`` runs only when
everything was asked for (``request == {}``, the ``OCR:{}`` prompt): a prediction for
``OCR:{"发票号码":""}`` is not wrong for lacking the buyer. ``canonical`` never runs (how a
model spells keys is the parser's and the scorer's business, not a sign of a wrong value).
Empty values are dropped before the rules run: ``""`` for a key the model did not find is a
miss, which ``required`` reports for a full request, not a malformed value.

Each failure names the fields it concerns (dotted paths, ``货物或应税劳务、服务[1].金额`` for
one line), so a UI can mark them and a scorer can ask whether the flag predicts a wrong field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_tools.qa import ITEMS, rules_for
from data_tools.qa import check_fields as _qa_check_fields
from data_tools.schema import Schema

# The fields each rule reads (rules whose fields depend on the finding are parsed below).
RULE_FIELDS: dict[str, tuple[str, ...]] = {
    "invoice_code": ("发票代码",),
    "invoice_number": ("发票号码",),
    "date": ("开票日期",),
    "sums.amount": (f"{ITEMS}[].金额", "合计.金额"),
    "sums.tax": (f"{ITEMS}[].税额", "合计.税额"),
    "total": ("合计.金额", "合计.税额", "价税合计（小写）"),
    "total_in_words": ("价税合计（大写）", "价税合计（小写）"),
    "line.qty_x_price": (f"{ITEMS}[].数量", f"{ITEMS}[].单价", f"{ITEMS}[].金额"),
    "line.tax_rate": (f"{ITEMS}[].金额", f"{ITEMS}[].税率", f"{ITEMS}[].税额"),
}
NOT_ON_PREDICTIONS = ("canonical",)


@dataclass(frozen=True)
class Failure:
    rule: str
    fields: list[str]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "fields": list(self.fields), "message": self.message}


@dataclass
class Validation:
    """The verdict on one prediction."""

    failed: list[Failure] = field(default_factory=list)
    warnings: list[Failure] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed

    def failed_fields(self) -> set[str]:
        """Every field path a failure names (``[]`` kept: 'any line')."""
        return {f for fail in self.failed for f in fail.fields}

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed": [f.to_dict() for f in self.failed],
            "warnings": [f.to_dict() for f in self.warnings],
            "rules": list(self.rules),
        }


_LINE = re.compile(re.escape(ITEMS) + r"\[(\d+)\]")
_PATH = re.compile(r"^([^\s=]+?)(?: = | is | \(|\s|$)")
_PARTY_ID = re.compile(r"(购买方|销售方)\.纳税人识别号")


def _fields_of(rule: str, message: str) -> list[str]:
    """The fields one finding concerns."""
    if rule in ("required", "values"):
        m = _PATH.match(message)
        return [m.group(1)] if m else []
    if rule == "taxpayer_id":
        return [f"{m.group(1)}.纳税人识别号" for m in _PARTY_ID.finditer(message)][:1]
    fields = list(RULE_FIELDS.get(rule, ()))
    m = _LINE.search(message) if rule.startswith("line.") else None
    if m:
        fields = [f.replace("[]", f"[{m.group(1)}]") for f in fields]
    return fields


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or v in ({}, [])


def _prune(value: Any) -> Any:
    """Empty leaves dropped: a model's "" for a key it did not find is a miss (the scorer's
    business, and ``required``'s for a full request), not a malformed value."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if not _blank(v)}
    if isinstance(value, list):
        out_list = [_prune(v) for v in value]
        return [v for v in out_list if not _blank(v)]
    return value


def _split(reason: str) -> tuple[str, str]:
    rule, _, message = reason.partition(": ")
    return rule, message


def validate_prediction(
    prediction: Any,
    schema: Schema | None,
    *,
    doc_type: str = "",
    request: dict[str, Any] | None = None,
    rules: Sequence[str] | None = None,
) -> Validation:
    """Run the QA rules on one prediction; never raises on bad values.

    `request` is the extraction's request (``{}`` for everything, as
    `inference.extractor.Extraction.request` holds it); ``required`` runs only for ``{}``.
    A prediction that is not a JSON object (the parse failed) fails rule ``parse``.
    """
    if not isinstance(prediction, dict):
        return Validation(
            failed=[Failure("parse", [], "no JSON object to validate (the output did not parse)")],
            rules=["parse"],
        )
    names = tuple(rules) if rules is not None else rules_for(schema, doc_type)
    names = tuple(
        n for n in names if n not in NOT_ON_PREDICTIONS and (n != "required" or request == {})
    )
    if schema is None or not names:
        return Validation(rules=[])
    result = _qa_check_fields(_prune(prediction), schema, doc_type=doc_type, rules=names)
    out = Validation(rules=list(result.rules))
    for reason in result.hard:
        rule, message = _split(reason)
        out.failed.append(Failure(rule, _fields_of(rule, message), message))
    for reason in result.soft:
        rule, message = _split(reason)
        out.warnings.append(Failure(rule, _fields_of(rule, message), message))
    return out


def validation_dict(
    prediction: Any,
    schema: Schema | None,
    *,
    doc_type: str = "",
    request: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """`validate_prediction(...).to_dict()`, or None without a schema (nothing to check)."""
    if schema is None:
        return None
    return validate_prediction(prediction, schema, doc_type=doc_type, request=request).to_dict()
