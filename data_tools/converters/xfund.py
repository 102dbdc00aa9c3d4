"""`xfund`: XFUND / FUNSD forms, question → answer links turned into key → value.

Readable files (`--src` is one file, or a folder whose `*.json` files are all read):

* XFUND (`zh.train.json`): `{"lang", "split", "documents": [{"id": "zh_train_0",
  "document": [entity, ...], "img": {"fname": "zh_train_0.jpg", ...}}, ...]}`;
* FUNSD (`annotations/0000971160.json`): `{"form": [entity, ...]}`, one form per file,
  the image `images/<stem>.png` beside `annotations/`;
* PaddleOCR's KIE label file (`trans_xfun_data.py` output): one line per image,
  `zh_train_0.jpg<TAB>[{"transcription", "label", "points", "id", "linking"}, ...]`.

An entity is `{"id", "text" (or "transcription"), "label": question|answer|header|other,
"linking": [[from_id, to_id], ...]}`. Each document becomes one record, keeping the form's
hierarchy:

* a question is a key (its text, stripped of surrounding space and a trailing colon); its
  linked answers are the value (none → `""`, one → a string, several → a list of strings
  in document order);
* a question linked to other questions (`[parent, child]`) is an object of its
  sub-questions, never a key with `""`: `{"A Angaben zu Ihrer Person": {"Geburtsdatum":
  "09.08.1987", ...}}`; answers linked to such a parent itself come first in the object,
  under the parent's own text (`{"Staatsangehörigkeit": {"Staatsangehörigkeit": "…",
  "Liegt Ihnen … vor?": [...]}}`), or go to `meta.parent_answers` when a sub-question
  has that text;
* one type per key across the dataset: a question that is a plain value in one form and
  an object of sub-questions in another becomes that object everywhere, its value under
  its own text (`converters.shapes`, `WRAP_CONFLICTS`);
* questions repeated at one level (the same texts in two address blocks, six school rows
  asking "Name") are never merged by text: the k-th occurrence of each repeated text goes
  into the k-th object of a list keyed by the repeated texts in brackets:
  `"[Anschrift | Telefon]": [{"Anschrift": "…", "Telefon": "…"}, {"Anschrift": "…", ...}]`.

`header` texts go to `meta.headers`, answers linked to no question to
`meta.unlinked_answers`; `other` entities are dropped (counted in the report). The split
is the file's (`"split": "train"` / `"val"`, or the file name: `zh.val.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    SourceItem,
    image_dirs_near,
    load_json_text,
    read_text,
    split_from_path,
    split_name,
    stem_refs,
    unique_dirs,
)

DOC_TYPE = "form"
DEFAULT_SCHEMA = None
WRAP_CONFLICTS = True  # a plain value where other forms have sub-questions: {own text: value}
EXPECTS = "XFUND {documents: [...]}, FUNSD {form: [...]} or PaddleOCR 'image<TAB>[entities]' lines"


def clean_key(text: str) -> str:
    return text.strip().rstrip(":：").strip()


@dataclass
class _Entity:
    pos: int
    label: str
    text: str


def pair_entities(
    entities: Any, where: str, item: SourceItem | None = None
) -> tuple[dict[str, Any], dict[str, Any]] | BadItem:
    """(fields, meta) of one document's entity list, or a `BadItem` naming the entity.
    Drops and counts go to `item` (the report) when given."""
    item = item if item is not None else SourceItem(id="", fields={}, where=where, source={})
    if not isinstance(entities, list):
        return BadItem(where, f"the entity list must be a list, got {type(entities).__name__}")
    ents: dict[Any, _Entity] = {}
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
        ents[eid] = _Entity(pos, label.lower(), text.strip())

    answers_of: dict[Any, list[Any]] = {}
    parent_of: dict[Any, Any] = {}
    linked_answers: set[Any] = set()
    seen_links: set[tuple[Any, Any]] = set()
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
            if (a, b) in seen_links:
                continue  # each link is listed by both of its entities
            seen_links.add((a, b))
            la, lb = ents[a].label, ents[b].label
            if (la, lb) == ("answer", "question"):
                a, b, la, lb = b, a, lb, la
            if (la, lb) == ("question", "answer"):
                if b not in answers_of.setdefault(a, []):
                    answers_of[a].append(b)
                linked_answers.add(b)
            elif (la, lb) == ("question", "question") and a != b:
                if b in parent_of:
                    item.drop("question→question links to a question that has a parent")
                    continue
                ancestor = a
                while ancestor in parent_of and ancestor != b:
                    ancestor = parent_of[ancestor]
                if ancestor == b:
                    item.drop("question→question links that would make a cycle")
                    continue
                parent_of[b] = a

    children: dict[Any, list[Any]] = {}
    for child, parent in parent_of.items():
        children.setdefault(parent, []).append(child)
    meta: dict[str, Any] = {}

    def answer_texts(qid: Any) -> list[str]:
        ids = sorted(answers_of.get(qid, ()), key=lambda x: ents[x].pos)
        texts = [ents[x].text for x in ids if ents[x].text]
        item.drop("linked answers with empty text", len(ids) - len(texts))
        return texts

    def value_of(qid: Any) -> Any:
        subs = children.get(qid)
        if subs:
            own = answer_texts(qid)
            obj = level(subs)
            item.count("questions with sub-questions (objects)")
            if own:
                key = clean_key(ents[qid].text)
                if key and key not in obj:
                    item.count("questions with sub-questions and own answers (under own text)")
                    return {key: own[0] if len(own) == 1 else own, **obj}
                meta.setdefault("parent_answers", {})[key] = own
                item.count("answers of a question with sub-questions (meta.parent_answers)")
            return obj
        texts = answer_texts(qid)
        if not texts:
            item.count('questions without an answer ("")')
        return "" if not texts else texts[0] if len(texts) == 1 else texts

    def level(qids: list[Any]) -> dict[str, Any]:
        entries: list[tuple[str, Any]] = []
        for qid in sorted(qids, key=lambda x: ents[x].pos):
            key = clean_key(ents[qid].text)
            if not key:
                meta.setdefault("empty_questions", []).append(str(qid))
                item.drop("questions with no text")
                continue
            entries.append((key, value_of(qid)))
        return repeated_blocks(entries, item)

    roots = [eid for eid, e in ents.items() if e.label == "question" and eid not in parent_of]
    fields = level(roots)
    for eid, e in sorted(ents.items(), key=lambda x: x[1].pos):
        if e.label == "header" and e.text:
            meta.setdefault("headers", []).append(e.text)
            item.count("headers (meta.headers)")
        elif e.label == "answer" and eid not in linked_answers and e.text:
            meta.setdefault("unlinked_answers", []).append(e.text)
            item.drop("answers linked to no question (kept in meta.unlinked_answers)")
        elif e.label == "other":
            item.drop("'other' entities")
    return fields, meta


def repeated_blocks(entries: list[tuple[str, Any]], item: SourceItem) -> dict[str, Any]:
    """One level's (key, value) entries as an object; keys that occur more than once are
    grouped by how often they occur into a list of objects, the k-th occurrence of each key
    in the k-th object, under the key `[key1 | key2 | ...]` (at the first one's place)."""
    occurrences: dict[str, list[Any]] = {}
    for key, value in entries:
        occurrences.setdefault(key, []).append(value)
    groups: dict[int, list[str]] = {}
    for key, values in occurrences.items():
        if len(values) > 1:
            groups.setdefault(len(values), []).append(key)
    group_of = {key: n for n, keys in groups.items() for key in keys}
    out: dict[str, Any] = {}
    for key, values in occurrences.items():
        n = group_of.get(key)
        if n is None:
            out[key] = values[0]
            continue
        keys = groups[n]
        if key != keys[0]:
            continue  # placed with the group's first key
        name = "[" + " | ".join(keys) + "]"
        out[name] = [{k: occurrences[k][i] for k in keys} for i in range(n)]
        item.count("repeated blocks (lists of objects)")
        item.count("objects in repeated blocks", n)
    return out


def _item(
    doc_id: str,
    entities: Any,
    where: str,
    source: dict[str, Any],
    image_refs: list[str],
    search_dirs: list[Path],
    split: str | None,
) -> SourceItem | BadItem:
    item = SourceItem(
        id=doc_id,
        fields={},
        where=where,
        source=source,
        image_refs=image_refs,
        search_dirs=unique_dirs(search_dirs),
        split=split,
    )
    result = pair_entities(entities, where, item)
    if isinstance(result, BadItem):
        return result
    item.fields, item.meta = result
    return item


def _iter_xfund(path: Path, rel: str, obj: dict) -> Iterator[SourceItem | BadItem]:
    documents = obj["documents"]
    if not isinstance(documents, list):
        raise ConvertError(f"{path}: 'documents' must be a list")
    here = path.parent
    split = split_name(obj.get("split")) or split_from_path(path)
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
            [here / path.stem, here / path.stem.replace(".", "_"), *image_dirs_near(here)],
            split,
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
            image_dirs_near(path.parent),
            split_from_path(path),
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
            image_dirs_near(parent),
            split_from_path(path),
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
