"""Batch prediction: inputs, the predictions contract, resume, backend failures, Excel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import load_workbook

from data_tools.jsonl import dumps_line
from inference.predict import ROW_KEYS, InputError, load_jobs, main, write_excel
from tests.support.openai_stub import FaultPlan, OpenAIStub, TruthResponder, make_test_image

REPO = Path(__file__).resolve().parents[2]
TRUTH_A = {
    "发票号码": "04518212",
    "购买方": {"名称": "甲公司", "纳税人识别号": "91440300MA5"},
    "货物或应税劳务、服务": [{"名称": "纸张", "金额": "10.00"}, {"名称": "墨盒", "金额": "=1+2"}],
}
SMALL = ["--min-pixels", str(28 * 28 * 4), "--max-pixels", str(28 * 28 * 64)]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    make_test_image(d / "a.png", seed=1)
    make_test_image(d / "sub" / "b.jpg", seed=2)
    (d / "notes.txt").write_text("not an image")
    return d


def test_load_jobs_from_dir_labels_and_sft(images: Path, tmp_path: Path) -> None:
    jobs = load_jobs(images, None)
    assert [(j.id, j.prompts) for j in jobs] == [("a", ("OCR:{}",)), ("sub/b", ("OCR:{}",))]

    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        dumps_line({"id": "inv-1", "image": "imgs/a.png", "doc_type": "vat", "fields": TRUTH_A}),
        encoding="utf-8",
    )
    (job,) = load_jobs(labels, ['OCR:{"发票号码":""}'])
    assert job.id == "inv-1" and job.image == (images / "a.png").resolve()

    sft = tmp_path / "val.jsonl"
    ernie = {
        "id": "inv-7",
        "image_info": [{"matched_text_index": 0, "image_url": str(images / "a.png")}],
        "text_info": [
            {"text": 'OCR:{"发票号码":""}', "tag": "mask"},
            {"text": '{"发票号码": "1"}', "tag": "no_mask"},
        ],
    }
    pf = {
        "messages": [
            {"role": "user", "content": "<image>OCR:{}"},
            {"role": "assistant", "content": "{}"},
        ],
        "images": ["imgs/sub/b.jpg"],
    }
    sft.write_text(dumps_line(ernie) + dumps_line(pf), encoding="utf-8")
    jobs = load_jobs(sft, None)
    # the record id travels with the SFT record; a record without one falls back to the stem
    assert [(j.id, j.prompts) for j in jobs] == [
        ("inv-7", ('OCR:{"发票号码":""}',)),
        ("b", ("OCR:{}",)),
    ]

    requests = tmp_path / "val.requests.jsonl"
    requests.write_text(
        dumps_line({"id": "x/1", "image": "imgs/a.png", "prompt": "OCR:{}"})
        + dumps_line({"id": "y/1", "image": "imgs/sub/b.jpg", "prompt": "OCR:{}"})
        + dumps_line({"id": "x/1", "image": "imgs/a.png", "prompt": 'OCR:{"发票号码":""}'}),
        encoding="utf-8",
    )
    jobs = load_jobs(requests, None)
    assert [(j.id, j.prompts) for j in jobs] == [
        ("x/1", ("OCR:{}", 'OCR:{"发票号码":""}')),
        ("y/1", ("OCR:{}",)),
    ]

    clash = tmp_path / "clash.jsonl"
    clash.write_text(
        dumps_line({"id": "same", "image": "imgs/a.png", "prompt": "OCR:{}"})
        + dumps_line({"id": "same", "image": "imgs/sub/b.jpg", "prompt": "OCR:{}"}),
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="names two images"):
        load_jobs(clash, None)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:1: a request needs"):
        load_jobs(bad, None)


def test_predict_rows_resume_and_excel(images: Path, tmp_path: Path) -> None:
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "pred.jsonl"
    xlsx = tmp_path / "report.xlsx"
    args = ["--backend", "fake", "--input", str(images), "--out", str(out), "--no-progress", *SMALL]
    args += ["--query", "发票号码,购买方", "--query", "OCR:{}"]
    # the unreadable image is listed as a failure (exit 1); the others are done
    assert main([*args, "--excel", str(xlsx)]) == 1
    rows = _rows(out)
    assert len(rows) == 4  # 2 readable images x 2 prompts
    for row in rows:
        assert tuple(row)[: len(ROW_KEYS)] == ROW_KEYS
        assert row["system"] == "fake:fake"
        assert set(row["validation"]) >= {"passed", "failed"}  # the QA rules ran on the fields
    (failure,) = _rows(tmp_path / "pred.failures.jsonl")[:1]
    assert failure["id"] == "broken" and failure["stage"] == "image"
    assert len(_rows(tmp_path / "pred.failures.jsonl")) == 2  # one per prompt key
    good = next(r for r in rows if r["id"] == "a" and r["prompt"] != "OCR:{}")
    assert good["prompt"] == 'OCR:{"发票号码":"","购买方":{}}'
    assert good["prediction"] == {"发票号码": "", "购买方": {}}
    assert good["usage"]["image_tokens"] > 0

    # resume: a crash left a torn line and only part of the work; nothing is redone twice
    keep = out.read_text(encoding="utf-8").splitlines(keepends=True)[:3]
    out.write_text("".join(keep) + '{"id": "sub/b", "pro', encoding="utf-8")
    assert main(args) == 1  # the broken image is still failed (not retried unless asked)
    rows = _rows(out)
    assert len(rows) == 4
    assert len({(r["id"], r["prompt"]) for r in rows}) == 4
    assert main(args) == 1 and len(_rows(out)) == 4  # complete: nothing appended
    (images / "broken.png").unlink()
    make_test_image(images / "broken.png", seed=3)  # fixed: --retry-failed redoes it
    assert main([*args, "--retry-failed"]) == 0 and len(_rows(out)) == 6

    wb = load_workbook(xlsx)
    ws = wb["invoices"]
    header = [c.value for c in ws[1]]
    assert header[:5] == ["id", "image", "status", "errors", "latency_s"]
    assert "发票号码" in header and "购买方.名称" in header  # schema columns
    status = {r[0].value: r[2].value for r in ws.iter_rows(min_row=2)}
    errors = {r[0].value: r[3].value for r in ws.iter_rows(min_row=2)}
    # the fake backend answers every field empty: for OCR:{} the `required` rule fails,
    # so those invoices go to review; the unreadable image is listed as an error
    assert status == {"a": "review", "broken": "error", "sub/b": "review"}
    assert "validation required" in errors["a"]
    assert wb["predictions"].max_row == 5


def test_excel_flattens_lists_and_defuses_formulas(tmp_path: Path) -> None:
    pred = tmp_path / "p.jsonl"
    row = {
        "id": "x",
        "image": "x.png",
        "system": "s",
        "prompt": "OCR:{}",
        "raw_output": "...",
        "prediction": TRUTH_A,
        "parse": {"method": "repaired", "truncated": True, "error": "cut", "duplicate_keys": []},
        "latency_s": 1.5,
        "usage": {},
    }
    pred.write_text(dumps_line(row), encoding="utf-8")
    write_excel(pred, tmp_path / "r.xlsx", None)
    ws = load_workbook(tmp_path / "r.xlsx")["invoices"]
    cells = {h.value: v.value for h, v in zip(ws[1], ws[2], strict=True)}
    assert cells["status"] == "truncated"
    assert cells["货物或应税劳务、服务.名称"] == "纸张\n墨盒"
    assert cells["货物或应税劳务、服务.金额"] == "10.00\n=1+2"  # one cell; not a formula
    assert ws.cell(2, 1).data_type == "s"
    assert all(c.data_type != "f" for c in ws[2])


def test_backend_failures_are_not_written_and_retried(images: Path, tmp_path: Path) -> None:
    truth = TruthResponder(default={})
    out = tmp_path / "pred.jsonl"
    # every call to the first image fails (500), the second succeeds
    first = (images / "a.png").read_bytes()

    def when(index: int, body: dict) -> str | None:
        from tests.support.openai_stub import request_images

        imgs = request_images(body)
        return "500" if imgs and truth.identify(imgs[0]) == "a" else None

    truth.add_image(first, {"发票号码": "1"}, key="a")
    args = ["--backend", "openai", "--input", str(images), "--out", str(out), "--no-progress"]
    args += [*SMALL, "--timeout-s", "10", "--max-attempts", "1"]
    with OpenAIStub(truth, faults=FaultPlan(when=when)) as stub:
        rc = main([*args, "--server-url", stub.base_url, "--concurrency", "2"])
    assert rc == 1
    assert [r["id"] for r in _rows(out)] == ["sub/b"]
    (failure,) = _rows(tmp_path / "pred.failures.jsonl")
    assert failure["id"] == "a" and failure["stage"] == "backend" and "500" in failure["reason"]
    with OpenAIStub(truth) as stub:  # the server recovered: --retry-failed fills the gap
        assert main([*args, "--server-url", stub.base_url]) == 1  # listed, not retried
        assert len(stub.requests) == 0
        assert main([*args, "--server-url", stub.base_url, "--retry-failed"]) == 0
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == ["a", "sub/b"]
    assert next(r for r in rows if r["id"] == "a")["prediction"] == {"发票号码": "1"}


def test_cli_errors_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    assert main(["--backend", "fake", "--input", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert main(["--backend", "paddlex", "--input", str(tmp_path), "--out", str(out)]) == 2
    assert main(["--backend", "fake", "--input", str(tmp_path), "--out", str(out), "bogus=1"]) == 2
    assert main(["--backend", "fakee", "--input", str(tmp_path), "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.slow
def test_predict_cli_on_the_tiny_model(tiny_model_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.jsonl"
    cmd = [sys.executable, "-m", "inference.predict", "--backend", "paddlex"]
    cmd += ["--model-dir", str(tiny_model_dir), "--input", str(images), "--out", str(out)]
    cmd += ["--query", "发票号码", "--max-new-tokens", "8", "--no-progress", *SMALL]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True"}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(out)
    assert len(rows) == 2
    assert all(tuple(row)[: len(ROW_KEYS)] == ROW_KEYS for row in rows)
    assert all(row["prompt"] == 'OCR:{"发票号码":""}' for row in rows)
    assert all(row["system"].startswith("paddlex:PaddleOCR-VL-0.9B@") for row in rows)


def test_pdf_and_ofd_pages_are_predicted_one_row_per_page(tmp_path: Path) -> None:
    from PIL import Image

    from tests.support.make_documents import write_ofd, write_pdf

    d = tmp_path / "docs"
    d.mkdir()
    page = Image.new("RGB", (480, 280), (250, 250, 245))
    write_pdf(d / "two.pdf", [page, page])
    write_ofd(d / "one.ofd", [page])
    (d / "broken.pdf").write_bytes(b"%PDF-1.7 not really a pdf")
    make_test_image(d / "photo.png", seed=4)
    jobs = load_jobs(d, None)
    assert [(j.id, j.page) for j in jobs] == [
        ("broken#p1", 1),
        ("one#p1", 1),
        ("photo", None),
        ("two#p1", 1),
        ("two#p2", 2),
    ]
    out = tmp_path / "pred.jsonl"
    args = ["--backend", "fake", "--input", str(d), "--out", str(out), "--no-progress", *SMALL]
    assert main(args) == 1  # the broken PDF is listed, the rest is done
    rows = {r["id"]: r for r in _rows(out)}
    assert set(rows) == {"one#p1", "photo", "two#p1", "two#p2"}
    assert rows["two#p2"]["page"] == 2 and "page" not in rows["photo"]
    (failure,) = _rows(tmp_path / "pred.failures.jsonl")
    assert failure["id"] == "broken#p1" and "broken.pdf" in failure["reason"]
    assert main([*args, "--pages", "1"]) == 1  # nothing left to do but the broken file
    assert len(_rows(out)) == 4


def test_duplicates_in_a_batch_are_flagged(images: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(images / "a.png", images / "sub" / "a_again.png")  # the same file twice
    out = tmp_path / "pred.jsonl"
    xlsx = tmp_path / "r.xlsx"
    args = ["--backend", "fake", "--input", str(images), "--out", str(out), "--no-progress"]
    assert main([*args, *SMALL, "--excel", str(xlsx)]) == 0
    (dup,) = _rows(tmp_path / "pred.duplicates.jsonl")
    assert dup == {"id": "sub/a_again", "duplicate_of": "a", "by": "image", "key": dup["key"]}
    ws = load_workbook(xlsx)["invoices"]
    errors = {r[0].value: r[3].value for r in ws.iter_rows(min_row=2)}
    assert errors["sub/a_again"].startswith("duplicate of a (image)")
    assert "duplicate" not in errors["a"]  # the first one seen keeps its place


def test_confidence_per_field_from_the_servers_logprobs(images: Path, tmp_path: Path) -> None:
    from tests.support.openai_stub import StubReply

    def responder(body: dict) -> StubReply:
        text = '{"发票号码": "04518212"}'
        # the number is uncertain (one token at p = 0.5), the rest certain
        tokens = [('{"发票号码": "', 0.0), ("04518212", -0.6931), ('"}', 0.0)]
        return StubReply(text, token_logprobs=tokens)

    out = tmp_path / "pred.jsonl"
    args = ["--backend", "openai", "--input", str(images / "a.png"), "--out", str(out)]
    args += ["--no-progress", "--query", "发票号码", "backend.confidence=true", *SMALL]
    with OpenAIStub(responder) as stub:
        assert main([*args, "--server-url", stub.base_url]) == 0
        (req,) = [r.body for r in stub.requests if r.body]
    assert req["logprobs"] is True
    (row,) = _rows(out)
    assert row["confidence"]["leaves"]["发票号码"] == pytest.approx(0.5, abs=1e-3)


def test_low_confidence_and_failed_validation_route_to_review(images: Path, tmp_path: Path) -> None:
    from tests.support.openai_stub import StubReply

    def responder(body: dict) -> StubReply:
        # 发票代码 must be 10 or 12 digits: 8 digits fails the invoice_code rule
        text = '{"发票号码": "04518212", "发票代码": "12270242"}'
        tokens = [
            ('{"发票号码": "', 0.0), ("04518212", -0.6931), ('", "发票代码": "', 0.0),
            ("12270242", 0.0), ('"}', 0.0),
        ]  # fmt: skip
        return StubReply(text, token_logprobs=tokens)

    out = tmp_path / "pred.jsonl"
    xlsx = tmp_path / "r.xlsx"
    args = ["--backend", "openai", "--input", str(images / "a.png"), "--out", str(out)]
    args += ["--no-progress", "--query", "发票号码,发票代码", "backend.confidence=true", *SMALL]
    args += ["--review-threshold", "0.9", "--excel", str(xlsx)]
    with OpenAIStub(responder) as stub:
        assert main([*args, "--server-url", stub.base_url]) == 0
    (row,) = _rows(out)
    assert [f["rule"] for f in row["validation"]["failed"]] == ["invoice_code"]
    (review,) = _rows(tmp_path / "pred.review.jsonl")
    assert review["id"] == "a"
    assert any(r.startswith("validation invoice_code") for r in review["reasons"])
    assert any(r == "confidence below 0.9: 发票号码" for r in review["reasons"])
    ws = load_workbook(xlsx)["invoices"]
    (cells,) = list(ws.iter_rows(min_row=2, values_only=True))
    assert cells[2] == "review" and "confidence below 0.9" in cells[3]
