"""Converters on real samples of the published datasets (`../shared/fixtures/public_kie/`).

Each sample is a byte-for-byte copy of the layout users download (see its README). The
other layouts of the same data (PaddleOCR's copies, MMOCR 1.x's open set, the HF parquet,
CORD's original release without `gt_parse`, SROIE's ICDAR folder) are built here from
those samples, the way their upstream tools build them, and must convert to the same
records. Skipped where the shared fixtures are absent (a user's clone).
"""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from data_tools.convert import ConvertConfig, ConvertError, convert
from data_tools.converters.xfund import clean_key
from data_tools.records import read_labels, resolve_image

REPO = Path(__file__).resolve().parents[2]
PUBLIC = REPO.parent / "shared" / "fixtures" / "public_kie"


@pytest.fixture(scope="module")
def public() -> Path:
    if not (PUBLIC / "README.md").is_file():
        pytest.skip(f"public KIE samples not found at {PUBLIC}")
    return PUBLIC


def by_id(out: Path) -> dict:
    return {r.id: r for r in read_labels(out)}


def shapes_per_key(records) -> dict[tuple, set[str]]:
    """Every key path's shapes over all records (list items share their list's path)."""
    out: dict[tuple, set[str]] = {}

    def walk(value: Any, path: tuple) -> None:
        if isinstance(value, str):
            shape = "str"
        elif isinstance(value, dict):
            shape = "dict"
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            shape = "list" if not value else f"list[{type(value[0]).__name__}]"
            for v in value:
                if isinstance(v, dict):
                    for k, x in v.items():
                        walk(x, (*path, k))
        else:
            shape = type(value).__name__
        if shape != "list":  # an empty list fits either list shape
            out.setdefault(path, set()).add(shape)

    for rec in records:
        for key, value in rec.fields.items():
            walk(value, (key,))
    return out


def assert_one_type_per_key(records) -> None:
    mixed = {p: s for p, s in shapes_per_key(records).items() if len(s) > 1}
    assert not mixed, f"keys with several types: {mixed}"


def string_leaves(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in string_leaves(v)]
    return []


# ---------------------------------------------------------------- VAT (published labels)


def test_vat_published_labels_find_their_images_by_name(public, tmp_path):
    src = public / "vat_published" / "zzsptfp"
    raw = json.loads((src / "zzsptfp_ner" / "b0_ner.json").read_text(encoding="utf-8"))
    assert raw["image"].startswith("/media/shun/")  # the author's own disk
    out = tmp_path / "labels.jsonl"
    summary = convert("vat_ner", src, out)
    recs = by_id(out)
    assert sorted(recs) == ["b0", "b1", "b2"]  # ids without the `_ner` suffix
    for rid, rec in recs.items():
        assert Path(rec.image) == (src / "zzsptfp" / f"{rid}.jpg").resolve()
    assert summary.splits == {}  # the published set has no split

    # labels copied elsewhere: found by name below --image-dir, else a clear error
    labels = tmp_path / "labels_only"
    shutil.copytree(src / "zzsptfp_ner", labels)
    with pytest.raises(ConvertError) as err:
        convert("vat_ner", labels, tmp_path / "x.jsonl")
    message = str(err.value)
    assert "b0_ner.json: image '/media/shun/" in message and "--image-dir" in message
    assert str(labels / "b0.jpg") in message and "tried" in message
    convert("vat_ner", labels, tmp_path / "y.jsonl", ConvertConfig(image_dir=public))
    assert Path(by_id(tmp_path / "y.jsonl")["b1"].image) == (src / "zzsptfp" / "b1.jpg").resolve()


# ---------------------------------------------------------------- WildReceipt


def convert_wildreceipt(src: Path, out: Path, **kw) -> dict:
    convert("wildreceipt", src, out, ConvertConfig(report=True, **kw))
    return json.loads(out.with_name(f"{out.stem}.report.json").read_text(encoding="utf-8"))


