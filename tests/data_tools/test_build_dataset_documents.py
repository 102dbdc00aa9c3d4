"""The dataset builder on label records whose image is a PDF or OFD page."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from data_tools import sft
from data_tools.build_dataset import BuildConfig, build
from data_tools.images import BadImageError
from data_tools.records import LabelRecord, read_labels, write_labels
from tests.support.make_documents import write_ofd, write_pdf
from tests.support.openai_stub import make_test_image

FIELDS = {
    "发票号码": "12270242",
    "购买方": {"名称": "A公司", "纳税人识别号": "B"},
    "合计": {"金额": "¥1", "税额": "¥0.17"},
}
OFD_ID = "scan/2024 #7"  # not a file name: its PNG gets a cleaned name


def _pages(tmp_path: Path) -> list[Image.Image]:
    """Two distinct page images (random colour blocks: page 1 and 2 look nothing alike)."""
    return [
        Image.open(make_test_image(tmp_path / f"page{i}.png", seed=i, size=(480, 280))).convert(
            "RGB"
        )
        for i in (1, 2)
    ]


def _difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference (0-255) once both are 48x28."""
    a, b = (im.convert("RGB").resize((48, 28), Image.Resampling.BOX) for im in (a, b))
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def make_documents(tmp_path: Path) -> tuple[Path, list[Image.Image]]:
    """labels.jsonl naming pages of a two-page PDF and an OFD, a plain image and a page the
    labeler rendered itself (image already a PNG, meta.source set)."""
    pages = _pages(tmp_path)
    (tmp_path / "docs").mkdir()
    write_pdf(tmp_path / "docs" / "inv.pdf", pages)
    write_ofd(tmp_path / "docs" / "inv.ofd", pages)
    make_test_image(tmp_path / "docs" / "photo.png", seed=9, size=(300, 200))
    pages[1].save(tmp_path / "docs" / "labeled-p2.png")

    def rec(rid: str, image: str, split: str, **meta) -> LabelRecord:
        return LabelRecord(rid, image, "vat_invoice", dict(FIELDS), {"split": split, **meta})

    src = {"document": "docs/inv.pdf", "page": 2, "n_pages": 2, "kind": "pdf"}
    records = [
        rec("pdf-p1", "docs/inv.pdf", "val"),  # no page given: page 1
        rec("pdf-p2", "docs/inv.pdf#p2", "val"),
        rec("pdf-p1-again", "docs/inv.pdf#p1", "val"),  # the same page: rendered once
        rec(OFD_ID, "docs/inv.ofd", "train", source={"page": 2}),  # meta.source.page wins
        rec("photo", "docs/photo.png", "train"),
        rec("labeled", "docs/labeled-p2.png", "train", source=src),  # needs nothing
    ]
    labels = tmp_path / "labels.jsonl"
    write_labels(labels, records)
    return labels, pages


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def image_of(row: dict) -> str:
    return row["image_info"][0]["image_url"] if "image_info" in row else row["images"][0]


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["erniekit", "paddleformers"])
def test_pdf_and_ofd_pages_are_rendered_into_the_dataset(tmp_path, fmt):
    labels, pages = make_documents(tmp_path)
    out = tmp_path / "sft"
    max_pixels = 600_000
    cfg = BuildConfig(variants_per_image=3, split="source", format=fmt, max_pixels=max_pixels)
    stats = build([labels], out, cfg)

    pages_dir = out.resolve() / "pages"
    pngs = sorted(p.name for p in pages_dir.iterdir())
    ofd_png = next(n for n in pngs if n.startswith("scan_2024"))
    assert pngs == sorted(["pdf-p1.png", "pdf-p2.png", ofd_png]), "one PNG per distinct page"
    want = {
        "pdf-p1": pages_dir / "pdf-p1.png",
        "pdf-p1-again": pages_dir / "pdf-p1.png",
        "pdf-p2": pages_dir / "pdf-p2.png",
        OFD_ID: pages_dir / ofd_png,
        "photo": (tmp_path / "docs" / "photo.png").resolve(),
        "labeled": (tmp_path / "docs" / "labeled-p2.png").resolve(),
    }
    # the right page, at the model's pixel budget
    for rid, page_index in [("pdf-p1", 0), ("pdf-p2", 1), (OFD_ID, 1)]:
        with Image.open(want[rid]) as im:
            assert im.format == "PNG" and im.width * im.height <= max_pixels
            assert im.width * im.height > 0.9 * max_pixels, "rendered at the budget"
            assert _difference(im, pages[page_index]) < 12, f"{rid}: not page {page_index + 1}"
            assert _difference(im, pages[1 - page_index]) > 40, f"{rid}: the other page"

    # every SFT record points at its page
    rows = {side: read(out / f"{side}.jsonl") for side in ("train", "val")}
    seen = {}
    for side, side_rows in rows.items():
        for row in side_rows:
            seen.setdefault(row["id"], set()).add((side, image_of(row)))
    assert seen == {
        rid: {("val" if rid.startswith("pdf") else "train", str(path))}
        for rid, path in want.items()
    }
    requests = sft.read_requests(out / "val.requests.jsonl")
    assert {(q.id, q.image) for q in requests} == {
        (rid, str(want[rid])) for rid in ("pdf-p1", "pdf-p2", "pdf-p1-again")
    }
    gold = {r.id: r for r in read_labels(out / "val.labels.jsonl")}
    assert gold["pdf-p2"].image == str(want["pdf-p2"])
    assert gold["pdf-p2"].meta["source"] == {
        "document": str((tmp_path / "docs" / "inv.pdf").resolve()),
        "page": 2,
        "n_pages": 2,
        "kind": "pdf",
    }
    assert gold["pdf-p2"].meta["split"] == "val" and gold["pdf-p2"].fields == FIELDS
    assert stats["rendered_pages"] == {"ofd": 1, "pdf": 2}
    assert stats["images"] == {"train": 3, "val": 2} and stats["skipped_bad_images"] == []


