"""The browser UI's fixtures: a service on the fake backend, a labels run to review."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from data_tools.confidence import TokenLogprob, leaf_confidence
from data_tools.schema import load_schema
from inference.backends.fake_backend import FakeBackend
from inference.extractor import Extractor
from inference.serving.app import create_app
from inference.serving.config import ServeConfig
from tests.support.openai_stub import stub_tokens

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "vat_invoices"

# What the fake backend "reads": the raw b1 label as the VLM published it (swapped code and
# number, the discount line missing) in canonical keys, so validation has something to flag.
B1_AS_READ: dict[str, Any] = {
    "发票名称": "广东增值税专用发票",
    "发票代码": "12270242",
    "发票号码": "4400154130",
    "开票日期": "2016年06月12日",
    "购买方": {"名称": "深圳市购机汇网络有限公司", "纳税人识别号": "440300083885931"},
    "货物或应税劳务、服务": [
        {"名称": "小米 红米3 全网通版 时尚金色 移动联通电信4G手机 双卡双待", "数量": "5",
         "单价": "597.43589744", "金额": "2987.18", "税率": "17%", "税额": "507.82"},
    ],
    "合计": {"金额": "¥1211.11", "税额": "¥205.89"},
    "价税合计（大写）": "壹仟肆佰壹拾柒圆整",
    "价税合计（小写）": "¥1417.00",
    "销售方": {"名称": "广州晶东贸易有限公司", "纳税人识别号": "91440101664041243T"},
}  # fmt: skip


class ConfidentExtractor(Extractor):
    """The fake backend plus simulated token log-probabilities (as a vLLM server returns
    them): digits of 发票代码 / 发票号码 come out unsure, everything else sure."""

    async def aextract(self, image: Any, query: Any = None) -> Any:
        result = await super().aextract(image, query)
        unsure = set()
        for key in ("发票代码", "发票号码"):
            value = (result.fields or {}).get(key) if isinstance(result.fields, dict) else None
            if isinstance(value, str):
                unsure.update(stub_tokens(value))
        tokens = [
            TokenLogprob(t, -0.35 if t in unsure else -0.002)
            for t in stub_tokens(result.raw_output)
        ]
        result.confidence = leaf_confidence(result.raw_output, tokens, result.fields).to_dict()
        return result


def invoice_image(path: Path) -> Path:
    """b1.jpg from the shared fixtures, or a drawn stand-in when they are absent."""
    if (SHARED / "b1.jpg").is_file():
        shutil.copy(SHARED / "b1.jpg", path)
        return path
    im = Image.new("RGB", (1200, 700), "white")
    d = ImageDraw.Draw(im)
    d.rectangle([40, 40, 1160, 660], outline=(160, 80, 50), width=4)
    d.text((80, 80), "VAT invoice 12270242", fill="black")
    im.save(path, "JPEG")
    return path


@pytest.fixture
def ui_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The service (fake backend, key 'k3y', review root = a labels run) on 127.0.0.1."""
    from tests.hostile.servers import serving

    run = labels_run(tmp_path / "labels_run")
    monkeypatch.setenv("KIE_REVIEW_ROOT", str(tmp_path))
    cfg = ServeConfig.from_dict(
        {"backend": {"backend": "fake"}, "auth": {"api_key": "k3y", "api_key_env": None}}
    )
    ex = ConfidentExtractor(
        FakeBackend(truth=B1_AS_READ), image_options=cfg.image, schema="vat_invoice"
    )
    app = create_app(ex, cfg)
    with serving(app) as server:
        yield {"url": server.url, "key": "k3y", "root": tmp_path, "run": run}


def labels_run(out: Path) -> Path:
    """A labels run as `data_tools.label` leaves it: labels.jsonl + needs_review.jsonl."""
    out.mkdir(parents=True)
    (out / "images").mkdir()
    invoice_image(out / "images" / "b1.jpg")
    schema = load_schema("vat_invoice")
    from data_tools.qa import check_fields

    qa = check_fields(B1_AS_READ, schema).to_dict()
    disagreements = [
        {"path": "发票代码", "values": ["12270242", "4400154130"], "chosen": "12270242"},
        {"path": "发票号码", "values": ["4400154130", "12270242"], "chosen": "4400154130"},
    ]
    record = {
        "id": "b1",
        "image": "images/b1.jpg",
        "doc_type": "vat_invoice",
        "fields": B1_AS_READ,
        "meta": {
            "agreement": 0.8,
            "disagreements": disagreements,
            "needs_review": True,
            "review_reasons": ["agreement 0.800 < 0.9 (2 leaf(s) differ)", "qa: invoice_code"],
            "qa": qa,
        },
    }
    ok = {
        "id": "b0",
        "image": "images/b1.jpg",
        "doc_type": "vat_invoice",
        "fields": {"发票号码": "12271524"},
        "meta": {"needs_review": False},
    }
    (out / "labels.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (ok, record)), encoding="utf-8"
    )
    review_row = {
        "id": "b1",
        "image": "images/b1.jpg",
        "reasons": record["meta"]["review_reasons"],
        "agreement": 0.8,
        "disagreements": disagreements,
        "qa_hard": qa["hard"],
    }
    (out / "needs_review.jsonl").write_text(
        json.dumps(review_row, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return out
