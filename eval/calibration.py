"""Can the extractor's own signals be trusted? Confidence calibration and the validation flag.

    from eval.calibration import calibration_summary, write_calibration_plots

    summary = calibration_summary("predictions.jsonl", gold, schema)   # per system
    # {"confidence": {"n_leaves", "ece", "mce", "bins": [...], "brier", "thresholds": [...]},
    #  "validation": {"n_docs", "pass_rate", "doc": {"precision", "recall", ...},
    #                 "field": {...}}}
    write_calibration_plots(metrics, out_dir)     # plots/reliability_<system>.png

Confidence (rows with ``confidence.leaves``, see `data_tools.confidence`): every predicted,
non-empty leaf is a pair (confidence, correct). *Correct* means its normalised value
(`data_tools.normalize.normalize_value`, type from the schema) is among the gold values of
the same field (list indices dropped: ``items[].金额``), each gold value used once — an
order-free match, so a right value in a reordered line item counts as right. Reported:
the reliability table in ``n_bins`` equal-width bins (count, mean confidence, accuracy),
the expected calibration error ``ECE = Σ_b (n_b / n) |acc_b - conf_b|`` and the maximum
(MCE), the Brier score, and for thresholds 0.5…0.99 the share of documents routed to review
(any leaf below) and the leaf accuracy on the documents kept.

Validation (rows with ``validation``, see `data_tools.validation`): how often predictions
pass, and whether a failure predicts a wrong document — precision (flagged documents that
have a wrong or missing leaf) and recall (wrong documents that are flagged) — and, at field
level, whether the fields a failure names are the wrong ones.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from data_tools.jsonl import JsonlError, read_jsonl
from data_tools.normalize import normalize_value
from data_tools.prompts import PromptError, parse_prompt, project

log = logging.getLogger(__name__)

N_BINS = 10
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
_INDEX = re.compile(r"\[\d+\]")


def field_of(path_label: str) -> str:
    """``items[3].金额`` → ``items[].金额`` (the field a leaf belongs to)."""
    return _INDEX.sub("[]", path_label)


# ---------------------------------------------------------------- the numbers


def reliability(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS
) -> dict[str, Any]:
    """Reliability table, ECE, MCE and Brier score of (confidence, correct) pairs."""
    if len(confidences) != len(correct):
        raise ValueError("confidences and correct differ in length")
    n = len(confidences)
    bins = []
    ece = mce = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [
            i for i, c in enumerate(confidences) if lo <= c < hi or (b == n_bins - 1 and c == 1.0)
        ]
        if not idx:
            bins.append({"lo": lo, "hi": hi, "count": 0, "confidence": None, "accuracy": None})
            continue
        conf = sum(confidences[i] for i in idx) / len(idx)
        acc = sum(1 for i in idx if correct[i]) / len(idx)
        gap = abs(acc - conf)
        ece += len(idx) / n * gap
        mce = max(mce, gap)
        bins.append(
            {
                "lo": lo,
                "hi": hi,
                "count": len(idx),
                "confidence": round(conf, 6),
                "accuracy": round(acc, 6),
            }
        )
    brier = sum((c - (1.0 if k else 0.0)) ** 2 for c, k in zip(confidences, correct, strict=True))
    return {
        "n_leaves": n,
        "accuracy": round(sum(correct) / n, 6) if n else None,
        "mean_confidence": round(sum(confidences) / n, 6) if n else None,
        "ece": round(ece, 6) if n else None,
        "mce": round(mce, 6) if n else None,
        "brier": round(brier / n, 6) if n else None,
        "bins": bins,
    }


def _pr(tp: int, fp: int, fn: int) -> dict[str, Any]:
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(tp / (tp + fp), 6) if tp + fp else None,
        "recall": round(tp / (tp + fn), 6) if tp + fn else None,
    }


# ---------------------------------------------------------------- leaf matching


def _flat(value: Any, path: str, keys: tuple[str, ...], out: list[tuple[str, tuple, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(v, f"{path}.{k}" if path else str(k), (*keys, str(k)), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flat(v, f"{path}[{i}]", keys, out)
    else:
        out.append((path, keys, value))


def judge_leaves(gold: Any, prediction: Any, schema: Any | None = None) -> dict[str, Any]:
    """Per predicted non-empty leaf: correct or not (order-free per field); and the fields
    with a wrong, missing or invented leaf."""

    def norm(keys: tuple, v: Any) -> str:
        ftype = schema.field_type(keys) if schema is not None else "text"
        return normalize_value(v, ftype)

    gold_leaves: list[tuple[str, tuple, Any]] = []
    _flat(gold if isinstance(gold, dict) else {}, "", (), gold_leaves)
    pool: dict[str, Counter[str]] = {}
    for label, keys, v in gold_leaves:
        nv = norm(keys, v)
        if nv:
            pool.setdefault(field_of(label), Counter())[nv] += 1
    pred_leaves: list[tuple[str, tuple, Any]] = []
    _flat(prediction if isinstance(prediction, dict) else {}, "", (), pred_leaves)
    verdicts: dict[str, bool] = {}
    wrong_fields: set[str] = set()
    for label, keys, v in pred_leaves:
        nv = norm(keys, v)
        if not nv:
            continue
        f = field_of(label)
        bag = pool.get(f)
        if bag and bag[nv] > 0:
            bag[nv] -= 1
            verdicts[label] = True
        else:
            verdicts[label] = False
            wrong_fields.add(f)
    wrong_fields.update(f for f, bag in pool.items() if sum(bag.values()) > 0)  # missed
    return {"leaves": verdicts, "wrong_fields": wrong_fields}


# ---------------------------------------------------------------- one predictions file


def _gold_answer(fields: dict[str, Any], prompt: Any) -> dict[str, Any] | None:
    if not isinstance(prompt, str):
        return fields
    try:
        return project(fields, parse_prompt(prompt))
    except PromptError:
        return None


def calibration_from_rows(
    rows: Iterable[Mapping[str, Any]],
    gold_fields: Mapping[str, dict[str, Any]],
    schema: Any | None = None,
    *,
    n_bins: int = N_BINS,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any] | None:
    """Calibration and validation-flag statistics of prediction rows joined to gold by id.

    None when no row carries a confidence or a validation (nothing to report).
    """
    confs: list[float] = []
    correct: list[bool] = []
    per_doc: list[tuple[float, int, int]] = []  # (min confidence, right leaves, leaves)
    n_val = n_pass = 0
    d_tp = d_fp = d_fn = f_tp = f_fp = f_fn = 0
    for row in rows:
        if not isinstance(row.get("confidence"), Mapping) and not isinstance(
            row.get("validation"), Mapping
        ):
            continue  # nothing to judge it for (and judging every row costs seconds)
        gold = gold_fields.get(str(row.get("id")))
        if gold is None:
            continue
        answer = _gold_answer(gold, row.get("prompt"))
        if answer is None:
            continue
        judged = judge_leaves(answer, row.get("prediction"), schema)
        conf = row.get("confidence")
        leaves = conf.get("leaves") if isinstance(conf, Mapping) else None
        if isinstance(leaves, Mapping):
            doc = []
            for label, ok in judged["leaves"].items():
                c = leaves.get(label)
                if isinstance(c, (int, float)) and math.isfinite(c):
                    confs.append(min(1.0, max(0.0, float(c))))
                    correct.append(ok)
                    doc.append((confs[-1], ok))
            if doc:
                per_doc.append((min(c for c, _ in doc), sum(1 for _, ok in doc if ok), len(doc)))
        val = row.get("validation")
        if isinstance(val, Mapping) and "passed" in val:
            n_val += 1
            flagged = not val["passed"]
            n_pass += 0 if flagged else 1
            wrong = bool(judged["wrong_fields"])
            d_tp += flagged and wrong
            d_fp += flagged and not wrong
            d_fn += wrong and not flagged
            named = {
                field_of(f)
                for fail in val.get("failed") or []
                if isinstance(fail, Mapping)
                for f in fail.get("fields") or []
                if isinstance(f, str)
            }
            f_tp += len(named & judged["wrong_fields"])
            f_fp += len(named - judged["wrong_fields"])
            f_fn += len(judged["wrong_fields"] - named)
    if not confs and not n_val:
        return None
    out: dict[str, Any] = {}
    if confs:
        table = reliability(confs, correct, n_bins)
        routing = []
        for t in thresholds:
            kept = [d for d in per_doc if d[0] >= t]
            right, total = sum(d[1] for d in kept), sum(d[2] for d in kept)
            routing.append(
                {
                    "threshold": t,
                    "review_share": round(1 - len(kept) / len(per_doc), 6) if per_doc else None,
                    "kept_leaf_accuracy": round(right / total, 6) if total else None,
                }
            )
        out["confidence"] = {**table, "n_docs": len(per_doc), "thresholds": routing}
    if n_val:
        out["validation"] = {
            "n_docs": n_val,
            "pass_rate": round(n_pass / n_val, 6),
            "doc": _pr(d_tp, d_fp, d_fn),
            "field": _pr(f_tp, f_fp, f_fn),
        }
    return out


def calibration_summary(
    pred_path: str | Path,
    gold: Mapping[str, Any],
    schema: Any | None = None,
    *,
    rows: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """`calibration_from_rows` over a predictions file; `gold` maps id → GoldDoc (or fields).

    ``rows``: the file's rows already read (``eval.loaders.PredictionFile.calibration_rows``
    keeps those that carry a confidence or a validation: the only ones judged), so the
    file is not read again. Never raises on a file it cannot read as rows (another input
    format): returns None.
    """
    fields = {k: getattr(v, "fields", v) for k, v in gold.items()}
    if rows is None:
        try:
            rows = [row for _, row in read_jsonl(pred_path)]
        except (JsonlError, OSError, UnicodeDecodeError) as e:
            log.info("calibration: %s not read as prediction rows (%s)", pred_path, e)
            return None
    return calibration_from_rows(rows, fields, schema)


# ---------------------------------------------------------------- report pieces


def write_calibration_plots(metrics: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """A reliability diagram per system with confidences: ``plots/reliability_<name>.png``."""
    systems = {
        name: s["calibration"]["confidence"]
        for name, s in (metrics.get("systems") or {}).items()
        if isinstance(s, Mapping)
        and isinstance(s.get("calibration"), Mapping)
        and s["calibration"].get("confidence")
    }
    if not systems:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data_tools.jsonl import atomic_writer

    plots = Path(out_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in systems.items():
        fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
        bins = [b for b in table["bins"] if b["count"]]
        width = 1 / max(1, len(table["bins"]))
        ax.bar(
            [b["lo"] for b in bins],
            [b["accuracy"] for b in bins],
            width=width,
            align="edge",
            edgecolor="#1f4e79",
            color="#9dc3e6",
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="#888", label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy of the leaves in the bin")
        ax.set_title(f"{name}: ECE {table['ece']:.3f} (n={table['n_leaves']})", fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        safe = re.sub(r"[^\w.-]+", "_", name)
        path = plots / f"reliability_{safe}.png"
        with atomic_writer(path) as fh:
            fig.savefig(fh.buffer, format="png")
        plt.close(fig)
        written.append(path)
    return written


def calibration_markdown(metrics: Mapping[str, Any]) -> str:
    """A report section: validation flag and confidence calibration per system."""
    lines = ["## Validation and confidence", ""]
    any_row = False
    for name, s in (metrics.get("systems") or {}).items():
        cal = s.get("calibration") if isinstance(s, Mapping) else None
        if not cal:
            continue
        any_row = True
        lines.append(f"### {name}")
        v = cal.get("validation")
        if v:
            d, f = v["doc"], v["field"]
            lines.append(
                f"- validation: {v['pass_rate']:.1%} of {v['n_docs']} predictions pass; a "
                f"failure flags a wrong document with precision {_fmt(d['precision'])}, "
                f"recall {_fmt(d['recall'])}; the fields it names are wrong with precision "
                f"{_fmt(f['precision'])}, recall {_fmt(f['recall'])}"
            )
        c = cal.get("confidence")
        if c:
            safe = re.sub(r"[^\w.-]+", "_", name)
            lines.append(
                f"- confidence: ECE {c['ece']:.4f}, MCE {c['mce']:.4f}, Brier {c['brier']:.4f} "
                f"over {c['n_leaves']} leaves (accuracy {c['accuracy']:.1%}, mean confidence "
                f"{c['mean_confidence']:.1%})"
            )
            lines.append("")
            lines.append("| review below | documents routed | leaf accuracy of the rest |")
            lines.append("| ---: | ---: | ---: |")
            for r in c["thresholds"]:
                lines.append(
                    f"| {r['threshold']:g} | {_pct(r['review_share'])} | "
                    f"{_pct(r['kept_leaf_accuracy'])} |"
                )
            lines.append("")
            lines.append(f"![reliability]({'plots/reliability_' + safe + '.png'})")
        lines.append("")
    return "\n".join(lines) + "\n" if any_row else ""


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def write_calibration_report(metrics: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The scorer's hook: reliability diagrams into ``plots/`` and the section appended to
    ``report.md`` (rewritten atomically). Nothing when no system has confidence/validation."""
    from data_tools.jsonl import atomic_write_text

    section = calibration_markdown(metrics)
    if not section:
        return []
    written = write_calibration_plots(metrics, out_dir)
    md = Path(out_dir) / "report.md"
    if md.is_file():
        atomic_write_text(md, md.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + section)
        written.append(md)
    return written
