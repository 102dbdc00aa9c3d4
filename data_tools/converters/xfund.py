"""`xfund`: XFUND / FUNSD forms, question → answer links turned into key → value.

Readable files (`--src` is one file, or a folder whose `*.json` files are all read):

* XFUND (`zh.train.json`): `{"lang", "split", "documents": [{"id": "zh_train_0",
  "document": [entity, ...], "img": {"fname": "zh_train_0.jpg", ...}}, ...]}`;
* FUNSD (`annotations/0000971160.json`): `{"form": [entity, ...]}`, one form per file,
  the image `images/<stem>.png` beside `annotations/`;
* PaddleOCR's KIE label file (`trans_xfun_data.py` output): one line per image,
  `zh_train_0.jpg<TAB>[{"transcription", "label", "points", "id", "linking"}, ...]`.

An entity is `{"id", "text" (or "transcription"), "label": question|answer|header|other,
"linking": [[from_id, to_id], ...]}`. Each document becomes one record: every question
is a key (its text, stripped of surrounding space and a trailing colon) and its linked
answers the value (no answer → `""`, one → a string, several → a list of strings in
document order). A question text that occurs twice collects the answers of both.
`header` texts go to `meta.headers`, answers linked to no question to
`meta.unlinked_answers`; `other` entities are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    SourceItem,
    load_json_text,
    read_text,
    stem_refs,
    unique_dirs,
)

DOC_TYPE = "form"
DEFAULT_SCHEMA = None
EXPECTS = "XFUND {documents: [...]}, FUNSD {form: [...]} or PaddleOCR 'image<TAB>[entities]' lines"


def clean_key(text: str) -> str:
    return text.strip().rstrip(":：").strip()


def pair_entities(entities: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]] | BadItem:
    """(fields, meta) of one document's entity list, or a `BadItem` naming the entity."""
    if not isinstance(entities, list):
        return BadItem(where, f"the entity list must be a list, got {type(entities).__name__}")
    ents: dict[Any, tuple[int, str, str]] = {}  # id -> (position, label, text)
    for pos, ent in enumerate(entities):
        if not isinstance(ent, dict):
            return BadItem(where, f"entity #{pos} is not an object")
        eid = ent.get("id", pos)
        text = ent.get("text", ent.get("transcription"))
        label = ent.get("label")
        if not isinstance(text, str) or not isinstance(label, str):
            return BadItem(
                where, f"entity {eid}: needs 'text' (or 'transcription') and 'label' strings"
            )
        if eid in ents:
            return BadItem(where, f"entity {eid}: duplicate entity id; ids must be unique")
        ents[eid] = (pos, label.lower(), text.strip())

    answers_of: dict[Any, set[Any]] = {}
    linked_answers: set[Any] = set()
    for pos, ent in enumerate(entities):
        eid = ent.get("id", pos)
        for link in ent.get("linking") or []:
            if not isinstance(link, (list, tuple)) or len(link) != 2:
                return BadItem(
                    where, f"entity {eid}: a link must be [from_id, to_id], got {link!r}"
                )
            missing = [x for x in link if x not in ents]
            if missing:
                return BadItem(
                    where,
                    f"entity {eid}: link {list(link)} names entity {missing[0]} which does not "
                    "exist in this document; fix the link",
                )
            a, b = link
            la, lb = ents[a][1], ents[b][1]
            if (la, lb) == ("answer", "question"):
                a, b, la, lb = b, a, lb, la
            if (la, lb) == ("question", "answer"):
                answers_of.setdefault(a, set()).add(b)
                linked_answers.add(b)

    values: dict[str, list[str]] = {}
    meta: dict[str, Any] = {}
    for eid, (_, label, text) in ents.items():
        if label == "question":
            key = clean_key(text)
            if not key:
                meta.setdefault("empty_questions", []).append(str(eid))
                continue
            answers = sorted(answers_of.get(eid, ()), key=lambda x: ents[x][0])
            values.setdefault(key, []).extend(ents[x][2] for x in answers if ents[x][2])
        elif label == "header" and text:
            meta.setdefault("headers", []).append(text)
        elif label == "answer" and eid not in linked_answers and text:
            meta.setdefault("unlinked_answers", []).append(text)
    fields: dict[str, Any] = {
        key: "" if not texts else texts[0] if len(texts) == 1 else texts
        for key, texts in values.items()
    }
    return fields, meta


