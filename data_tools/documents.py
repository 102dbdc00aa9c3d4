"""Documents in: an image, a PDF or an OFD file becomes pages the extractor can read.

    from data_tools.documents import DocumentOptions, load_pages, merge_pages

    for page in load_pages("invoice.pdf", options=DocumentOptions(pages="1-2")):
        page.page_id, page.image, page.text_layer      # "invoice#p1", PIL RGB, TextLayer | None
    merged = merge_pages([pred_p1, pred_p2])            # one invoice over two pages

Chinese electronic invoices arrive as PDF or OFD (GB/T 33190), scans as multi-page PDFs;
this module is the one place that turns any of them into page images:

* **images** (``IMAGE_SUFFIXES``): one page, EXIF orientation applied, no text layer;
* **PDF**: rendered per page with pypdfium2 (PDFium, the renderer of Chrome) at the scale
  that puts the page inside the model's pixel budget (``max_pixels``, PaddleOCR-VL's
  2,822,400 by default; an A5-size VAT e-invoice, 240 x 140 mm, lands at about 232 dpi),
  never above ``max_dpi``. The PDF's text layer (PDFium's text page: one line per text
  rectangle, boxes in rendered pixels) is exposed so an OCR + LLM backend can use it instead
  of OCR; a scan without one gives ``None``;
* **OFD**: rendered here from the OFD XML (a zip: ``OFD.xml`` → ``Document.xml`` → page
  ``Content.xml`` with text, path and image objects, templates and resources; units mm).
  No maintained OFD renderer is on PyPI: ``easyofd`` converts through reportlab and PyMuPDF
  (AGPL) and pins neither; so the renderer is ~250 lines of ElementTree + Pillow. Text is
  drawn with the system CJK font (``data_tools.synth.find_font``) rather than the embedded
  subset fonts, whose glyph maps are often unusable; the text layer comes straight from the
  ``TextCode`` elements, so it is exact. Signatures (``Signs/``: the e-seal) and annotations
  are not drawn.

Selection and limits: ``pages`` ("1,3-4", 1-based) picks pages; a document with more pages
than ``max_pages`` (selected or not) is refused with a message saying how to select.
Every error is a :class:`DocumentError` whose message names the file and the page.

PDFium is not thread-safe: every PDFium call here holds one process-wide lock.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import posixpath
import re
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from data_tools.images import IMAGE_SUFFIXES, MAX_PIXELS
from data_tools.ppocr import OcrLine, lines_to_text

log = logging.getLogger(__name__)

DOCUMENT_SUFFIXES = (".pdf", ".ofd")
INPUT_SUFFIXES = IMAGE_SUFFIXES + DOCUMENT_SUFFIXES
MM_PER_INCH = 25.4
PT_PER_INCH = 72.0

MAX_OFD_NESTING = 32  # page blocks inside page blocks

_PDFIUM_LOCK = threading.RLock()


class DocumentError(ValueError):
    """A document (or one of its pages) that cannot be used; the message names file and page."""


# ---------------------------------------------------------------- options and pages


def parse_page_spec(spec: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1,3-4"`` / ``[1, 3, 4]`` → ``(1, 3, 4)`` (1-based, sorted, unique); None: all."""
    if spec is None or spec == "" or spec == ():
        return None
    if isinstance(spec, str):
        out: set[int] = set()
        for part in spec.replace("，", ",").split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
            if m is None:
                raise ValueError(f"page selection {spec!r}: {part!r} is not N or N-M")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo < 1 or hi < lo:
                raise ValueError(f"page selection {spec!r}: {part!r} is not a 1-based range")
            if hi - lo > 10_000:
                raise ValueError(f"page selection {spec!r}: range {part!r} is too long")
            out.update(range(lo, hi + 1))
        return tuple(sorted(out)) or None
    pages = sorted({int(p) for p in spec})
    if any(p < 1 for p in pages):
        raise ValueError(f"page selection {list(spec)}: pages are numbered from 1")
    return tuple(pages) or None


