"""Documents in: images, PDFs (pypdfium2) and OFD files become pages with text layers."""

from __future__ import annotations

import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_tools.documents import (
    DocumentError,
    DocumentOptions,
    count_pages,
    document_id_of,
    find_documents,
    load_pages,
    merge_pages,
    parse_page_spec,
    select_pages,
    sniff_kind,
)
from data_tools.images import MAX_PIXELS
from tests.support.make_documents import TextItem, write_ofd, write_pdf

TEXTS = [
    TextItem("发票代码 4400154130", 150, 12, 3.5),
    TextItem("发票号码 12270242", 150, 18, 3.5),
    TextItem("价税合计 ¥1417.00", 100, 100, 3.0),
]


def _page_image(seed: int = 0) -> Image.Image:
    """A 1200x700 'invoice': coloured blocks on white, distinct per seed."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (1200, 700), "white")
    d = ImageDraw.Draw(im)
    for _ in range(25):
        x, y = int(rng.integers(0, 1100)), int(rng.integers(0, 600))
        color = tuple(int(c) for c in rng.integers(0, 200, 3))
        d.rectangle([x, y, x + 90, y + 60], fill=color)
    return im


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return write_pdf(tmp_path / "inv.pdf", [_page_image(0), _page_image(1)], [TEXTS, TEXTS[:1]])


@pytest.fixture
def ofd(tmp_path: Path) -> Path:
    return write_ofd(tmp_path / "inv.ofd", [_page_image(0), _page_image(1)], [TEXTS, TEXTS[1:2]])


def _texts(page) -> list[str]:
    return [ln.text for ln in page.text_layer.lines]


def test_pdf_pages_fill_the_pixel_budget_and_carry_the_text_layer(pdf: Path) -> None:
    pages = load_pages(pdf)
    assert [p.page_id for p in pages] == ["inv#p1", "inv#p2"]
    assert [document_id_of(p.page_id) for p in pages] == ["inv", "inv"]
    for p in pages:
        w, h = p.image.size
        assert p.image.mode == "RGB"
        assert 0.98 * MAX_PIXELS < w * h <= MAX_PIXELS  # inside the budget, not far below
        assert abs(w / h - 240 / 140) < 0.01  # aspect kept
        assert p.dpi == pytest.approx(232.6, abs=0.5)  # 240 x 140 mm at 2,822,400 px
        assert p.kind == "pdf" and p.n_pages == 2
    assert _texts(pages[0]) == ["发票代码 4400154130", "发票号码 12270242", "价税合计 ¥1417.00"]
    assert _texts(pages[1]) == ["发票代码 4400154130"]
    # boxes are in rendered pixels: 发票号码 starts at x = 150 mm, baseline y = 18 mm
    px_per_mm = pages[0].dpi / 25.4
    box = pages[0].text_layer.lines[1].box
    assert box[0] == pytest.approx(150 * px_per_mm, abs=3)
    assert box[1] < 18 * px_per_mm < box[3] + 8
    assert pages[0].text_layer.text.splitlines()[0].startswith("发票代码")


def test_pdf_rendering_shows_the_page_image(pdf: Path) -> None:
    page = load_pages(pdf, options=DocumentOptions(max_pixels=1200 * 700, pages="1"))[0]
    ref = _page_image(0).resize(page.image.size)
    diff = np.abs(np.asarray(page.image, float) - np.asarray(ref, float)).mean()
    assert diff < 6, diff  # the JPEG of the page, not a blank or another page
    other = _page_image(1).resize(page.image.size)
    assert np.abs(np.asarray(page.image, float) - np.asarray(other, float)).mean() > 3 * diff


def test_a_scanned_pdf_has_no_text_layer_and_text_can_be_turned_off(tmp_path, pdf) -> None:
    scan = write_pdf(tmp_path / "scan.pdf", [_page_image(2)])
    (page,) = load_pages(scan)
    assert page.text_layer is None and page.page_id == "scan#p1"
    assert all(
        p.text_layer is None for p in load_pages(pdf, options=DocumentOptions(text_layer=False))
    )


def test_page_selection_and_the_page_limit(pdf: Path) -> None:
    assert [p.page_id for p in load_pages(pdf, options=DocumentOptions(pages="2"))] == ["inv#p2"]
    with pytest.raises(DocumentError, match=r"inv\.pdf: page 3 selected but the document has 2"):
        load_pages(pdf, options=DocumentOptions(pages="1,3"))
    with pytest.raises(DocumentError, match=r"inv\.pdf: 2 pages, over the limit of 1; select"):
        load_pages(pdf, options=DocumentOptions(max_pages=1))
    assert len(load_pages(pdf, options=DocumentOptions(max_pages=1, pages=[1]))) == 1
    assert parse_page_spec("3, 1-2，5") == (1, 2, 3, 5)
    for bad in ("0", "2-1", "a"):
        with pytest.raises(ValueError, match="page selection"):
            parse_page_spec(bad)


def test_max_dpi_caps_small_pages(tmp_path: Path) -> None:
    tiny = write_pdf(tmp_path / "r.pdf", [_page_image(3)], page_mm=(50, 30))
    (page,) = load_pages(tiny, options=DocumentOptions(max_dpi=150))
    assert page.dpi == pytest.approx(150, abs=0.1)
    w, h = page.image.size
    assert abs(w - 50 / 25.4 * 150) <= 1 and abs(h - 30 / 25.4 * 150) <= 1  # not the budget


def test_ofd_pages_are_rendered_with_an_exact_text_layer(ofd: Path) -> None:
    pages = load_pages(ofd)
    assert [p.page_id for p in pages] == ["inv#p1", "inv#p2"]
    assert [p.kind for p in pages] == ["ofd", "ofd"]
    assert _texts(pages[0]) == [t.text for t in TEXTS]
    assert _texts(pages[1]) == ["发票号码 12270242"]
    w, h = pages[0].image.size
    assert 0.98 * MAX_PIXELS < w * h <= MAX_PIXELS
    # the embedded image is drawn (compare away from the text, top-left quarter)
    ref = np.asarray(_page_image(0).resize((w, h)), float)[: h // 2, : w // 2]
    got = np.asarray(pages[0].image, float)[: h // 2, : w // 2]
    assert np.abs(got - ref).mean() < 8
    # the text is drawn too: dark pixels inside the box of 发票号码
    x0, y0, x1, y1 = (int(v) for v in pages[0].text_layer.lines[1].box)
    ink = np.asarray(pages[0].image.convert("L"))[y0:y1, x0:x1]
    assert (ink < 80).sum() > 200


def test_bytes_are_sniffed_and_errors_name_the_upload(pdf: Path, ofd: Path) -> None:
    assert sniff_kind(pdf.read_bytes()) == "pdf"
    assert sniff_kind(ofd.read_bytes(), "x.zip") == "ofd"
    pages = load_pages(ofd.read_bytes(), name="发票.ofd")
    assert [p.page_id for p in pages] == ["发票#p1", "发票#p2"]
    with pytest.raises(DocumentError, match=r"^bad\.pdf: not a readable PDF"):
        load_pages(b"%PDF-1.7\ngarbage", name="bad.pdf")
    with pytest.raises(DocumentError, match=r"^x\.png: does not decode"):
        load_pages(b"\x89PNG\r\n\x1a\nnope", name="x.png")
    with pytest.raises(DocumentError, match=r"nothing\.pdf: file not found"):
        load_pages(pdf.parent / "nothing.pdf")


def test_a_broken_ofd_names_the_file_and_the_page(tmp_path: Path, ofd: Path) -> None:
    broken = tmp_path / "broken.ofd"
    with zipfile.ZipFile(ofd) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("Page_1/Content.xml"):
                dst.writestr(item, src.read(item))
    assert len(load_pages(broken, options=DocumentOptions(pages="1"))) == 1
    with pytest.raises(
        DocumentError, match=r"broken\.ofd: page 2 content .*Page_1/Content\.xml.* missing"
    ):
        load_pages(broken)
    not_zip = tmp_path / "n.ofd"
    not_zip.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DocumentError, match=r"n\.ofd: not an OFD file"):
        load_pages(not_zip)


def test_an_image_is_one_page_without_text(tmp_path: Path) -> None:
    path = tmp_path / "a" / "photo.JPG"
    path.parent.mkdir()
    _page_image(4).save(path, "JPEG")
    (page,) = load_pages(path)
    assert page.page_id == "photo" and page.kind == "image" and page.text_layer is None
    assert page.image.size == (1200, 700)
    with pytest.raises(DocumentError, match="over the limit of 1000"):
        load_pages(path, options=DocumentOptions(max_image_pixels=1000))


def test_find_documents_lists_images_pdfs_and_ofds(tmp_path: Path, pdf: Path, ofd: Path) -> None:
    (tmp_path / "sub").mkdir()
    _page_image(5).save(tmp_path / "sub" / "b.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "C.PDF").write_bytes(pdf.read_bytes())
    names = [p.relative_to(tmp_path).as_posix() for p in find_documents(tmp_path)]
    assert names == ["C.PDF", "inv.ofd", "inv.pdf", "sub/b.png"]


def test_pdfium_is_safe_to_call_from_threads(pdf: Path) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                assert len(load_pages(pdf, options=DocumentOptions(max_pixels=200_000))) == 2
        except BaseException as e:  # pragma: no cover - only on failure
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_merge_pages_continues_an_invoice_on_a_second_page() -> None:
    p1 = {
        "发票号码": "12270242",
        "开票日期": "",
        "购买方": {"名称": "深圳市购机汇网络有限公司", "纳税人识别号": ""},
        "货物或应税劳务、服务": [{"名称": "手机", "金额": "2987.18"}],
    }
    p2 = {
        "发票号码": "99999999",  # a misread on page 2 does not override page 1
        "开票日期": "2016年06月12日",
        "购买方": {"纳税人识别号": "440300083885931"},
        "货物或应税劳务、服务": [{"名称": "折扣", "金额": "-1776.07"}, {}],
        "合计": {"金额": "¥1211.11"},
    }
    merged = merge_pages([p1, None, p2])
    assert merged == {
        "发票号码": "12270242",
        "开票日期": "2016年06月12日",
        "购买方": {"名称": "深圳市购机汇网络有限公司", "纳税人识别号": "440300083885931"},
        "货物或应税劳务、服务": [
            {"名称": "手机", "金额": "2987.18"},
            {"名称": "折扣", "金额": "-1776.07"},
        ],
        "合计": {"金额": "¥1211.11"},
    }
    assert p1["货物或应税劳务、服务"] == [{"名称": "手机", "金额": "2987.18"}]  # inputs untouched
    assert merge_pages([None, "text"]) is None


def test_pil_can_reread_what_we_render(pdf: Path) -> None:
    page = load_pages(pdf, options=DocumentOptions(pages="1"))[0]
    buf = io.BytesIO()
    page.image.save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).size == page.image.size


def test_count_pages_without_rendering(pdf: Path, ofd: Path, tmp_path: Path) -> None:
    assert count_pages(pdf) == 2 and count_pages(ofd.read_bytes(), name="x.ofd") == 2
    img = tmp_path / "a.png"
    _page_image(6).save(img)
    assert count_pages(img) == 1
    assert select_pages(5, DocumentOptions(pages="2,4")) == [2, 4]
    with pytest.raises(DocumentError, match="over the limit of 3"):
        select_pages(5, DocumentOptions(max_pages=3), "x.pdf")
    with pytest.raises(DocumentError, match=r"^y\.pdf: not a readable PDF"):
        count_pages(b"%PDF-1.4 broken", name="y.pdf")


def _patched_ofd(src: Path, dst: Path, edit) -> Path:
    """A copy of the OFD `src` with `edit(name, bytes) -> bytes` applied to every member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, edit(item.filename, zin.read(item)))
    return dst


