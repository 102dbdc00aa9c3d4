"""The labeler on PDF and OFD inputs: one record per page, the page rendered once to a PNG."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from data_tools.images import MAX_PIXELS
from data_tools.label import LabelConfigError, discover_images, run
from data_tools.records import read_labels, resolve_image
from tests.labeling.conftest import fast_config, jsonl_rows, labels_by_id, truth_for
from tests.support.make_documents import write_ofd, write_pdf
from tests.support.openai_stub import OpenAIStub, TruthResponder, make_test_image, request_images

# the page of make_documents (240 x 140 mm): the source images share its shape
SIZE = (240, 140)


class Docs:
    """Source images with known truth, put into PDFs / OFDs; the stub answers per image."""

    def __init__(self, root: Path) -> None:
        self.src = root / "src"
        self.src.mkdir(parents=True)
        self.docs = root / "docs"
        self.docs.mkdir()
        self.responder = TruthResponder()
        self.truth: dict[str, dict] = {}  # page id -> truth
        self.seed = 0

    def image(self, page_id: str) -> Image.Image:
        self.seed += 1
        p = make_test_image(self.src / f"s{self.seed}.png", 5000 + self.seed * 7, size=SIZE)
        self.truth[page_id] = truth_for(self.seed)
        self.responder.add_image(p, self.truth[page_id], key=page_id)
        return Image.open(p).convert("RGB")

    def pdf(self, rel: str, doc_id: str, n: int) -> Path:
        path = self.docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_pdf(path, [self.image(f"{doc_id}#p{i}") for i in range(1, n + 1)])

    def ofd(self, rel: str, doc_id: str, n: int) -> Path:
        path = self.docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_ofd(path, [self.image(f"{doc_id}#p{i}") for i in range(1, n + 1)])

    def png(self, rel: str, doc_id: str) -> Path:
        path = self.docs / rel
        self.image(doc_id).save(path)
        return path


@pytest.fixture
def docs(tmp_path: Path) -> Docs:
    return Docs(tmp_path)


def _pngs(out: Path) -> dict[str, int]:
    """Every file under out/pages (relative path -> mtime_ns)."""
    pages = out / "pages"
    return {
        p.relative_to(pages).as_posix(): p.stat().st_mtime_ns
        for p in sorted(pages.rglob("*"))
        if p.is_file()
    }


def test_pdf_and_ofd_pages_become_records_and_a_rerun_does_nothing(
    docs: Docs, tmp_path: Path
) -> None:
    pdf = docs.pdf("inv.pdf", "inv", 2)
    ofd = docs.ofd("sub/e.ofd", "sub/e", 1)
    plain = docs.png("plain.png", "plain")
    broken = docs.docs / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage, no xref\n")
    out = tmp_path / "out"
    with OpenAIStub(docs.responder) as stub:
        s = run(fast_config(stub.base_url, docs.docs, out))
        assert (s.items, s.ok, s.failed, s.exit_code) == (5, 4, 1, 1)
        # the VLM got the rendered pages: every request's image is one of the sources
        sent = [request_images(r.body)[0] for r in stub.requests]
        assert len(sent) == 8  # 4 pages x 2 votes; nothing sent for the broken PDF
        assert sorted(docs.responder.identify(b) or "?" for b in sent) == sorted(
            2 * ["inv#p1", "inv#p2", "sub/e#p1", "plain"]
        )

        labels = labels_by_id(out)
        assert set(labels) == {"inv#p1", "inv#p2", "sub/e#p1", "plain"}
        for key, rec in labels.items():
            assert rec["fields"] == docs.truth[key], key
        expect = {
            "inv#p1": (pdf, "inv/p1.png", 1, 2, "pdf"),
            "inv#p2": (pdf, "inv/p2.png", 2, 2, "pdf"),
            "sub/e#p1": (ofd, "sub/e/p1.png", 1, 1, "ofd"),
        }
        for key, (doc, png, page, n_pages, kind) in expect.items():
            rec = labels[key]
            assert rec["image"] == f"pages/{png}"  # relative to out_dir
            src = rec["meta"]["source"]
            assert src == {
                "document": os.path.relpath(doc, out),
                "page": page,
                "n_pages": n_pages,
                "kind": kind,
            }
            assert (out / src["document"]).resolve() == doc.resolve()
            with Image.open(out / rec["image"]) as im:
                assert im.format == "PNG" and im.mode == "RGB"
                w, h = im.size
            # rendered at the model's pixel budget, page shape kept (240 x 140 mm)
            assert 0.9 * MAX_PIXELS <= w * h <= MAX_PIXELS
            assert math.isclose(w / h, 240 / 140, rel_tol=0.01)
        # an image is labeled as before: its own file, no source, no rendered page
        assert (out / labels["plain"]["image"]).resolve() == plain.resolve()
        assert "source" not in labels["plain"]["meta"]
        assert set(_pngs(out)) == {"inv/p1.png", "inv/p2.png", "sub/e/p1.png"}  # no temp files

        # the records read as labels (what build_dataset and the trainers read)
        for rec in read_labels(out / "labels.jsonl"):
            assert resolve_image(rec.image, out / "labels.jsonl").is_file()

        # the broken PDF is a failure row naming the file and the page, not an abort
        (fail,) = jsonl_rows(out / "failures.jsonl")
        assert (fail["id"], fail["stage"], fail["page"]) == ("broken#p1", "document", 1)
        assert str(broken) in fail["reason"] and "page 1" in fail["reason"]
        assert "--retry-failed" in fail["reason"]
        assert (out / fail["document"]).resolve() == broken.resolve()

        # a rerun does nothing: no request, no render, the failure left alone
        before = _pngs(out)
        s2 = run(fast_config(stub.base_url, docs.docs, out))
        assert (s2.done_before, s2.failed_before, s2.todo, s2.ok) == (4, 1, 0, 0)
        assert len(stub.requests) == 8
        assert _pngs(out) == before

        # a crash after the render, before the record: the page is labeled again from the
        # PNG already there (rendered once), the other records untouched
        kept = [r for r in jsonl_rows(out / "labels.jsonl") if r["id"] != "inv#p2"]
        (out / "labels.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8"
        )
        s2 = run(fast_config(stub.base_url, docs.docs, out))
        assert (s2.done_before, s2.ok, s2.failed) == (3, 1, 0)
        assert len(stub.requests) == 8 + 2
        assert labels_by_id(out)["inv#p2"]["fields"] == docs.truth["inv#p2"]
        assert _pngs(out) == before

        # the PDF repaired: --retry-failed labels that page only, the others not re-rendered
        docs.pdf("broken.pdf", "broken", 1)
        s3 = run(fast_config(stub.base_url, docs.docs, out, "retry_failed=true"))
        assert (s3.done_before, s3.ok, s3.failed, s3.exit_code) == (4, 1, 0, 0)
        assert len(stub.requests) == 12
        labels = labels_by_id(out)
        assert labels["broken#p1"]["fields"] == docs.truth["broken#p1"]
        assert labels["broken#p1"]["image"] == "pages/broken/p1.png"
        after = _pngs(out)
        assert {k: after[k] for k in before} == before
        assert set(after) - set(before) == {"broken/p1.png"}


def test_page_selection_limit_absolute_paths_and_list_files(docs: Docs, tmp_path: Path) -> None:
    pdf = docs.pdf("three.pdf", "three", 3)
    ofd = docs.ofd("two.ofd", "two", 2)
    listing = docs.docs / "list.txt"  # ids: paths below the list's folder
    listing.write_text(f"{pdf}\n{ofd}\n", encoding="utf-8")
    out = tmp_path / "out"
    with OpenAIStub(docs.responder) as stub:
        # pages: only page 2 of each; absolute paths in the records
        s = run(fast_config(stub.base_url, listing, out, "pages='2'", "image_paths=absolute"))
        assert (s.ok, s.failed) == (2, 0)
        labels = labels_by_id(out)
        assert set(labels) == {"three#p2", "two#p2"}
        rec = labels["three#p2"]
        assert rec["fields"] == docs.truth["three#p2"]
        assert rec["image"] == str((out / "pages" / "three" / "p2.png").resolve())
        assert rec["meta"]["source"] == {
            "document": str(pdf.resolve()),
            "page": 2,
            "n_pages": 3,
            "kind": "pdf",
        }
        assert labels["two#p2"]["meta"]["source"]["kind"] == "ofd"

        # max_pages: a document over the limit is a failure saying how to select pages
        out2 = tmp_path / "out2"
        s = run(fast_config(stub.base_url, pdf, out2, "max_pages=2"))
        assert (s.ok, s.failed, s.exit_code) == (0, 1, 1)
        (fail,) = jsonl_rows(out2 / "failures.jsonl")
        assert (fail["id"], fail["stage"]) == ("three#p1", "document")
        assert str(pdf) in fail["reason"] and "max_pages" in fail["reason"]
        assert "page 1" in fail["reason"]


def test_discovery_ids_and_config_errors(docs: Docs, tmp_path: Path) -> None:
    docs.pdf("a/inv.pdf", "a/inv", 2)
    docs.png("a/inv.png", "a/inv")  # same stem: the image keeps "a/inv", pages are "a/inv#pN"
    cfg = fast_config("http://127.0.0.1:9/v1", docs.docs, tmp_path / "out")
    items = discover_images(cfg, documents=True)
    assert sorted(it.id for it in items) == ["a/inv", "a/inv#p1", "a/inv#p2"]
    page2 = next(it for it in items if it.id == "a/inv#p2")
    assert (page2.kind, page2.page, page2.n_pages, page2.doc_id) == ("pdf", 2, 2, "a/inv")
    # without documents (label_lines) a folder still lists its images only
    assert [it.id for it in discover_images(cfg)] == ["a/inv"]
    # a bad page selection or limit is a config error naming the key
    for bad in ("pages='0'", "pages='2-1'", "pages=x", "max_pages=0"):
        with pytest.raises(LabelConfigError, match="pages"):
            fast_config("http://127.0.0.1:9/v1", docs.docs, tmp_path / "out", bad)