@dataclass(frozen=True)
class DocumentOptions:
    """How documents become pages.

    ``max_pixels``: pixel budget of one rendered page (the model's ``max_pixels``);
    ``max_dpi``: never render finer than this; ``pages``: 1-based selection ("1,3-4");
    ``max_pages``: refuse documents with more pages than this; ``max_image_pixels``: refuse
    images whose header claims more; ``text_layer``: read the PDF/OFD text layer.
    """

    max_pixels: int = MAX_PIXELS
    max_dpi: float = 300.0
    pages: tuple[int, ...] | None = None
    max_pages: int = 20
    max_image_pixels: int = 64_000_000
    text_layer: bool = True
    max_ofd_bytes: int = 200 * 1024 * 1024  # uncompressed, all members together

    def __post_init__(self) -> None:
        object.__setattr__(self, "pages", parse_page_spec(self.pages))  # type: ignore[arg-type]
        if self.max_pixels < 28 * 28:
            raise ValueError(f"max_pixels must be >= 784, got {self.max_pixels}")
        if self.max_pages < 1:
            raise ValueError(f"max_pages must be >= 1, got {self.max_pages}")
        if self.max_dpi <= 0:
            raise ValueError(f"max_dpi must be > 0, got {self.max_dpi}")


@dataclass
class TextLayer:
    """Text the document carries itself: lines with boxes in the rendered page's pixels."""

    lines: list[OcrLine]
    source: str  # "pdf" | "ofd"

    @property
    def text(self) -> str:
        """Reading-order text, one row per line (`data_tools.ppocr.lines_to_text`)."""
        return lines_to_text(self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "lines": [ln.to_dict() for ln in self.lines]}


@dataclass
class Page:
    """One page of a document: ``(page_id, image, text_layer)`` plus where it came from."""

    page_id: str
    image: Image.Image  # RGB
    text_layer: TextLayer | None
    number: int = 1  # 1-based page number in the document
    n_pages: int = 1  # pages in the document (before selection)
    source: str = ""  # the file (or upload name)
    kind: str = "image"  # "image" | "pdf" | "ofd"
    dpi: float | None = None  # render resolution (PDF/OFD)
    meta: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """What a prediction row records about its page."""
        out: dict[str, Any] = {
            "page": self.number,
            "n_pages": self.n_pages,
            "kind": self.kind,
            "size": list(self.image.size),
            "text_layer": self.text_layer is not None,
        }
        if self.dpi is not None:
            out["dpi"] = round(self.dpi, 1)
        return out


def page_id_for(doc_id: str, number: int, kind: str) -> str:
    """An image keeps its id; page N of a PDF/OFD is ``doc_id#pN``."""
    return doc_id if kind == "image" else f"{doc_id}#p{number}"


def document_id_of(page_id: str) -> str:
    """Inverse of `page_id_for`: the document a page id belongs to."""
    m = re.fullmatch(r"(.*)#p\d+", page_id)
    return m.group(1) if m else page_id


def is_document_file(path: Path) -> bool:
    """A file whose suffix (any case) is an image, ``.pdf`` or ``.ofd``."""
    return path.is_file() and path.suffix.lower() in INPUT_SUFFIXES


def find_documents(folder: str | Path) -> list[Path]:
    """Every image, PDF and OFD file below `folder`, recursively, sorted
    (the document-aware sibling of `data_tools.images.find_images`)."""
    return sorted(p for p in Path(folder).rglob("*") if is_document_file(p))


def sniff_kind(data: bytes, name: str = "") -> str:
    """ "pdf" | "ofd" | "image" from the first bytes (the name's suffix breaks ties)."""
    head = data[:1024]
    if head.lstrip()[:5] == b"%PDF-" or b"%PDF-" in head:
        return "pdf"
    if head[:4] == b"PK\x03\x04":
        if name.lower().endswith(".ofd"):
            return "ofd"
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                if any(n.lower().endswith("ofd.xml") for n in zf.namelist()[:200]):
                    return "ofd"
        except zipfile.BadZipFile:
            pass
    suffix = Path(name).suffix.lower()
    if suffix in (".pdf", ".ofd"):
        return suffix[1:]
    return "image"


def _scale_for(width: float, height: float, max_pixels: int, max_scale: float) -> float:
    """Pixels per unit so that round(w*s) * round(h*s) <= max_pixels, at most max_scale."""
    if width <= 0 or height <= 0:
        raise ValueError(f"page has no area ({width} x {height})")
    s = min(math.sqrt(max_pixels / (width * height)), max_scale)
    while s > 0 and math.ceil(width * s) * math.ceil(height * s) > max_pixels:
        s *= 0.999
    return s


