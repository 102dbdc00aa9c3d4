import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_tools.build_dataset import BuildConfig, build, split_groups
from data_tools.images import visual_tokens
from data_tools.prompts import FULL_PROMPT, answer_text, parse_prompt, project
from data_tools.records import LabelRecord, read_labels, write_labels

FIELDS = {
    "发票号码": "1",
    "开票日期": "2016年06月12日",
    "购买方": {"名称": "A", "纳税人识别号": "B", "地址、电话": "C"},
    "货物或应税劳务、服务": [{"名称": "x", "金额": "1", "税额": "0.17"}],
    "合计": {"金额": "¥1", "税额": "¥0.17"},
    "收款人": "王梅",
}


def make_labels(tmp_path: Path, n: int = 10, shared_image: bool = False) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    records = []
    for i in range(n):
        name = "img/shared.png" if shared_image and i < 2 else f"img/{i}.png"
        Image.new("RGB", (200 + i, 100), "white").save(tmp_path / name)
        fields = dict(FIELDS, 发票号码=str(10000000 + i))
        records.append(LabelRecord(f"doc{i}", name, "vat_invoice", fields))
    path = tmp_path / "labels.jsonl"
    write_labels(path, records)
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def ernie_pairs(row: dict) -> tuple[str, str, str]:
    (img,) = row["image_info"]
    prompt, answer = row["text_info"]
    assert img["matched_text_index"] == 0
    assert (prompt["tag"], answer["tag"]) == ("mask", "no_mask")
    return img["image_url"], prompt["text"], answer["text"]


def test_erniekit_records_roundtrip_and_split(tmp_path):
    labels = make_labels(tmp_path)
    out = tmp_path / "sft"
    stats = build([labels], out, BuildConfig(variants_per_image=5, val_ratio=0.3, seed=7))
    truth = {str((tmp_path / r.image).resolve()): r.fields for r in read_labels(labels)}
    per_image: dict[str, dict[str, list[str]]] = {}
    for split in ("train", "val"):
        for row in read(out / f"{split}.jsonl"):
            image, prompt, answer = ernie_pairs(row)
            assert Path(image).is_absolute() and Path(image).is_file()
            # parse the prompt back, project the truth: exactly the stored answer
            assert answer_text(project(truth[image], parse_prompt(prompt))) == answer
            per_image.setdefault(image, {}).setdefault(split, []).append(prompt)
    assert len(per_image) == 10
    for prompts_by_split in per_image.values():
        assert len(prompts_by_split) == 1, "an image is in both train and val"
        (prompts,) = prompts_by_split.values()
        assert len(prompts) == 5 and len(set(prompts)) == 5, "prompts of an image must be distinct"
        assert FULL_PROMPT in prompts
    assert stats["images"] == {"train": 7, "val": 3}
    assert stats["records"] == {"train": 35, "val": 15}
    assert sum(stats["variant_kinds"].values()) == 50 and stats["variant_kinds"]["full"] == 10
    split = json.loads((out / "split.json").read_text())
    assert len(split["val"]) == 3 and not set(split["val"]) & set(split["train"])
    val_gold = read_labels(out / "val.labels.jsonl")
    assert sorted(r.id for r in val_gold) == split["val"]
    assert all(Path(r.image).is_absolute() and r.fields == truth[r.image] for r in val_gold)


def test_records_sharing_an_image_stay_together(tmp_path):
    labels = make_labels(tmp_path, n=6, shared_image=True)
    for seed in range(8):
        out = tmp_path / f"sft{seed}"
        build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0.5, seed=seed))
        split = json.loads((out / "split.json").read_text())
        assert ("doc0" in split["val"]) == ("doc1" in split["val"])


def test_paddleformers_format(tmp_path):
    labels = make_labels(tmp_path, n=3)
    out = tmp_path / "pf"
    build([labels], out, BuildConfig(variants_per_image=3, val_ratio=0.0, format="paddleformers"))
    rows = read(out / "train.jsonl")
    assert len(rows) == 9 and read(out / "val.jsonl") == []
    for row in rows:
        user, assistant = row["messages"]
        assert user["role"] == "user" and user["content"].startswith("<image>OCR:")
        assert assistant["role"] == "assistant"
        json.loads(assistant["content"])
        assert len(row["images"]) == 1 and Path(row["images"][0]).is_file()


