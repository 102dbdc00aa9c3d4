import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_tools import sft
from data_tools.build_dataset import OUTPUTS, BuildConfig, build, split_groups
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
    # every SFT record carries its label record's id; val.requests.jsonl = the val prompts
    id_of = {str((tmp_path / r.image).resolve()): r.id for r in read_labels(labels)}
    val_rows = read(out / "val.jsonl")
    for split_name in ("train", "val"):
        for row in read(out / f"{split_name}.jsonl"):
            assert row["id"] == id_of[ernie_pairs(row)[0]] and row["id"] in split[split_name]
    requests = sft.read_requests(out / "val.requests.jsonl")
    assert [(q.id, q.image, q.prompt) for q in requests] == [
        (row["id"], ernie_pairs(row)[0], ernie_pairs(row)[1]) for row in val_rows
    ]
    assert [(q.id, q.prompt) for q in requests] == [
        (q.id, q.prompt) for q in sft.read_requests(out / "val.jsonl")
    ]


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
    build([labels], tmp_path / "b", cfg)  # in place, over the first
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(OUTPUTS)
    for name in names:
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


# ---------------------------------------------------------------- official splits


def _split_records(n_train: int, n_test: int, test_name: str = "test") -> list[LabelRecord]:
    """SROIE-sized synthetic records carrying the converter's meta.split."""
    recs = []
    for i in range(n_train + n_test):
        side = "train" if i < n_train else test_name
        recs.append(
            LabelRecord(
                f"{side}/X{i:05d}",
                f"{side}/X{i:05d}.jpg",
                "receipt",
                {"company": f"SHOP {i}", "total": f"{i}.00"},
                {"split": side},
            )
        )
    return recs


def test_split_source_keeps_the_published_split(tmp_path):
    # SROIE task 3: 626 train receipts, 347 test receipts
    labels = tmp_path / "sroie.jsonl"
    write_labels(labels, _split_records(626, 347))
    cfg = BuildConfig(variants_per_image=2, split="source", check_images=False, val_ratio=0.5)
    stats = build([labels], tmp_path / "o", cfg)
    assert stats["images"] == {"train": 626, "val": 347}
    assert stats["source_splits"] == {"test": 347, "train": 626}
    split = json.loads((tmp_path / "o" / "split.json").read_text())
    assert all(i.startswith("train/") for i in split["train"]) and len(split["train"]) == 626
    assert all(i.startswith("test/") for i in split["val"]) and len(split["val"]) == 347
    assert {r.id for r in read_labels(tmp_path / "o" / "val.labels.jsonl")} == set(split["val"])
    # the hash split re-splits the same records by val_ratio, ignoring meta.split
    hashed = build([labels], tmp_path / "h", BuildConfig(variants_per_image=1, check_images=False))
    assert hashed["images"] == {"train": 876, "val": 97} and hashed["source_splits"] == {}
    # dev and val sides map to val as well
    write_labels(labels, _split_records(3, 2, test_name="dev"))
    assert build([labels], tmp_path / "d", cfg)["images"] == {"train": 3, "val": 2}


