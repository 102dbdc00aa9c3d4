"""Write small PDF and OFD invoices for tests: a page image plus an optional text layer.

    from tests.support.make_documents import TextItem, write_pdf, write_ofd

    write_pdf(path, [image], texts=[[TextItem("发票号码 12270242", 10, 10, 3.5)]])
    write_ofd(path, [image], texts=[[TextItem("发票号码 12270242", 10, 10, 3.5)]])

Positions and sizes are in millimetres from the page's top-left corner (the text's
baseline-left point). The page is `page_mm` (default 240 x 140 mm, the VAT invoice size)
and the image fills it. PDF text is an invisible layer (render mode 3) in a Type0 font with
Identity-H codes = Unicode code points and a ToUnicode map, like a searchable scan; OFD
text is drawn (TextCode with DeltaX), over the image, with a ruled frame as a PathObject.
Without texts the PDF is a plain scan (no text layer).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

PT_PER_MM = 72 / 25.4


@dataclass(frozen=True)
class TextItem:
    text: str
    x_mm: float
    y_mm: float  # baseline, from the top
    size_mm: float = 3.5


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _hex_utf16(text: str) -> str:
    return "".join(f"{ord(c):04X}" for c in text if ord(c) <= 0xFFFF)


def write_pdf(
    path: str | Path,
    images: Sequence[Image.Image],
    texts: Sequence[Sequence[TextItem]] | None = None,
    page_mm: tuple[float, float] = (240.0, 140.0),
) -> Path:
    """A PDF with one page per image; `texts[i]` is page i's invisible text layer."""
    path = Path(path)
    w_pt, h_pt = page_mm[0] * PT_PER_MM, page_mm[1] * PT_PER_MM
    objs: list[bytes] = []

    def add(body: bytes) -> int:
        objs.append(body)
        return len(objs)

    catalog = add(b"")  # placeholders filled below
    pages = add(b"")
    cmap = (
        b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        b"/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
        b"1 begincodespacerange <0000> <FFFF> endcodespacerange\n"
        b"1 beginbfrange <0000> <FFFF> <0000> endbfrange\n"
        b"endcmap CMapName currentdict /CMap defineresource pop end end\n"
    )
    tounicode = add(b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream")
    descriptor = add(
        b"<< /Type /FontDescriptor /FontName /SimSun /Flags 4 /FontBBox [0 -200 1000 900] "
        b"/ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 700 /StemV 80 >>"
    )
    cidfont = add(
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /SimSun "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
        b"/FontDescriptor %d 0 R /DW 1000 /CIDToGIDMap /Identity >>" % descriptor
    )
    font = add(
        b"<< /Type /Font /Subtype /Type0 /BaseFont /SimSun /Encoding /Identity-H "
        b"/DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (cidfont, tounicode)
    )
    kids = []
    for i, image in enumerate(images):
        jpg = _jpeg(image)
        iw, ih = image.size
        xobj = add(
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
            b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n"
            % (iw, ih, len(jpg))
            + jpg
            + b"\nendstream"
        )
        ops = [f"q {w_pt:.2f} 0 0 {h_pt:.2f} 0 0 cm /Im0 Do Q"]
        for item in texts[i] if texts and i < len(texts) else []:
            size = item.size_mm * PT_PER_MM
            x, y = item.x_mm * PT_PER_MM, h_pt - item.y_mm * PT_PER_MM
            ops.append(
                f"BT 3 Tr /F0 {size:.2f} Tf {x:.2f} {y:.2f} Td <{_hex_utf16(item.text)}> Tj ET"
            )
        stream = "\n".join(ops).encode("ascii")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %.2f %.2f] /Contents %d 0 R "
                b"/Resources << /XObject << /Im0 %d 0 R >> /Font << /F0 %d 0 R >> >> >>"
                % (pages, w_pt, h_pt, content, xobj, font)
            )
        )
    objs[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages
    objs[pages - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objs) + 1, catalog, xref)
    )
    path.write_bytes(out.getvalue())
    return path


