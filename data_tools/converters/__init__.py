"""Per-format readers for `python -m data_tools.convert`; one module per public format.

Each module defines `iter_items(src, opts)`, `DOC_TYPE`, `DEFAULT_SCHEMA` and `EXPECTS`
(what the format looks like, for error messages).
"""

from __future__ import annotations

from types import ModuleType

from data_tools.converters import cord, sroie, vat_ner, wildreceipt, xfund

FORMATS: dict[str, ModuleType] = {
    "vat_ner": vat_ner,
    "wildreceipt": wildreceipt,
    "sroie": sroie,
    "cord": cord,
    "xfund": xfund,
}
