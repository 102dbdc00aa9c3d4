"""The labeler against the local stub: correctness, faults, resume, review, QA."""

from __future__ import annotations

import asyncio
import copy
import fcntl
import json
from pathlib import Path

import pytest

from data_tools import label as label_mod
from data_tools.config import ConfigError, apply_overrides
from data_tools.label import LabelConfig, LabelConfigError, run
from data_tools.runner import BadInput
from tests.labeling.conftest import fast_config, jsonl_rows, labels_by_id
from tests.support.openai_stub import (
    TRANSIENT_FAULTS,
    FaultPlan,
    OpenAIStub,
    request_text,
)


def test_labels_match_truth_then_resume_skips_done(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(6)
    out = tmp_path / "out"
    with OpenAIStub(inv.responder, latency_s=0.02) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out))
        assert (s.ok, s.failed, s.counters.get("needs_review", 0), s.exit_code) == (6, 0, 0, 0)
        labels = labels_by_id(out)
        assert set(labels) == set(inv.truth)
        for key, rec in labels.items():
            assert rec["fields"] == inv.truth[key]
            assert list(rec["fields"]) == list(inv.truth[key])  # canonical order
            assert rec["doc_type"] == "vat_invoice"
            assert rec["meta"]["agreement"] == 1.0
            assert rec["meta"]["qa"]["verdict"] == "pass"
            assert rec["meta"]["labeler"]["prompt_indices"] == [0, 1]
            assert (out / rec["image"]).resolve() == inv.paths[key].resolve()
        # both votes used different prompts carrying the schema skeleton, thinking disabled
        bodies = [r.body for r in stub.requests]
        assert len(bodies) == 12
        texts = {request_text(b) for b in bodies}
        assert len(texts) == 2 and all('"发票代码": ""' in t for t in texts)
        assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in bodies)

        # a rerun labels nothing; new images only are labeled
        s2 = run(fast_config(stub.base_url, inv.folder, out))
        assert (s2.done_before, s2.todo, len(stub.requests)) == (6, 0, 12)
        for i in range(6, 9):
            inv.add(f"inv{i:04d}", i)
        s3 = run(fast_config(stub.base_url, inv.folder, out))
        assert (s3.done_before, s3.ok, len(stub.requests)) == (6, 3, 18)
    assert set(labels_by_id(out)) == set(inv.truth)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["ok"] == 3
    assert summary["config"]["client"].get("api_key") in (None, "***")  # never a key on disk