def test_split_source_errors_name_the_record(tmp_path):
    labels = tmp_path / "l.jsonl"
    recs = _split_records(2, 1)
    recs[1].meta = {}
    write_labels(labels, recs)
    cfg = BuildConfig(variants_per_image=1, split="source", check_images=False)
    with pytest.raises(ValueError, match=r"1 record\(s\) have no meta.split .*id train/X00001"):
        build([labels], tmp_path / "o", cfg)
    recs[1].meta = {"split": "holdout"}
    write_labels(labels, recs)
    with pytest.raises(ValueError, match=r"meta.split 'holdout'"):
        build([labels], tmp_path / "o", cfg)
    recs[1].meta = {"split": "test"}
    recs[1].image = recs[0].image  # one image on both sides
    write_labels(labels, recs)
    with pytest.raises(ValueError, match=r"one image cannot be on both sides"):
        build([labels], tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()


def test_split_source_on_the_real_sroie_sample(shared_fixtures, tmp_path):
    from data_tools.convert import ConvertConfig, convert

    src = shared_fixtures / "public_kie" / "sroie" / "train" / "entities"
    labels = tmp_path / "sroie.jsonl"
    convert("sroie", src, labels, ConvertConfig(allow_missing_images=True))
    recs = read_labels(labels)
    assert len(recs) == 6
    cfg = BuildConfig(variants_per_image=3, split="source", check_images=False)
    if any("split" not in r.meta for r in recs):  # a converter that does not keep it yet
        with pytest.raises(ValueError, match=r"no meta\.split"):
            build([labels], tmp_path / "o", cfg)
        for r in recs:
            r.meta["split"] = "train"
    # the real receipts as train, the same receipts renamed as the test side
    tests = [
        LabelRecord(f"test/{r.id}", f"test/{r.id}.jpg", r.doc_type, r.fields, {"split": "test"})
        for r in recs
    ]
    write_labels(labels, [*recs, *tests])
    stats = build([labels], tmp_path / "o", cfg)
    assert stats["images"] == {"train": 6, "val": 6}
    split = json.loads((tmp_path / "o" / "split.json").read_text())
    assert split["val"] == sorted(t.id for t in tests)


# ---------------------------------------------------------------- QA gate


def test_qa_failures_are_left_out_unless_kept(tmp_path):
    labels = make_labels(tmp_path, n=4)
    recs = read_labels(labels)
    recs[1].meta = {"qa": {"verdict": "fail", "hard": ["sums.amount: off", "total: off"]}}
    recs[2].meta = {"qa": {"verdict": "pass", "hard": []}}
    recs[3].meta = {"needs_review": True, "qa": {"verdict": "fail", "hard": ["date: x"]}}
    write_labels(labels, recs)
    stats = build([labels], tmp_path / "o", BuildConfig(variants_per_image=1, val_ratio=0))
    assert stats["records"]["train"] == 2
    assert stats["skipped_qa_failures"] == 1 and stats["skipped_needs_review"] == 1
    assert stats["qa_failed_rules"] == {"sums.amount": 1, "total": 1}
    split = json.loads((tmp_path / "o" / "split.json").read_text())
    assert split["train"] == ["doc0", "doc2"]
    kept = build(
        [labels],
        tmp_path / "k",
        BuildConfig(variants_per_image=1, val_ratio=0, include_qa_failures=True),
    )
    assert kept["records"]["train"] == 3 and kept["skipped_qa_failures"] == 0
    assert kept["skipped_needs_review"] == 1


def test_make_qa_then_build_keeps_b1_out_of_the_gold(vat_invoices, tmp_path):
    """The published VLM labels through QA: b1 (swapped code/number, broken sums) fails,
    so it is neither trained on nor used as scoring gold."""
    from data_tools import qa
    from data_tools.convert import ConvertConfig, convert

    labels = tmp_path / "vlm.jsonl"
    convert("vat_ner", vat_invoices / "vlm_labels", labels, ConvertConfig(image_dir=vat_invoices))
    assert qa.main(["--labels", str(labels), "--out", str(tmp_path / "vlm.qa.jsonl")]) == 1
    stats = build(
        [tmp_path / "vlm.qa.jsonl"],
        tmp_path / "o",
        BuildConfig(variants_per_image=2, val_ratio=0.5),
    )
    assert stats["skipped_qa_failures"] == 1
    ids = json.loads((tmp_path / "o" / "split.json").read_text())
    assert len(ids["train"]) + len(ids["val"]) == 2
    assert not any(i.endswith("b1") for i in ids["train"] + ids["val"])


# ---------------------------------------------------------------- bad images


def _png_declaring(path: Path, width: int, height: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_skip_bad_covers_huge_and_malformed_images(tmp_path):
    labels = make_labels(tmp_path, n=4)
    _png_declaring(tmp_path / "img" / "1.png", 30000, 30000)  # a decompression bomb
    _png_declaring(tmp_path / "img" / "2.png", 10000, 10000)  # 100 M pixels: over the budget
    (tmp_path / "img" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ValueError, match=r"3 record\(s\) with a missing or broken image") as exc:
        build([labels], tmp_path / "o", BuildConfig(variants_per_image=1, val_ratio=0))
    text = str(exc.value)
    assert "id doc1: " in text and "too many pixels" in text
    assert "id doc2: " in text and "10000x10000 = 100,000,000 pixels" in text
    assert "id doc3: " in text and "does not decode" in text
    stats = build(
        [labels], tmp_path / "o", BuildConfig(variants_per_image=1, val_ratio=0, skip_bad=True)
    )
    assert len(stats["skipped_bad_images"]) == 3 and stats["records"]["train"] == 1
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools.build_dataset",
            "--labels",
            str(labels),
            "--out-dir",
            str(tmp_path / "c"),
            "--skip-bad",
            "--val-ratio",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert "skipped 3 record(s) with bad images" in res.stderr


# ---------------------------------------------------------------- publishing as one set


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_rebuild_in_place_keeps_foreign_files_and_leaves_nothing_beside(tmp_path):
    labels = make_labels(tmp_path, n=4)
    out = tmp_path / "data" / "sft"
    build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0.5, seed=1))
    (out / "NOTES.md").write_text("mine", "utf-8")
    (out / "cache").mkdir()
    (out / "cache" / "index.bin").write_bytes(b"\x01")
    (out / ".val.jsonl.abc.tmp").write_text("a temp file an older builder left", "utf-8")
    build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0.5, seed=2))
    assert (out / "NOTES.md").read_text("utf-8") == "mine"
    assert (out / "cache" / "index.bin").read_bytes() == b"\x01"
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "NOTES.md", "cache"])
    assert json.loads((out / "stats.json").read_text())["config"]["seed"] == 2
    beside = sorted(p.name for p in out.parent.iterdir())
    assert beside == [".sft.lock", "sft"], "no temp or old folders left beside the dataset"
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask, "the folder gets the umask's mode"
    assert (out / "train.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_build_leaves_the_old_dataset(tmp_path, monkeypatch):
    import data_tools.build_dataset as bd

    labels = make_labels(tmp_path, n=3)
    out = tmp_path / "sft"
    build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0.4, seed=1))
    before = _snapshot(out)

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bd, "_write_lines", boom)
    with pytest.raises(OSError, match="No space left"):
        build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0.4, seed=2))
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".sft.")) == [".sft.lock"]