def _select(n_pages: int, options: DocumentOptions, where: str) -> list[int]:
    if n_pages < 1:
        raise DocumentError(f"{where}: the document has no pages")
    if options.pages is None:
        if n_pages > options.max_pages:
            raise DocumentError(
                f"{where}: {n_pages} pages, over the limit of {options.max_pages}; select "
                f"pages (e.g. pages='1-{options.max_pages}') or raise max_pages"
            )
        return list(range(1, n_pages + 1))
    missing = [p for p in options.pages if p > n_pages]
    if missing:
        raise DocumentError(
            f"{where}: page {missing[0]} selected but the document has {n_pages} page(s)"
        )
    if len(options.pages) > options.max_pages:
        raise DocumentError(
            f"{where}: {len(options.pages)} pages selected, over the limit of {options.max_pages}"
        )
    return list(options.pages)


# ---------------------------------------------------------------- the one entry point


def load_pages(
    src: str | Path | bytes,
    *,
    doc_id: str | None = None,
    name: str | None = None,
    options: DocumentOptions | None = None,
) -> list[Page]:
    """Any input (image / PDF / OFD, a path or the bytes of an upload) → its pages.

    `doc_id` names the pages (default: the file stem); `name` is what error messages call
    the input (default: the path; give the upload's file name for bytes).
    """
    options = options or DocumentOptions()
    if isinstance(src, (str, Path)):
        path = Path(src)
        where = name or str(path)
        if not path.is_file():
            raise DocumentError(f"{where}: file not found")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DocumentError(f"{where}: cannot be read ({e.strerror or e})") from None
        name = name or path.name
        doc_id = doc_id or path.stem
    else:
        data = bytes(src)
        where = name or "upload"
        name = name or ""
        doc_id = doc_id or (Path(name).stem if name else "upload")
    if not data:
        raise DocumentError(f"{where}: empty file")
    kind = sniff_kind(data, name)
    if kind == "pdf":
        return list(_pdf_pages(data, doc_id, where, options))
    if kind == "ofd":
        return list(_ofd_pages(data, doc_id, where, options))
    return [_image_page(data, doc_id, where, options)]


def count_pages(
    src: str | Path | bytes, *, name: str | None = None, options: DocumentOptions | None = None
) -> int:
    """Pages in a document without rendering any (an image: 1). Raises `DocumentError`.

    With `select_pages` a caller can render one page at a time (``pages=(n,)``), holding
    one page image in memory instead of all of them (the service does).
    """
    options = options or DocumentOptions()
    if isinstance(src, (str, Path)):
        where = name or str(src)
        try:
            data = Path(src).read_bytes()
        except OSError as e:
            raise DocumentError(f"{where}: cannot be read ({e.strerror or e})") from None
        name = name or Path(src).name
    else:
        data, where, name = bytes(src), name or "upload", name or ""
    kind = sniff_kind(data, name)
    if kind == "pdf":
        import pypdfium2 as pdfium

        with _PDFIUM_LOCK:
            try:
                pdf = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as e:
                raise DocumentError(f"{where}: not a readable PDF ({e})") from None
            try:
                return len(pdf)
            finally:
                pdf.close()
    if kind == "ofd":
        pkg = _OfdPackage(data, where, options.max_ofd_bytes)
        _, doc = _ofd_document(pkg, where)
        pages_el = _child(doc, "Pages")
        return len(_children(pages_el, "Page")) if pages_el is not None else 0
    return 1


def select_pages(n_pages: int, options: DocumentOptions, where: str = "document") -> list[int]:
    """The 1-based page numbers `options` selects from `n_pages` (limits checked)."""
    return _select(n_pages, options, where)


def _image_page(data: bytes, doc_id: str, where: str, options: DocumentOptions) -> Page:
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > options.max_image_pixels:
            raise DocumentError(
                f"{where}: {w}x{h} = {w * h} pixels, over the limit of {options.max_image_pixels}"
            )
        n_frames = getattr(im, "n_frames", 1)
        im.load()
        image = ImageOps.exif_transpose(im).convert("RGB")
    except DocumentError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        msg = "not an image, PDF or OFD" if isinstance(e, UnidentifiedImageError) else str(e)
        raise DocumentError(f"{where}: does not decode ({msg})") from None
    except Image.DecompressionBombError as e:
        raise DocumentError(f"{where}: {e}") from None
    if n_frames > 1:
        log.warning("%s: %d frames; only the first is read", where, n_frames)
    return Page(doc_id, image, None, 1, 1, where, "image")


# ---------------------------------------------------------------- PDF (pypdfium2)


