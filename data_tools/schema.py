"""Document schemas: canonical keys, field types and aliases (`configs/schemas/*.yaml`).

`Schema.canonicalize` turns a label from any source into the canonical shape:

1. wrapper groups (`发票信息: {...}`) are flattened into the level above;
2. keys are renamed from their aliases (`发票编号` → `发票号码`, `地址电话` → `地址、电话`);
3. a key that belongs to the top level but sits inside an object (`合计.价税合计（大写）`)
   is moved up;
4. a list field given as one object is wrapped in a list; item fields written at the top
   level (`flat_item_keys`) are collected into one item; rows that only continue the
   name of the row above are merged into it;
5. ignored keys (seal text) are dropped; canonical keys come first in schema order and
   unknown keys are kept after them, so nothing is lost silently.

Each change is recorded in a `CanonicalizeReport`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_tools.normalize import FIELD_TYPES

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "configs" / "schemas"
CONTAINER_TYPES = ("object", "list")


class SchemaError(ValueError):
    """A schema file that cannot be used; the message names the file and field."""


@dataclass
class FieldSpec:
    key: str
    type: str
    required: bool = False
    aliases: list[str] = field(default_factory=list)
    fields: dict[str, FieldSpec] = field(default_factory=dict)  # object, or list of objects
    item_type: str | None = None  # list of leaves: their type
    flat_item_keys: dict[str, str] = field(default_factory=dict)
    merge_continuation_rows: bool = False

    @property
    def is_list_of_objects(self) -> bool:
        return self.type == "list" and bool(self.fields)


def _parse_fields(raw: dict[str, Any], where: str) -> dict[str, FieldSpec]:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: 'fields' must be a mapping of key → spec")
    out: dict[str, FieldSpec] = {}
    for key, spec in raw.items():
        here = f"{where}.{key}"
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict) or "type" not in spec:
            raise SchemaError(f"{here}: expected a type name or a mapping with 'type'")
        ftype = spec["type"]
        if ftype not in (*FIELD_TYPES, *CONTAINER_TYPES):
            raise SchemaError(
                f"{here}: unknown type {ftype!r}; use one of {', '.join(FIELD_TYPES + CONTAINER_TYPES)}"
            )
        fs = FieldSpec(
            key=str(key),
            type=ftype,
            required=bool(spec.get("required", False)),
            aliases=[str(a) for a in spec.get("aliases", [])],
            flat_item_keys={str(k): str(v) for k, v in (spec.get("flat_item_keys") or {}).items()},
            merge_continuation_rows=bool(spec.get("merge_continuation_rows", False)),
        )
        if ftype == "object":
            fs.fields = _parse_fields(spec.get("fields", {}), here)
        elif ftype == "list":
            items = spec.get("items", "text")
            if isinstance(items, str):
                if items not in FIELD_TYPES:
                    raise SchemaError(f"{here}: list items of unknown type {items!r}")
                fs.item_type = items
            else:
                fs.fields = _parse_fields(items, f"{here}[]")
        out[fs.key] = fs
    return out


@dataclass
class CanonicalizeReport:
    renamed: list[str] = field(default_factory=list)  # "a.b→a.c"
    moved: list[str] = field(default_factory=list)
    flattened_groups: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class Schema:
    name: str
    doc_type: str
    fields: dict[str, FieldSpec]
    groups: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    path: Path | None = None

    # ------------------------------------------------------------ lookups

    def spec(self, path: tuple[str, ...] | list[str]) -> FieldSpec | None:
        """The spec at a key path; list items carry no index (`("货物…", "金额")`)."""
        specs, spec = self.fields, None
        for key in path:
            if key == "[]" or isinstance(key, int):
                continue
            spec = specs.get(key)
            if spec is None:
                return None
            specs = spec.fields
        return spec

    def field_type(self, path: tuple[str, ...] | list[str]) -> str:
        """Leaf type at `path` (`"text"` for unknown paths; `item_type` for string lists)."""
        spec = self.spec(path)
        if spec is None:
            return "text"
        if spec.type == "list" and spec.item_type:
            return spec.item_type
        return spec.type

    def leaf_paths(self) -> list[tuple[str, ...]]:
        """Every leaf path; list-of-object items use `"[]"` (`("货物…", "[]", "金额")`)."""
        out: list[tuple[str, ...]] = []

        def walk(specs: dict[str, FieldSpec], prefix: tuple[str, ...]) -> None:
            for key, spec in specs.items():
                if spec.type == "object":
                    walk(spec.fields, (*prefix, key))
                elif spec.is_list_of_objects:
                    walk(spec.fields, (*prefix, key, "[]"))
                else:
                    out.append((*prefix, key))

        walk(self.fields, ())
        return out

    @property
    def required(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []

        def walk(specs: dict[str, FieldSpec], prefix: tuple[str, ...]) -> None:
            for key, spec in specs.items():
                if spec.required:
                    out.append((*prefix, key))
                if spec.type == "object":
                    walk(spec.fields, (*prefix, key))

        walk(self.fields, ())
        return out

    def skeleton(self) -> dict[str, Any]:
        """The whole document as a request with placeholders (for labeling prompts)."""

        def build(specs: dict[str, FieldSpec]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, spec in specs.items():
                if spec.type == "object":
                    out[key] = build(spec.fields)
                elif spec.is_list_of_objects:
                    out[key] = [build(spec.fields)]
                elif spec.type == "list":
                    out[key] = []
                else:
                    out[key] = ""
            return out

        return build(self.fields)

    # ------------------------------------------------------------ canonicalisation

    def canonicalize(
        self, fields: dict[str, Any], report: CanonicalizeReport | None = None
    ) -> dict[str, Any]:
        """A copy of `fields` in the canonical shape; changes go into `report`."""
        report = report if report is not None else CanonicalizeReport()
        root = self._flatten_groups(copy.deepcopy(fields), report, "")
        hoisted: dict[str, Any] = {}
        out = self._canon_object(root, self.fields, report, "", hoisted, is_root=True)
        for key, value in hoisted.items():
            if key in out and out[key] not in ("", {}, [], value):
                report.conflicts.append(f"{key}: kept {out[key]!r}, dropped {value!r}")
                continue
            out[key] = value
        return self._order(out, self.fields)

    def _flatten_groups(self, obj: dict[str, Any], report: CanonicalizeReport, where: str) -> dict:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if key in self.groups and isinstance(value, dict) and key not in self.fields:
                report.flattened_groups.append(f"{where}{key}")
                for k, v in self._flatten_groups(value, report, f"{where}{key}.").items():
                    if k in out and out[k] != v:
                        report.conflicts.append(f"{where}{k}: kept {out[k]!r}, dropped {v!r}")
                        continue
                    out[k] = v
            else:
                if key in out and out[key] != value:
                    report.conflicts.append(f"{where}{key}: kept {out[key]!r}, dropped {value!r}")
                    continue
                out[key] = value
        return out

    @staticmethod
    def _alias_map(specs: dict[str, FieldSpec]) -> dict[str, str]:
        amap = {k: k for k in specs}
        for key, spec in specs.items():
            for alias in spec.aliases:
                amap.setdefault(alias, key)
        return amap

    def _canon_object(
        self,
        obj: dict[str, Any],
        specs: dict[str, FieldSpec],
        report: CanonicalizeReport,
        where: str,
        hoisted: dict[str, Any],
        is_root: bool = False,
    ) -> dict[str, Any]:
        amap = self._alias_map(specs)
        root_map = self._alias_map(self.fields)
        flat_owner: dict[str, tuple[str, str]] = {}
        if is_root:
            for key, spec in specs.items():
                for flat_key, item_key in spec.flat_item_keys.items():
                    flat_owner[flat_key] = (key, item_key)

        out: dict[str, Any] = {}
        flat_item: dict[str, dict[str, Any]] = {}
        for key, value in obj.items():
            if key in self.ignore:
                report.dropped.append(f"{where}{key}")
                continue
            canon = amap.get(key)
            if canon is None and is_root and key in flat_owner:
                list_key, item_key = flat_owner[key]
                flat_item.setdefault(list_key, {})[item_key] = value
                report.moved.append(f"{key}→{list_key}[0].{item_key}")
                continue
            if canon is None and not is_root and key in root_map:
                target = root_map[key]
                hoisted[target] = self._canon_value(
                    value, self.fields[target], report, f"{target}.", hoisted
                )
                report.moved.append(f"{where}{key}→{target}")
                continue
            if canon is None:
                if isinstance(value, dict) and key in self.groups:
                    # a group nested below the top: lift its children here
                    for k, v in value.items():
                        obj_k = amap.get(k)
                        if obj_k is not None and obj_k not in out:
                            out[obj_k] = self._canon_value(
                                v, specs[obj_k], report, f"{where}{obj_k}.", hoisted
                            )
                    report.flattened_groups.append(f"{where}{key}")
                    continue
                report.unknown.append(f"{where}{key}")
                out[key] = value
                continue
            if canon != key:
                report.renamed.append(f"{where}{key}→{where}{canon}")
            new = self._canon_value(value, specs[canon], report, f"{where}{canon}.", hoisted)
            if canon in out and out[canon] not in ("", {}, [], new):
                report.conflicts.append(f"{where}{canon}: kept {out[canon]!r}, dropped {new!r}")
                continue
            out[canon] = new
        for list_key, item in flat_item.items():
            spec = specs[list_key]
            item = self._canon_object(item, spec.fields, report, f"{list_key}[0].", hoisted)
            if not out.get(list_key):
                out[list_key] = [self._order(item, spec.fields)]
            else:
                report.conflicts.append(f"{list_key}: kept the list, dropped top-level item keys")
        return out

    def _canon_value(
        self,
        value: Any,
        spec: FieldSpec,
        report: CanonicalizeReport,
        where: str,
        hoisted: dict[str, Any],
    ) -> Any:
        if spec.type == "object" and isinstance(value, dict):
            return self._order(
                self._canon_object(value, spec.fields, report, where, hoisted), spec.fields
            )
        if spec.type == "list":
            if isinstance(value, dict) and spec.fields:
                report.moved.append(f"{where.rstrip('.')}: one object → list of one")
                value = [value]
            if isinstance(value, list) and spec.fields:
                rows = [
                    self._order(
                        self._canon_object(v, spec.fields, report, f"{where}[{i}].", hoisted),
                        spec.fields,
                    )
                    if isinstance(v, dict)
                    else v
                    for i, v in enumerate(value)
                ]
                if spec.merge_continuation_rows:
                    rows = self._merge_continuations(rows, spec, report, where)
                return rows
        return value

    @staticmethod
    def _merge_continuations(
        rows: list[Any], spec: FieldSpec, report: CanonicalizeReport, where: str
    ) -> list[Any]:
        name_key = next(iter(spec.fields))
        merged: list[Any] = []
        for i, row in enumerate(rows):
            only_name = (
                isinstance(row, dict)
                and row.get(name_key)
                and all(v in ("", None) for k, v in row.items() if k != name_key)
            )
            if only_name and merged and isinstance(merged[-1], dict):
                prev = merged[-1]
                prev[name_key] = f"{prev.get(name_key, '')} {row[name_key]}".strip()
                report.moved.append(f"{where}[{i}]: continuation row merged into the row above")
                continue
            merged.append(row)
        return merged

    @staticmethod
    def _order(obj: dict[str, Any], specs: dict[str, FieldSpec]) -> dict[str, Any]:
        ordered = {k: obj[k] for k in specs if k in obj}
        ordered.update({k: v for k, v in obj.items() if k not in specs})
        return ordered


def load_schema(name_or_path: str | Path) -> Schema:
    """`"vat_invoice"` → `configs/schemas/vat_invoice.yaml`; or a path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCHEMA_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml")))
        raise SchemaError(f"schema not found: {path} (bundled schemas: {known})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict) or "fields" not in raw:
        raise SchemaError(f"{path}: a schema needs a top-level 'fields' mapping")
    name = str(raw.get("name", path.stem))
    return Schema(
        name=name,
        doc_type=str(raw.get("doc_type", name)),
        fields=_parse_fields(raw["fields"], f"{path}:fields"),
        groups=[str(g) for g in raw.get("groups", [])],
        ignore=[str(k) for k in raw.get("ignore", [])],
        path=path,
    )
