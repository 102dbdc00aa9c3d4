"""Every metric is one small named function in a registry, with its definition.

The scorer reduces each sample (one document x one prompt) to additive *statistics*
(leaf outcome counts, per-sample scores, JSON health flags; see ``SAMPLE_STATS``). A
metric is a function of the *totals* of those statistics over a set of samples: the
corpus, a doc type, a source, one field (leaf statistics only), or a bootstrap resample
(totals are then numpy arrays, one value per resample, and every function is written to
work on those as well).

The report prints ``definition`` next to every number it shows, and ``metrics.json``
carries all definitions under ``metric_definitions``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Totals = Mapping[str, Any]  # statistic name -> float (or ndarray for bootstrap resamples)

# Additive per-sample statistics (every sample has all of them).
LEAF_STATS = ("tp", "wrong", "miss", "hal", "tn", "anls_sum", "anls_n")
SAMPLE_STATS = (
    "n",
    *LEAF_STATS,
    "li_tp",
    "li_wrong",
    "li_miss",
    "li_hal",
    "rows_exact",
    "rows_gold",
    "rows_pred",
    "exact",
    "doc_f1",
    "kie_acc",
    "nted_acc",
    "donut_tp",
    "donut_err",
    "anls_star",
    "json_strict",
    "json_embedded",
    "json_repaired",
    "json_failed",
    "json_given",
    "json_missing",
    "json_refused",
    "json_truncated",
    "json_dup",
    "json_conflict",
    "json_non_object",
    "partial",
    "instr_requested",
    "instr_present",
    "instr_unrequested",
)


@dataclass(frozen=True)
class Metric:
    name: str
    definition: str
    fn: Callable[[Totals], Any]
    scope: str  # "leaf": needs only LEAF_STATS (works per field/type); "sample": SAMPLE_STATS
    higher_is_better: bool = True
    headline: bool = False  # shown in the main comparison table and bootstrapped


REGISTRY: dict[str, Metric] = {}


def register(
    name: str, definition: str, *, scope: str = "sample", higher_is_better: bool = True,
    headline: bool = False,
) -> Callable[[Callable[[Totals], Any]], Callable[[Totals], Any]]:  # fmt: skip
    def deco(fn: Callable[[Totals], Any]) -> Callable[[Totals], Any]:
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} registered twice")
        REGISTRY[name] = Metric(name, definition, fn, scope, higher_is_better, headline)
        return fn

    return deco


def ratio(num: Any, den: Any, empty: float = 1.0) -> Any:
    """``num / den``, ``empty`` where ``den == 0``; scalars or arrays."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), empty)
    return float(out) if out.ndim == 0 else out


def _gold_leaves(t: Totals) -> Any:
    return t["tp"] + t["wrong"] + t["miss"]


def _pred_leaves(t: Totals) -> Any:
    return t["tp"] + t["wrong"] + t["hal"]


def _empty_unless(t: Totals, other: Any) -> Any:
    """1.0 when nothing was expected and nothing given, else 0.0 (for 0/0 cases)."""
    return np.where(np.asarray(other) > 0, 0.0, 1.0)


# ---------------------------------------------------------------- leaf metrics
@register(
    "precision",
    "TP / (TP + WRONG + HALLUCINATED) over all leaves (micro); 1 when neither side has a "
    "non-empty leaf, 0 when only the gold has",
    scope="leaf",
    headline=True,
)
def precision(t: Totals) -> Any:
    p = _pred_leaves(t)
    return np.where(np.asarray(p) > 0, ratio(t["tp"], p), _empty_unless(t, _gold_leaves(t)))[()]


@register(
    "recall",
    "TP / (TP + WRONG + MISS) over all leaves (micro); 1 when neither side has a non-empty "
    "leaf, 0 when only the prediction has",
    scope="leaf",
    headline=True,
)
def recall(t: Totals) -> Any:
    g = _gold_leaves(t)
    return np.where(np.asarray(g) > 0, ratio(t["tp"], g), _empty_unless(t, _pred_leaves(t)))[()]


@register(
    "f1",
    "2·TP / (2·TP + 2·WRONG + MISS + HALLUCINATED) over all leaves (micro; harmonic mean of "
    "precision and recall); 1 when neither side has a non-empty leaf",
    scope="leaf",
    headline=True,
)
def f1(t: Totals) -> Any:
    return ratio(2 * t["tp"], 2 * t["tp"] + 2 * t["wrong"] + t["miss"] + t["hal"])