def test_hostile_ofd_content_is_bounded(tmp_path: Path, ofd: Path) -> None:
    def huge_spacing(name: str, data: bytes) -> bytes:
        if name.endswith("Page_0/Content.xml"):  # a billion copies of a delta; a giant font
            data = data.replace(b'DeltaX="g ', b'DeltaX="g 1000000000 3 g ')
            data = data.replace(b'Font="2" Size="3.0"', b'Font="2" Size="1e9"')
        return data

    (page, _) = load_pages(_patched_ofd(ofd, tmp_path / "a.ofd", huge_spacing))
    assert page.image.size[0] * page.image.size[1] <= MAX_PIXELS

    def nan_box(name: str, data: bytes) -> bytes:
        if name.endswith("Page_0/Content.xml"):
            data = data.replace(
                b"<ofd:PhysicalBox>0 0 240.0 140.0", b"<ofd:PhysicalBox>0 0 nan 140"
            )
        return data

    with pytest.raises(DocumentError, match=r"a2\.ofd page 1: page box .* is not a page"):
        load_pages(_patched_ofd(ofd, tmp_path / "a2.ofd", nan_box))

    def deep(name: str, data: bytes) -> bytes:
        if name.endswith("Page_0/Content.xml"):
            nest = b"<ofd:PageBlock>" * 200 + b"</ofd:PageBlock>" * 200
            data = data.replace(b"</ofd:Layer>", nest + b"</ofd:Layer>")
        return data

    assert len(load_pages(_patched_ofd(ofd, tmp_path / "b.ofd", deep))) == 2
    # an image resource over the pixel limit is skipped, the page still renders with its text
    (p1, _) = load_pages(ofd, options=DocumentOptions(max_image_pixels=1000))
    assert np.asarray(p1.image.convert("L")).mean() > 240  # white: the photo was not drawn
    assert [ln.text for ln in p1.text_layer.lines] == [t.text for t in TEXTS]


def test_a_damaged_ofd_member_is_a_clear_error(tmp_path: Path, ofd: Path) -> None:
    data = bytearray(ofd.read_bytes())
    with zipfile.ZipFile(ofd) as zf:
        info = zf.getinfo("Doc_0/Document.xml")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 5 : start + 25] = b"\x00" * 20  # corrupt the compressed bytes
    bad = tmp_path / "bad.ofd"
    bad.write_bytes(bytes(data))
    with pytest.raises(DocumentError, match=r"bad\.ofd: document .*Document\.xml"):
        load_pages(bad)