def _pdf_pages(data: bytes, doc_id: str, where: str, options: DocumentOptions) -> Iterator[Page]:
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            text = str(e)
            if "password" in text.lower():
                raise DocumentError(f"{where}: the PDF is encrypted; remove the password") from None
            raise DocumentError(f"{where}: not a readable PDF ({text})") from None
        try:
            n_pages = len(pdf)
            for number in _select(n_pages, options, where):
                yield _pdf_page(pdf, number, n_pages, doc_id, where, options)
        finally:
            pdf.close()


def _pdf_page(
    pdf: Any, number: int, n_pages: int, doc_id: str, where: str, options: DocumentOptions
) -> Page:
    import pypdfium2 as pdfium

    here = f"{where} page {number}"
    try:
        page = pdf[number - 1]
    except (pdfium.PdfiumError, IndexError) as e:
        raise DocumentError(f"{here}: cannot be loaded ({e})") from None
    try:
        w_pt, h_pt = page.get_size()
        try:
            scale = _scale_for(w_pt, h_pt, options.max_pixels, options.max_dpi / PT_PER_INCH)
        except ValueError as e:
            raise DocumentError(f"{here}: {e}") from None
        try:
            image = page.render(scale=scale, may_draw_forms=True).to_pil().convert("RGB")
        except (pdfium.PdfiumError, MemoryError, ValueError) as e:
            raise DocumentError(f"{here}: does not render ({e})") from None
        layer = _pdf_text_layer(page, image.size, here) if options.text_layer else None
    finally:
        page.close()
    return Page(
        page_id_for(doc_id, number, "pdf"),
        image,
        layer,
        number,
        n_pages,
        where,
        "pdf",
        dpi=scale * PT_PER_INCH,
    )


def _pdf_text_layer(page: Any, size: tuple[int, int], here: str) -> TextLayer | None:
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    try:
        tp = page.get_textpage()
    except pdfium.PdfiumError as e:
        log.warning("%s: text layer unreadable (%s); the page is used as an image", here, e)
        return None
    lines: list[OcrLine] = []
    try:
        w, h = size
        dx, dy = ctypes.c_int(), ctypes.c_int()

        def device(x: float, y: float) -> tuple[float, float]:
            raw.FPDF_PageToDevice(page, 0, 0, w, h, 0, x, y, dx, dy)
            return float(dx.value), float(dy.value)

        # Lines from characters (loose boxes come from the font size, so a glyph the
        # viewer lacks still has a box); a new line at a line break or a wide gap.
        chars: list[tuple[str, tuple[float, float, float, float]]] = []

        def flush() -> None:
            text = " ".join("".join(c for c, _ in chars).split())
            if text:
                boxes = [b for c, b in chars if not c.isspace()]
                box = (
                    min(b[0] for b in boxes),
                    min(b[1] for b in boxes),
                    max(b[2] for b in boxes),
                    max(b[3] for b in boxes),
                )
                lines.append(OcrLine(text=text, score=1.0, box=box))
            chars.clear()

        for i in range(tp.count_chars()):
            ch = chr(raw.FPDFText_GetUnicode(tp, i) or 32)
            if ch in "\r\n\x02\ufffe":
                flush()
                continue
            left, bottom, right, top = tp.get_charbox(i, loose=True)
            (x0, y0), (x1, y1) = device(left, top), device(right, bottom)
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if chars and not ch.isspace():
                prev = next((b for c, b in reversed(chars) if not c.isspace()), None)
                height = max(1.0, box[3] - box[1])
                if prev is not None and (
                    box[0] - prev[2] > 1.5 * height or abs(box[1] - prev[1]) > 0.6 * height
                ):
                    flush()
            chars.append((ch, box))
        flush()
    finally:
        tp.close()
    return TextLayer(lines, "pdf") if lines else None


# ---------------------------------------------------------------- OFD (GB/T 33190)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _find(el: ET.Element, *names: str) -> ET.Element | None:
    node: ET.Element | None = el
    for name in names:
        if node is None:
            return None
        node = _child(node, name)
    return node


def _floats(text: str | None) -> list[float]:
    return [float(v) for v in (text or "").split()]


def _deltas(text: str | None, limit: int) -> list[float]:
    """OFD ``DeltaX``/``DeltaY``: numbers, where ``g N v`` stands for N copies of v
    (at most `limit` values: the characters they space)."""
    tokens = (text or "").split()
    out: list[float] = []
    i = 0
    while i < len(tokens) and len(out) < limit:
        if tokens[i] == "g" and i + 2 < len(tokens):
            n = min(int(float(tokens[i + 1])), limit - len(out))
            out.extend([float(tokens[i + 2])] * max(0, n))
            i += 3
        else:
            out.append(float(tokens[i]))
            i += 1
    return out


