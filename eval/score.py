"""Score prediction files against gold labels; write metrics.json, report.md, report.html.

    python -m eval.score --gold labels.jsonl --pred a.jsonl --pred b.jsonl \\
        --schema vat_invoice --out-dir reports/run1 [--name A --name B] \\
        [--input-format native|megemini] [--bootstrap 1000] [--config configs/eval/default.yaml] \\
        [key=value ...]

A system is named after its rows' ``system`` field (the file's stem when they have none),
so two files both called ``predictions.jsonl`` score side by side; two files naming the
same system get their folder added. ``--name`` (once per ``--pred``, in order) overrides.
Predictions join gold on ``(id, prompt)`` (see ``eval.loaders``). ``metrics.json`` is
documented in ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_tools.jsonl import gc_frozen, gc_paused
from eval.loaders import INPUT_FORMATS, InputError, Limits

if TYPE_CHECKING:
    from eval.loaders import GoldDoc
    from eval.scoring import FieldStats, Sample, SampleScore

# The heavy modules (numpy, scipy, numba, the scorers) are imported where they are used, so
# that ``--help`` and argument errors answer at once.

log = logging.getLogger(__name__)

METRICS_SCHEMA_VERSION = 1
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "eval" / "default.yaml"


@dataclass
class ScoreSettings:
    schema: str | None = "vat_invoice"
    bootstrap: int = 1000
    seed: int = 0
    worst_n: int = 10
    workers: int | None = None
    input_format: str = "native"
    canonicalize_keys: bool = False
    max_output_chars: int = 1_000_000  # limits per prediction; past one it is refused
    max_leaves: int = 20_000
    max_depth: int = 64

    @property
    def limits(self) -> Limits:
        return Limits(self.max_output_chars, self.max_leaves, self.max_depth)

    @classmethod
    def load(cls, path: str | Path | None, overrides: Sequence[Any] = ()) -> ScoreSettings:
        """``configs/eval/*.yaml`` + ``key=value`` overrides (``data_tools.config``)."""
        from data_tools.config import ConfigError, load_config

        try:
            return load_config(cls, path, overrides)
        except ConfigError as exc:
            raise InputError(str(exc)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ScoreSettings:
        return cls.load(path)


@dataclass
class SystemResult:
    name: str
    file: str
    samples: list[Sample]
    scores: list[SampleScore]
    fields: dict[str, FieldStats] = field(default_factory=dict)  # per-field sums
    summary: dict[str, Any] = field(default_factory=dict)


def _sum_stats(items: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    out = dict.fromkeys(keys, 0.0)
    for st in items:
        for k in keys:
            out[k] += st[k]
    return out


def _leaf_row(ftype: str | None, st: dict[str, float]) -> dict[str, Any]:
    from eval.metrics import evaluate

    row: dict[str, Any] = {}
    if ftype is not None:
        row["type"] = ftype
    row.update(
        support=int(st["tp"] + st["wrong"] + st["miss"]),
        tp=int(st["tp"]),
        wrong=int(st["wrong"]),
        miss=int(st["miss"]),
        hallucinated=int(st["hal"]),
    )
    row.update(evaluate(st, scope="leaf"))
    return row


def summarize(result: SystemResult, settings: ScoreSettings) -> dict[str, Any]:
    """The ``systems.<name>`` section of metrics.json."""
    from eval.bootstrap import confidence_intervals, doc_matrix
    from eval.metrics import (
        LEAF_STATS,
        MACRO_METRICS,
        REGISTRY,
        SAMPLE_STATS,
        evaluate,
        latency_summary,
        macro,
    )

    scores, samples = result.scores, result.samples
    totals = _sum_stats([s.stats for s in scores], SAMPLE_STATS)
    strict_totals = _sum_stats([s.strict_stats for s in scores], SAMPLE_STATS)

    field_totals = {name: fs.stats for name, fs in result.fields.items()}
    field_types = {name: fs.ftype for name, fs in result.fields.items()}
    type_totals: dict[str, dict[str, float]] = {}
    for name, t in field_totals.items():
        tt = type_totals.setdefault(field_types[name], dict.fromkeys(LEAF_STATS, 0.0))
        for k in LEAF_STATS:
            tt[k] += t[k]

    overall = evaluate(totals)
    for name in MACRO_METRICS:
        overall[name] = macro(field_totals, name.removeprefix("macro_"))
    overall_strict = evaluate(strict_totals)

    def groups(attr: str) -> dict[str, Any]:
        by: dict[str, list[dict[str, float]]] = defaultdict(list)
        for s, sc in zip(samples, scores, strict=True):
            by[getattr(s, attr)].append(sc.stats)
        return {
            g: {
                "n_samples": len(items),
                # one group of every sample: the same sums, in the same order, as the totals
                **evaluate(
                    totals if len(items) == len(scores) else _sum_stats(items, SAMPLE_STATS)
                ),
            }
            for g, items in sorted(by.items())
        }

    stages: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        for stage, v in s.stage_latency_s.items():
            stages[stage].append(v)
    latency = {
        "total": latency_summary([s.latency_s for s in samples if s.latency_s is not None]),
        "stages": {k: latency_summary(v) for k, v in sorted(stages.items())},
    }

    methods = defaultdict(int)
    for s in samples:
        methods[s.method] += 1
    health = {
        "methods": dict(sorted(methods.items())),
        "truncated": int(totals["json_truncated"]),
        "duplicate_keys": int(totals["json_dup"]),
        "conflicting_duplicate_keys": int(totals["json_conflict"]),
        "non_object": int(totals["json_non_object"]),
        "refused": int(totals["json_refused"]),
    }
    refused = [{"id": s.id, "prompt": s.prompt, "error": s.error} for s in samples if s.error]

    ranked = sorted(
        zip(samples, scores, strict=True),
        key=lambda p: (p[1].stats["doc_f1"], p[1].stats["nted_acc"]),
    )
    worst = [
        {
            "id": s.id,
            "prompt": s.prompt,
            "method": s.method,
            "doc_f1": sc.stats["doc_f1"],
            "donut_nted_accuracy": sc.stats["nted_acc"],
            "diffs": sc.diffs,
        }
        for s, sc in ranked[: settings.worst_n]
        if sc.diffs or s.method in ("failed", "missing")
    ]

    doc_ids = sorted({s.id for s in samples})
    ci: dict[str, list[float]] = {}
    if settings.bootstrap > 0 and doc_ids:
        m = doc_matrix([s.key for s in samples], [sc.stats for sc in scores], doc_ids)
        headline = [n for n, mt in REGISTRY.items() if mt.headline]
        ci = confidence_intervals(m, headline, settings.bootstrap, settings.seed)

    return {
        "file": result.file,
        "n_samples": len(samples),
        "n_docs": len(doc_ids),
        "overall": overall,
        "overall_strict": overall_strict,
        "ci95": ci,
        "json_health": health,
        "refused": refused,  # samples past the scorer's limits, each with the reason
        "latency": latency,
        "per_field": {k: _leaf_row(field_types[k], v) for k, v in field_totals.items()},
        "per_type": {k: _leaf_row(None, v) for k, v in sorted(type_totals.items())},
        "per_doc_type": groups("doc_type"),
        "per_source": groups("source"),
        "worst": worst,
    }


def compare(systems: Sequence[SystemResult], settings: ScoreSettings) -> list[dict[str, Any]]:
    """Paired bootstrap for every pair of systems on their shared (document, prompt) samples."""
    from eval.bootstrap import doc_matrix, paired_bootstrap
    from eval.metrics import REGISTRY

    out: list[dict[str, Any]] = []
    if settings.bootstrap <= 0:
        return out
    headline = [n for n, mt in REGISTRY.items() if mt.headline]
    for i in range(len(systems)):
        for j in range(i + 1, len(systems)):
            a, b = systems[i], systems[j]
            keys_a = {s.key: sc for s, sc in zip(a.samples, a.scores, strict=True)}
            keys_b = {s.key: sc for s, sc in zip(b.samples, b.scores, strict=True)}
            shared = sorted(set(keys_a) & set(keys_b))
            if not shared:
                log.warning("%s and %s share no (document, prompt) samples", a.name, b.name)
                continue
            doc_ids = sorted({k[0] for k in shared})
            ma = doc_matrix(shared, [keys_a[k].stats for k in shared], doc_ids)
            mb = doc_matrix(shared, [keys_b[k].stats for k in shared], doc_ids)
            for r in paired_bootstrap(
                ma, mb, headline, a_name=a.name, b_name=b.name,
                n_resamples=settings.bootstrap, seed=settings.seed,
            ):  # fmt: skip
                out.append(r.to_dict())
    return out


def load_schema_or_none(name: str | None) -> Any | None:
    if not name or name == "none":
        return None
    from data_tools.schema import load_schema

    return load_schema(name)


def system_names(paths: Sequence[str | Path], row_systems: Sequence[str | None]) -> list[str]:
    """One unique name per prediction file: its rows' ``system`` (else the file's stem);
    files that would share a name get their folder added (``name (folder)``), then a number."""
    base = [sysname or Path(p).stem for p, sysname in zip(paths, row_systems, strict=True)]
    out = list(base)
    for name in set(base):
        same = [i for i, b in enumerate(base) if b == name]
        if len(same) < 2:
            continue
        for i in same:
            folder = Path(paths[i]).resolve().parent.name
            out[i] = f"{name} ({folder})" if folder else name
    counts: dict[str, int] = {}
    for i, name in enumerate(out):
        if out.count(name) > 1:
            counts[name] = counts.get(name, 0) + 1
            out[i] = f"{name} #{counts[name]}"
    return out


def _load_inputs(
    pred_paths: Sequence[str | Path],
    gold_path: str | Path | None,
    settings: ScoreSettings,
    schema: Any,
) -> tuple[
    dict[str, GoldDoc],
    list[tuple[str, list[Sample]]],
    list[list[dict[str, Any]] | None],
    list[str | None],
]:
    """(gold, (file, samples) per prediction file, their calibration rows, their systems)."""
    from eval.loaders import read_gold, read_megemini, read_prediction_file

    limits = settings.limits
    gold: dict[str, GoldDoc] = {}
    loaded: list[tuple[str, list[Sample]]] = []
    calibration_rows: list[list[dict[str, Any]] | None] = []  # None: read the file for it
    row_systems: list[str | None] = []
    if settings.input_format == "megemini":
        for p in pred_paths:
            g, samples = read_megemini(p, limits)
            for k, doc in g.items():
                if k in gold and gold[k].fields != doc.fields:
                    log.warning("%s: sample %s has a different ground truth than before", p, k)
                gold.setdefault(k, doc)
            loaded.append((str(p), samples))
            calibration_rows.append(None)
            row_systems.append(None)
    else:
        if gold_path is None:
            raise InputError("--gold is required for --input-format native")
        gold = read_gold(gold_path)
        if schema is not None and settings.canonicalize_keys:
            for doc in gold.values():
                doc.fields = schema.canonicalize(doc.fields)
        for p in pred_paths:
            pf = read_prediction_file(p, gold, limits)
            if len(pf.systems) > 1:
                log.warning(
                    "%s: rows name %d systems (%s); the file is scored as one, named %r",
                    p, len(pf.systems), ", ".join(sorted(pf.systems)), pf.system,
                )  # fmt: skip
            if schema is not None and settings.canonicalize_keys:
                for s in pf.samples:
                    if isinstance(s.value, dict):
                        s.value = schema.canonicalize(s.value)
            loaded.append((str(p), pf.samples))
            calibration_rows.append(pf.calibration_rows)
            row_systems.append(pf.system)
    return gold, loaded, calibration_rows, row_systems


def score_files(
    pred_paths: Sequence[str | Path],
    *,
    gold_path: str | Path | None,
    names: Sequence[str] | None = None,
    settings: ScoreSettings | None = None,
) -> tuple[dict[str, Any], list[SystemResult]]:
    """Score every prediction file; returns (metrics.json content, per-system results)."""
    from eval.anls import ANLS_TAU
    from eval.metrics import definitions
    from eval.scoring import ScoringContext, score_samples

    settings = settings or ScoreSettings()
    if settings.input_format not in INPUT_FORMATS:
        raise InputError(f"unknown input format {settings.input_format!r}; use {INPUT_FORMATS}")
    if names and len(names) != len(pred_paths):
        raise InputError(f"--name given {len(names)} times for {len(pred_paths)} --pred files")
    if names and len(set(names)) != len(names):
        raise InputError(f"system names must be unique: {list(names)}")
    schema = load_schema_or_none(settings.schema)
    ctx = ScoringContext.from_schema(schema)
    limits = settings.limits

    with ExitStack() as frozen:  # gc_frozen() from the end of loading to the end of scoring
        # millions of parsed objects and no cycles: the collector would only re-walk them
        with gc_paused():
            gold, loaded, calibration_rows, row_systems = _load_inputs(
                pred_paths, gold_path, settings, schema
            )
            frozen.enter_context(gc_frozen())  # before the collector is back: it would walk them
        final_names = list(names) if names else system_names(pred_paths, row_systems)

        from eval.calibration import calibration_summary  # confidence and validation flag

        systems: list[SystemResult] = []
        for name, (p, samples) in zip(final_names, loaded, strict=True):
            t0 = time.perf_counter()
            run = score_samples(samples, ctx, workers=settings.workers, desc=f"scoring {name}")
            log.info(
                "%s: %d samples scored in %.1f s", name, len(samples), time.perf_counter() - t0
            )
            systems.append(SystemResult(name, p, samples, run.scores, run.fields))
        for sr, rows in zip(systems, calibration_rows, strict=True):
            sr.summary = summarize(sr, settings)
            sr.summary["calibration"] = calibration_summary(sr.file, gold, schema, rows=rows)

    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "gold": str(gold_path) if gold_path else None,
        "n_gold_docs": len(gold),
        "schema": settings.schema,
        "settings": {
            "bootstrap_resamples": settings.bootstrap,
            "seed": settings.seed,
            "anls_tau": ANLS_TAU,
            "input_format": settings.input_format,
            "canonicalize_keys": settings.canonicalize_keys,
            "limits": {
                "max_output_chars": limits.max_output_chars,
                "max_leaves": limits.max_leaves,
                "max_depth": limits.max_depth,
            },
        },
        "metric_definitions": definitions(),
        "systems": {sr.name: sr.summary for sr in systems},
        "comparisons": compare(systems, settings),
    }
    return metrics, systems


def latency_values(systems: Sequence[SystemResult]) -> dict[str, dict[str, list[float]]]:
    """Raw latencies per system and stage (``total`` + recorded stages), for the plot."""
    out: dict[str, dict[str, list[float]]] = {}
    for sr in systems:
        stages: dict[str, list[float]] = {"total": []}
        for s in sr.samples:
            if s.latency_s is not None:
                stages["total"].append(s.latency_s)
            for k, v in s.stage_latency_s.items():
                stages.setdefault(k, []).append(v)
        out[sr.name] = stages
    return out


def write_outputs(
    metrics: dict[str, Any], out_dir: str | Path, systems: Sequence[SystemResult] = ()
) -> list[Path]:
    """metrics.json, report.md, report.html and plots/*.png, each written atomically."""
    from data_tools.jsonl import atomic_write_text
    from eval.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    atomic_write_text(path, json.dumps(metrics, ensure_ascii=False, indent=2, default=str) + "\n")
    from eval.calibration import write_calibration_report

    return [
        path,
        *write_report(metrics, out, latency_values(systems)),
        *write_calibration_report(metrics, out),
    ]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m eval.score", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--gold", help="canonical labels.jsonl (not needed for --input-format megemini)"
    )
    ap.add_argument("--pred", action="append", required=True, help="predictions.jsonl; repeat")
    ap.add_argument("--name", action="append", help="system name per --pred, in order")
    ap.add_argument("--schema", help="schema name or YAML path; 'none' = every leaf is text")
    ap.add_argument("--out-dir", required=True, help="folder for metrics.json and the reports")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="eval YAML (configs/eval/)")
    ap.add_argument("--input-format", choices=INPUT_FORMATS, help="prediction file format")
    ap.add_argument("--bootstrap", type=int, help="bootstrap resamples (0 = no intervals)")
    ap.add_argument("--seed", type=int, help="bootstrap seed")
    ap.add_argument("--workers", type=int, help="scoring processes (default: CPU count)")
    ap.add_argument("--worst-n", type=int, help="worst samples listed per system")
    ap.add_argument(
        "--canonicalize-keys", action="store_true", default=None,
        help="rename aliases to canonical keys (schema) in gold and predictions before scoring",
    )  # fmt: skip
    ap.add_argument(
        "overrides", nargs="*",
        help="config overrides key=value after the flags (max_leaves=5000 max_depth=32)",
    )  # fmt: skip
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    flags = [
        (key, value)
        for key, value in (
            ("schema", args.schema),
            ("input_format", args.input_format),
            ("bootstrap", args.bootstrap),
            ("seed", args.seed),
            ("workers", args.workers),
            ("worst_n", args.worst_n),
            ("canonicalize_keys", args.canonicalize_keys),
        )
        if value is not None
    ]
    try:
        settings = ScoreSettings.load(args.config or None, [*args.overrides, *flags])
        metrics, systems = score_files(
            args.pred, gold_path=args.gold, names=args.name, settings=settings
        )
        written = write_outputs(metrics, args.out_dir, systems)
    except (InputError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    for name, sys_ in metrics["systems"].items():
        o = sys_["overall"]
        log.info(
            "%s: F1 %.4f  P %.4f  R %.4f  KIE acc %.4f  Donut nTED %.4f  ANLS* %.4f",
            name, o["f1"], o["precision"], o["recall"], o["kie_accuracy"],
            o["donut_nted_accuracy"], o["anls_star"],
        )  # fmt: skip
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
