"""Records what reaches PaddleOCR-VL in a PaddleX process (tests only).

Put this folder first on PYTHONPATH and set PROMPT_PROBE_LOG to a file: when PaddleX's
PaddleOCR-VL processor module is imported, its `preprocess` is wrapped so that every
call appends one JSON line per image with the query, the chat-template text and the
decoded input ids, i.e. exactly what the model is about to read.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys

_TARGET = "paddlex.inference.models.doc_vlm.processors.paddleocr_vl._paddleocr_vl"
_LOG = os.environ.get("PROMPT_PROBE_LOG")


def _wrap(module) -> None:  # type: ignore[no-untyped-def]
    cls = module.PaddleOCRVLProcessor
    original = cls.preprocess

    def preprocess(self, input_dicts, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(self, input_dicts, *args, **kwargs)
        ids = out["input_ids"]
        with open(_LOG, "a", encoding="utf-8") as f:
            for i, item in enumerate(input_dicts):
                messages = [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "image": "placeholder"},
                            {"type": "text", "text": item["query"]},
                        ],
                    }
                ]
                row = {
                    "query": item["query"],
                    "template": self.tokenizer.apply_chat_template(messages, tokenize=False),
                    "decoded": self.tokenizer.decode(
                        [int(t) for t in ids[i].tolist()],
                        skip_special_tokens=False,
                        spaces_between_special_tokens=False,
                    ),
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return out

    cls.preprocess = preprocess


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):  # type: ignore[no-untyped-def]
            exec_module(module)
            _wrap(module)

        spec.loader.exec_module = exec_and_wrap  # type: ignore[method-assign]
        return spec


if _LOG:
    sys.meta_path.insert(0, _Finder())
