"""The PaddleOCR-VL-KIE accuracy (megemini/PaddleOCR-VL-KIE, ``evaluate/evaluate_ocr_openai.py``).

Per sample: the share of top-level gold keys whose predicted value is "correct"; the
corpus score is the mean over samples. A key is correct when

* gold and prediction are both dicts: every gold sub-key is recursively correct by this
  same rule (extra predicted sub-keys are ignored; an *empty* gold dict is never correct,
  because its sub-score is 0/0 -> 0.0 in the published code);
* both are lists: equal after sorting each by ``json.dumps(item, sort_keys=True,
  ensure_ascii=False)`` (items compared with Python ``==``, so inside a list a dict must
  have exactly the gold keys and values, types included);
* otherwise: ``str(gold) == str(prediction)``; a missing key is ``None``, so a missing key
  is only correct when the gold value is ``None``.

A sample with no gold keys scores 0.0. No normalisation at all: ``¥507.82`` vs
``507.82`` is wrong, one typo in one line item makes the whole list wrong, and
predicted keys that are not in the gold are not penalised. Reported for comparability
with the published numbers only.
"""

from __future__ import annotations

import json
from typing import Any


def _sort_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False)


def _lists_equal(expected: list[Any], predicted: list[Any]) -> bool:
    # exact shortcuts of the sorted comparison: lists of other lengths never sort equal, and
    # equal lists (same order) always do, so only the rest is serialised and sorted
    if len(expected) != len(predicted):
        return False
    if expected == predicted:
        return True
    # sorted lists compare equal only item by item, so every predicted item equals (==,
    # identity first, as ``in`` tests) some gold item: one that equals none decides it
    if any(item not in expected for item in predicted):
        return False
    try:
        return sorted(expected, key=_sort_key) == sorted(predicted, key=_sort_key)
    except (TypeError, ValueError):
        return expected == predicted


def kie_field_correct(expected: Any, predicted: Any) -> bool:
    """One top-level key's verdict (``compare_results`` per key)."""
    if isinstance(expected, dict) and isinstance(predicted, dict):
        return kie_accuracy(expected, predicted) == 1.0
    if isinstance(expected, list) and isinstance(predicted, list):
        return _lists_equal(expected, predicted)
    return str(expected) == str(predicted)


def kie_accuracy(gold: Any, pred: Any) -> float:
    """Share of gold keys predicted correctly (``compare_results(...)['accuracy']``)."""
    if not isinstance(gold, dict) or not gold:
        return 0.0
    pred_dict = pred if isinstance(pred, dict) else {}
    correct = sum(kie_field_correct(v, pred_dict.get(k)) for k, v in gold.items())
    return correct / len(gold)
