"""Metric registry, sample statistics and bootstrap: hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest

from eval.bootstrap import confidence_intervals, doc_matrix, paired_bootstrap
from eval.metrics import REGISTRY, SAMPLE_STATS, definitions, evaluate, latency_summary
from eval.scoring import Sample, ScoringContext, score_sample


def totals(**kw: float) -> dict[str, float]:
    t = dict.fromkeys(SAMPLE_STATS, 0.0)
    t.update(kw)
    return t


def test_leaf_metrics_hand_computed() -> None:
    m = evaluate(totals(n=1, tp=6, wrong=2, miss=1, hal=1, anls_sum=7.5, anls_n=10))
    assert m["precision"] == pytest.approx(6 / 9)
    assert m["recall"] == pytest.approx(6 / 9)
    assert m["f1"] == pytest.approx(12 / (12 + 4 + 1 + 1))
    assert m["missing_rate"] == pytest.approx(1 / 9)
    assert m["wrong_rate"] == pytest.approx(2 / 9)
    assert m["hallucination_rate"] == pytest.approx(1 / 9)
    assert m["anls"] == pytest.approx(0.75)


def test_empty_cases() -> None:
    both_empty = evaluate(totals(n=1))
    assert both_empty["precision"] == both_empty["recall"] == both_empty["f1"] == 1.0
    nothing_predicted = evaluate(totals(n=1, miss=3))
    assert nothing_predicted["precision"] == 0.0
    assert nothing_predicted["recall"] == 0.0


def test_every_metric_has_a_definition() -> None:
    defs = definitions()
    for name, m in REGISTRY.items():
        assert len(m.definition) > 20, name
        assert defs[name] == m.definition
    assert "macro_f1" in defs and "latency.p95_s" in defs


def test_metrics_work_on_bootstrap_arrays() -> None:
    t = {k: np.array([1.0, 2.0]) for k in SAMPLE_STATS}
    for name, m in REGISTRY.items():
        assert np.shape(m.fn(t)) == (2,), name


def test_latency_summary() -> None:
    s = latency_summary([1.0, 2.0, 3.0, 4.0, None])
    assert s["n"] == 4
    assert s["mean_s"] == 2.5 and s["p50_s"] == 2.5
    assert s["p95_s"] == pytest.approx(3.85)
    assert s["throughput_per_s"] == pytest.approx(0.4)
    assert latency_summary([])["p50_s"] is None


def _sample(doc_id: str, gold: dict, value: object, method: str = "strict") -> Sample:
    return Sample(id=doc_id, prompt="OCR:{}", gold=gold, value=value, method=method)


def test_score_sample_views_and_health() -> None:
    ctx = ScoringContext({("total",): "amount"})
    gold = {"total": "¥10.00", "name": "A"}
    s = score_sample(_sample("d", gold, {"total": "10", "name": "B"}, "repaired"), ctx)
    assert (s.stats["tp"], s.stats["wrong"]) == (1, 1)
    assert s.stats["json_repaired"] == 1.0 and s.strict_stats["json_repaired"] == 1.0
    # strict view: a repaired output counts as {}
    assert (s.strict_stats["tp"], s.strict_stats["miss"]) == (0, 2)
    assert s.stats["kie_acc"] == 0.0  # "¥10.00" != "10" by str()
    assert s.diffs == [{"field": "name", "outcome": "wrong", "gold": "A", "pred": "B", "anls": 0.0}]
    failed = score_sample(_sample("d", gold, None, "failed"), ctx)
    assert failed.stats["miss"] == 2 and failed.stats["json_failed"] == 1.0
    listed = score_sample(_sample("d", gold, ["not", "an object"], "strict"), ctx)
    assert listed.stats["json_non_object"] == 1.0 and listed.stats["miss"] == 2


def test_instruction_following() -> None:
    ctx = ScoringContext()
    s = Sample(
        id="d",
        prompt='OCR:{"a":"","b":{"c":""}}',
        gold={"a": "1", "b": {"c": "2"}},
        value={"a": "1", "x": "extra"},
        method="strict",
        request={"a": "", "b": {"c": ""}},
    )
    st = score_sample(s, ctx).stats
    assert (st["partial"], st["instr_requested"], st["instr_present"]) == (1, 2, 1)
    assert st["instr_unrequested"] == 1.0


def test_bootstrap_interval_and_paired_test() -> None:
    rng = np.random.default_rng(0)
    keys = [(f"d{i}", "OCR:{}") for i in range(50)]
    good = [totals(n=1, tp=float(rng.integers(8, 11)), miss=1.0) for _ in keys]
    bad = [totals(n=1, tp=float(rng.integers(2, 5)), miss=6.0) for _ in keys]
    docs = [k[0] for k in keys]
    ma, mb = doc_matrix(keys, good, docs), doc_matrix(keys, bad, docs)
    ci = confidence_intervals(ma, ["recall"], n_resamples=300, seed=1)["recall"]
    point = float(REGISTRY["recall"].fn(ma.totals()))
    assert ci[0] <= point <= ci[1] and ci[1] - ci[0] < 0.1
    diff = paired_bootstrap(ma, mb, ["recall"], a_name="good", b_name="bad", n_resamples=300)[0]
    assert diff.diff > 0.3 and diff.ci[0] > 0 and diff.p_value < 0.01
    same = paired_bootstrap(ma, ma, ["recall"], a_name="a", b_name="a", n_resamples=100)[0]
    assert same.diff == 0.0 and same.p_value == 1.0
