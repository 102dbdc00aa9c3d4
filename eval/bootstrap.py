"""Bootstrap confidence intervals and paired bootstrap tests over documents.

Samples of one document (several prompts) move together: the resampling unit is the
document (a cluster bootstrap). Each resample draws ``n_docs`` documents with
replacement; a metric is recomputed from the resampled totals of the additive
statistics, so every registered metric (``eval.metrics``) gets an interval without extra
code. Intervals are percentile intervals (2.5 %, 97.5 %).

Paired test for two systems on the same documents: the *same* resamples are applied to
both; the interval is that of the difference A - B, and the two-sided p-value is
``min(1, 2 * min(P(diff <= 0), P(diff >= 0)))`` over resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eval.metrics import REGISTRY, SAMPLE_STATS


@dataclass
class DocMatrix:
    """Per-document sums of the sample statistics, documents in a fixed order."""

    doc_ids: list[str]
    values: np.ndarray  # (n_docs, len(SAMPLE_STATS))

    def totals(self, weights: np.ndarray | None = None) -> dict[str, np.ndarray | float]:
        """Totals per statistic; with ``weights`` (B, n_docs) one total per resample."""
        if weights is None:
            sums = self.values.sum(axis=0)
            return {k: float(sums[i]) for i, k in enumerate(SAMPLE_STATS)}
        sums = weights @ self.values
        return {k: sums[:, i] for i, k in enumerate(SAMPLE_STATS)}


def doc_matrix(
    keys: Sequence[tuple[str, str]], stats: Sequence[Mapping[str, float]], doc_ids: Sequence[str]
) -> DocMatrix:
    """Sum sample statistics per document, for the documents in ``doc_ids`` (in that order)."""
    index = {d: i for i, d in enumerate(doc_ids)}
    values = np.zeros((len(doc_ids), len(SAMPLE_STATS)))
    for key, st in zip(keys, stats, strict=True):
        i = index.get(key[0])
        if i is None:
            continue
        values[i] += [st[k] for k in SAMPLE_STATS]
    return DocMatrix(list(doc_ids), values)


def resample_weights(n_docs: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_docs) multinomial counts: how often each document is drawn."""
    rng = np.random.default_rng(seed)
    if n_docs == 0:
        return np.zeros((n_resamples, 0))
    return rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=n_resamples).astype(float)


def metric_samples(
    m: DocMatrix, weights: np.ndarray, names: Sequence[str]
) -> dict[str, np.ndarray]:
    t = m.totals(weights)
    return {name: np.asarray(REGISTRY[name].fn(t), dtype=float) for name in names}


def confidence_intervals(
    m: DocMatrix, names: Sequence[str], n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile bootstrap interval per metric: ``{name: [low, high]}``."""
    w = resample_weights(len(m.doc_ids), n_resamples, seed)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict[str, list[float]] = {}
    for name, vals in metric_samples(m, w, names).items():
        out[name] = [float(np.percentile(vals, lo)), float(np.percentile(vals, hi))]
    return out


@dataclass
class PairedResult:
    metric: str
    a: str
    b: str
    diff: float  # metric(a) - metric(b) on the shared documents
    ci: list[float]
    p_value: float
    n_docs: int

    def to_dict(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "metric": self.metric,
            "diff": self.diff,
            "ci95": self.ci,
            "p_value": self.p_value,
            "n_docs": self.n_docs,
        }


def paired_bootstrap(
    a: DocMatrix,
    b: DocMatrix,
    names: Sequence[str],
    *,
    a_name: str,
    b_name: str,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[PairedResult]:
    """Differences A - B with intervals and p-values; ``a`` and ``b`` share ``doc_ids``."""
    if a.doc_ids != b.doc_ids:
        raise ValueError("paired bootstrap needs both systems on the same documents, same order")
    w = resample_weights(len(a.doc_ids), n_resamples, seed)
    sa, sb = metric_samples(a, w, names), metric_samples(b, w, names)
    ta, tb = a.totals(), b.totals()
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = []
    for name in names:
        d = sa[name] - sb[name]
        observed = float(REGISTRY[name].fn(ta)) - float(REGISTRY[name].fn(tb))
        p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
        if np.all(d == 0):
            p = 1.0
        out.append(
            PairedResult(
                name,
                a_name,
                b_name,
                observed,
                [float(np.percentile(d, lo)), float(np.percentile(d, hi))],
                p,
                len(a.doc_ids),
            )
        )
    return out