@register(
    "anls",
    "mean ANLS (tau = 0.5) over leaves that are not empty on both sides, on type-normalised "
    "strings: TP = 1, MISS and HALLUCINATED = 0, WRONG = 1 - NLD if NLD < 0.5 else 0",
    scope="leaf",
    headline=True,
)
def anls(t: Totals) -> Any:
    return ratio(t["anls_sum"], t["anls_n"])


@register(
    "missing_rate",
    "MISS / (TP + WRONG + MISS): gold values the prediction left empty or out",
    scope="leaf",
    higher_is_better=False,
)
def missing_rate(t: Totals) -> Any:
    return ratio(t["miss"], _gold_leaves(t), empty=0.0)


@register(
    "wrong_rate",
    "WRONG / (TP + WRONG + MISS): gold values predicted with a different value",
    scope="leaf",
    higher_is_better=False,
)
def wrong_rate(t: Totals) -> Any:
    return ratio(t["wrong"], _gold_leaves(t), empty=0.0)


@register(
    "hallucination_rate",
    "HALLUCINATED / (TP + WRONG + HALLUCINATED): predicted values where the gold is empty "
    "or has no such key",
    scope="leaf",
    higher_is_better=False,
)
def hallucination_rate(t: Totals) -> Any:
    return ratio(t["hal"], _pred_leaves(t), empty=0.0)


# ---------------------------------------------------------------- sample metrics
def _mean(key: str) -> Callable[[Totals], Any]:
    return lambda t: ratio(t[key], t["n"], empty=0.0)


@register(
    "exact_match",
    "share of samples whose every leaf is TP or empty on both sides (document exact match)",
    headline=True,
)
def exact_match(t: Totals) -> Any:
    return _mean("exact")(t)


@register("doc_f1", "mean over samples of the per-sample leaf F1 (macro over documents)")
def doc_f1(t: Totals) -> Any:
    return _mean("doc_f1")(t)


@register(
    "anls_star",
    "mean over samples of ANLS* (anls_star package: dict keys missing or extra penalised, "
    "lists Hungarian-matched, leaves ANLS tau = 0.5 on lower-cased raw strings)",
    headline=True,
)
def anls_star(t: Totals) -> Any:
    return _mean("anls_star")(t)


@register(
    "kie_accuracy",
    "PaddleOCR-VL-KIE accuracy: per sample the share of top-level gold keys predicted "
    "exactly (str() equality; dicts all sub-keys; lists equal after sorting by JSON), "
    "averaged over samples; raw values, no normalisation",
    headline=True,
)
def kie_accuracy(t: Totals) -> Any:
    return _mean("kie_acc")(t)


@register(
    "donut_f1",
    "Donut JSONParseEvaluator.cal_f1: micro F1 over flattened (key path, raw value) pairs "
    "after Donut's normalize_dict, TP / (TP + (FP + FN) / 2)",
    headline=True,
)
def donut_f1(t: Totals) -> Any:
    return ratio(t["donut_tp"], t["donut_tp"] + t["donut_err"] / 2)


@register(
    "donut_nted_accuracy",
    "Donut JSONParseEvaluator.cal_acc averaged over samples: max(0, 1 - TED(pred, gold) / "
    "TED(empty, gold)), Zhang–Shasha tree edit distance on Donut-normalised trees",
    headline=True,
)
def donut_nted_accuracy(t: Totals) -> Any:
    return _mean("nted_acc")(t)


def _li(t: Totals) -> dict[str, Any]:
    return {"tp": t["li_tp"], "wrong": t["li_wrong"], "miss": t["li_miss"], "hal": t["li_hal"]}


@register("line_item_precision", "precision over leaves inside lists of objects (line items)")
def line_item_precision(t: Totals) -> Any:
    return precision(_li(t))


@register("line_item_recall", "recall over leaves inside lists of objects (line items)")
def line_item_recall(t: Totals) -> Any:
    return recall(_li(t))


@register("line_item_f1", "F1 over leaves inside lists of objects (line items)", headline=True)
def line_item_f1(t: Totals) -> Any:
    return f1(_li(t))


@register(
    "line_item_row_f1",
    "row-level F1 of lists of objects: a row counts when it is matched and every leaf in it "
    "is TP (or empty on both sides); P = right rows / predicted rows, R = right rows / gold rows",
)
def line_item_row_f1(t: Totals) -> Any:
    return ratio(2 * t["rows_exact"], t["rows_gold"] + t["rows_pred"])