def _color(el: ET.Element | None, default: tuple[int, int, int]) -> tuple[int, int, int]:
    if el is None:
        return default
    vals = _floats(el.get("Value"))
    if len(vals) >= 3:
        return tuple(max(0, min(255, int(v))) for v in vals[:3])  # type: ignore[return-value]
    if len(vals) == 1:  # gray
        g = max(0, min(255, int(vals[0])))
        return (g, g, g)
    return default


class _Ctm:
    """An affine map ``a b c d e f``: (x, y) → (a x + c y + e, b x + d y + f)."""

    def __init__(self, values: Sequence[float] = (1, 0, 0, 1, 0, 0)) -> None:
        self.a, self.b, self.c, self.d, self.e, self.f = (
            list(values) + [1, 0, 0, 1, 0, 0][len(values) :]
        )[:6]

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        return self.a * x + self.c * y + self.e, self.b * x + self.d * y + self.f

    @property
    def scale(self) -> float:
        return math.sqrt(abs(self.a * self.d - self.b * self.c)) or 1.0


class _OfdPackage:
    """The zip of an OFD file: XML by path (absolute or relative), with size limits."""

    def __init__(self, data: bytes, where: str, max_bytes: int) -> None:
        self.where = where
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as e:
            raise DocumentError(f"{where}: not an OFD file (not a zip: {e})") from None
        infos = self.zip.infolist()
        if len(infos) > 20_000:
            raise DocumentError(f"{where}: {len(infos)} entries in the OFD zip; refused")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise DocumentError(
                f"{where}: OFD unpacks to {total} bytes, over the limit of {max_bytes}"
            )
        self.names = {i.filename.lstrip("/"): i.filename for i in infos}
        self._lower = {k.lower(): k for k in self.names}

    def resolve(self, loc: str, base_dir: str = "") -> str:
        loc = loc.strip().replace("\\", "/")
        path = posixpath.normpath(
            loc.lstrip("/") if loc.startswith("/") else posixpath.join(base_dir, loc)
        )
        if path in self.names:
            return path
        return self._lower.get(path.lower(), path)

    def read(self, path: str, what: str) -> bytes:
        real = self.names.get(path) or self.names.get(self._lower.get(path.lower(), ""))
        if real is None:
            raise DocumentError(f"{self.where}: {what} {path!r} is missing from the OFD")
        try:
            return self.zip.read(real)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as e:
            raise DocumentError(f"{self.where}: {what} {path!r} is damaged ({e})") from None

    def xml(self, path: str, what: str) -> ET.Element:
        try:
            return ET.fromstring(self.read(path, what))
        except ET.ParseError as e:
            raise DocumentError(f"{self.where}: {what} {path!r} is not valid XML ({e})") from None


@dataclass
class _OfdResources:
    media: dict[str, str] = field(default_factory=dict)  # ID → zip path
    fonts: dict[str, str] = field(default_factory=dict)  # ID → font name
    draw_params: dict[str, ET.Element] = field(default_factory=dict)

    def add(self, pkg: _OfdPackage, res_path: str) -> None:
        root = pkg.xml(res_path, "resource file")
        base = posixpath.dirname(res_path)
        base_loc = root.get("BaseLoc")
        if base_loc:
            base = pkg.resolve(base_loc, base)
        for group in root:
            gname = _local(group.tag)
            for item in group:
                rid = item.get("ID")
                if rid is None:
                    continue
                if gname == "MultiMedias":
                    mf = _child(item, "MediaFile")
                    if mf is not None and mf.text:
                        self.media[rid] = pkg.resolve(mf.text, base)
                elif gname == "Fonts":
                    self.fonts[rid] = item.get("FontName", "")
                elif gname == "DrawParams":
                    self.draw_params[rid] = item


