"""report.md and a self-contained report.html (plots embedded as base64 PNG) from metrics.json.

Everything shown is read from the metrics dict, so the report and ``metrics.json`` cannot
disagree; every metric is printed with its definition. Plots (also saved under
``plots/``): per-field F1 by system, leaf outcomes by system, latency distribution.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_tools.jsonl import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

CJK_FONTS = (
    "WenQuanYi Zen Hei",
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Arial Unicode MS",
)
CJK_FONT_FILES = (
    "wqy",
    "notosanscjk",
    "notoserifcjk",
    "sourcehansans",
    "simhei",
    "msyh",
    "droidsansfallback",
)
OUTCOME_COLORS = {"tp": "#4caf50", "wrong": "#ff9800", "miss": "#9e9e9e", "hallucinated": "#e53935"}
SYSTEM_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")

MAIN_TABLE = (
    "f1",
    "precision",
    "recall",
    "macro_f1",
    "exact_match",
    "anls",
    "anls_star",
    "line_item_f1",
    "kie_accuracy",
    "donut_f1",
    "donut_nted_accuracy",
)
ERROR_TABLE = ("missing_rate", "wrong_rate", "hallucination_rate", "line_item_row_f1")
HEALTH_TABLE = (
    "json_strict_valid_rate",
    "json_embedded_rate",
    "json_repaired_rate",
    "json_unrecoverable_rate",
    "json_given_rate",
    "json_missing_rate",
    "json_refused_rate",
    "json_truncated_rate",
    "json_duplicate_keys_rate",
    "json_conflicting_duplicate_keys_rate",
    "json_non_object_rate",
)
INSTRUCTION_TABLE = ("instruction_requested_keys_present", "instruction_unrequested_keys_rate")


# ---------------------------------------------------------------- formatting
def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(sys_: dict[str, Any], name: str) -> str:
    ci = sys_.get("ci95", {}).get(name)
    return f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", "⏎")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _short(v: Any, n: int = 60) -> str:
    s = "∅" if v is None else (v if isinstance(v, str) else repr(v))
    return s if len(s) <= n else s[: n - 1] + "…"


# ---------------------------------------------------------------- tables (shared by md/html)
def tables(metrics: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(section title, note, header, rows) for every table of the report."""
    systems = metrics["systems"]
    names = list(systems)
    defs = metrics["metric_definitions"]
    out: list[tuple[str, str, list[str], list[list[str]]]] = []

    def metric_rows(
        keys: Sequence[str], view: str = "overall", ci: bool = False
    ) -> list[list[str]]:
        rows = []
        for k in keys:
            cells = [k]
            for n in names:
                v = systems[n][view].get(k)
                cells.append(fmt(v) + (_ci(systems[n], k) if ci else ""))
            cells.append(defs.get(k, ""))
            rows.append(cells)
        return rows

    out.append(
        (
            "Overall (repaired view, 95% bootstrap CI)",
            "Predictions as data_tools.parsing recovers them (strict, fenced/embedded or "
            "json_repair); unrecoverable outputs count as {}.",
            ["metric", *names, "definition"],
            metric_rows(MAIN_TABLE, ci=True),
        )
    )
    out.append(
        (
            "Overall (strict view)",
            "Only strictly valid JSON counts; everything else is scored as {}.",
            ["metric", *names, "definition"],
            metric_rows(("f1", "precision", "recall", "exact_match", "kie_accuracy", "donut_nted_accuracy"), "overall_strict"),
        )
    )  # fmt: skip
    out.append(("Errors", "", ["metric", *names, "definition"], metric_rows(ERROR_TABLE)))
    out.append(("JSON health", "", ["metric", *names, "definition"], metric_rows(HEALTH_TABLE)))
    out.append(
        (
            "Instruction following (partial prompts)",
            "",
            ["metric", *names, "definition"],
            metric_rows(INSTRUCTION_TABLE),
        )
    )
    lat_rows = []
    for n in names:
        lat = systems[n]["latency"]
        for stage, summ in [("total", lat["total"]), *lat["stages"].items()]:
            lat_rows.append(
                [n, stage, fmt(summ["n"])]
                + [
                    fmt(summ[k], 3)
                    for k in ("mean_s", "p50_s", "p95_s", "p99_s", "throughput_per_s")
                ]
            )
    out.append(
        (
            "Latency",
            "Seconds per sample; throughput = 1 / mean latency (one sequential worker).",
            ["system", "stage", "n", "mean", "p50", "p95", "p99", "samples/s"],
            lat_rows,
        )
    )
    if metrics.get("comparisons"):
        out.append(
            (
                "Paired bootstrap (A - B on shared samples)",
                "Same document resamples for both systems; two-sided p-value.",
                ["A", "B", "metric", "diff", "95% CI", "p"],
                [
                    [c["a"], c["b"], c["metric"], f"{c['diff']:+.4f}",
                     f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", f"{c['p_value']:.4f}"]
                    for c in metrics["comparisons"]
                ],
            )
        )  # fmt: skip
    fields = []
    for n in names:
        for f, r in systems[n]["per_field"].items():
            if f not in fields and r["support"] + r["hallucinated"] > 0:
                fields.append(f)
    rows = []
    for f in fields:
        cells = [f]
        ftype = ""
        for n in names:
            r = systems[n]["per_field"].get(f)
            if r:
                ftype = r["type"]
                cells.append(
                    f"{r['f1']:.3f} (TP {r['tp']} / W {r['wrong']} / M {r['miss']} / H {r['hallucinated']})"
                )
            else:
                cells.append("–")
        rows.append([f, ftype, *cells[1:]])
    out.append(
        (
            "Per field: F1 (TP / WRONG / MISS / HALLUCINATED)",
            "Leaf outcomes after type normalisation; list items matched by Hungarian matching.",
            ["field", "type", *names],
            rows,
        )
    )
    types = sorted({t for n in names for t in systems[n]["per_type"]})
    out.append(
        (
            "Per field type: F1 / ANLS",
            "",
            ["type", *names],
            [
                [t] + [
                    f"{systems[n]['per_type'][t]['f1']:.3f} / {systems[n]['per_type'][t]['anls']:.3f}"
                    if t in systems[n]["per_type"] else "–"
                    for n in names
                ]
                for t in types
            ],
        )
    )  # fmt: skip
    for group, title in (("per_doc_type", "Per doc type"), ("per_source", "Per source")):
        keys = sorted({g for n in names for g in systems[n][group]})
        out.append(
            (
                f"{title}: F1 / KIE accuracy / nTED accuracy (samples)",
                "",
                [group.removeprefix("per_"), *names],
                [
                    [g] + [
                        (lambda r: f"{r['f1']:.3f} / {r['kie_accuracy']:.3f} / "
                         f"{r['donut_nted_accuracy']:.3f} ({r['n_samples']})")(systems[n][group][g])
                        if g in systems[n][group] else "–"
                        for n in names
                    ]
                    for g in keys
                ],
            )
        )  # fmt: skip
    return out


# ---------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    available = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in CJK_FONTS if f in available]
    if not cjk:  # matplotlib's font cache may predate the font's install: look on disk
        for path in font_manager.findSystemFonts():
            if any(k in Path(path).name.lower() for k in CJK_FONT_FILES):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        available = {f.name for f in font_manager.fontManager.ttflist}
        cjk = [f for f in CJK_FONTS if f in available]
    if cjk:
        plt.rcParams["font.sans-serif"] = [*cjk, "DejaVu Sans"]
    else:
        log.warning(
            "no CJK font found (install fonts-wqy-zenhei): Chinese field names show as boxes"
        )
    plt.rcParams["font.family"] = "sans-serif"
    # CJK fonts ship one "medium" weight; findfont would warn on every text element
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    plt.rcParams["axes.unicode_minus"] = False
    return plt


def plot_field_f1(metrics: dict[str, Any]) -> bytes:
    plt = _pyplot()
    systems = metrics["systems"]
    names = list(systems)
    fields: list[str] = []  # fields with gold values (invented fields are in the outcomes plot)
    for n in names:
        fields += [
            f for f, r in systems[n]["per_field"].items() if f not in fields and r["support"]
        ]
    height = max(3.0, 0.3 * len(fields) * max(1, len(names)) ** 0.5 + 1.5)
    fig, ax = plt.subplots(figsize=(9, height))
    bar = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        vals = [systems[n]["per_field"].get(f, {}).get("f1", 0.0) for f in fields]
        ys = [k + i * bar for k in range(len(fields))]
        ax.barh(ys, vals, height=bar, label=n, color=SYSTEM_COLORS[i % len(SYSTEM_COLORS)])
    ax.set_yticks([k + bar * (len(names) - 1) / 2 for k in range(len(fields))])
    ax.set_yticklabels(fields, fontsize=8)
    ax.set_ylim(len(fields) - 0.5 + bar * (len(names) - 1), -0.5)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("F1 (leaf, normalised)")
    ax.set_title("Per-field F1 by system (fields with gold values)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=len(names), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_error_types(metrics: dict[str, Any]) -> bytes:
    plt = _pyplot()
    systems = metrics["systems"]
    names = list(systems)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.6))
    left = [0.0] * len(names)
    for outcome, color in OUTCOME_COLORS.items():
        vals = []
        for n in names:
            rows = systems[n]["per_field"].values()
            vals.append(float(sum(r[outcome] for r in rows)))
        ax.barh(names, vals, left=left, color=color, label=outcome.upper())
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("leaves")
    ax.set_title("Leaf outcomes by system")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4, fontsize=8, frameon=False)
    ax.invert_yaxis()
    fig.tight_layout()
    return _png(fig)