def test_wildreceipt_release_layout_one_type_per_key_and_paired_items(public, tmp_path):
    out = tmp_path / "wr.jsonl"
    report = convert_wildreceipt(public / "wildreceipt", out)
    recs = list(read_labels(out))
    assert len(recs) == 4 and report["records_in"] == report["records_out"] == 4
    assert Counter(r.meta["split"] for r in recs) == {"train": 2, "test": 2}
    assert report["splits"] == {"train": 2, "test": 2}
    assert_one_type_per_key(recs)
    assert all(resolve_image(r.image, out).is_file() for r in recs)
    assert report["type_conflicts"] == {}

    raw = {}
    for name in ("train.txt", "test.txt"):
        for line in (public / "wildreceipt" / name).read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            raw[Path(obj["file_name"]).with_suffix("").as_posix()] = obj
    product = {11: "name", 13: "quantity", 15: "price"}
    for rec in recs:
        items = rec.fields["Items"]
        assert all(set(i) <= {"name", "quantity", "price"} and i for i in items)
        # every product box is in exactly one item: nothing merged away, nothing lost
        boxes = Counter(
            (product[a["label"]], a["text"])
            for a in raw[rec.id]["annotations"]
            if a["label"] in product and a["text"].strip()
        )
        assert Counter((k, v) for i in items for k, v in i.items()) == boxes, rec.id
    assert report["counts"]["item boxes unpaired (kept as items alone)"] == 0

    by_store = {r.fields["Store_name"][0]: r.fields for r in recs}
    # a slanted photo: each price printed to the right of its name, lower on the page
    safeway = by_store["SAFEWAY"]["Items"]
    assert safeway[:2] == [
        {"name": "BCCHOCCUPCAKES", "price": "3.99"},
        {"name": "ACNSPRYFRTSHAPE", "price": ".49"},
    ]
    assert safeway[-1] == {"name": "TOTINOSPZASTOFFE", "price": "3.49"}
    walmart = by_store["Walmart"]
    assert len(walmart["Items"]) == 15 and all("price" in i for i in walmart["Items"])
    assert walmart["Items"][0] == {"name": "GRMN6PK", "price": "$12.97"}
    assert walmart["Total"] == ["$89.09", "$89.09"]  # printed twice, both kept
    ilios = by_store["ILIO'S"]["Items"]
    # names listed bottom-up in the file, quantities in a third column; one name box is
    # Ignore (unreadable), so its quantity and price make an item of their own
    assert ilios[0] == {"name": "LowenbrauOriginal", "quantity": "4x", "price": "12,00"}
    assert ilios[-1] == {"name": "Tee", "quantity": "1x", "price": "2,10"}
    assert {"quantity": "1x", "price": "6,90"} in ilios
    assert report["dropped"]["Others boxes"] > 0 and report["fields"]["Total"] == {
        "list of strings": 3
    }