_HEALTH = {  # metric name: (statistic, definition, higher is better)
    "json_strict_valid_rate": ("json_strict", "share of samples whose output parsed with strict json.loads", True),
    "json_embedded_rate": ("json_embedded", "share of samples whose JSON had to be cut out of a fence or prose", False),
    "json_repaired_rate": ("json_repaired", "share of samples only json_repair could read", False),
    "json_unrecoverable_rate": ("json_failed", "share of samples with no usable JSON; scored as {}", False),
    "json_given_rate": ("json_given", "share of samples whose prediction came already parsed (no raw output to judge)", False),
    "json_missing_rate": ("json_missing", "share of gold documents with no prediction in the file; scored as {}", False),
    "json_refused_rate": ("json_refused", "share of samples refused by the scorer's size limits (raw output length, JSON leaves, nesting depth); scored as {}", False),
    "json_truncated_rate": ("json_truncated", "share of samples cut off by the token limit (finish_reason=length)", False),
    "json_duplicate_keys_rate": ("json_dup", "share of samples whose JSON repeats a key", False),
    "json_conflicting_duplicate_keys_rate": ("json_conflict", "share of samples whose JSON repeats a key with different values", False),
    "json_non_object_rate": ("json_non_object", "share of samples whose JSON is not an object; scored as {}", False),
}  # fmt: skip
for _name, (_stat, _text, _good) in _HEALTH.items():
    register(_name, _text, higher_is_better=_good)(_mean(_stat))


@register(
    "instruction_requested_keys_present",
    "partial prompts only: requested key paths present in the prediction / requested key "
    "paths (null when the file has no partial prompt)",
)
def instruction_requested_keys_present(t: Totals) -> Any:
    return ratio(t["instr_present"], t["instr_requested"], empty=np.nan)


@register(
    "instruction_unrequested_keys_rate",
    "partial prompts only: share of samples whose prediction has a top-level key that was "
    "not requested (null when the file has no partial prompt)",
    higher_is_better=False,
)
def instruction_unrequested_keys_rate(t: Totals) -> Any:
    return ratio(t["instr_unrequested"], t["partial"], empty=np.nan)


# ---------------------------------------------------------------- field-table metrics
def macro(field_totals: Mapping[str, Totals], name: str) -> float:
    """Unweighted mean of a leaf metric over fields (fields with any non-empty leaf)."""
    fn = REGISTRY[name].fn
    vals = [float(fn(t)) for t in field_totals.values() if _gold_leaves(t) + _pred_leaves(t) > 0]
    return float(np.mean(vals)) if vals else 1.0


MACRO_METRICS = {
    "macro_precision": "unweighted mean over fields of per-field precision",
    "macro_recall": "unweighted mean over fields of per-field recall",
    "macro_f1": "unweighted mean over fields of per-field F1 (fields with a non-empty leaf)",
}


# ---------------------------------------------------------------- latency
def percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


LATENCY_METRICS = {
    "n": "samples with a recorded latency",
    "mean_s": "mean latency per sample (seconds)",
    "p50_s": "median latency (seconds)",
    "p95_s": "95th percentile latency (seconds, linear interpolation)",
    "p99_s": "99th percentile latency (seconds, linear interpolation)",
    "throughput_per_s": "1 / mean latency: samples per second for one sequential worker",
}


def latency_summary(values: list[float]) -> dict[str, float | None]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    mean = float(arr.mean()) if len(arr) else None
    return {
        "n": len(arr),
        "mean_s": mean,
        "p50_s": percentile(arr, 50),
        "p95_s": percentile(arr, 95),
        "p99_s": percentile(arr, 99),
        "throughput_per_s": (1.0 / mean) if mean else None,
    }


def evaluate(totals: Totals, scope: str = "sample") -> dict[str, Any]:
    """Every registered metric of ``scope`` ("leaf" also runs for "sample") on ``totals``."""
    out: dict[str, Any] = {}
    for name, m in REGISTRY.items():
        if scope == "leaf" and m.scope != "leaf":
            continue
        v = m.fn(totals)
        if np.ndim(v) == 0:
            v = float(v)
            out[name] = None if np.isnan(v) else v  # not applicable (e.g. no partial prompt)
        else:
            out[name] = v
    return out


def definitions() -> dict[str, str]:
    out = {name: m.definition for name, m in REGISTRY.items()}
    out.update(MACRO_METRICS)
    out.update({f"latency.{k}": v for k, v in LATENCY_METRICS.items()})
    return out