def plot_latency(latencies: dict[str, dict[str, list[float]]]) -> bytes | None:
    """Box plot of latency per system and stage; ``latencies[system][stage] -> values``."""
    series = [
        (f"{s} · {st}", v) for s, stages in latencies.items() for st, v in stages.items() if v
    ]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(series) + 1.4))
    ax.boxplot([v for _, v in series], vert=False, showfliers=True, widths=0.6)
    ax.set_yticks(range(1, len(series) + 1))
    ax.set_yticklabels([n for n, _ in series], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per sample")
    ax.set_title("Latency distribution")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- documents
def _worst_md(metrics: dict[str, Any]) -> list[str]:
    lines = ["## Worst samples", ""]
    for n, s in metrics["systems"].items():
        lines.append(f"### {n}")
        if not s["worst"]:
            lines += ["", "No errors.", ""]
        for w in s["worst"]:
            lines.append(
                f"\n**{w['id']}** `{w['prompt'][:80]}` (parse: {w['method']}, "
                f"F1 {w['doc_f1']:.3f}, nTED acc {w['donut_nted_accuracy']:.3f})\n"
            )
            lines.append(
                _md_table(
                    ["field", "outcome", "gold", "prediction"],
                    [[d["field"], d["outcome"].upper(), _short(d["gold"]), _short(d["pred"])] for d in w["diffs"][:30]],
                )
            )  # fmt: skip
        lines.append("")
    return lines


PLOTS_AFTER_TABLE = 3  # overall, strict, errors, then the plots
PLOTS = (
    ("field_f1", "Per-field F1 by system"),
    ("error_types", "Leaf outcomes by system"),
    ("latency", "Latency distribution"),
)


def render_markdown(metrics: dict[str, Any], plot_files: dict[str, str]) -> str:
    st = metrics["settings"]
    lines = [
        "# Extraction benchmark report",
        "",
        f"Gold: `{metrics.get('gold')}` ({metrics['n_gold_docs']} documents), schema "
        f"`{metrics.get('schema')}`, bootstrap {st['bootstrap_resamples']} resamples (seed "
        f"{st['seed']}), ANLS tau {st['anls_tau']}. Generated {metrics['generated_at']}. "
        "All numbers are read from `metrics.json`.",
        "",
        "Systems: "
        + ", ".join(
            f"**{n}** (`{s['file']}`, {s['n_samples']} samples)"
            for n, s in metrics["systems"].items()
        ),
        "",
    ]
    for i, (title, note, header, rows) in enumerate(tables(metrics)):
        if i == PLOTS_AFTER_TABLE:
            for key, caption in PLOTS:
                if key in plot_files:
                    lines += [f"## {caption}", "", f"![{caption}]({plot_files[key]})", ""]
        lines += [f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += [_md_table(header, rows), ""]
    lines += _worst_md(metrics)
    lines += ["## Metric definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in metrics["metric_definitions"].items()]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:"WenQuanYi Zen Hei","Noto Sans CJK SC",-apple-system,"Segoe UI",sans-serif;
margin:24px auto;max-width:1200px;color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{font-family:ui-monospace,monospace;white-space:nowrap}
td.def{color:#666;font-size:12px;max-width:420px}.note{color:#555;font-size:13px}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.o-wrong{color:#e65100}.o-miss{color:#616161}.o-hallucinated{color:#c62828}
details{margin:.4em 0}code{background:#f6f8fa;padding:1px 4px}
"""


def _html_plots(images: dict[str, bytes]) -> list[str]:
    out = []
    for key, caption in PLOTS:
        if key in images:
            b64 = base64.b64encode(images[key]).decode("ascii")
            out.append(
                f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' "
                f"src='data:image/png;base64,{b64}'>"
            )
    return out


def render_html(metrics: dict[str, Any], images: dict[str, bytes]) -> str:
    e = html.escape
    st = metrics["settings"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Extraction benchmark report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Extraction benchmark report</h1>",
        f"<p class='note'>Gold: <code>{e(str(metrics.get('gold')))}</code> "
        f"({metrics['n_gold_docs']} documents), schema <code>{e(str(metrics.get('schema')))}</code>, "
        f"bootstrap {st['bootstrap_resamples']} resamples (seed {st['seed']}), ANLS τ "
        f"{st['anls_tau']}. Generated {e(metrics['generated_at'])}. All numbers are read from "
        "<code>metrics.json</code>.</p><ul>",
    ]
    for n, s in metrics["systems"].items():
        parts.append(
            f"<li><b>{e(n)}</b>: <code>{e(s['file'])}</code>, {s['n_samples']} samples</li>"
        )
    parts.append("</ul>")
    for i, (title, note, header, rows) in enumerate(tables(metrics)):
        if i == PLOTS_AFTER_TABLE:
            parts += _html_plots(images)
        parts.append(f"<h2>{e(title)}</h2>")
        if note:
            parts.append(f"<p class='note'>{e(note)}</p>")
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for r in rows:
            cells = []
            for j, c in enumerate(r):
                cls = "def" if header[j] == "definition" else ("num" if j > 0 else "")
                cells.append(f"<td class='{cls}'>{e(str(c))}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Worst samples</h2>")
    for n, s in metrics["systems"].items():
        parts.append(f"<h3>{e(n)}</h3>")
        if not s["worst"]:
            parts.append("<p>No errors.</p>")
        for w in s["worst"]:
            parts.append(
                f"<details><summary><b>{e(w['id'])}</b> <code>{e(w['prompt'][:80])}</code> "
                f"parse: {e(w['method'])}, F1 {w['doc_f1']:.3f}, nTED acc "
                f"{w['donut_nted_accuracy']:.3f}</summary><table><tr><th>field</th>"
                "<th>outcome</th><th>gold</th><th>prediction</th></tr>"
            )
            for d in w["diffs"][:50]:
                parts.append(
                    f"<tr><td>{e(d['field'])}</td><td class='o-{e(d['outcome'])}'>"
                    f"{e(d['outcome'].upper())}</td><td>{e(_short(d['gold'], 80))}</td>"
                    f"<td>{e(_short(d['pred'], 80))}</td></tr>"
                )
            parts.append("</table></details>")
    parts.append("<h2>Metric definitions</h2><table>")
    for k, v in metrics["metric_definitions"].items():
        parts.append(f"<tr><td><b>{e(k)}</b></td><td class='def'>{e(v)}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(
    metrics: dict[str, Any],
    out_dir: Path,
    latencies: dict[str, dict[str, list[float]]] | None = None,
) -> list[Path]:
    """Write plots/*.png, report.md and report.html into ``out_dir``; return their paths."""
    images: dict[str, bytes] = {}
    if metrics["systems"]:
        images["field_f1"] = plot_field_f1(metrics)
        images["error_types"] = plot_error_types(metrics)
        lat = plot_latency(latencies or {})
        if lat is not None:
            images["latency"] = lat
    written: list[Path] = []
    plot_files: dict[str, str] = {}
    for key, data in images.items():
        p = out_dir / "plots" / f"{key}.png"
        atomic_write_bytes(p, data)
        plot_files[key] = f"plots/{key}.png"
        written.append(p)
    md = out_dir / "report.md"
    atomic_write_text(md, render_markdown(metrics, plot_files))
    page = out_dir / "report.html"
    atomic_write_text(page, render_html(metrics, images))
    return [*written, md, page]