def test_thirty_percent_faults_every_image_accounted_for(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(30)
    poisoned = {"inv0003": "500", "inv0007": "invalid_json"}

    def when(index: int, body: dict) -> str | None:
        return poisoned.get(inv.key_of(body) or "")

    plan = FaultPlan(rate=0.3, kinds=TRANSIENT_FAULTS, seed=7, when=when, hang_s=3)
    out = tmp_path / "out"
    with OpenAIStub(inv.responder, latency_s=0.01, faults=plan) as stub:
        cfg = fast_config(stub.base_url, inv.folder, out, "client.timeout_s=0.5")
        s = run(cfg)
        stats = stub.stats()
    # every kind of fault was injected, at about the requested rate
    assert set(stats["faults"]) >= set(TRANSIENT_FAULTS)
    labels = labels_by_id(out)
    failures = {r["id"]: r for r in jsonl_rows(out / "failures.jsonl")}
    assert set(labels) | set(failures) == set(inv.truth)
    assert not set(labels) & set(failures)
    # the poisoned images fail; a few others may exhaust their attempts on random faults,
    # and each failure says why
    assert set(failures) >= set(poisoned)
    assert len(failures) <= len(poisoned) + 3
    assert all(f["reason"] and f["stage"] in ("request", "answer") for f in failures.values())
    assert "HTTP 500" in failures["inv0003"]["reason"]
    assert failures["inv0003"]["stage"] == "request"
    assert "no JSON" in failures["inv0007"]["reason"]
    assert failures["inv0007"]["stage"] == "answer"
    # faulty answers (duplicate keys, truncation, prose) never reach a label
    for key, rec in labels.items():
        assert rec["fields"] == inv.truth[key], key
    assert s.exit_code == 1 and s.failed == len(failures) and s.ok == len(labels)
    assert s.counters["answer_retries"] > 0


def test_torn_tail_is_dropped_and_the_image_relabeled(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(4)
    out = tmp_path / "out"
    with OpenAIStub(inv.responder) as stub:
        run(fast_config(stub.base_url, inv.folder, out))
        lines = (out / "labels.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        lost = json.loads(lines[-1])["id"]
        # a crash in the middle of the last append: half a line, no newline
        (out / "labels.jsonl").write_text("".join(lines[:-1]) + lines[-1][:57], encoding="utf-8")
        s = run(fast_config(stub.base_url, inv.folder, out))
        assert s.dropped_torn_lines == ["labels.jsonl"]
        assert (s.todo, s.ok) == (1, 1)
        assert len(stub.requests) == 4 * 2 + 2  # only the lost image asked again
    labels = labels_by_id(out)
    assert set(labels) == set(inv.truth)
    assert labels[lost]["fields"] == inv.truth[lost]


def test_failures_are_skipped_until_retry_failed(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(3)
    out = tmp_path / "out"
    broken = {"on": True}

    def when(index: int, body: dict) -> str | None:
        return "500" if broken["on"] and inv.key_of(body) == "inv0001" else None

    with OpenAIStub(inv.responder, faults=FaultPlan(when=when)) as stub:
        cfg_args = (stub.base_url, inv.folder, out, "client.max_attempts=2")
        s1 = run(fast_config(*cfg_args))
        assert (s1.ok, s1.failed) == (2, 1)
        n = len(stub.requests)
        s2 = run(fast_config(*cfg_args))
        assert (s2.failed_before, s2.todo, len(stub.requests)) == (1, 0, n)
        broken["on"] = False
        s3 = run(fast_config(*cfg_args, "retry_failed=true"))
        assert (s3.ok, s3.failed) == (1, 0)
    assert set(labels_by_id(out)) == set(inv.truth)


def test_400_on_image_reencodes_smaller(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(3, size=(1200, 900), suffix=".jpg")
    out = tmp_path / "out"
    sizes = sorted(p.stat().st_size for p in inv.paths.values())
    # the server refuses images over a limit: the photos are over it, smaller JPEGs are not
    plan = FaultPlan(max_image_bytes=sizes[0] // 2)
    with OpenAIStub(inv.responder, faults=plan) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out))
        assert s.ok == 3, jsonl_rows(out / "failures.jsonl")
        assert stub.stats()["faults"]["400_image"] >= 3
    for key, rec in labels_by_id(out).items():
        assert rec["meta"]["image_sent"]["shrunk"] >= 1
        assert rec["meta"]["image_sent"]["bytes"] <= sizes[0] // 2
        assert rec["fields"] == inv.truth[key]

    out2 = tmp_path / "out2"
    with OpenAIStub(inv.responder, faults=FaultPlan(max_image_bytes=10)) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out2))
    fails = jsonl_rows(out2 / "failures.jsonl")
    assert s.failed == 3 and len(fails) == 3
    assert all("HTTP 400" in f["reason"] and "2 smaller" in f["reason"] for f in fails)


def test_401_stops_the_run_with_exit_3(invoice_set, tmp_path: Path, monkeypatch) -> None:
    inv = invoice_set(20)
    out = tmp_path / "out"
    monkeypatch.setenv("ERNIE_API_KEY", "sk-wrong")
    with OpenAIStub(inv.responder, faults=FaultPlan(api_key="sk-right")) as stub:
        cfg = fast_config(stub.base_url, inv.folder, out, "concurrency=2")
        s = run(cfg)
        assert s.exit_code == 3
        assert "401" in (s.fatal or "") and "ERNIE_API_KEY" in s.fatal
        assert len(stub.requests) <= 4  # stopped at once, not 20 x 2 x 6 attempts
        rc = label_mod.main(
            [
                "--config",
                str(label_mod.Path(__file__).parents[2] / "configs/label/vat_invoice.yaml"),
                f"images={inv.folder}",
                f"out_dir={out}",
                f"client.base_urls=[{stub.base_url}]",
                "--no-progress",
            ]
        )
        assert rc == 3
        monkeypatch.setenv("ERNIE_API_KEY", "sk-right")
        assert run(cfg).ok == 20
    assert jsonl_rows(out / "failures.jsonl") == []
    # a key revoked mid-run (the preflight passed): the run stops at the first 401
    out2 = tmp_path / "out2"
    with OpenAIStub(inv.responder, faults=FaultPlan(script=[None] * 3 + ["401"] * 100)) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out2, "concurrency=2"))
        assert s.exit_code == 3 and "401" in (s.fatal or "")
        assert len(stub.requests) <= 3 + 4
    assert len(jsonl_rows(out2 / "labels.jsonl")) <= 2
    assert jsonl_rows(out2 / "failures.jsonl") == []  # not blamed on the images