def write_ofd(
    path: str | Path,
    images: Sequence[Image.Image],
    texts: Sequence[Sequence[TextItem]] | None = None,
    page_mm: tuple[float, float] = (240.0, 140.0),
) -> Path:
    """An OFD (GB/T 33190) with one page per image, drawn text and a ruled frame."""
    path = Path(path)
    w, h = page_mm
    ns = 'xmlns:ofd="http://www.ofdspec.org/2016"'
    files: dict[str, bytes] = {}
    files["OFD.xml"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><ofd:OFD {ns} Version="1.0" DocType="OFD">'
        "<ofd:DocBody><ofd:DocInfo><ofd:DocID>test</ofd:DocID></ofd:DocInfo>"
        "<ofd:DocRoot>Doc_0/Document.xml</ofd:DocRoot></ofd:DocBody></ofd:OFD>"
    ).encode()
    media = "".join(
        f'<ofd:MultiMedia ID="{100 + i}" Type="Image" Format="JPEG">'
        f"<ofd:MediaFile>image_{i}.jpg</ofd:MediaFile></ofd:MultiMedia>"
        for i in range(len(images))
    )
    files["Doc_0/DocumentRes.xml"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><ofd:Res {ns} BaseLoc="Res">'
        f"<ofd:MultiMedias>{media}</ofd:MultiMedias></ofd:Res>"
    ).encode()
    files["Doc_0/PublicRes.xml"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><ofd:Res {ns} BaseLoc="Res"><ofd:Fonts>'
        '<ofd:Font ID="2" FontName="宋体" FamilyName="宋体"/></ofd:Fonts></ofd:Res>'
    ).encode()
    page_refs = "".join(
        f'<ofd:Page ID="{10 + i}" BaseLoc="Pages/Page_{i}/Content.xml"/>'
        for i in range(len(images))
    )
    files["Doc_0/Document.xml"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><ofd:Document {ns}><ofd:CommonData>'
        f"<ofd:MaxUnitID>999</ofd:MaxUnitID><ofd:PageArea><ofd:PhysicalBox>0 0 {w} {h}"
        "</ofd:PhysicalBox></ofd:PageArea><ofd:PublicRes>PublicRes.xml</ofd:PublicRes>"
        "<ofd:DocumentRes>DocumentRes.xml</ofd:DocumentRes>"
        '<ofd:TemplatePage ID="5" BaseLoc="Tpls/Tpl_0/Content.xml"/></ofd:CommonData>'
        f"<ofd:Pages>{page_refs}</ofd:Pages></ofd:Document>"
    ).encode()
    # the template: a red frame, as printed invoice forms have
    files["Doc_0/Tpls/Tpl_0/Content.xml"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><ofd:Page {ns}><ofd:Content>'
        '<ofd:Layer ID="6">'
        f'<ofd:PathObject ID="7" Boundary="0 0 {w} {h}" LineWidth="0.5">'
        '<ofd:StrokeColor Value="158 80 50"/>'
        f"<ofd:AbbreviatedData>M 3 3 L {w - 3} 3 L {w - 3} {h - 3} L 3 {h - 3} C"
        "</ofd:AbbreviatedData></ofd:PathObject></ofd:Layer></ofd:Content></ofd:Page>"
    ).encode()
    for i, image in enumerate(images):
        files[f"Doc_0/Res/image_{i}.jpg"] = _jpeg(image)
        objs = [
            f'<ofd:ImageObject ID="{200 + i}" Boundary="0 0 {w} {h}" CTM="{w} 0 0 {h} 0 0" '
            f'ResourceID="{100 + i}"/>'
        ]
        for j, item in enumerate(texts[i] if texts and i < len(texts) else []):
            s = item.size_mm
            n = len(item.text)
            box = f"{item.x_mm} {item.y_mm - s} {max(1.0, n * s)} {s * 1.3}"
            delta = f' DeltaX="g {n - 1} {s}"' if n > 1 else ""
            text = item.text.replace("&", "&amp;").replace("<", "&lt;")
            objs.append(
                f'<ofd:TextObject ID="{300 + j}" Boundary="{box}" Font="2" Size="{s}">'
                '<ofd:FillColor Value="0 0 0"/>'
                f'<ofd:TextCode X="0" Y="{s}"{delta}>{text}</ofd:TextCode></ofd:TextObject>'
            )
        files[f"Doc_0/Pages/Page_{i}/Content.xml"] = (
            f'<?xml version="1.0" encoding="UTF-8"?><ofd:Page {ns}><ofd:Area>'
            f"<ofd:PhysicalBox>0 0 {w} {h}</ofd:PhysicalBox></ofd:Area>"
            '<ofd:Template TemplateID="5" ZOrder="Background"/>'
            f'<ofd:Content><ofd:Layer ID="{20 + i}">{"".join(objs)}</ofd:Layer>'
            "</ofd:Content></ofd:Page>"
        ).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return path
