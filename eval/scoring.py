"""Score samples: one sample = one document x one prompt of one system.

``score_sample`` is a pure function of a ``Sample`` and a ``ScoringContext``; it returns
the sample's additive statistics (``eval.metrics.SAMPLE_STATS``) in two views -
*repaired* (whatever ``data_tools.parsing`` recovered) and *strict* (only strictly valid
JSON counts; anything else is scored as ``{}``) - plus per-field leaf statistics and the
leaf diffs the report shows for the worst samples. ``score_samples`` runs it over many
samples, in worker processes when there are enough of them.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from data_tools.jsonl import gc_frozen, gc_paused
from data_tools.normalize import normalize_value
from data_tools.prompts import requested_paths
from eval.align import HALLUCINATED, ITEM, MISS, TN, TP, WRONG, Normalizer, align
from eval.anls import anls_star
from eval.donut import donut_scores
from eval.kie_accuracy import kie_accuracy
from eval.metrics import LEAF_STATS, SAMPLE_STATS

log = logging.getLogger(__name__)

# how a prediction reached us; "given" = already parsed (no raw text), "missing" = no record,
# "refused" = past the scorer's size limits (eval.loaders.Limits)
PARSE_METHODS = ("strict", "embedded", "repaired", "failed", "given", "missing", "refused")
_OUTCOME_STAT = {TP: "tp", WRONG: "wrong", MISS: "miss", HALLUCINATED: "hal", TN: "tn"}
_LINE_ITEM_STAT = {k: "li_" + v for k, v in _OUTCOME_STAT.items()}
_ZERO_LEAF_STATS = dict.fromkeys(LEAF_STATS, 0.0)  # copied per field: never modified


@dataclass
class Sample:
    id: str
    prompt: str
    gold: Any  # the gold answer to this prompt (the gold fields projected on the request)
    value: Any  # the parsed prediction (None when nothing could be read)
    method: str  # one of PARSE_METHODS
    request: dict[str, Any] = field(default_factory=dict)  # {} = full prompt
    truncated: bool = False
    duplicate_keys: list[str] = field(default_factory=list)
    conflicting_duplicate_keys: list[str] = field(default_factory=list)
    doc_type: str = "unknown"
    source: str = "unknown"
    latency_s: float | None = None
    stage_latency_s: dict[str, float] = field(default_factory=dict)
    raw_output: str | None = None
    error: str | None = None  # why the prediction was refused (then it is scored as {})

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.prompt)


@dataclass
class ScoringContext:
    """What ``score_sample`` needs besides the sample; picklable for worker processes."""

    field_types: dict[tuple[str, ...], str] = field(default_factory=dict)  # leaf path -> type

    def type_of(self, path: tuple[str, ...]) -> str:
        """Type of a leaf path (no ``[]`` markers); ``text`` for paths the schema lacks."""
        return self.field_types.get(path, "text")

    @classmethod
    def from_schema(cls, schema: Any | None) -> ScoringContext:
        """Leaf types from a ``data_tools.schema.Schema`` (None: every leaf is text)."""
        if schema is None:
            return cls()
        types = {}
        for path in schema.leaf_paths():
            plain = tuple(p for p in path if p != ITEM)
            types[plain] = schema.field_type(plain)
        return cls(types)


@dataclass
class FieldStats:
    ftype: str
    stats: dict[str, float]


@dataclass
class SampleScore:
    key: tuple[str, str]
    stats: dict[str, float]  # repaired view
    strict_stats: dict[str, float]
    fields: dict[str, FieldStats]  # repaired view, per field
    diffs: list[dict[str, Any]]  # leaves that are not TP/TN (repaired view)


def _zero_stats() -> dict[str, float]:
    return dict.fromkeys(SAMPLE_STATS, 0.0)


def _path_present(value: Any, path: Sequence[str]) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head == ITEM:
        if not isinstance(value, list):
            return False
        return all(_path_present(v, rest) for v in value if isinstance(v, dict)) and all(
            isinstance(v, dict) for v in value
        )
    if not isinstance(value, dict) or head not in value:
        return False
    return _path_present(value[head], rest)


def _view_value(sample: Sample, strict: bool) -> tuple[Any, bool]:
    """(the dict to score, whether the output was a non-object)."""
    ok = ("strict", "given") if strict else ("strict", "embedded", "repaired", "given")
    if sample.method not in ok or sample.value is None:
        return {}, False
    if not isinstance(sample.value, dict):
        return {}, True
    return sample.value, False


def _score_view(
    sample: Sample, pred: Any, norm: Normalizer, with_fields: bool
) -> tuple[dict[str, float], dict[str, FieldStats], list[dict[str, Any]]]:
    st = _zero_stats()
    st["n"] = 1.0
    alignment = align(sample.gold, pred, norm)
    per_field: dict[str, FieldStats] = {}
    diffs: list[dict[str, Any]] = []
    for leaf in alignment.leaves:
        outcome = leaf.outcome
        stat = _OUTCOME_STAT[outcome]
        st[stat] += 1
        counted = outcome != TN
        if counted:
            st["anls_sum"] += leaf.anls
            st["anls_n"] += 1
            if leaf.line_item:
                st[_LINE_ITEM_STAT[outcome]] += 1
        if with_fields:
            fs = per_field.get(leaf.field)
            if fs is None:
                fs = per_field[leaf.field] = FieldStats(leaf.ftype, _ZERO_LEAF_STATS.copy())
            stats = fs.stats
            stats[stat] += 1
            if counted:
                stats["anls_sum"] += leaf.anls
                stats["anls_n"] += 1
                if outcome != TP:
                    diffs.append(
                        {
                            "field": leaf.field,
                            "outcome": outcome,
                            "gold": leaf.gold,
                            "pred": leaf.pred,
                            "anls": round(leaf.anls, 4),
                        }
                    )
    st["rows_exact"] = alignment.rows.exact
    st["rows_gold"] = alignment.rows.gold
    st["rows_pred"] = alignment.rows.pred
    errors = st["wrong"] + st["miss"] + st["hal"]
    st["exact"] = 1.0 if errors == 0 else 0.0
    denom = 2 * st["tp"] + 2 * st["wrong"] + st["miss"] + st["hal"]
    st["doc_f1"] = 1.0 if denom == 0 else 2 * st["tp"] / denom
    st["kie_acc"] = kie_accuracy(sample.gold, pred)
    dc, st["nted_acc"] = donut_scores(pred, sample.gold)
    st["donut_tp"] = dc.tp
    st["donut_err"] = dc.fn_or_fp
    st["anls_star"] = anls_star(sample.gold, pred, plain_json=True)  # parsed JSON, both
    if sample.request:
        st["partial"] = 1.0
        paths = requested_paths(sample.request)
        st["instr_requested"] = len(paths)
        st["instr_present"] = sum(_path_present(pred, p) for p in paths)
        st["instr_unrequested"] = float(any(k not in sample.request for k in pred))
    return st, per_field, diffs


def score_sample(
    sample: Sample, ctx: ScoringContext, norm: Normalizer | None = None
) -> SampleScore:
    """Both views of one sample. Never raises on any JSON value in ``sample.value``."""
    norm = norm or Normalizer(normalize_value, ctx.type_of)
    pred, non_object = _view_value(sample, strict=False)
    try:
        stats, fields, diffs = _score_view(sample, pred, norm, with_fields=True)
    except RecursionError:  # absurdly deep JSON: score it as an unusable answer
        log.warning("sample %s: prediction nested too deeply to score; scored as {}", sample.id)
        pred, non_object = {}, True
        stats, fields, diffs = _score_view(sample, pred, norm, with_fields=True)
    if sample.method in ("strict", "given", "missing", "failed", "refused") or non_object:
        strict_stats = dict(stats)  # both views read the same value
    else:
        strict_pred, _ = _view_value(sample, strict=True)
        strict_stats, _, _ = _score_view(sample, strict_pred, norm, with_fields=False)
    health = {
        "json_strict": sample.method == "strict",
        "json_embedded": sample.method == "embedded",
        "json_repaired": sample.method == "repaired",
        "json_failed": sample.method == "failed",
        "json_given": sample.method == "given",
        "json_missing": sample.method == "missing",
        "json_refused": sample.method == "refused",
        "json_truncated": sample.truncated,
        "json_dup": bool(sample.duplicate_keys),
        "json_conflict": bool(sample.conflicting_duplicate_keys),
        "json_non_object": non_object,
    }
    for k, v in health.items():
        stats[k] = strict_stats[k] = float(v)
    return SampleScore(sample.key, stats, strict_stats, fields, diffs)


@dataclass
class ScoredRun:
    """Scores of many samples; per-field statistics summed over all of them."""

    scores: list[SampleScore]  # in sample order; their ``fields`` are emptied
    fields: dict[str, FieldStats]

    def absorb(self, other: ScoredRun) -> None:
        self.scores.extend(other.scores)
        self.add_fields(other.fields)

    def add_fields(self, fields: dict[str, FieldStats], *, take: bool = False) -> None:
        """Add per-field statistics; ``take``: the caller gives up ``fields`` (no copies)."""
        for name, fs in fields.items():
            mine = self.fields.get(name)
            if mine is None:
                self.fields[name] = fs if take else FieldStats(fs.ftype, dict(fs.stats))
            else:
                for k, v in fs.stats.items():
                    mine.stats[k] += v


def _score_chunk(args: tuple[list[Sample], ScoringContext]) -> ScoredRun:
    samples, ctx = args
    norm = Normalizer(normalize_value, ctx.type_of)
    run = ScoredRun([], {})
    for s in samples:
        sc = score_sample(s, ctx, norm)
        run.add_fields(sc.fields, take=True)
        sc.fields = {}  # summed above; keeps what crosses process boundaries small
        run.scores.append(sc)
    return run


# (chunks, ctx) of the ``score_samples`` call in progress: worker processes forked from it
# read their chunk from here (inherited memory) instead of receiving it pickled
_SHARED: tuple[list[list[Sample]], ScoringContext] | None = None


def _score_shared(index: int) -> ScoredRun:
    assert _SHARED is not None
    chunks, ctx = _SHARED
    return _score_chunk((chunks[index], ctx))


def warm_up() -> None:
    """Import and compile what scoring needs (scipy, munkres, numba's DP) once, in this
    process: worker processes forked afterwards inherit it instead of paying seconds each."""
    from eval.align import warm_up as align_warm_up
    from eval.anls import anls_star as _anls_star
    from eval.donut import donut_ted, tree_of

    align_warm_up()
    _anls_star({"a": ["x", "y", "z", "w", "v"]}, {"a": ["y", "x", "z", "w", "v"]})  # munkres
    tree = tree_of({"a": "x"})
    donut_ted(tree, tree)  # numba compiles its one kernel, or loads it from its cache


def _pool_context() -> Any:
    """``fork`` where the platform has it (workers share the warmed-up parent), else default."""
    import multiprocessing

    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


PARALLEL_MIN_SAMPLES = 500  # fewer: scored in this process (about 1.6 ms each here)


def score_samples(
    samples: Sequence[Sample],
    ctx: ScoringContext,
    *,
    workers: int | None = None,
    chunk_size: int | None = None,
    desc: str = "scoring",
) -> ScoredRun:
    """Score every sample (order kept); ``workers`` processes (default: CPU count) when > 1.

    ``chunk_size`` None: serial below ``PARALLEL_MIN_SAMPLES`` (starting workers costs more
    than it saves), else at least 16 chunks per worker (25-100 samples each), so that the
    last chunks keep every worker busy until the end.
    """
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if chunk_size is None:
        if len(samples) < PARALLEL_MIN_SAMPLES:
            workers = 1
        chunk_size = max(25, min(100, -(-len(samples) // (16 * max(workers, 1)))))
    chunks = [list(samples[i : i + chunk_size]) for i in range(0, len(samples), chunk_size)]
    run = ScoredRun([], {})
    bar = tqdm(
        total=len(samples), desc=desc, unit="sample", leave=False, disable=len(samples) < 500
    )
    with bar:
        if workers <= 1 or len(chunks) <= 1:
            for c in chunks:
                run.absorb(_score_chunk((c, ctx)))
                bar.update(len(c))
            return run
        global _SHARED
        mp_context = _pool_context()
        _SHARED = (chunks, ctx) if mp_context is not None else None
        # Forked workers inherit every object loaded so far (the samples: millions). Frozen,
        # the workers' garbage collector neither scans them nor, by touching them, makes
        # the kernel copy their pages (benchmarks/score.py A/B here: wall 0.93, CPU 1.00).
        # Frozen before the warm-up too: importing numba and loading its kernels triggers
        # collections that would otherwise walk the samples (0.2-0.45 s for 10,000).
        try:
            with gc_frozen() if _SHARED is not None else nullcontext():
                warm_up()
                # the results coming back are acyclic too; the workers collect as usual
                with (
                    gc_paused(),
                    ProcessPoolExecutor(
                        max_workers=min(workers, len(chunks)),
                        mp_context=mp_context,
                        initializer=gc.enable,
                    ) as pool,
                ):
                    parts: Iterable[ScoredRun]
                    if _SHARED is not None:  # forked workers inherit the chunks: no pickling
                        parts = pool.map(_score_shared, range(len(chunks)))
                    else:
                        parts = pool.map(_score_chunk, [(c, ctx) for c in chunks])
                    for c, part in zip(chunks, parts, strict=True):
                        run.absorb(part)
                        bar.update(len(c))
        finally:
            _SHARED = None
    return run