def test_publish_without_rename_exchange_and_recovery(tmp_path, monkeypatch):
    """Where the kernel cannot swap two folders, the old one is set aside and the new one
    renamed in; a kill between the two renames is undone by the next build."""
    import data_tools.build_dataset as bd

    labels = make_labels(tmp_path, n=3)
    out = tmp_path / "sft"
    monkeypatch.setattr(bd, "_rename_exchange", lambda a, b: False)
    build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0.4, seed=1))
    old = _snapshot(out)
    build([labels], out, BuildConfig(variants_per_image=2, val_ratio=0.4, seed=2))
    new = _snapshot(out)
    assert new != old and [p.name for p in tmp_path.glob(".sft.old-*")] == []
    # the state a kill between the two renames leaves: the dataset set aside, none in place
    out.rename(tmp_path / ".sft.old-12345")
    (tmp_path / ".sft.new-abc").mkdir()
    (tmp_path / ".sft.new-abc" / "train.jsonl").write_text("half", "utf-8")
    bd._recover(out)
    assert _snapshot(out) == new
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sft.")] == [".sft.lock"]


def test_one_build_at_a_time(tmp_path):
    import fcntl

    labels = make_labels(tmp_path, n=2)
    with open(tmp_path / ".o.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another build is writing"):
            build([labels], tmp_path / "o", BuildConfig(variants_per_image=1, val_ratio=0))


KILL_SCRIPT = """
import sys
from pathlib import Path
from data_tools.build_dataset import BuildConfig, build
build([Path(sys.argv[1])], Path(sys.argv[2]),
      BuildConfig(variants_per_image=10, val_ratio=0.2, seed=int(sys.argv[3]), check_images=False))
"""


@pytest.mark.slow
def test_sigkill_during_rebuild_leaves_old_or_new(tmp_path, repo_root):
    import signal
    import time

    from data_tools.synth import record_rng, synth_record

    labels = tmp_path / "labels.jsonl"
    write_labels(labels, [synth_record(record_rng(0, i), i) for i in range(2000)])

    def run(out: Path, seed: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(labels), str(out), str(seed)], cwd=repo_root
        )

    t0 = time.perf_counter()
    assert run(tmp_path / "new", 2).wait() == 0
    duration = time.perf_counter() - t0
    new = _snapshot(tmp_path / "new")
    out = tmp_path / "sft"
    assert run(out, 1).wait() == 0
    old = _snapshot(out)
    seen = {"old": 0, "new": 0}
    for frac in (0.3, 0.6, 0.75, 0.85, 0.9, 0.95, 1.0, 1.05):
        proc = run(out, 2)
        time.sleep(duration * frac)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _snapshot(out)
        assert now in (old, new), f"killed at {frac:.0%} of a build: a mixed dataset"
        seen["old" if now == old else "new"] += 1
        if now == new:  # put the old one back for the next round
            assert run(out, 1).wait() == 0
    print(f"SIGKILL at 30-105% of a {duration:.1f} s build: {seen}")
    assert seen["old"] > 0, seen
    # what a kill left beside the dataset is cleaned up by the next build
    assert run(out, 2).wait() == 0
    assert _snapshot(out) == new
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sft.")] == [".sft.lock"]


def test_cli_config_overrides(tmp_path):
    labels = make_labels(tmp_path, n=2)
    cmd = [sys.executable, "-m", "data_tools.build_dataset", "--labels", str(labels)]
    ok = subprocess.run(
        [
            *cmd,
            "--out-dir",
            str(tmp_path / "o"),
            "--val-ratio",
            "0",
            "kind_weights.keys=0",
            "kind_weights.structured=0",
            "variants_per_image=3",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["variant_kinds"] == {"full": 2, "key": 4}
    bad = subprocess.run(
        [*cmd, "--out-dir", str(tmp_path / "b"), "variants_per_imag=3"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "variants_per_image" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_symlinked_out_dir_is_rebuilt_where_it_points(tmp_path):
    labels = make_labels(tmp_path, n=2)
    real = tmp_path / "store" / "sft-v1"
    build([labels], real, BuildConfig(variants_per_image=1, val_ratio=0, seed=1))
    (tmp_path / "sft").symlink_to(real, target_is_directory=True)
    build([labels], tmp_path / "sft", BuildConfig(variants_per_image=2, val_ratio=0, seed=1))
    assert (tmp_path / "sft").is_symlink() and (tmp_path / "sft").resolve() == real
    assert json.loads((real / "stats.json").read_text())["records"]["train"] == 4
    assert [p.name for p in real.parent.iterdir() if p.name.startswith(".")] == [".sft-v1.lock"]