def test_unreachable_endpoint_is_fatal_and_named(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(1)
    summary = run(fast_config("http://127.0.0.1:9/v1", inv.folder, tmp_path / "o"))
    assert summary.exit_code == 3 and "no endpoint reachable" in summary.fatal
    assert jsonl_rows(tmp_path / "o" / "failures.jsonl") == []  # not blamed on the images


def _disagreeing(inv, bad: set[str]):
    def responder(body: dict) -> str:
        text = inv.responder(body)
        key = inv.key_of(body)
        if key in bad and "data-entry clerk" in request_text(body):
            obj = json.loads(text)
            obj["发票号码"] = "99999999"
            return json.dumps(obj, ensure_ascii=False)
        return text

    return responder


def test_disagreeing_votes_go_to_review(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(5)
    bad = {"inv0001", "inv0004"}
    out = tmp_path / "out"
    with OpenAIStub(_disagreeing(inv, bad)) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out))
    assert (s.ok, s.counters.get("needs_review", 0)) == (5, 2)
    review = {r["id"]: r for r in jsonl_rows(out / "needs_review.jsonl")}
    assert set(review) == bad
    for key in bad:
        rec = labels_by_id(out)[key]
        assert rec["meta"]["needs_review"] is True
        assert rec["meta"]["agreement"] < 1.0
        (d,) = rec["meta"]["disagreements"]
        assert d["path"] == "发票号码"
        assert d["values"] == [inv.truth[key]["发票号码"], "99999999"]
        assert rec["fields"]["发票号码"] == inv.truth[key]["发票号码"]  # primary prompt wins a tie
        assert "agreement" in review[key]["reasons"][0]
    # a lower threshold accepts them; 3 votes with a majority fix the field
    out2 = tmp_path / "out2"
    with OpenAIStub(_disagreeing(inv, bad)) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out2, "agreement_threshold=0.9"))
    assert s.counters.get("needs_review", 0) == 0


def test_needs_review_is_rebuilt_from_labels(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(3)
    out = tmp_path / "out"
    with OpenAIStub(_disagreeing(inv, {"inv0002"})) as stub:
        run(fast_config(stub.base_url, inv.folder, out))
        # a crash between the label append and the review append loses the review row
        (out / "needs_review.jsonl").write_text("", encoding="utf-8")
        run(fast_config(stub.base_url, inv.folder, out))
    assert [r["id"] for r in jsonl_rows(out / "needs_review.jsonl")] == ["inv0002"]


def test_qa_failure_is_recorded_and_reviewed(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(2)
    wrong = copy.deepcopy(inv.truth["inv0000"])
    wrong["合计"]["金额"] = "¥1211.11"  # the line amounts no longer add up
    inv.responder._truth["inv0000"] = wrong
    inv.truth["inv0000"] = wrong
    out = tmp_path / "out"
    with OpenAIStub(inv.responder) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out))
    assert (s.ok, s.counters.get("needs_review", 0)) == (2, 1)
    rec = labels_by_id(out)["inv0000"]
    assert rec["meta"]["qa"]["verdict"] == "fail"
    assert any(r.startswith("sums.amount") for r in rec["meta"]["qa"]["hard"])
    (review,) = jsonl_rows(out / "needs_review.jsonl")
    assert review["id"] == "inv0000" and "sums.amount" in review["reasons"][0]


def test_aliased_and_numeric_answers_are_canonicalized(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(1)
    truth = inv.truth["inv0000"]

    def responder(body: dict) -> str:
        # a labeler that ignores the template: aliases, a wrapper group, numbers, a fence
        ans = {
            "发票信息": {"发票代码": truth["发票代码"], "发票编号": truth["发票号码"]},
            "开票日期": truth["开票日期"],
            "购买方信息": truth["购买方"],
            "销售方": truth["销售方"],
            "货物或应税劳务、服务": {**truth["货物或应税劳务、服务"][0], "数量": 5},
            "合计": truth["合计"],
            "价税合计（大写）": truth["价税合计（大写）"],
            "价税合计（小写）": truth["价税合计（小写）"],
            "销售方（章）": "广州晶东贸易有限公司 发票专用章",
        }
        return "```json\n" + json.dumps(ans, ensure_ascii=False) + "\n```"

    out = tmp_path / "out"
    with OpenAIStub(responder) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out))
    assert s.ok == 1
    rec = labels_by_id(out)["inv0000"]
    f = rec["fields"]
    assert f["发票号码"] == truth["发票号码"]
    assert f["购买方"] == truth["购买方"]
    assert f["货物或应税劳务、服务"][0]["数量"] == "5"
    assert "销售方（章）" not in f and "发票信息" not in f
    assert rec["meta"]["canonicalize"]["renamed"]
    assert rec["meta"]["parse"][0]["method"] == "embedded"
    assert rec["meta"]["qa"]["verdict"] == "pass"


