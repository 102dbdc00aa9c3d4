"""Converters: each format from small files written here in its published layout."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from data_tools.convert import ConvertConfig, ConvertError, convert, stored_image_path
from data_tools.normalize import normalize_value
from data_tools.records import read_labels
from data_tools.schema import load_schema

REPO = Path(__file__).resolve().parents[2]


def image(path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "white").save(path, format=fmt)
    return path


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def by_id(out: Path) -> dict:
    return {r.id: r for r in read_labels(out)}


# ---------------------------------------------------------------- vat_ner


def test_vat_ner_canonicalises_keeps_report_and_relative_image(tmp_path):
    image(tmp_path / "data" / "x1.jpg", "JPEG")
    write_json(
        tmp_path / "data" / "vlm_labels" / "x1.json",
        {
            "image": "x1.jpg",
            "data": {
                "发票信息": {"发票编号": "12271524", "发票代码": "4400154130"},
                "购买方信息": {"名称": "甲公司", "地址电话": "深圳 0755"},
                "货物或应税劳务服务名称": "手机",
                "数量": 5,
                "金额": "2987.10",
                "备注": None,
                "销售方（章）": "乙公司 发票专用章",
            },
        },
    )
    out = tmp_path / "data" / "labels.jsonl"
    summary = convert("vat_ner", tmp_path / "data" / "vlm_labels", out)
    assert summary.records == 1 and summary.schema == "vat_invoice"
    (rec,) = read_labels(out)
    assert rec.id == "x1" and rec.image == "x1.jpg" and rec.doc_type == "vat_invoice"
    assert rec.fields == {
        "发票代码": "4400154130",
        "发票号码": "12271524",
        "购买方": {"名称": "甲公司", "地址、电话": "深圳 0755"},
        "货物或应税劳务、服务": [{"名称": "手机", "数量": "5", "金额": "2987.10"}],
        "备注": "",
    }
    canon = rec.meta["canonicalize"]
    assert canon["schema"] == "vat_invoice"
    assert "发票编号→发票号码" in canon["renamed"] and canon["dropped"] == ["销售方（章）"]
    assert rec.meta["coerced"] == ["备注"]
    assert rec.meta["source"] == {"format": "vat_ner", "file": "x1.json"}


def test_vat_ner_list_file_jsonl_and_schema_none(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    write_json(tmp_path / "many.json", [{"image": "a.png", "data": {"发票编号": "1"}}])
    (tmp_path / "more.jsonl").write_text(
        '{"image": "b.png", "data": {"发票编号": "2"}}\n\n', encoding="utf-8"
    )
    out = tmp_path / "out" / "labels.jsonl"
    convert("vat_ner", tmp_path, out, ConvertConfig(schema="none", doc_type="invoice"))
    recs = by_id(out)
    assert {k: r.fields for k, r in recs.items()} == {
        "a": {"发票编号": "1"},
        "b": {"发票编号": "2"},
    }
    assert recs["b"].meta["source"] == {"format": "vat_ner", "file": "more.jsonl", "line": 1}
    assert recs["a"].doc_type == "invoice" and "canonicalize" not in recs["a"].meta
    # the image lies outside the output folder → absolute
    assert recs["a"].image == (tmp_path / "a.png").as_posix()


def leaves(value: Any, path: tuple = ()) -> dict[tuple, str]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in leaves(sub, (*path, key)).items()}
    if isinstance(value, list):
        return {k: v for i, sub in enumerate(value) for k, v in leaves(sub, (*path, i)).items()}
    return {path: value}


def test_vat_invoice_fixture_raw_labels_convert_to_one_schema(vat_invoices, tmp_path):
    schema = load_schema("vat_invoice")
    out = tmp_path / "labels.jsonl"
    assert convert("vat_ner", vat_invoices / "vlm_labels", out).records == 3
    recs = by_id(out)
    assert set(recs) == {"b0", "b1", "b2"}
    item_key = "货物或应税劳务、服务"
    item_keys = set(schema.fields[item_key].fields)
    for rec in recs.values():
        assert Path(rec.image).is_absolute() and Path(rec.image).is_file()
        assert set(rec.fields) <= set(schema.fields), rec.id
        for key in ("购买方", "销售方"):
            assert set(rec.fields[key]) <= set(schema.fields[key].fields), rec.id
        items = rec.fields[item_key]
        assert isinstance(items, list) and items and all(isinstance(i, dict) for i in items)
        assert all(set(i) <= item_keys for i in items), rec.id
        assert "发票编号" not in rec.fields and rec.fields["发票号码"]
    raw_b0 = json.loads((vat_invoices / "vlm_labels" / "b0.json").read_text(encoding="utf-8"))
    assert recs["b0"].fields["发票号码"] == raw_b0["data"]["发票编号"]
    assert "发票编号→发票号码" in recs["b0"].meta["canonicalize"]["renamed"]
    # b1's code and number are swapped in the raw label: the converter must not fix them
    assert recs["b1"].fields["发票代码"] == "12270242"
    assert recs["b1"].fields["发票号码"] == "4400154130"
    assert len(recs["b1"].fields[item_key]) == 1  # the missing discount row stays missing

    truth = {r.id: r for r in read_labels(vat_invoices / "ground_truth.jsonl")}["b0"]
    got = recs["b0"].fields
    # keys the VLM got right character for character
    for key in (
        "发票名称",
        "发票代码",
        "发票号码",
        "开票日期",
        "购买方",
        "销售方",
        "价税合计（大写）",
    ):
        assert got[key] == truth.fields[key], key
    # the rest equal after the typed normalisation the scorer uses (￥ vs ¥, line breaks of
    # 密码区, the space in "红米 3"): every leaf of the truth is found in the conversion
    got_leaves = leaves(got)
    for path, value in leaves(truth.fields).items():
        ftype = schema.field_type(tuple(p for p in path if isinstance(p, str)))
        assert normalize_value(got_leaves[path], ftype) == normalize_value(value, ftype), path


# ---------------------------------------------------------------- wildreceipt

FIELD_NAMES = ["Store_name", "Store_addr", "Tel", "Date", "Time", "Prod_item", "Prod_quantity"]
FIELD_NAMES += ["Prod_price", "Subtotal", "Tax", "Tips", "Total"]
# the published class_list.txt: 0 Ignore, 1 Store_name_value, 2 Store_name_key, ..., 25 Others
CLASSES = ["Ignore", *(f"{n}_{r}" for n in FIELD_NAMES for r in ("value", "key")), "Others"]


def box(text: str, label: int, x: float = 1.0, y: float = 2.0, h: float = 8.0) -> dict:
    """An MMOCR close-set box at (x, y), 30 wide and `h` high (the corners as published)."""
    return {
        "box": [x, y + h, x + 30, y + h, x + 30, y, x, y],
        "text": text,
        "label": label,
    }


def make_wildreceipt(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_list.txt").write_text(
        "".join(f"{i} {name}\n" for i, name in enumerate(CLASSES)), encoding="utf-8"
    )
    lines = [
        {
            "file_name": "image_files/Image_16/11/r0.jpeg",
            "height": 8,
            "width": 8,
            "annotations": [
                box("TOTAL", 24, y=90),
                box("$7.50", 23, x=80, y=90),
                box("SAFEWAY", 1, y=0),
                box("TM", 25, x=40, y=0),
                box("Milk", 11, y=50),
                box("###", 0, y=60),
                box("12 Main St", 3, y=10),
                box("Springfield", 3, y=20),
                box("3.25", 15, x=80, y=51),
                box("", 1, y=99),
            ],
        },
        {
            "file_name": "image_files/Image_16/11/r1.jpeg",
            "height": 8,
            "width": 8,
            # a slanted photo: every price sits 6 px (most of a box height) below its name;
            # the file lists the columns, not the rows; "Eggs" has no price box, "1.00" no name
            "annotations": [
                box("01/02/2020", 7, y=0),
                box("Bread", 11, y=20),
                box("Eggs", 11, y=40),
                box("Jam", 11, y=60),
                box("2.50", 15, x=80, y=26),
                box("3.10", 15, x=80, y=66),
                box("2", 13, x=-40, y=60),
                box("1.00", 15, x=80, y=100),
            ],
        },
    ]
    (root / "train.txt").write_text("\n".join(json.dumps(x) for x in lines) + "\n", "utf-8")
    for i in range(2):
        image(root / "image_files" / "Image_16" / "11" / f"r{i}.jpeg", "JPEG")
    return root


def test_wildreceipt_pairs_key_value_classes(tmp_path):
    root = make_wildreceipt(tmp_path / "wildreceipt")
    out = tmp_path / "wildreceipt" / "labels.jsonl"
    summary = convert("wildreceipt", root, out)
    assert summary.records == 2
    recs = by_id(out)
    r0 = recs["image_files/Image_16/11/r0"]
    assert r0.image == "image_files/Image_16/11/r0.jpeg" and r0.doc_type == "receipt"
    # class-list order; every field a list of its boxes in reading order, one box or
    # several; product columns paired into line items; Ignore/Others out
    assert list(r0.fields.items()) == [
        ("Store_name", ["SAFEWAY"]),
        ("Store_addr", ["12 Main St", "Springfield"]),
        ("Items", [{"name": "Milk", "price": "3.25"}]),
        ("Total", ["$7.50"]),
    ]
    assert r0.meta["key_texts"] == {"Total": ["TOTAL"]}
    assert r0.meta["source"] == {"format": "wildreceipt", "file": "train.txt", "line": 1}
    assert r0.meta["split"] == "train"
    assert recs["image_files/Image_16/11/r1"].fields == {
        "Date": ["01/02/2020"],
        "Items": [
            {"name": "Bread", "price": "2.50"},
            {"name": "Eggs"},
            {"name": "Jam", "quantity": "2", "price": "3.10"},
            {"price": "1.00"},
        ],
    }
    assert summary.counts["item boxes unpaired (kept as items alone)"] == 2  # Eggs, 1.00
    assert summary.dropped == {"Others boxes": 1, "Ignore boxes": 1, "boxes with empty text": 1}


def test_wildreceipt_errors_name_file_line_and_fix(tmp_path):
    root = make_wildreceipt(tmp_path / "w")
    ann = root / "train.txt"
    ann.write_text(
        ann.read_text() + json.dumps({"file_name": "x.jpeg", "annotations": [box("A", 99)]})
    )
    with pytest.raises(
        ConvertError, match=r"train\.txt:3: annotation 0 \('A'\): label 99 is not in"
    ):
        convert("wildreceipt", root, tmp_path / "o.jsonl")
    summary = convert("wildreceipt", root, tmp_path / "o.jsonl", ConvertConfig(skip_bad=True))
    assert (
        summary.records == 2 and len(summary.skipped) == 1 and "train.txt:3" in summary.skipped[0]
    )

    (root / "class_list.txt").unlink()
    with pytest.raises(ConvertError, match="--class-list"):
        convert("wildreceipt", root, tmp_path / "o.jsonl")
    openset = tmp_path / "openset_classes.txt"
    openset.write_text("0 bg\n1 key\n2 value\n3 others\n")
    with pytest.raises(ConvertError, match="open-set"):
        convert("wildreceipt", root, tmp_path / "o.jsonl", ConvertConfig(class_list=openset))


# ---------------------------------------------------------------- sroie


def test_sroie_key_files_with_parallel_img_folder(tmp_path):
    key = tmp_path / "train" / "entities"
    key.mkdir(parents=True)
    (key / "X00016469612.txt").write_text(
        '{\n    "company": "BOOK TA .K (TAMAN DAYA) SDN BHD",\n    "date": "25/12/2018",\n'
        '    "address": "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, 81100 JOHOR BAHRU, JOHOR.",\n'
        '    "total": "9.00"\n}',
        encoding="utf-8",
    )
    (key / "X51005200938.json").write_text('{"company": "PERNIAGAAN ZHENG HUI", "total": 112.40}')
    image(tmp_path / "train" / "img" / "X00016469612.jpg", "JPEG")
    image(tmp_path / "train" / "img" / "X51005200938.jpg", "JPEG")
    out = tmp_path / "train" / "labels.jsonl"
    convert("sroie", key, out)
    recs = by_id(out)
    assert list(recs) == ["X00016469612", "X51005200938"]
    assert recs["X00016469612"].fields == {
        "company": "BOOK TA .K (TAMAN DAYA) SDN BHD",
        "date": "25/12/2018",
        "address": "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, 81100 JOHOR BAHRU, JOHOR.",
        "total": "9.00",
    }
    # a number keeps its printed digits; a missing key stays missing
    assert recs["X51005200938"].fields == {"company": "PERNIAGAAN ZHENG HUI", "total": "112.40"}
    assert recs["X00016469612"].image == "img/X00016469612.jpg"


def test_sroie_box_file_and_missing_image_are_clear(tmp_path):
    (tmp_path / "X1.txt").write_text("72,25,326,25,326,64,72,64,TAN WOON YANN\n")
    with pytest.raises(ConvertError, match=r"X1\.txt: not a task-3 key file.*box file"):
        convert("sroie", tmp_path, tmp_path / "o.jsonl")
    (tmp_path / "X1.txt").write_text('{"company": "A", "total": "1.00"}')
    with pytest.raises(ConvertError, match=r"X1\.txt: image 'X1\.jpg' not found.*--image-dir"):
        convert("sroie", tmp_path, tmp_path / "o.jsonl")
    elsewhere = image(tmp_path / "pics" / "X1.png")
    convert(
        "sroie",
        tmp_path / "X1.txt",
        tmp_path / "o.jsonl",
        ConvertConfig(image_dir=elsewhere.parent),
    )
    assert read_labels(tmp_path / "o.jsonl")[0].image == "pics/X1.png"
    elsewhere.unlink()
    cfg = ConvertConfig(allow_missing_images=True)
    assert convert("sroie", tmp_path, tmp_path / "o.jsonl", cfg).missing_images == ["X1"]
    (rec,) = read_labels(tmp_path / "o.jsonl")
    assert rec.image == "X1.jpg" and rec.meta["image_missing"] is True


# ---------------------------------------------------------------- cord

CORD_GT = {
    "gt_parse": {
        "menu": {"nm": "Nasi Campur Bali", "cnt": 1, "price": "75,000", "sub": {"nm": "Telur"}},
        "sub_total": {"subtotal_price": "75,000", "tax_price": 7500},
        "total": {"total_price": "82,500", "cashprice": 100000.5, "changeprice": "17,500"},
    },
    "meta": {"version": "2.0.0", "split": "train", "image_id": 0, "image_size": {"width": 8}},
    "valid_line": [],
}
CORD_FIELDS = {
    "menu": [{"nm": "Nasi Campur Bali", "cnt": "1", "price": "75,000", "sub": [{"nm": "Telur"}]}],
    "sub_total": [{"subtotal_price": "75,000", "tax_price": "7500"}],
    "total": {"total_price": "82,500", "cashprice": "100000.5", "changeprice": "17,500"},
}


def test_cord_parquet_extracts_images_and_normalises_menu(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = tmp_path / "r.png"
    image(png)
    gt1 = {
        "gt_parse": {"menu": [{"nm": ["ICE", "TEA"], "price": "9"}, {"nm": "B"}]},
        "meta": {"split": "train", "image_id": 1},
    }
    table = pa.table(
        {
            "image": [{"bytes": png.read_bytes(), "path": None}] * 2,
            "ground_truth": [json.dumps(CORD_GT), json.dumps(gt1)],
        }
    )
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    out = tmp_path / "cord.jsonl"
    convert("cord", tmp_path / "data", out)
    recs = by_id(out)
    assert recs["train/0"].fields == CORD_FIELDS
    # a value given as several strings is joined, as the v1 export joins two lines
    assert recs["train/1"].fields == {"menu": [{"nm": "ICE TEA", "price": "9"}, {"nm": "B"}]}
    assert recs["train/0"].image == "cord_images/train_0.png"
    assert (tmp_path / "cord_images" / "train_0.png").read_bytes() == png.read_bytes()
    assert recs["train/0"].meta["source"] == {
        "format": "cord",
        "file": "train-00000-of-00001.parquet",
        "row": 0,
        "split": "train",
        "image_id": "0",
    }
    assert recs["train/0"].meta["split"] == "train"
    # a re-run gives the same bytes (stable ids, nothing random)
    first = out.read_bytes()
    convert("cord", tmp_path / "data", out)
    assert out.read_bytes() == first


def test_cord_donut_jsonl_and_json_files(tmp_path):
    image(tmp_path / "donut" / "0.png")
    (tmp_path / "donut" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "0.png", "ground_truth": json.dumps(CORD_GT)}) + "\n"
    )
    convert("cord", tmp_path / "donut", tmp_path / "a.jsonl")
    assert by_id(tmp_path / "a.jsonl")["train/0"].fields == CORD_FIELDS

    gt = {"gt_parse": {"total": {"total_price": "5"}}}  # no meta: the id is the file path
    write_json(tmp_path / "files" / "json" / "receipt_00007.json", {"ground_truth": json.dumps(gt)})
    image(tmp_path / "files" / "image" / "receipt_00007.png")
    convert("cord", tmp_path / "files", tmp_path / "b.jsonl")
    (rec,) = read_labels(tmp_path / "b.jsonl")
    assert rec.id == "json/receipt_00007" and rec.fields == {"total": {"total_price": "5"}}

    write_json(tmp_path / "orig" / "receipt_00000.json", {"meta": {}, "roi": {}})
    with pytest.raises(ConvertError, match=r"receipt_00000\.json: no 'gt_parse' or 'valid_line'"):
        convert("cord", tmp_path / "orig", tmp_path / "c.jsonl")


# ---------------------------------------------------------------- xfund


def ent(eid: int, label: str, text: str, links: list) -> dict:
    return {
        "id": eid,
        "box": [0, 0, 1, 1],
        "text": text,
        "label": label,
        "words": [],
        "linking": links,
    }


XFUND_DOC = [
    ent(0, "header", "个人信息", [[0, 1]]),
    ent(1, "question", "姓名：", [[1, 2], [0, 1]]),
    ent(2, "answer", "夏艳辰", [[1, 2]]),
    ent(3, "question", "住址:", [[3, 4], [3, 5]]),
    ent(4, "answer", "北京市", [[3, 4]]),
    ent(5, "answer", "海淀区", [[5, 3]]),  # link written answer → question
    ent(6, "question", "电话", []),
    ent(7, "answer", "无主答案", []),
    ent(8, "other", "第1页", []),
    ent(9, "question", "姓名", [[9, 10]]),
    ent(10, "answer", "李雷", [[9, 10]]),
]


def test_xfund_links_become_key_values(tmp_path):
    write_json(
        tmp_path / "zh.val.json",
        {
            "lang": "zh",
            "version": "0.1",
            "split": "val",
            "documents": [
                {
                    "id": "zh_val_0",
                    "uid": "0ac1",
                    "document": XFUND_DOC,
                    "img": {"fname": "zh_val_0.jpg", "width": 8, "height": 8},
                }
            ],
        },
    )
    image(tmp_path / "zh.val" / "zh_val_0.jpg", "JPEG")
    convert("xfund", tmp_path / "zh.val.json", tmp_path / "out.jsonl")
    (rec,) = read_labels(tmp_path / "out.jsonl")
    assert rec.id == "zh_val_0" and rec.image == "zh.val/zh_val_0.jpg" and rec.doc_type == "form"
    assert list(rec.fields.items()) == [
        # the same question twice is a repeated block, never merged into one list
        ("[姓名]", [{"姓名": "夏艳辰"}, {"姓名": "李雷"}]),
        ("住址", ["北京市", "海淀区"]),
        ("电话", ""),
    ]
    assert rec.meta["split"] == "val"
    assert rec.meta["headers"] == ["个人信息"]
    assert rec.meta["unlinked_answers"] == ["无主答案"]
    assert rec.meta["source"] == {"format": "xfund", "file": "zh.val.json", "document": "zh_val_0"}


def test_funsd_and_paddleocr_layouts_and_bad_link(tmp_path):
    ann = tmp_path / "testing_data" / "annotations"
    form = [
        ent(0, "question", "Registration No.", [[0, 1]]),
        ent(1, "answer", "533", [[0, 1]]),
        ent(2, "question", "Date:", [[2, 3]]),
        ent(3, "answer", "12/10/98", [[2, 3]]),
    ]
    write_json(ann / "82092117.json", {"form": form})
    image(tmp_path / "testing_data" / "images" / "82092117.png")
    convert("xfund", ann, tmp_path / "funsd.jsonl")
    (rec,) = read_labels(tmp_path / "funsd.jsonl")
    assert rec.id == "82092117"
    assert rec.fields == {"Registration No.": "533", "Date": "12/10/98"}

    entities = [
        {"transcription": "姓名", "label": "QUESTION", "points": [], "id": 0, "linking": [[0, 1]]},
        {"transcription": "王梅", "label": "ANSWER", "points": [], "id": 1, "linking": [[0, 1]]},
    ]
    paddle = tmp_path / "xfun_normalize_val.json"
    paddle.write_text(f"zh_val_0.jpg\t{json.dumps(entities, ensure_ascii=False)}\n", "utf-8")
    image(tmp_path / "image" / "zh_val_0.jpg", "JPEG")
    convert("xfund", paddle, tmp_path / "paddle.jsonl")
    assert read_labels(tmp_path / "paddle.jsonl")[0].fields == {"姓名": "王梅"}

    form[1]["linking"] = [[0, 42]]
    write_json(ann / "82092117.json", {"form": form})
    with pytest.raises(
        ConvertError, match=r"82092117\.json: entity 1: link \[0, 42\] names entity 42"
    ):
        convert("xfund", ann, tmp_path / "funsd.jsonl")


# ---------------------------------------------------------------- shared behaviour


def test_bad_values_duplicates_and_atomic_output(tmp_path):
    image(tmp_path / "a.png")
    write_json(tmp_path / "src" / "a.json", {"image": "a.png", "data": {"发票号码": "1"}})
    out = tmp_path / "labels.jsonl"
    convert("vat_ner", tmp_path / "src", out, ConvertConfig(image_dir=tmp_path))
    before = out.read_bytes()
    # a list mixing strings and objects cannot be a field value
    write_json(tmp_path / "src" / "b.json", {"image": "a.png", "data": {"备注": ["x", {"y": "z"}]}})
    with pytest.raises(ConvertError, match=r"b\.json: fields\.备注: a list mixes.*--skip-bad"):
        convert("vat_ner", tmp_path / "src", out, ConvertConfig(image_dir=tmp_path))
    assert out.read_bytes() == before, "a failed run must leave the old output untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "labels.jsonl", "src"]
    # two label files for one image under the same id
    (tmp_path / "src" / "b.json").unlink()
    write_json(tmp_path / "src" / "sub" / "x.json", [{"image": "a.png", "data": {}}])
    write_json(tmp_path / "src" / "sub" / "y.json", [{"image": "a.png", "data": {}}])
    with pytest.raises(
        ConvertError, match=r"x\.json: item 0: id 'a' was already produced by .*src/a\.json"
    ):
        convert("vat_ner", tmp_path / "src", out, ConvertConfig(image_dir=tmp_path))
    # nothing convertible: an error, not an empty file
    lone = write_json(tmp_path / "lone" / "q.json", {"image": "q.png", "data": {}})
    with pytest.raises(ConvertError, match="no records converted"):
        convert("vat_ner", lone, out, ConvertConfig(skip_bad=True))
    assert out.read_bytes() == before


def test_stored_image_path(tmp_path):
    out = tmp_path / "d" / "labels.jsonl"
    assert stored_image_path(tmp_path / "d" / "i" / "a.png", out) == "i/a.png"
    assert stored_image_path(tmp_path / "a.png", out) == (tmp_path / "a.png").as_posix()
    assert stored_image_path(tmp_path / "d" / "a.png", out, absolute=True).startswith("/")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_tools.convert", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_exit_codes_and_messages(tmp_path):
    key = tmp_path / "key"
    write_json(key / "X1.json", {"company": "A", "total": "1.00"})
    (key / "X2.txt").write_text('{"company": "B", "total": ')
    image(key / "X1.jpg", "JPEG")
    image(key / "X2.jpg", "JPEG")
    out = tmp_path / "labels.jsonl"
    bad = run_cli("--format", "sroie", "--src", str(key), "--out", str(out))
    assert bad.returncode == 2 and not out.exists()
    assert "error:" in bad.stderr and "X2.txt" in bad.stderr and "--skip-bad" in bad.stderr
    ok = run_cli("--format", "sroie", "--src", str(key), "--out", str(out), "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert "wrote 1 record(s)" in ok.stdout and "X2.txt" in ok.stderr
    assert [r.id for r in read_labels(out)] == ["X1"]
    usage = run_cli("--format", "nope", "--src", str(key), "--out", str(out))
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


# ---------------------------------------------------------------- image search, shapes, report


def test_image_locator_last_path_parts_name_search_and_ambiguity(tmp_path):
    from data_tools.converters.common import ImageLocator, SourceItem

    pics = tmp_path / "pics"
    a = image(pics / "2016" / "zzsptfp" / "b0.jpg", "JPEG")
    image(pics / "2017" / "other" / "b0.jpg", "JPEG")
    image(pics / "deep" / "er" / "c1.jpg", "JPEG")

    def item(ref: str) -> SourceItem:
        return SourceItem(id="x", fields={}, where="w", source={}, image_refs=[ref])

    locator = ImageLocator(pics)
    # an absolute path from someone else's disk: its last parts under --image-dir
    found, _ = locator.locate(item("/media/shun/2016/zzsptfp/b0.jpg"))
    assert found == a
    # a name found twice below --image-dir: the longer matching tail decides
    found, _ = locator.locate(item("/elsewhere/zzsptfp/b0.jpg"))
    assert found == a
    found, tried = locator.locate(item("/elsewhere/b0.jpg"))
    assert found is None and "2 files named 'b0.jpg'" in tried[-1] and "ambiguous" in tried[-1]
    # a name found once, anywhere below --image-dir
    found, _ = locator.locate(item("C:\\scans\\c1.jpg"))
    assert found == pics / "deep" / "er" / "c1.jpg"
    found, tried = ImageLocator(None).locate(item("/nowhere/q.png"))
    assert found is None and tried == ["/nowhere/q.png"]


def test_one_shape_per_key_across_a_dataset_and_the_report(tmp_path):
    from data_tools.converters.shapes import unify_shapes

    records = [
        {"a": "x", "o": {"k": "1"}, "m": "s"},
        {"a": ["y", "z"], "o": [{"k": "2"}, {"k": "3", "j": "4"}], "m": {"n": "t"}},
        {"a": "", "o": []},
    ]
    unified, report = unify_shapes(records)
    assert unified[0] == {"a": ["x"], "o": [{"k": "1"}], "m": "s"}
    assert unified[2] == {"a": [], "o": []}  # an empty string is an empty list, not [""]
    assert unified[1] == records[1]
    assert report.promoted == {("a",): ("list of strings", 2), ("o",): ("list of objects", 1)}
    # a string here and an object there: left alone, reported
    assert report.conflicts == {("m",): {"string": 1, "object": 1}}
    # ...unless the format keeps a question's own answer under its own text (XFUND): then
    # the plain values join the objects, and the wrapped values are settled in turn
    forms = [{"q": "a"}, {"q": {"q": "b", "s": "c"}}, {"q": ["d", "e"]}]
    unified, report = unify_shapes(forms, wrap=True)
    assert unified == [
        {"q": {"q": ["a"]}},
        {"q": {"q": ["b"], "s": "c"}},
        {"q": {"q": ["d", "e"]}},
    ]
    assert report.conflicts == {} and report.promoted[("q", "q")] == ("list of strings", 2)

    # --report on the CLI: the file beside the output and the summary on stdout
    write_json(tmp_path / "k" / "X1.json", {"company": "A", "total": None})
    write_json(tmp_path / "k" / "X2.json", {"company": "B", "total": "2.00"})
    image(tmp_path / "k" / "X1.jpg", "JPEG")
    image(tmp_path / "k" / "X2.jpg", "JPEG")
    out = tmp_path / "out" / "sroie.jsonl"
    done = run_cli("--format", "sroie", "--src", str(tmp_path / "k"), "--out", str(out), "--report")
    assert done.returncode == 0, done.stderr
    assert "records in 2, out 2" in done.stdout and "total: string ×2" in done.stdout
    saved = json.loads((tmp_path / "out" / "sroie.report.json").read_text(encoding="utf-8"))
    assert saved["records_in"] == saved["records_out"] == 2
    assert saved["fields"]["company"] == {"string": 2}
    assert saved["empty_values"] == {"total": 1}
    assert saved["dropped"] == {"null/true/false values written as strings": 1}


def test_cord_valid_line_groups_take_their_place_at_their_first_line(tmp_path):
    def line(category: str, group: int, *words: tuple[str, int]) -> dict:
        return {
            "category": category,
            "group_id": group,
            "words": [{"text": t, "is_key": k, "row_id": 1, "quad": {}} for t, k in words],
        }

    valid_line = [
        line("menu.discountprice", 8, ("Disc", 1)),  # group 8 starts here, captions only
        line("menu.nm", 7, ("TEA", 0)),
        line("total.total_price", 9, ("TOTAL", 1), ("5", 0)),
        line("menu.nm", 8, ("RICE", 0)),
        line("sub_total.subtotal_price", 10, ("5", 0)),
        line("sub_total.tax_price", 11, ("Tax", 1), ("1", 0)),  # a second group
        line("menu.cnt", 7, ("x", 0)),
        line("menu.cnt", 7, ("2", 0)),  # two lines of one category: joined
        line("void_menu.nm", 12, ("OLD", 1)),  # nothing but a caption: no group
    ]
    write_json(
        tmp_path / "train" / "json" / "receipt_00009.json",
        {
            "valid_line": valid_line,
            "meta": {"version": "1.0.0", "split": "dev", "image_id": 9},
        },
    )
    out = tmp_path / "o.jsonl"
    convert("cord", tmp_path / "train", out, ConvertConfig(allow_missing_images=True))
    (rec,) = read_labels(out)
    assert rec.id == "dev/9" and rec.meta["split"] == "dev"
    assert json.dumps(rec.fields) == json.dumps(
        {
            "menu": [{"nm": "RICE"}, {"nm": "TEA", "cnt": "x 2"}],
            "sub_total": [{"subtotal_price": "5"}, {"tax_price": "1"}],
            "total": {"total_price": "5"},
        }
    )