class _OfdPainter:
    """Draws the objects of one OFD page onto a Pillow canvas (units mm → pixels)."""

    def __init__(
        self,
        pkg: _OfdPackage,
        res: _OfdResources,
        image: Image.Image,
        scale: float,
        here: str,
        font_path: str | None,
        max_image_pixels: int = 64_000_000,
    ) -> None:
        self.pkg, self.res, self.image, self.s, self.here = pkg, res, image, scale, here
        self.max_image_pixels = max_image_pixels
        self.draw = ImageDraw.Draw(image)
        self.font_path = font_path
        self.lines: list[OcrLine] = []
        self._fonts: dict[int, Any] = {}

    def font(self, px: float) -> Any:
        size = max(4, min(round(px), self.image.size[1]))  # a hostile Size stays page-sized
        if size not in self._fonts:
            if self.font_path:
                self._fonts[size] = ImageFont.truetype(self.font_path, size)
            else:
                self._fonts[size] = ImageFont.load_default(size)
        return self._fonts[size]

    def px(self, x: float, y: float) -> tuple[float, float]:
        return x * self.s, y * self.s

    def layer(self, el: ET.Element, text: bool, depth: int = 0) -> None:
        if depth > MAX_OFD_NESTING:
            log.warning("%s: page blocks nested over %d deep; the rest not drawn", self.here, depth)
            return
        for obj in el:
            kind = _local(obj.tag)
            try:
                if kind == "TextObject":
                    self.text_object(obj, collect=text)
                elif kind == "PathObject":
                    self.path_object(obj)
                elif kind == "ImageObject":
                    self.image_object(obj)
                elif kind in ("PageBlock", "Layer"):
                    self.layer(obj, text, depth + 1)
            except (
                ValueError,
                IndexError,
                OSError,
                ArithmeticError,
                Image.DecompressionBombError,
            ) as e:
                log.warning("%s: %s ID=%s not drawn (%s)", self.here, kind, obj.get("ID"), e)

    def _box(self, obj: ET.Element) -> tuple[float, float, float, float]:
        box = _floats(obj.get("Boundary"))
        if len(box) != 4:
            raise ValueError(f"Boundary {obj.get('Boundary')!r} is not 'x y w h'")
        return box[0], box[1], box[2], box[3]

    def text_object(self, obj: ET.Element, collect: bool) -> None:
        bx, by, _, _ = self._box(obj)
        ctm = _Ctm(_floats(obj.get("CTM")) or (1, 0, 0, 1, 0, 0))
        size_mm = float(obj.get("Size", "3.5")) * ctm.scale
        fill = _color(_child(obj, "FillColor"), (0, 0, 0))
        font = self.font(size_mm * self.s)
        for code in _children(obj, "TextCode"):
            text = code.text or ""
            if not text:
                continue
            x, y = float(code.get("X", "0")), float(code.get("Y", "0"))
            dxs = _deltas(code.get("DeltaX"), len(text))
            dys = _deltas(code.get("DeltaY"), len(text))
            x_min = y_min = math.inf
            x_max = y_max = -math.inf
            cx, cy = x, y
            for i, ch in enumerate(text):
                if i > 0:
                    cx += dxs[i - 1] if i - 1 < len(dxs) else (dxs[-1] if dxs else size_mm)
                    cy += dys[i - 1] if i - 1 < len(dys) else 0.0
                px, py = ctm(cx, cy)
                X, Y = self.px(bx + px, by + py)
                if not ch.isspace():
                    self.draw.text((X, Y), ch, font=font, fill=fill, anchor="ls")
                adv = font.getlength(ch)
                x_min, x_max = min(x_min, X), max(x_max, X + adv)
                y_min, y_max = (
                    min(y_min, Y - size_mm * self.s),
                    max(y_max, Y + 0.2 * size_mm * self.s),
                )
            if collect and text.strip():
                self.lines.append(
                    OcrLine(
                        text=" ".join(text.split()), score=1.0, box=(x_min, y_min, x_max, y_max)
                    )
                )

    def path_object(self, obj: ET.Element) -> None:
        bx, by, _, _ = self._box(obj)
        ctm = _Ctm(_floats(obj.get("CTM")) or (1, 0, 0, 1, 0, 0))
        data = _find(obj, "AbbreviatedData")
        if data is None or not (data.text or "").strip():
            return
        stroke = obj.get("Stroke", "true").lower() != "false"
        fill = obj.get("Fill", "false").lower() == "true"
        width = max(1, round(float(obj.get("LineWidth", "0.353")) * ctm.scale * self.s))
        stroke_c = _color(_child(obj, "StrokeColor"), (0, 0, 0))
        fill_c = _color(_child(obj, "FillColor"), (0, 0, 0))

        def pt(x: float, y: float) -> tuple[float, float]:
            px, py = ctm(x, y)
            return self.px(bx + px, by + py)

        subpaths: list[tuple[list[tuple[float, float]], bool]] = []
        cur: list[tuple[float, float]] = []
        last = (0.0, 0.0)
        tokens = data.text.split()
        i = 0

        def nums(n: int) -> list[float]:
            nonlocal i
            vals = [float(t) for t in tokens[i + 1 : i + 1 + n]]
            if len(vals) != n:
                raise ValueError(f"path operator {tokens[i]!r} needs {n} numbers")
            i += n + 1
            return vals

        while i < len(tokens):
            op = tokens[i]
            if op in ("M", "S"):
                if len(cur) > 1:
                    subpaths.append((cur, False))
                x, y = nums(2)
                cur, last = [pt(x, y)], (x, y)
            elif op == "L":
                x, y = nums(2)
                cur.append(pt(x, y))
                last = (x, y)
            elif op in ("B", "Q"):
                k = 6 if op == "B" else 4
                v = nums(k)
                ctrl = [last, *zip(v[0::2], v[1::2], strict=True)]
                for t in (j / 12 for j in range(1, 13)):
                    cur.append(pt(*_bezier(ctrl, t)))
                last = ctrl[-1]
            elif op == "A":
                v = nums(7)
                cur.append(pt(v[5], v[6]))  # arcs: a chord is close enough for a page image
                last = (v[5], v[6])
            elif op == "C":
                if cur:
                    subpaths.append((cur, True))
                    cur = [cur[0]]
                i += 1
            else:
                raise ValueError(f"unknown path operator {op!r}")
        if len(cur) > 1:
            subpaths.append((cur, False))
        for points, closed in subpaths:
            if fill and len(points) > 2:
                self.draw.polygon(points, fill=fill_c)
            if stroke:
                seq = [*points, points[0]] if closed else points
                self.draw.line(seq, fill=stroke_c, width=width)

    def image_object(self, obj: ET.Element) -> None:
        bx, by, bw, bh = self._box(obj)
        rid = obj.get("ResourceID", "")
        path = self.res.media.get(rid)
        if path is None:
            raise ValueError(f"ResourceID {rid!r} is not a MultiMedia resource")
        ctm = _Ctm(_floats(obj.get("CTM")) or (bw, 0, 0, bh, 0, 0))
        with Image.open(io.BytesIO(self.pkg.read(path, "image"))) as src:
            if src.size[0] * src.size[1] > self.max_image_pixels:
                raise ValueError(
                    f"image {path!r} is {src.size[0]}x{src.size[1]}, over the limit of "
                    f"{self.max_image_pixels} pixels"
                )
            src.load()
            im = src.convert("RGBA")
        # the unit square mapped by the CTM, inside the boundary
        corners = [ctm(u, v) for u, v in ((0, 0), (1, 0), (0, 1), (1, 1))]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        x0, y0 = self.px(bx + min(xs), by + min(ys))
        x1, y1 = self.px(bx + max(xs), by + max(ys))
        w, h = max(1, round(x1 - x0)), max(1, round(y1 - y0))
        if w * h > 4 * self.image.size[0] * self.image.size[1]:
            raise ValueError(f"image placed at {w}x{h} pixels, far larger than the page")
        im = im.resize((w, h), Image.Resampling.LANCZOS)
        self.image.paste(im, (round(x0), round(y0)), im)