def test_same_inputs_same_bytes(tmp_path):
    labels = make_labels(tmp_path)
    cfg = BuildConfig(variants_per_image=6, val_ratio=0.2, seed=3)
    build([labels], tmp_path / "a", cfg)
    build([labels], tmp_path / "b", cfg)
    for name in ("train.jsonl", "val.jsonl", "split.json", "stats.json", "val.labels.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    build([labels], tmp_path / "c", BuildConfig(variants_per_image=6, val_ratio=0.2, seed=4))
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (
        tmp_path / "c" / "train.jsonl"
    ).read_bytes()


def test_image_root_rewrites_paths(tmp_path):
    labels = make_labels(tmp_path, n=2)
    build(
        [labels],
        tmp_path / "o",
        BuildConfig(variants_per_image=1, val_ratio=0, image_root="/mnt/train"),
    )
    urls = {ernie_pairs(r)[0] for r in read(tmp_path / "o" / "train.jsonl")}
    assert urls == {"/mnt/train/img/0.png", "/mnt/train/img/1.png"}


def test_bad_images_stop_the_build_unless_skipped(tmp_path):
    labels = make_labels(tmp_path, n=4)
    (tmp_path / "img" / "1.png").unlink()
    (tmp_path / "img" / "2.png").write_bytes(b"garbage")
    out = tmp_path / "o"
    with pytest.raises(ValueError, match=r"2 record\(s\) with a missing or broken image") as exc:
        build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0))
    assert "id doc1: " in str(exc.value) and "file not found" in str(exc.value)
    assert "id doc2: " in str(exc.value) and "--skip-bad" in str(exc.value)
    assert not out.exists() or not any(out.iterdir()), "nothing written on failure"
    stats = build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0, skip_bad=True))
    assert len(stats["skipped_bad_images"]) == 2
    assert stats["images"]["train"] == 2


def test_stats_visual_tokens_and_sizes(tmp_path):
    labels = make_labels(tmp_path, n=2)
    stats = build(
        [labels], tmp_path / "o", BuildConfig(variants_per_image=1, val_ratio=0, max_pixels=200_000)
    )
    expected = sorted(visual_tokens(100, 200 + i, max_pixels=200_000) for i in range(2))
    assert stats["visual_tokens_per_image"]["min"] == expected[0]
    assert stats["visual_tokens_per_image"]["max"] == expected[1]
    assert stats["image_width"]["max"] == 201
    assert stats["field_frequency"]["non_empty_in_labels"]["发票号码"] == 2


def test_split_is_stable_when_images_are_added():
    keys = [f"img{i}" for i in range(100)]
    val = split_groups(keys, 0.1, seed=1)
    assert len(val) == 10
    bigger = split_groups([*keys, *(f"new{i}" for i in range(10))], 0.1, seed=1)
    assert len(val & bigger) >= 8


def test_few_fields_give_fewer_variants(tmp_path):
    Image.new("RGB", (50, 50)).save(tmp_path / "a.png")
    write_labels(tmp_path / "l.jsonl", [LabelRecord("a", "a.png", "x", {"k": "v"})])
    stats = build(
        [tmp_path / "l.jsonl"], tmp_path / "o", BuildConfig(variants_per_image=5, val_ratio=0)
    )
    assert stats["records"]["train"] == 2  # OCR:{} and OCR:{"k":""}: nothing else is distinct
    assert stats["images_short_of_variants"] == 1


def test_real_invoices_roundtrip(vat_invoices, tmp_path):
    gt = vat_invoices / "ground_truth.jsonl"
    truth = {str((vat_invoices / r.image).resolve()): r.fields for r in read_labels(gt)}
    out = tmp_path / "sft"
    stats = build([gt], out, BuildConfig(variants_per_image=8, val_ratio=0.34, seed=0))
    n = 0
    for split in ("train", "val"):
        for row in read(out / f"{split}.jsonl"):
            image, prompt, answer = ernie_pairs(row)
            assert answer_text(project(truth[image], parse_prompt(prompt))) == answer
            n += 1
    assert n == 24
    assert stats["images"] == {"train": 2, "val": 1}
    assert stats["visual_tokens_per_image"]["max"] == visual_tokens(1560, 2104)
    assert stats["variant_kinds"].get("structured", 0) > 0


def test_cli_errors_and_success(tmp_path):
    labels = make_labels(tmp_path, n=2)
    cmd = [sys.executable, "-m", "data_tools.build_dataset", "--labels", str(labels), "--out-dir"]
    ok = subprocess.run(
        [*cmd, str(tmp_path / "o"), "--val-ratio", "0"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "train.jsonl (12 records, 2 images)" in ok.stdout  # default: 6 per image
    (tmp_path / "img" / "0.png").unlink()
    bad = subprocess.run([*cmd, str(tmp_path / "o2")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "id doc0" in bad.stderr and "file not found" in bad.stderr
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"id": "a", "image": "a.png", "fields": {"n": 1}}\n', encoding="utf-8")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools.build_dataset",
            "--labels",
            str(bad_line),
            "--out-dir",
            str(tmp_path / "o3"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "bad.jsonl:1: fields.n" in res.stderr


def test_records_flagged_for_review_are_left_out(tmp_path):
    labels = make_labels(tmp_path, n=3)
    recs = read_labels(labels)
    recs[1].meta = {"needs_review": True, "votes": {"disagreements": ["发票号码"]}}
    write_labels(labels, recs)
    stats = build([labels], tmp_path / "o", BuildConfig(variants_per_image=1, val_ratio=0))
    assert stats["skipped_needs_review"] == 1 and stats["records"]["train"] == 2
    stats = build(
        [labels],
        tmp_path / "o2",
        BuildConfig(variants_per_image=1, val_ratio=0, include_needs_review=True),
    )
    assert stats["skipped_needs_review"] == 0 and stats["records"]["train"] == 3
