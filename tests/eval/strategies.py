"""Hypothesis strategies for arbitrary JSON values (shared by the eval tests)."""

from __future__ import annotations

from hypothesis import strategies as st

SHORT_TEXT = st.text(alphabet="ab c1¥.发票<leaf>", max_size=8)
KEYS = st.sampled_from(["a", "b", "名称", "金额", "<leaf>x", "", "a.b"]) | st.text(max_size=4)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, width=16)
    | SHORT_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)
DOCS = st.dictionaries(KEYS, JSON_VALUES, max_size=5)