def _bezier(ctrl: Sequence[tuple[float, float]], t: float) -> tuple[float, float]:
    pts = list(ctrl)
    while len(pts) > 1:
        pts = [
            ((1 - t) * a[0] + t * b[0], (1 - t) * a[1] + t * b[1])
            for a, b in itertools.pairwise(pts)
        ]
    return pts[0]


def _cjk_font() -> str | None:
    from data_tools.synth import FontNotFoundError, find_font

    try:
        return find_font()
    except FontNotFoundError as e:
        log.warning("OFD text drawn with Pillow's default font (no CJK glyphs): %s", e)
        return None


def _ofd_document(pkg: _OfdPackage, where: str) -> tuple[str, ET.Element]:
    """(path, root) of the first document of an OFD package (``OFD.xml`` → ``DocRoot``)."""
    root = pkg.xml(pkg.resolve("OFD.xml"), "entry file")
    doc_root = _find(root, "DocBody", "DocRoot")
    if doc_root is None or not (doc_root.text or "").strip():
        raise DocumentError(f"{where}: OFD.xml has no DocBody/DocRoot")
    doc_path = pkg.resolve(doc_root.text or "")
    return doc_path, pkg.xml(doc_path, "document")


def _ofd_pages(data: bytes, doc_id: str, where: str, options: DocumentOptions) -> Iterator[Page]:
    pkg = _OfdPackage(data, where, options.max_ofd_bytes)
    doc_path, doc = _ofd_document(pkg, where)
    doc_dir = posixpath.dirname(doc_path)
    common = _child(doc, "CommonData")
    res = _OfdResources()
    templates: dict[str, str] = {}
    default_box = [0.0, 0.0, 210.0, 297.0]
    if common is not None:
        for tag in ("PublicRes", "DocumentRes"):
            for el in _children(common, tag):
                if el.text and el.text.strip():
                    res.add(pkg, pkg.resolve(el.text, doc_dir))
        for tpl in _children(common, "TemplatePage"):
            if tpl.get("ID") and tpl.get("BaseLoc"):
                templates[tpl.get("ID", "")] = pkg.resolve(tpl.get("BaseLoc", ""), doc_dir)
        try:
            box = _floats(getattr(_find(common, "PageArea", "PhysicalBox"), "text", None))
        except ValueError:
            box = []
        if len(box) == 4:
            default_box = box
    pages_el = _child(doc, "Pages")
    page_refs = _children(pages_el, "Page") if pages_el is not None else []
    n_pages = len(page_refs)
    font_path = _cjk_font()
    for number in _select(n_pages, options, where):
        here = f"{where} page {number}"
        loc = page_refs[number - 1].get("BaseLoc")
        if not loc:
            raise DocumentError(f"{here}: the page has no BaseLoc in Document.xml")
        page_path = pkg.resolve(loc, doc_dir)
        page_xml = pkg.xml(page_path, f"page {number} content")
        try:
            box = _floats(getattr(_find(page_xml, "Area", "PhysicalBox"), "text", None))
        except ValueError:
            box = []
        box = box if len(box) == 4 else default_box
        if not all(math.isfinite(v) for v in box) or not (
            0 < box[2] <= 10_000 and 0 < box[3] <= 10_000
        ):
            raise DocumentError(f"{here}: page box {box} is not a page (mm, at most 10 m a side)")
        try:
            scale = _scale_for(box[2], box[3], options.max_pixels, options.max_dpi / MM_PER_INCH)
        except ValueError as e:
            raise DocumentError(f"{here}: {e}") from None
        size = (max(1, math.ceil(box[2] * scale)), max(1, math.ceil(box[3] * scale)))
        image = Image.new("RGB", size, "white")
        painter = _OfdPainter(pkg, res, image, scale, here, font_path, options.max_image_pixels)
        for tpl in _children(page_xml, "Template"):
            tpl_path = templates.get(tpl.get("TemplateID", ""))
            if tpl_path is None:
                log.warning("%s: template %s not declared; skipped", here, tpl.get("TemplateID"))
                continue
            content = _child(pkg.xml(tpl_path, "template"), "Content")
            if content is not None:
                painter.layer(content, text=options.text_layer)
        content = _child(page_xml, "Content")
        if content is not None:
            painter.layer(content, text=options.text_layer)
        layer = TextLayer(painter.lines, "ofd") if options.text_layer and painter.lines else None
        yield Page(
            page_id_for(doc_id, number, "ofd"),
            image,
            layer,
            number,
            n_pages,
            where,
            "ofd",
            dpi=scale * MM_PER_INCH,
        )


# ---------------------------------------------------------------- one invoice over pages


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or v in ({}, [])


def merge_pages(predictions: Sequence[Any]) -> Any:
    """One document from its pages' predictions (an invoice continued on a second page).

    Objects merge key by key in first-seen order; for a scalar the first non-empty value
    wins (the header printed on every page is read once); lists are concatenated in page
    order (line items continued on page 2). Pages whose prediction is not an object are
    skipped; None when no page has one.
    """
    dicts = [p for p in predictions if isinstance(p, dict)]
    if not dicts:
        return None
    out: dict[str, Any] = {}
    for pred in dicts:
        _merge_into(out, pred)
    return out


def _merge_into(out: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if key not in out:
            out[key] = _copy(value)
            continue
        old = out[key]
        if isinstance(old, dict) and isinstance(value, dict):
            _merge_into(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            old.extend(_copy(v) for v in value if not _empty(v))
        elif _empty(old) and not _empty(value):
            out[key] = _copy(value)


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v