def _item(
    doc_id: str,
    entities: Any,
    where: str,
    source: dict[str, Any],
    image_refs: list[str],
    search_dirs: list[Path],
) -> SourceItem | BadItem:
    result = pair_entities(entities, where)
    if isinstance(result, BadItem):
        return result
    fields, meta = result
    return SourceItem(
        id=doc_id,
        fields=fields,
        where=where,
        source=source,
        image_refs=image_refs,
        search_dirs=unique_dirs(search_dirs),
        meta=meta,
    )


def _iter_xfund(path: Path, rel: str, obj: dict) -> Iterator[SourceItem | BadItem]:
    documents = obj["documents"]
    if not isinstance(documents, list):
        raise ConvertError(f"{path}: 'documents' must be a list")
    here = path.parent
    for i, doc in enumerate(documents):
        doc_id = str(doc.get("id", f"{path.stem}/{i}")) if isinstance(doc, dict) else str(i)
        where = f"{path}: document {doc_id}"
        if not isinstance(doc, dict) or "document" not in doc:
            yield BadItem(where, "expected {id, document: [entities], img: {fname}}")
            continue
        fname = (doc.get("img") or {}).get("fname")
        if not isinstance(fname, str) or not fname:
            yield BadItem(where, "'img.fname' (the image file name) is missing")
            continue
        yield _item(
            doc_id,
            doc["document"],
            where,
            {"file": rel, "document": doc_id},
            [fname],
            [here, here / path.stem, here / path.stem.replace(".", "_"), here / "images"],
        )


def _iter_paddleocr(path: Path, rel: str, text: str) -> Iterator[SourceItem | BadItem]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        image, tab, payload = line.partition("\t")
        if not tab:
            yield BadItem(where, f"expected 'image<TAB>[entities]'; expected {EXPECTS}")
            continue
        try:
            entities = load_json_text(payload)
        except json.JSONDecodeError as exc:
            yield BadItem(where, f"the entity list is not valid JSON ({exc.msg})")
            continue
        if isinstance(entities, dict):  # {"height", "width", "ocr_info": [...]} variant
            entities = entities.get("ocr_info", entities)
        yield _item(
            Path(image).with_suffix("").as_posix(),
            entities,
            where,
            {"file": rel, "line": lineno},
            [image],
            [path.parent, path.parent / "image", path.parent / "images"],
        )


def _iter_file(path: Path, root: Path) -> Iterator[SourceItem | BadItem]:
    rel = path.relative_to(root).as_posix()
    text = read_text(path)
    try:
        obj = load_json_text(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "documents" in obj:
        yield from _iter_xfund(path, rel, obj)
    elif isinstance(obj, dict) and "form" in obj:
        parent = path.parent
        yield _item(
            path.stem,
            obj["form"],
            str(path),
            {"file": rel},
            stem_refs(path.stem),
            [parent, parent.parent / "images", parent / "images"],
        )
    elif obj is None and "\t" in text.split("\n", 1)[0]:
        yield from _iter_paddleocr(path, rel, text)
    else:
        got = f"keys {sorted(obj)}" if isinstance(obj, dict) else "unparsable content"
        yield BadItem(str(path), f"not an XFUND/FUNSD file ({got}); expected {EXPECTS}")


def iter_items(src: Path, opts: ConvertOptions) -> Iterator[SourceItem | BadItem]:
    if src.is_file():
        files, root = [src], src.parent
    else:
        files, root = sorted(p for p in src.glob("*.json") if p.is_file()), src
        if not files:
            raise ConvertError(f"{src}: no *.json files in this folder; expected {EXPECTS}")
    for path in files:
        yield from _iter_file(path, root)