def test_free_mode_without_schema(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(2)
    out = tmp_path / "out"
    answer = {"Shop": "ACME", "Items": [{"name": "tea", "price": "3.00"}]}
    with OpenAIStub(lambda body: json.dumps(answer)) as stub:
        s = run(
            fast_config(stub.base_url, inv.folder, out, "mode=free", "schema=null", "prompts=null")
        )
        texts = {request_text(r.body) for r in stub.requests}
    assert s.ok == 2
    assert all("{" not in t for t in texts)  # no skeleton in free-form prompts
    for rec in labels_by_id(out).values():
        assert rec["fields"] == answer
        assert rec["doc_type"] == "vat_invoice"
        assert "qa" not in rec["meta"]


def test_unreadable_image_is_a_failure(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(2)
    (inv.folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    with OpenAIStub(inv.responder) as stub:
        s = run(fast_config(stub.base_url, inv.folder, out))
    (fail,) = jsonl_rows(out / "failures.jsonl")
    assert (s.ok, s.failed, fail["id"], fail["stage"]) == (2, 1, "broken", "image")


def test_concurrency_bounds_requests_in_flight(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(24)
    with OpenAIStub(inv.responder, latency_s=0.05) as stub:
        run(fast_config(stub.base_url, inv.folder, tmp_path / "o", "concurrency=5"))
        assert stub.stats()["max_in_flight"] == 5


def test_two_base_urls_share_the_work(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(6)
    with OpenAIStub(inv.responder) as a, OpenAIStub(inv.responder) as b:
        s = run(fast_config([a.base_url, b.base_url], inv.folder, tmp_path / "o"))
        assert s.ok == 6
        assert len(a.requests) == len(b.requests) == 6


def test_second_run_on_the_same_folder_is_refused(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(1)
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".label.lock").open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(BadInput, match="in use"):
            run(fast_config("http://127.0.0.1:9/v1", inv.folder, out))


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    client = {"base_urls": ["http://h/v1"], "model": "m"}
    with pytest.raises(LabelConfigError, match=r"votez: unknown key.*did you mean 'votes'"):
        LabelConfig.from_dict({"images": "x", "out_dir": "y", "client": client, "votez": 2})
    with pytest.raises(LabelConfigError, match="client: missing required key"):
        LabelConfig.from_dict({"images": "x", "out_dir": "y", "client": {}})
    with pytest.raises(LabelConfigError, match="client"):
        LabelConfig.from_dict({"images": "x", "out_dir": "y"})
    with pytest.raises(LabelConfigError, match="skeleton"):
        LabelConfig.from_dict(
            {
                "images": "x",
                "out_dir": "y",
                "client": {"base_urls": ["http://h/v1"], "model": "m"},
                "prompts": ["no placeholder"],
            }
        )
    d: dict = {"client": {"model": "a"}}
    apply_overrides(d, ["client.base_urls=[http://a/v1, http://b/v1]", "votes=3", "x.y=null"])
    assert d == {
        "client": {"model": "a", "base_urls": ["http://a/v1", "http://b/v1"]},
        "votes": 3,
        "x": {"y": None},
    }
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["votes"])


def test_cli_dry_run_prints_the_prompts(capsys, invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(2)
    rc = label_mod.main(
        ["--config", str(Path(__file__).parents[2] / "configs/label/vat_invoice.yaml"),
         f"images={inv.folder}", f"out_dir={tmp_path / 'o'}", "--dry-run"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 image(s)" in out and "--- vote 2 (prompt 1)" in out
    assert '"价税合计（小写）": ""' in out
    assert not (tmp_path / "o").exists()


def test_library_entry_point_is_async(invoice_set, tmp_path: Path) -> None:
    inv = invoice_set(1)
    with OpenAIStub(inv.responder) as stub:
        cfg = fast_config(stub.base_url, inv.folder, tmp_path / "o")
        s = asyncio.run(label_mod.label_images(cfg))
    assert s.ok == 1
