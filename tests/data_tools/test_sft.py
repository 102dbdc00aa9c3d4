"""The SFT formats: written, read back and checked by one module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools import sft


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture
def image(tmp_path: Path) -> str:
    p = tmp_path / "img.png"
    p.write_bytes(b"\x89PNG")
    return str(p)


@pytest.mark.parametrize("fmt", sft.FORMATS)
def test_write_read_roundtrip_keeps_id_prompt_answer(fmt: str, image: str) -> None:
    rec = sft.WRITERS[fmt](image, 'OCR:{"发票号码":""}', '{"发票号码": "1"}', "doc7")
    assert next(iter(rec)) == "id" and rec["id"] == "doc7"
    assert sft.detect_format(rec) == fmt
    assert sft.check_record(rec, "x", fmt, seen={}) == []
    ex = sft.read_record(rec, "x")
    assert ex == sft.SftExample("doc7", image, (('OCR:{"发票号码":""}', '{"发票号码": "1"}'),), fmt)
    # without an id (files written before ids existed): still readable, id None
    old = sft.WRITERS[fmt](image, "OCR:{}", "{}")
    assert "id" not in old and sft.read_record(old).id is None


def test_paddleformers_prompt_loses_only_the_image_tag(image: str) -> None:
    rec = sft.paddleformers_record(image, "OCR:{}", "<image> is literal in an answer", "a")
    assert rec["messages"][0]["content"] == "<image>OCR:{}"
    (turn,) = sft.read_record(rec).turns
    assert turn == ("OCR:{}", "<image> is literal in an answer")


def test_read_record_errors_name_the_place(image: str) -> None:
    with pytest.raises(sft.SftFormatError, match=r"^f:3: not an SFT record"):
        sft.read_record({"foo": 1}, "f:3")
    bad = sft.erniekit_record(image, "OCR:{}", "{}", "a")
    bad["text_info"].reverse()
    with pytest.raises(sft.SftFormatError, match=r"f:4: tags \['no_mask', 'mask'\] must alternate"):
        sft.read_record(bad, "f:4")
    two = sft.erniekit_record(image, "OCR:{}", "{}")
    two["image_info"].append({"matched_text_index": 0, "image_url": image})
    with pytest.raises(sft.SftFormatError, match="exactly one image, found 2"):
        sft.read_record(two, "f:5")
    with pytest.raises(sft.SftFormatError, match=r"'id' .* non-empty string"):
        sft.read_record(dict(sft.erniekit_record(image, "OCR:{}", "{}"), id=5), "f:6")


def test_read_requests_from_requests_and_sft_files(tmp_path: Path, image: str) -> None:
    req = write_lines(
        tmp_path / "val.requests.jsonl",
        [sft.request_row("a", image, "OCR:{}"), sft.request_row("a", image, 'OCR:{"k":""}')],
    )
    got = sft.read_requests(req)
    assert [(r.id, r.image, r.prompt) for r in got] == [
        ("a", image, "OCR:{}"),
        ("a", image, 'OCR:{"k":""}'),
    ]
    assert got[1].where == f"{req}:2"
    mixed = write_lines(
        tmp_path / "val.jsonl",
        [
            sft.erniekit_record(image, "OCR:{}", "{}", "a"),
            sft.paddleformers_record(image, 'OCR:{"k":""}', "{}", "b"),
        ],
    )
    assert [(r.id, r.prompt) for r in sft.read_requests(mixed)] == [
        ("a", "OCR:{}"),
        ("b", 'OCR:{"k":""}'),
    ]
    bad = write_lines(tmp_path / "bad.jsonl", [{"id": "a", "image": image}])
    with pytest.raises(sft.SftFormatError, match=r"bad.jsonl:1: .*missing prompt"):
        sft.read_requests(bad)
    (tmp_path / "torn.jsonl").write_text('{"id": "a", "ima\n', "utf-8")
    with pytest.raises(sft.SftFormatError, match=r"torn.jsonl:1: not valid JSON"):
        sft.read_requests(tmp_path / "torn.jsonl")


def test_check_dataset_file_lists_every_problem(tmp_path: Path, image: str) -> None:
    rows = [
        sft.erniekit_record(image, "OCR:{}", "{}", "ok"),
        sft.erniekit_record("rel/img.png", "OCR:{}", "{}"),
        sft.erniekit_record(str(tmp_path / "missing.png"), "OCR:{}", "{}"),
        sft.paddleformers_record(image, "OCR:{}", "{}"),
        dict(sft.erniekit_record(image, "OCR:{}", "{}"), id=""),
    ]
    path = write_lines(tmp_path / "t.jsonl", rows)
    with path.open("a") as f:
        f.write("{not json\n")
    n, problems = sft.check_dataset_file(path, "erniekit")
    text = "\n".join(problems)
    assert n == 1
    assert ":2: image_info[0]: image path 'rel/img.png' is relative" in text
    assert ":3: image_info[0]: image " in text and "missing.png does not exist" in text
    assert ":4: this is a PaddleFormers (messages/images) record" in text
    assert ":5: 'id' (the label record's id) must be a non-empty string" in text
    assert ":6: not JSON" in text
    with pytest.raises(ValueError, match="unknown SFT format"):
        sft.check_record({}, "x", "llava")


@pytest.mark.parametrize("fmt", sft.FORMATS)
@pytest.mark.parametrize("record_id", [None, 'doc/7 "q"'])
def test_record_line_is_dumps_line_of_the_writer(fmt: str, record_id: str | None) -> None:
    from data_tools.jsonl import dumps_line

    tricky = 'OCR:{"名称":""} \\ "quoted" \n\t\u2028 \x00 é'
    for image, prompt, answer in [
        ("/a/b.png", "OCR:{}", "{}"),
        ("/图片/发票 1.jpg", tricky, json.dumps({"k": tricky}, ensure_ascii=False)),
    ]:
        expected = dumps_line(sft.WRITERS[fmt](image, prompt, answer, record_id))
        assert sft.record_line(fmt, image, prompt, answer, record_id) == expected
    with pytest.raises(ValueError, match="unknown SFT format"):
        sft.record_line("llava", "a", "b", "c")