def test_wildreceipt_paddleocr_copy_and_mmocr_layouts_read_the_same(public, tmp_path):
    release = public / "wildreceipt"
    convert("wildreceipt", release, tmp_path / "release.jsonl")
    expected = {r.id: r.fields for r in read_labels(tmp_path / "release.jsonl")}

    # PaddleOCR's copy: `path<TAB>[{label, transcription, points}]`, a names-only class list
    paddle = tmp_path / "paddle" / "wildreceipt"
    paddle.mkdir(parents=True)
    names = [line.split()[1] for line in (release / "class_list.txt").read_text().splitlines()]
    (paddle / "class_list.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    for split in ("train", "test"):
        lines = []
        for line in (release / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            anns = [
                {
                    "label": a["label"],
                    "transcription": a["text"],
                    "points": [[a["box"][i], a["box"][i + 1]] for i in range(0, 8, 2)],
                }
                for a in obj["annotations"]
            ]
            lines.append(f"{obj['file_name']}\t{json.dumps(anns, ensure_ascii=False)}")
        (paddle / f"wildreceipt_{split}.txt").write_text("\n".join(lines) + "\n", "utf-8")
    out = tmp_path / "paddle.jsonl"
    convert("wildreceipt", paddle, out, ConvertConfig(image_dir=release))
    got = by_id(out)
    assert {k: r.fields for k, r in got.items()} == expected
    assert {r.meta["split"] for r in got.values()} == {"train", "test"}

    # MMOCR 1.x's preparer: close-set files under annotations/ (these win), and open-set
    # files keyed by the caption boxes, built as MMOCR's WildReceiptPacker builds them
    mmocr = tmp_path / "mmocr" / "wildreceipt"
    (mmocr / "annotations").mkdir(parents=True)
    shutil.copy(release / "class_list.txt", mmocr / "class_list.txt")
    for split in ("train", "test"):
        text = (release / f"{split}.txt").read_text(encoding="utf-8")
        (mmocr / "annotations" / f"{split}.txt").write_text(text, encoding="utf-8")
        (mmocr / f"openset_{split}.txt").write_text(
            "\n".join(to_openset(json.loads(line)) for line in text.splitlines()) + "\n",
            encoding="utf-8",
        )
    out = tmp_path / "mmocr.jsonl"
    convert("wildreceipt", mmocr, out, ConvertConfig(image_dir=release))
    assert {k: r.fields for k, r in by_id(out).items()} == expected
    out = tmp_path / "openset.jsonl"
    convert("wildreceipt", mmocr / "openset_train.txt", out, ConvertConfig(image_dir=release))
    opened = by_id(out)
    assert {r.meta["split"] for r in opened.values()} == {"train"}
    walmart = next(r.fields for r in opened.values() if "T0TAL" in r.fields)
    assert walmart["T0TAL"] == ["$89.09", "$89.09"]  # the caption box's text is the key
    assert_one_type_per_key(opened.values())


def to_openset(obj: dict) -> str:
    """MMOCR's WildReceiptPacker: close-set labels → bg 0 / key 1 / value 2 / others 3,
    with an `edge` shared by a field's key and value boxes."""
    edge, field_edge, anns = 1, {}, []
    for a in obj["annotations"]:
        label = a["label"]
        if label in (0, 25):
            anns.append({**a, "label": 0 if label == 0 else 3, "edge": edge})
            edge += 1
            continue
        field = (label + 1) // 2  # 1/2 → 1 (Store_name value/key), 3/4 → 2, ...
        if field not in field_edge:
            field_edge[field] = edge
            edge += 1
        anns.append({**a, "label": 2 if label % 2 else 1, "edge": field_edge[field]})
    return json.dumps({**obj, "annotations": anns}, ensure_ascii=False)


# ---------------------------------------------------------------- XFUND


def xfund_source(public: Path) -> dict:
    return json.loads((public / "xfund" / "de.train.json").read_text(encoding="utf-8"))


def test_xfund_keeps_question_hierarchy_and_repeated_blocks(public, tmp_path):
    out = tmp_path / "xfund.jsonl"
    cfg = ConvertConfig(allow_missing_images=True, report=True)
    convert("xfund", public / "xfund" / "de.train.json", out, cfg)
    recs = by_id(out)
    assert set(recs) == {"de_train_0", "de_train_1", "de_train_3"}
    assert {r.meta["split"] for r in recs.values()} == {"train"}
    assert_one_type_per_key(recs.values())

    for doc in xfund_source(public)["documents"]:
        rec = recs[doc["id"]]
        ents = {e["id"]: e for e in doc["document"]}
        links = {tuple(link) for e in doc["document"] for link in e["linking"]}
        parents = {
            a for a, b in links if ents[a]["label"] == "question" == ents[b]["label"] and a != b
        }

        def objects(value: Any):
            if isinstance(value, dict):
                yield value
                for v in value.values():
                    yield from objects(v)
            elif isinstance(value, list):
                for v in value:
                    yield from objects(v)

        found = {k: v for obj in objects(rec.fields) for k, v in obj.items()}
        for q in parents:  # no parent question becomes a key with ""
            assert isinstance(found[clean_key(ents[q]["text"])], dict), ents[q]["text"]
        assert "" not in [found[clean_key(ents[q]["text"])] for q in parents]
        # every linked answer is in the record once: nothing merged by text, nothing lost
        answers = Counter(
            ents[b]["text"].strip()
            for a, b in links
            if ents[a]["label"] == "question" and ents[b]["label"] == "answer"
        )
        kept = string_leaves(rec.fields) + string_leaves(rec.meta.get("parent_answers", {}))
        assert Counter(s for s in kept if s) == answers, doc["id"]

    doc0 = recs["de_train_0"].fields
    person = doc0["A Angaben zu Ihrer Person"]
    assert person["Geburtsdatum"] == "09.08.1987" and person["Familienstand"] == "ledig"
    assert doc0["B Rechtsschutzversicherung/Mitgliedschaft"]["[Beleg Nummer]"] == [
        {"Beleg Nummer": "34"},
        {"Beleg Nummer": "65"},
    ]
    # two address blocks asking the same questions: two objects, one per block
    blocks = recs["de_train_3"].fields["[Anschrift | Telefon | Mobil | Mail | Fax]"]
    assert [b["Telefon"] for b in blocks] == ["17830921231", "17894021893"]
    assert [b["Mail"] for b in blocks] == ["geajla@gmail.de", "16847837122@gmail.de"]
    assert "Anschrift" not in recs["de_train_3"].fields
    # a form without hierarchy or repeats stays a flat object
    assert recs["de_train_1"].fields["Antragsteller"] == "Max Weber"
    report = json.loads((tmp_path / "xfund.report.json").read_text(encoding="utf-8"))
    assert report["counts"]["repeated blocks (lists of objects)"] == 2
    assert report["dropped"]["'other' entities"] > 0


def test_xfund_paddleocr_line_format_reads_the_same(public, tmp_path):
    source = xfund_source(public)
    cfg = ConvertConfig(allow_missing_images=True)
    convert("xfund", public / "xfund" / "de.train.json", tmp_path / "official.jsonl", cfg)
    # PaddleOCR's ppstructure/kie/tools/trans_xfun_data.py output
    lines = []
    for doc in source["documents"]:
        entities = [
            {
                "transcription": e["text"],
                "label": e["label"],
                "points": [[e["box"][0], e["box"][1]], [e["box"][2], e["box"][3]]],
                "id": e["id"],
                "linking": e["linking"],
            }
            for e in doc["document"]
        ]
        lines.append(f"{doc['img']['fname']}\t{json.dumps(entities, ensure_ascii=False)}")
    paddle = tmp_path / "de_train" / "train.json"
    paddle.parent.mkdir()
    paddle.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (paddle.parent / "image").mkdir()  # PaddleOCR keeps the images in image/ beside it
    for doc in source["documents"]:
        Image.new("RGB", (8, 8)).save(paddle.parent / "image" / doc["img"]["fname"])
    convert("xfund", paddle, tmp_path / "paddle.jsonl")
    got = by_id(tmp_path / "paddle.jsonl")
    assert all(resolve_image(r.image, tmp_path / "paddle.jsonl").is_file() for r in got.values())
    official = by_id(tmp_path / "official.jsonl")
    assert {k: r.fields for k, r in got.items()} == {k: r.fields for k, r in official.items()}
    assert {r.meta["split"] for r in got.values()} == {"train"}


# ---------------------------------------------------------------- CORD


def cord_samples(public: Path) -> list[tuple[str, dict]]:
    folder = public / "cord" / "train" / "json"
    return [(p.name, json.loads(p.read_text("utf-8"))) for p in sorted(folder.glob("*.json"))]


def test_cord_original_release_equals_the_hf_export(public, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    samples = cord_samples(public)
    # the original release: the same files without the exporters' gt_parse
    orig = tmp_path / "CORD" / "train" / "json"
    orig.mkdir(parents=True)
    for name, obj in samples:
        stripped = {k: v for k, v in obj.items() if k != "gt_parse"}
        (orig / name).write_text(json.dumps(stripped, ensure_ascii=False), encoding="utf-8")
    # the HF parquet: image bytes + the ground_truth string (gt_parse, meta, valid_line)
    png = tmp_path / "r.png"
    Image.new("RGB", (8, 8), "white").save(png)
    table = pa.table(
        {
            "image": [{"bytes": png.read_bytes(), "path": None} for _ in samples],
            "ground_truth": [json.dumps(obj, ensure_ascii=False) for _, obj in samples],
        }
    )
    (tmp_path / "hf" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")

    cfg = ConvertConfig(allow_missing_images=True, report=True)
    convert("cord", public / "cord" / "train" / "json", tmp_path / "json.jsonl", cfg)
    convert("cord", orig, tmp_path / "orig.jsonl", cfg)
    convert("cord", tmp_path / "hf" / "data", tmp_path / "hf.jsonl")
    exported = by_id(tmp_path / "json.jsonl")
    original = by_id(tmp_path / "orig.jsonl")
    parquet = by_id(tmp_path / "hf.jsonl")
    assert sorted(exported) == [f"train/{i}" for i in range(len(samples))]
    for rid, rec in exported.items():
        # equal to the byte: the same values, keys in the same order
        assert json.dumps(original[rid].fields) == json.dumps(rec.fields), rid
        assert json.dumps(parquet[rid].fields) == json.dumps(rec.fields), rid
        assert rec.meta["split"] == original[rid].meta["split"] == parquet[rid].meta["split"]
    assert {r.meta["split"] for r in exported.values()} == {"train"}
    assert_one_type_per_key([*exported.values(), *original.values()])
    for rec in exported.values():
        assert isinstance(rec.fields["menu"], list) and isinstance(rec.fields["sub_total"], list)
        assert isinstance(rec.fields["total"], dict)
    # receipt 4 has one menu item (a dict in gt_parse): a list of one here
    assert exported["train/4"].fields["menu"] == [
        {"nm": "BASO BIHUN", "unitprice": "43.636", "cnt": "1", "price": "43.636"}
    ]
    # two lines of one category in one group ("x" and "1") joined as the export does
    assert original["train/0"].fields["menu"][0]["cnt"] == "x 1"
    report = json.loads((tmp_path / "orig.report.json").read_text(encoding="utf-8"))
    assert report["counts"]["receipts parsed from valid_line (original release)"] == 6


# ---------------------------------------------------------------- SROIE


def test_sroie_kaggle_and_icdar_layouts_keep_the_split(public, tmp_path):
    cfg = ConvertConfig(allow_missing_images=True)
    out = tmp_path / "kaggle.jsonl"
    convert("sroie", public / "sroie", out, cfg)  # the root: entities/ found, box/ not read
    kaggle = by_id(out)
    assert len(kaggle) == 6 and {r.meta["split"] for r in kaggle.values()} == {"train"}
    assert all(set(r.fields) <= {"company", "date", "address", "total"} for r in kaggle.values())
    assert_one_type_per_key(kaggle.values())

    # the ICDAR release: key files beside their images in '0325updated.task2train(626p)',
    # converted through the Makefile (the folder name needs quoting in the shell)
    icdar = tmp_path / "SROIE2019" / "0325updated.task2train(626p)"
    icdar.mkdir(parents=True)
    for key in sorted((public / "sroie" / "train" / "entities").glob("*.txt")):
        shutil.copy(key, icdar / key.name)
        Image.new("RGB", (8, 8)).save(icdar / f"{key.stem}.jpg")
    out = tmp_path / "icdar.jsonl"
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.setup-done",  # never (re)build the environment from a test
            f"PY={sys.executable}",
            "convert",
            "FORMAT=sroie",
            f"SRC={icdar}",
            f"OUT={out}",
            "ARGS=--report",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "records in 6, out 6" in done.stdout and "splits: train 6" in done.stdout
    icdar_recs = by_id(out)
    assert {k: r.fields for k, r in icdar_recs.items()} == {k: r.fields for k, r in kaggle.items()}
    assert all(resolve_image(r.image, out).is_file() for r in icdar_recs.values())
    assert {r.meta["split"] for r in icdar_recs.values()} == {"train"}
