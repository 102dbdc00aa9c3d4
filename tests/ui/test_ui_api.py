"""The UI's API through the real service: documents in, validation, confidence, duplicates,
Excel, review sources and reviewed.jsonl (no browser here; see test_browser.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from openpyxl import load_workbook
from PIL import Image

from data_tools.records import read_labels
from data_tools.review import apply_reviewed, read_reviewed
from tests.support.make_documents import TextItem, write_ofd, write_pdf
from tests.ui.conftest import B1_AS_READ


def _client(svc: dict, key: str | None = "k3y") -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=svc["url"], timeout=60, headers=headers)


def _upload(c: httpx.Client, path: Path, **data: str) -> httpx.Response:
    return c.post("/ui/api/extract", files={"file": (path.name, path.read_bytes())}, data=data)


def test_page_is_public_and_the_api_needs_the_key(ui_service: dict) -> None:
    with _client(ui_service, key=None) as c:
        page = c.get("/ui/")
        assert page.status_code == 200 and "发票信息抽取" in page.text
        assert c.get("/ui/static/app.js").status_code == 200
        assert c.get("/ui/static/app.css").headers["content-type"].startswith("text/css")
        assert c.get("/ui/api/info").status_code == 401
        assert c.get("/ui/static/../app.py").status_code in (401, 404)
    with _client(ui_service) as c:
        info = c.get("/ui/api/info").json()
        assert info["schema"] == "vat_invoice" and info["review"] is True
        assert {"key": "货物或应税劳务、服务", "kind": "list"} in info["keys"]
        assert c.get("/ui/static/index.html").status_code == 404  # only via /ui/


def test_extract_image_pdf_and_ofd_with_validation_confidence_duplicates(
    ui_service: dict, tmp_path: Path
) -> None:
    run = ui_service["run"]
    jpg = run / "images" / "b1.jpg"
    im = Image.open(jpg)
    pdf = write_pdf(tmp_path / "b1.pdf", [im, im], [[TextItem("发票号码 12270242", 150, 18)], []])
    ofd = write_ofd(tmp_path / "b1.ofd", [im])
    with _client(ui_service) as c:
        r = _upload(c, jpg, batch="B")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "image" and [p["page_id"] for p in body["pages"]] == ["b1"]
        assert body["fields"]["发票代码"] == "12270242"
        failed = {f["rule"] for f in body["validation"]["failed"]}
        assert {"invoice_code", "invoice_number", "sums.amount", "sums.tax"} <= failed
        conf = body["pages"][0]["confidence"]["leaves"]
        assert conf["发票代码"] < 0.5 < conf["购买方.名称"]
        assert body["pages"][0]["preview"].startswith("data:image/jpeg;base64,")
        assert body["duplicate"] is None

        r = _upload(c, pdf, batch="B")
        body = r.json()
        assert body["kind"] == "pdf" and body["n_pages"] == 2
        assert [p["page_id"] for p in body["pages"]] == ["b1#p1", "b1#p2"]
        assert body["pages"][0]["text_layer"] is True and body["pages"][1]["text_layer"] is False
        assert body["duplicate"]["duplicate_of"] == "b1.jpg"
        assert body["duplicate"]["by"] == "invoice"
        # the two pages merged: line items concatenated
        assert len(body["fields"]["货物或应税劳务、服务"]) == 2

        body = _upload(c, ofd, batch="B").json()
        assert body["kind"] == "ofd" and body["duplicate"]["by"] == "invoice"
        body = _upload(c, jpg, batch="B").json()
        assert body["duplicate"]["by"] == "image"  # the same file again
        assert _upload(c, jpg, batch="other").json()["duplicate"] is None

        body = _upload(c, jpg, fields="发票号码,购买方").json()
        assert set(body["fields"]) == {"发票号码", "购买方"}
        assert "required" not in {f["rule"] for f in body["validation"]["failed"]}

        r = _upload(c, pdf, pages="3")
        assert r.status_code == 400 and "b1.pdf: page 3 selected" in r.json()["error"]["message"]
        bad = tmp_path / "bad.ofd"
        bad.write_bytes(b"PK\x03\x04junk")
        r = _upload(c, bad)
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("bad.ofd:")


def test_excel_of_batch_rows(ui_service: dict) -> None:
    rows = [
        {"id": "b1", "image": "b1.jpg", "prompt": "OCR:{}", "prediction": B1_AS_READ,
         "parse": {"method": "strict"}, "latency_s": 0.2},
    ]  # fmt: skip
    with _client(ui_service) as c:
        r = c.post("/ui/api/excel", json={"rows": rows})
        assert r.status_code == 200
        ws = load_workbook(io.BytesIO(r.content))["invoices"]
        header = [cell.value for cell in ws[1]]
        assert ws.cell(2, header.index("发票代码") + 1).value == "12270242"
        assert c.post("/ui/api/excel", json={"rows": "x"}).status_code == 400


def test_review_a_labels_run_and_build_dataset_reads_it(ui_service: dict) -> None:
    run, root = ui_service["run"], ui_service["root"]
    with _client(ui_service) as c:
        sources = c.get("/ui/api/review/sources").json()
        assert sources["sources"] == ["labels_run/needs_review.jsonl"]
        items = c.get("/ui/api/review/items", params={"source": sources["sources"][0]}).json()
        (item,) = items["items"]
        assert item["id"] == "b1" and not item["reviewed"]
        by_label = {leaf["label"]: leaf for leaf in item["leaves"]}
        assert by_label["发票代码"]["candidates"] == ["12270242", "4400154130"]
        assert any("invoice_code" in f for f in by_label["发票代码"]["flags"])
        assert any("qa: invoice_code" in r for r in item["reasons"])
        img = c.get("/ui/api/review/image", params={"source": sources["sources"][0], "id": "b1"})
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        # outside the root / not a jsonl: refused
        assert c.get("/ui/api/review/items", params={"source": "../x.jsonl"}).status_code == 403
        assert c.get("/ui/api/review/items", params={"source": "labels_run"}).status_code == 403

        fixed = json.loads(json.dumps(item["fields"]))
        fixed["发票代码"], fixed["发票号码"] = "4400154130", "12270242"
        r = c.post(
            "/ui/api/review/save",
            json={"source": sources["sources"][0], "id": "b1", "fields": fixed, "action": "edit"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["reviewed_file"] == str(run / "reviewed.jsonl")
        bad = c.post(
            "/ui/api/review/save",
            json={"source": sources["sources"][0], "id": "b1", "fields": {"x": 1}},
        )
        assert (
            bad.status_code == 400
            and "fields.x: values must be strings" in bad.json()["error"]["message"]
        )
        again = c.get("/ui/api/review/items", params={"source": sources["sources"][0]}).json()
        assert again["items"][0]["reviewed"] is True
        assert again["items"][0]["fields"]["发票代码"] == "4400154130"
    reviewed = read_reviewed(run / "reviewed.jsonl")
    rec = reviewed["b1"]
    assert rec.image == "images/b1.jpg" and rec.fields["发票代码"] == "4400154130"
    assert rec.meta["reviewed"]["action"] == "edit" and rec.meta["reviewed"]["changed"] is True
    assert "needs_review" not in rec.meta and "qa" not in rec.meta
    # reviewed wins over the labeler's record, the others stay
    merged = {r.id: r for r in apply_reviewed(read_labels(run / "labels.jsonl"), run)}
    assert merged["b1"].fields["发票号码"] == "12270242" and merged["b0"].fields == {
        "发票号码": "12271524"
    }
    assert root in run.parents


def test_reviewed_jsonl_survives_a_torn_tail(tmp_path: Path) -> None:
    from data_tools.records import LabelRecord
    from data_tools.review import append_reviewed

    path = tmp_path / "reviewed.jsonl"
    rec = LabelRecord("a", "a.jpg", "vat_invoice", {"发票号码": "1"}, {"reviewed": {}})
    append_reviewed(path, rec)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "b", "ima')  # a crash in the middle of a save
    assert set(read_reviewed(path)) == {"a"}
    append_reviewed(path, LabelRecord("b", "b.jpg", "vat_invoice", {"发票号码": "2"}))
    assert set(read_reviewed(path)) == {"a", "b"}
    assert path.read_text(encoding="utf-8").count("\n") == 2


def test_review_off_without_a_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.hostile.servers import make_service, serving

    monkeypatch.delenv("KIE_REVIEW_ROOT", raising=False)
    app, _ = make_service()
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.get("/ui/api/review/sources").json() == {"enabled": False, "sources": []}
        r = c.get("/ui/api/review/items", params={"source": "x.jsonl"})
        assert r.status_code == 403 and "KIE_REVIEW_ROOT" in r.json()["error"]["message"]


def test_v1_extract_answers_with_validation(ui_service: dict) -> None:
    jpg = ui_service["run"] / "images" / "b1.jpg"
    with _client(ui_service) as c:
        r = c.post("/v1/extract", files={"image": ("b1.jpg", jpg.read_bytes())})
        assert r.status_code == 200, r.text
        v = r.json()["validation"]
        assert v["passed"] is False
        assert {"invoice_code", "invoice_number"} <= {f["rule"] for f in v["failed"]}
        r = c.post("/v1/extract", files={"image": ("b1.jpg", jpg.read_bytes())},
                   data={"fields": "购买方"})  # fmt: skip
        assert r.json()["validation"]["passed"] is True  # nothing wrong in what was asked


def test_hostile_input_is_a_4xx(ui_service: dict) -> None:
    deep = "[" * 5000 + "]" * 5000
    with _client(ui_service) as c:
        for path in ("/ui/api/excel", "/ui/api/review/save"):
            r = c.post(path, content=deep, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text
            r = c.post(path, content=b"\xff{", headers={"Content-Type": "application/json"})
            assert r.status_code == 400
        r = c.post(
            "/ui/api/review/save",
            json={"source": "labels_run/needs_review.jsonl", "id": "b1", "threshold": "abc"},
        )
        assert r.status_code == 400 and "threshold" in r.json()["error"]["message"]
        jpg = ui_service["run"] / "images" / "b1.jpg"
        r = c.post(
            "/ui/api/extract",
            files={"file": ("b1.jpg", jpg.read_bytes())},
            data={"fields": "发票号码," * 2000},
        )
        assert r.status_code == 413 and "fields" in r.json()["error"]["message"]
        r = c.post("/ui/api/extract", files={"file": ("b1.jpg", b"")})
        assert r.status_code == 400
        r = c.post("/ui/api/extract", data={"fields": "x"})
        assert r.status_code == 400 and "missing 'file'" in r.json()["error"]["message"]
        assert c.get("/health").status_code == 200  # the service is fine afterwards


def test_v1_extract_takes_pdf_and_ofd(ui_service: dict, tmp_path: Path) -> None:
    import base64

    im = Image.open(ui_service["run"] / "images" / "b1.jpg")
    pdf = write_pdf(tmp_path / "b1.pdf", [im, im])
    ofd = write_ofd(tmp_path / "b1.ofd", [im], [[TextItem("发票号码 12270242", 150, 18)]])
    with _client(ui_service) as c:
        r = c.post("/v1/extract", json={"image": base64.b64encode(pdf.read_bytes()).decode()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "pdf" and [p["page_id"] for p in body["pages"]] == [
            "upload#p1",
            "upload#p2",
        ]
        assert "preview" not in body["pages"][0]
        assert body["fields"]["发票代码"] == "12270242"  # merged: first non-empty
        assert len(body["fields"]["货物或应税劳务、服务"]) == 2  # items of both pages
        assert body["validation"]["passed"] is False
        r = c.post("/v1/extract", files={"image": ("b1.ofd", ofd.read_bytes())})
        assert r.status_code == 200 and r.json()["kind"] == "ofd"
        assert r.json()["pages"][0]["text_layer"] is True
        r = c.post("/v1/extract", json={"image": base64.b64encode(b"%PDF-1.4\n" * 50).decode()})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_document"