def test_pages_of_one_document_stay_on_one_side(tmp_path):
    labels, _ = make_documents(tmp_path)
    for seed in range(6):
        out = tmp_path / f"o{seed}"
        build([labels], out, BuildConfig(variants_per_image=1, val_ratio=0.5, seed=seed))
        split = json.loads((out / "split.json").read_text())
        sides = {side for side, ids in split.items() for i in ids if i.startswith("pdf")}
        assert len(sides) == 1, f"seed {seed}: pages of inv.pdf on both sides: {split}"


def test_unreadable_documents_are_bad_images(tmp_path):
    labels, _ = make_documents(tmp_path)
    docs = tmp_path / "docs"
    (docs / "broken.pdf").write_bytes((docs / "inv.pdf").read_bytes()[:300])
    (docs / "broken.ofd").write_bytes(b"PK\x03\x04 not really a zip")
    broken = [
        LabelRecord("cut", "docs/broken.pdf", "vat_invoice", dict(FIELDS)),
        LabelRecord("no-page-3", "docs/inv.pdf#p3", "vat_invoice", dict(FIELDS)),
        LabelRecord("bad-ofd", "docs/broken.ofd#p1", "vat_invoice", dict(FIELDS)),
        LabelRecord(
            "disagree", "docs/inv.pdf#p2", "vat_invoice", dict(FIELDS), {"source": {"page": 1}}
        ),
        LabelRecord("gone", "docs/missing.pdf", "vat_invoice", dict(FIELDS)),
    ]
    write_labels(labels, [*read_labels(labels), *broken])
    out = tmp_path / "sft"
    cfg = BuildConfig(variants_per_image=2, val_ratio=0)
    with pytest.raises(BadImageError, match=r"5 record\(s\) with a missing or broken image") as e:
        build([labels], out, cfg)
    text = str(e.value)
    assert f"{labels}: id cut: {docs.resolve() / 'broken.pdf'}: not a readable PDF" in text
    assert "id no-page-3: " in text and "page 3 selected but the document has 2 page(s)" in text
    assert "id bad-ofd: " in text and "broken.ofd: not an OFD file" in text
    assert "id disagree: docs/inv.pdf#p2: the image names page 2 but meta.source.page is 1" in text
    assert "id gone: " in text and "missing.pdf: file not found" in text
    assert "--skip-bad" in text
    assert not out.exists(), "nothing published on failure"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sft")] == [".sft.lock"]

    stats = build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0, skip_bad=True))
    assert len(stats["skipped_bad_images"]) == 5
    assert [line.split(": id ")[1].split(":")[0] for line in stats["skipped_bad_images"]] == [
        "cut",
        "no-page-3",
        "bad-ofd",
        "disagree",
        "gone",
    ]
    ids = {row["id"] for row in read(out / "train.jsonl")}
    assert ids == {"pdf-p1", "pdf-p2", "pdf-p1-again", OFD_ID, "photo", "labeled"}
    assert len(list((out / "pages").iterdir())) == 3

    res = subprocess.run(
        [
            *(sys.executable, "-m", "data_tools.build_dataset", "--labels", str(labels)),
            *("--out-dir", str(tmp_path / "cli"), "--val-ratio", "0"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "broken.pdf: not a readable PDF" in res.stderr and "--skip-bad" in res.stderr


def test_rerun_is_byte_identical_and_drops_stale_pages(tmp_path):
    labels, _ = make_documents(tmp_path)
    cfg = BuildConfig(variants_per_image=4, val_ratio=0.3, seed=5)
    out = tmp_path / "sft"
    build([labels], out, cfg)
    first = snapshot(out)
    assert any(name.startswith("pages/") for name in first)
    build([labels], out, cfg)  # in place, over the first
    assert snapshot(out) == first
    other = tmp_path / "again"
    build([labels], other, cfg)  # a fresh folder: the same bytes but for the folder's path
    here, there = str(out.resolve()), str(other.resolve())
    assert {k: v.replace(there.encode(), here.encode()) for k, v in snapshot(other).items()} == (
        first
    )
    # a page no record names any more is not carried over by the rebuild
    write_labels(labels, [r for r in read_labels(labels) if r.id != "pdf-p2"])
    build([labels], out, cfg)
    assert not (out / "pages" / "pdf-p2.png").exists()
    assert (out / "pages" / "pdf-p1.png").read_bytes() == first["pages/pdf-p1.png"]


def test_image_root_with_documents_is_refused(tmp_path):
    labels, _ = make_documents(tmp_path)
    with pytest.raises(ValueError, match=r"id pdf-p1: 'docs/inv.pdf' is a PDF/OFD") as e:
        build([labels], tmp_path / "o", BuildConfig(image_root="/mnt/train"))
    assert "without --image-root" in str(e.value)
