"""Scorer speed: 10,000 invoice-sized documents, every metric but the bootstrap.

Also: Donut nTED accuracy, ours vs a faithful pure-Python copy of Donut's code
(``tests/eval/donut_reference.py``: zss + nltk-style edit distance), on the same
documents; the numbers must be identical and ours at least 10x faster.

    python benchmarks/score.py [--docs 10000] [--nted-docs 200] [--workers N]

Documents are the three real invoices of ``../shared/fixtures`` (or a built-in invoice
when absent) with 1-6 line items, and predictions perturbed at random: typos, dropped
and invented keys, currency signs, reordered items, fenced or broken JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.donut import donut_nted_accuracy  # noqa: E402
from eval.score import ScoreSettings, score_files  # noqa: E402
from tests.eval.donut_reference import JSONParseEvaluator  # noqa: E402

FIXTURE = REPO.parent / "shared" / "fixtures" / "vat_invoices" / "ground_truth.jsonl"
FALLBACK = {
    "发票代码": "4400154130", "发票号码": "12271524", "开票日期": "2016年06月12日",
    "购买方": {"名称": "深圳市购机汇网络有限公司", "纳税人识别号": "440300083885931"},
    "货物或应税劳务、服务": [{"名称": "小米 红米 3", "数量": "5", "金额": "2987.18", "税率": "17%", "税额": "507.82"}],
    "合计": {"金额": "¥2987.18", "税额": "¥507.82"},
    "价税合计（大写）": "叁仟肆佰玖拾伍圆整", "价税合计（小写）": "¥3495.00",
    "销售方": {"名称": "广州晶东贸易有限公司", "纳税人识别号": "91440101664041243T"},
}  # fmt: skip


def base_docs() -> list[dict]:
    if FIXTURE.is_file():
        return [json.loads(line)["fields"] for line in FIXTURE.read_text("utf-8").splitlines()]
    return [FALLBACK]


def typo(rng: random.Random, s: str) -> str:
    if not s:
        return "x"
    i = rng.randrange(len(s))
    return s[:i] + rng.choice("0123456789壹贰叁abc") + s[i + 1 :]


def make_gold(rng: random.Random, bases: list[dict]) -> dict:
    doc = copy.deepcopy(rng.choice(bases))
    items = doc.get("货物或应税劳务、服务", [])
    if items:
        n = rng.randint(1, 6)
        doc["货物或应税劳务、服务"] = [copy.deepcopy(rng.choice(items)) for _ in range(n)]
        for it in doc["货物或应税劳务、服务"]:
            it["金额"] = f"{rng.uniform(1, 9999):.2f}"
    doc["发票号码"] = f"{rng.randrange(10**8):08d}"
    return doc


def perturb(rng: random.Random, v):
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            r = rng.random()
            if r < 0.03:
                continue  # dropped key
            out[k] = perturb(rng, x)
        if rng.random() < 0.05:
            out["备注"] = "invented"
        return out
    if isinstance(v, list):
        out = [perturb(rng, x) for x in v if rng.random() > 0.05]
        if rng.random() < 0.3:
            rng.shuffle(out)
        return out
    r = rng.random()
    if r < 0.08:
        return typo(rng, v)
    if r < 0.12:
        return "¥" + v
    if r < 0.14:
        return ""
    return v


def make_files(n_docs: int, tmp: Path, seed: int = 0) -> tuple[Path, Path, list, list]:
    rng = random.Random(seed)
    bases = base_docs()
    golds, preds = [], []
    gold_path, pred_path = tmp / "gold.jsonl", tmp / "pred.jsonl"
    with gold_path.open("w", encoding="utf-8") as g, pred_path.open("w", encoding="utf-8") as p:
        for i in range(n_docs):
            fields = make_gold(rng, bases)
            pred = perturb(rng, fields)
            golds.append(fields)
            preds.append(pred)
            rec = {"id": f"d{i}", "image": f"d{i}.jpg", "doc_type": "vat_invoice", "fields": fields}
            g.write(json.dumps(rec, ensure_ascii=False) + "\n")
            raw = json.dumps(pred, ensure_ascii=False)
            r = rng.random()
            if r < 0.05:
                raw = "```json\n" + raw + "\n```"
            elif r < 0.08:
                raw = raw[: len(raw) * 2 // 3]  # truncated
            row = {
                "id": f"d{i}",
                "prompt": "OCR:{}",
                "raw_output": raw,
                "latency_s": rng.uniform(0.5, 3),
            }
            p.write(json.dumps(row, ensure_ascii=False) + "\n")
    return gold_path, pred_path, golds, preds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--nted-docs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        gold_path, pred_path, golds, preds = make_files(args.docs, tmp)
        settings = ScoreSettings(bootstrap=0, workers=args.workers)
        donut_nted_accuracy(preds[0], golds[0])  # warm-up: numba compiles (or loads its cache)
        t0 = time.perf_counter()
        metrics, _ = score_files([pred_path], gold_path=gold_path, settings=settings)
        elapsed = time.perf_counter() - t0
        o = metrics["systems"]["pred"]["overall"]
        print(
            f"scorer: {args.docs} documents, all metrics but the bootstrap: {elapsed:.1f} s "
            f"({1000 * elapsed / args.docs:.2f} ms/doc; target < 30 s)"
        )
        print(
            f"  f1 {o['f1']:.4f}  kie_accuracy {o['kie_accuracy']:.4f}  "
            f"donut_nted_accuracy {o['donut_nted_accuracy']:.4f}  anls_star {o['anls_star']:.4f}"
        )

    n = min(args.nted_docs, len(golds))
    ref = JSONParseEvaluator()
    t0 = time.perf_counter()
    ref_scores = [ref.cal_acc(p, g) for p, g in zip(preds[:n], golds[:n], strict=True)]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = [donut_nted_accuracy(p, g) for p, g in zip(preds[:n], golds[:n], strict=True)]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_py = [
        donut_nted_accuracy(p, g, compiled=False) for p, g in zip(preds[:n], golds[:n], strict=True)
    ]
    t_py = time.perf_counter() - t0
    same = ref_scores == ours == ours_py
    print(
        f"Donut nTED, {n} documents: reference (zss + pure-Python edit distance) {t_ref:.2f} s, "
        f"ours {t_ours:.3f} s -> {t_ref / t_ours:.0f}x faster (Python-only DP: {t_py:.2f} s, "
        f"{t_ref / t_py:.0f}x); identical numbers: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
