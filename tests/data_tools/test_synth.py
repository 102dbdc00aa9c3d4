import json
import random
import subprocess
import sys
from decimal import Decimal

import pytest
from PIL import Image

from data_tools.normalize import parse_amount, parse_amount_in_words
from data_tools.qa import check_fields, is_valid_uscc
from data_tools.records import read_labels, validate_fields
from data_tools.schema import load_schema
from data_tools.synth import FontNotFoundError, find_font, synth_fields, write_synthetic_dataset


def _has_font() -> bool:
    try:
        find_font()
    except FontNotFoundError:
        return False
    return True


needs_font = pytest.mark.skipif(
    not _has_font(), reason="no CJK font (apt-get install fonts-wqy-zenhei)"
)


def test_fields_are_canonical_and_deterministic():
    schema = load_schema("vat_invoice")
    a, b = synth_fields(random.Random(3)), synth_fields(random.Random(3))
    assert a == b and a != synth_fields(random.Random(4))
    validate_fields(a)
    assert schema.canonicalize(a) == a
    assert list(a) == [k for k in schema.fields if k in a]


@pytest.mark.parametrize("seed", range(40))
def test_arithmetic_ids_and_words_hold(seed):
    f = synth_fields(random.Random(seed))
    items = f["货物或应税劳务、服务"]
    amount = sum(Decimal(i["金额"]) for i in items)
    tax = sum(Decimal(i["税额"]) for i in items)
    assert parse_amount(f["合计"]["金额"]) == amount
    assert parse_amount(f["合计"]["税额"]) == tax
    assert parse_amount(f["价税合计（小写）"]) == amount + tax
    assert parse_amount_in_words(f["价税合计（大写）"]) == amount + tax
    for item in items:
        if item["数量"]:
            assert Decimal(item["数量"]) * Decimal(item["单价"]) == Decimal(item["金额"])
    assert is_valid_uscc(f["购买方"]["纳税人识别号"]) and is_valid_uscc(f["销售方"]["纳税人识别号"])
    assert len(f["发票代码"]) in (10, 12) and len(f["发票号码"]) == 8
    assert [len(line) for line in f["密码区"].split("\n")] == [27, 27, 27, 27]
    result = check_fields(f, load_schema("vat_invoice"), doc_type="vat_invoice")
    assert result.passed, result.hard


@needs_font
def test_dataset_writes_images_and_labels(tmp_path):
    labels = write_synthetic_dataset(tmp_path / "a", 3, seed=1, size=(700, 450))
    records = read_labels(labels)
    assert [r.id for r in records] == ["synth00000", "synth00001", "synth00002"]
    for r in records:
        with Image.open(labels.parent / r.image) as im:
            assert im.size == (700, 450) and im.format == "JPEG"
    again = write_synthetic_dataset(tmp_path / "b", 3, seed=1, size=(700, 450))
    assert labels.read_bytes() == again.read_bytes()
    assert (labels.parent / records[0].image).read_bytes() == (
        again.parent / records[0].image
    ).read_bytes()


def test_cli_labels_only(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools.synth",
            "--out-dir",
            str(tmp_path),
            "--n",
            "2",
            "--no-images",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text("utf-8").splitlines()]
    assert len(rows) == 2 and not (tmp_path / "images").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "data_tools.synth", "--out-dir", str(tmp_path), "--size", "big"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "WIDTHxHEIGHT" in bad.stderr


def test_missing_font_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("INVOICE_FONT", str(tmp_path / "nope.ttf"))
    with pytest.raises(FontNotFoundError, match="INVOICE_FONT"):
        find_font()
