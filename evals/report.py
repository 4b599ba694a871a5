"""Run results on disk, the diff against the previous run of the same set, and the readable reports.

Layout: `<root>/<set slug>/<run id>/result.json`, `report.md`, `report.html` and the plots as SVG files
(the HTML inlines them, so it is one self-contained file). Plots are drawn here as plain SVG: score
distributions, per-question outcomes and latency histograms; no plotting library is needed.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.questions import Threshold

# Metrics where a larger value is better; for the rest (rates of bad things, latency) smaller is better.
HIGHER_IS_BETTER_PREFIXES = (
    "recall_at_",
    "mrr_",
    "ndcg_",
    "chunk_recall",
    "groundedness",
    "grounded_rate",
    "citation_",
    "answer_fact_recall",
    "abstention_accuracy",
    "question_pass_rate",
)
NOISE_REL = 0.2
HEADLINE = (
    "recall_at_5",
    "mrr_at_10",
    "ndcg_at_10",
    "empty_result_rate",
    "groundedness",
    "citation_accuracy",
    "answer_fact_recall",
    "abstention_accuracy",
    "unauthorized_document_rate",
    "unauthorized_retrieval_rate",
    "error_rate",
    "question_pass_rate",
)


def default_root() -> Path:
    """`$XDG_STATE_HOME/ragstream/evals` (results live outside the checkout)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ragstream" / "evals"


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "set"


def previous_result(root: Path, set_name: str, before_run_id: str | None = None) -> dict[str, Any] | None:
    """The latest stored result of `set_name` (run ids sort by time), optionally older than a run id."""
    folder = root / _slug(set_name)
    if not folder.is_dir():
        return None
    runs = sorted(p.name for p in folder.iterdir() if (p / "result.json").is_file())
    if before_run_id is not None:
        runs = [r for r in runs if r < before_run_id]
    for run in reversed(runs):
        try:
            return json.loads((folder / run / "result.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
    return None


def higher_is_better(metric: str) -> bool:
    return metric.startswith(HIGHER_IS_BETTER_PREFIXES)


def diff_results(prev: Mapping[str, Any], cur: Mapping[str, Any], tol: float = 1e-9) -> dict[str, Any]:
    """Metric deltas (with better/worse), questions whose pass/fail changed, gate status change.
    Latency and token counts change only beyond `NOISE_REL` of the previous value (run-to-run noise)."""
    pm, cm = prev.get("metrics", {}), cur.get("metrics", {})
    metrics: dict[str, dict[str, Any]] = {}
    for name in sorted(set(pm) | set(cm)):
        a, b = pm.get(name), cm.get(name)
        entry: dict[str, Any] = {"previous": a, "current": b}
        if a is not None and b is not None:
            delta = float(b) - float(a)
            entry["delta"] = delta
            noisy = name.startswith("latency_") or "_tokens_" in name
            if abs(delta) <= tol or (noisy and abs(delta) <= NOISE_REL * abs(float(a))):
                entry["change"] = "same"
            else:
                better = delta > 0 if higher_is_better(name) else delta < 0
                entry["change"] = "better" if better else "worse"
        else:
            entry["change"] = "added" if a is None else "removed"
        metrics[name] = entry
    pq = {q["id"]: q for q in prev.get("questions", [])}
    cq = {q["id"]: q for q in cur.get("questions", [])}
    fixed = sorted(i for i in cq if i in pq and cq[i]["ok"] and not pq[i]["ok"])
    broken = sorted(i for i in cq if i in pq and not cq[i]["ok"] and pq[i]["ok"])
    return {
        "previous_run_id": prev.get("run_id"),
        "previous_generation": prev.get("generation"),
        "previous_passed": prev.get("passed"),
        "metrics": metrics,
        "fixed": fixed,
        "broken": broken,
        "added_questions": sorted(set(cq) - set(pq)),
        "removed_questions": sorted(set(pq) - set(cq)),
        "worse": sorted(n for n, e in metrics.items() if e["change"] == "worse"),
        "better": sorted(n for n, e in metrics.items() if e["change"] == "better"),
    }


# ---------------------------------------------------------------------------------------------- SVG
def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def svg_histogram(
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    bins: int = 10,
    lo: float | None = None,
    hi: float | None = None,
    width: int = 420,
    height: int = 220,
    color: str = "#4a78c2",
) -> str:
    """A histogram as a standalone SVG string (empty data draws an empty frame that says so)."""
    pad_l, pad_r, pad_t, pad_b = 40, 12, 28, 38
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f"{_esc(title)}</text>",
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        parts.append(f'<text x="{width / 2}" y="{pad_t + h / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    a = min(vals) if lo is None else lo
    b = max(vals) if hi is None else hi
    if b <= a:
        b = a + 1.0
    counts = [0] * bins
    for v in vals:
        i = min(bins - 1, max(0, int((v - a) / (b - a) * bins)))
        counts[i] += 1
    top = max(counts)
    bw = w / bins
    for i, c in enumerate(counts):
        bh = h * c / top if top else 0
        x = pad_l + i * bw
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{pad_t + h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
            f'fill="{color}"><title>{a + i * (b - a) / bins:.3g}-{a + (i + 1) * (b - a) / bins:.3g}: '
            f"{c}</title></rect>"
        )
        if c:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{pad_t + h - bh - 3:.1f}" text-anchor="middle">{c}</text>'
            )
    for frac in (0.0, 0.5, 1.0):
        x = pad_l + w * frac
        parts.append(
            f'<text x="{x:.1f}" y="{pad_t + h + 14}" text-anchor="middle">{a + (b - a) * frac:.3g}</text>'
        )
    parts.append(
        f'<text x="{pad_l + w / 2}" y="{height - 6}" text-anchor="middle" fill="#555">{_esc(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{pad_t + h / 2}" transform="rotate(-90 12 {pad_t + h / 2})" '
        f'text-anchor="middle" fill="#555">questions</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def svg_outcomes(questions: Sequence[Mapping[str, Any]], *, width: int = 640) -> str:
    """One row per question: pass/fail, retrieval hit, abstention, authorization, with the question id."""
    cols = [("ok", "pass"), ("hit", "hit"), ("abstention_correct", "abstain"), ("unauthorized", "authz")]
    row_h, head = 18, 40
    height = head + row_h * max(1, len(questions)) + 10
    x0 = 230
    cw = (width - x0 - 10) / len(cols)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<text x="8" y="16" font-size="13" font-weight="bold">Per-question outcomes</text>',
    ]
    for j, (_, label) in enumerate(cols):
        parts.append(f'<text x="{x0 + j * cw + cw / 2:.1f}" y="34" text-anchor="middle">{label}</text>')
    for i, q in enumerate(questions):
        y = head + i * row_h
        parts.append(f'<text x="8" y="{y + 13}">{_esc(str(q["id"])[:36])}</text>')
        for j, (key, _) in enumerate(cols):
            val = q.get(key)
            if key == "unauthorized" and val is not None:
                val = not val
            color = "#dddddd" if val is None else ("#3a9d5d" if val else "#d04a3a")
            text = "-" if val is None else ("✓" if val else "✗")
            x = x0 + j * cw
            parts.append(
                f'<rect x="{x + 2:.1f}" y="{y + 1}" width="{cw - 4:.1f}" height="{row_h - 2}" '
                f'fill="{color}" rx="3"/>'
                f'<text x="{x + cw / 2:.1f}" y="{y + 13}" text-anchor="middle" fill="#fff">{text}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def plots(result: Mapping[str, Any]) -> dict[str, str]:
    """name -> SVG for the report."""
    qs = result.get("questions", [])
    judged = [q for q in qs if q.get("judged")]
    out = {
        "ndcg": svg_histogram(
            [q["ndcg_at_10"] for q in judged], title="nDCG@10 per question", xlabel="nDCG@10", lo=0, hi=1
        ),
        "groundedness": svg_histogram(
            [q["groundedness"] for q in qs if "groundedness" in q],
            title="Groundedness per answer",
            xlabel="share of statements supported",
            lo=0,
            hi=1,
            color="#7a5cc2",
        ),
        "outcomes": svg_outcomes(qs),
    }
    classes = sorted({q["request_class"] for q in qs})
    for cls in classes:
        lat = [q["latency_ms"] for q in qs if q["request_class"] == cls and not q.get("error")]
        out[f"latency_{cls}"] = svg_histogram(
            lat, title=f"End-to-end latency ({cls})", xlabel="ms", bins=12, lo=0, color="#c27a4a"
        )
    return out


# ------------------------------------------------------------------------------------------- reports
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _metric_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    metrics = result.get("metrics", {})
    th = result.get("thresholds", {})
    failed = {f.split(" ", 1)[0].rstrip(":") for f in result.get("failures", [])}
    names = [n for n in HEADLINE if n in metrics] + sorted(
        n for n in metrics if n not in HEADLINE and not n.startswith("latency_")
    )
    names += [n for n in th if n not in names]
    rows = []
    for n in names:
        t = th.get(n)
        bound = _describe(t) if t else ""
        status = ("FAIL" if n in failed else "ok") if t else ""
        rows.append((n, _fmt(metrics.get(n)), bound, status))
    return rows


def _describe(t: Mapping[str, float]) -> str:
    return Threshold.model_validate(dict(t)).describe()


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1f}"


def _latency_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    m = result.get("metrics", {})
    keys = sorted({k.rsplit("_ms_p", 1)[0] for k in m if k.startswith("latency_")})
    return [
        (
            k.removeprefix("latency_"),
            _ms(m.get(f"{k}_ms_p50")),
            _ms(m.get(f"{k}_ms_p95")),
            _ms(m.get(f"{k}_ms_p99")),
        )
        for k in keys
    ]


def markdown_report(result: Mapping[str, Any], plot_files: Mapping[str, str] | None = None) -> str:
    """The run as Markdown: verdict, failures, metrics vs thresholds, latency, diff, questions."""
    verdict = "PASSED" if result.get("passed") else "FAILED"
    lines = [
        f"# Evaluation: {result.get('set')} — {verdict}",
        "",
        f"- run `{result.get('run_id')}`, generation `{result.get('generation') or 'live'}`, "
        f"started {result.get('started_at')}",
        f"- set file `{result.get('set_path')}`",
    ]
    cfg = result.get("config") or {}
    if cfg:
        lines.append("- config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    lines.append("")
    if result.get("failures"):
        lines += ["## Failures", ""] + [f"- {f}" for f in result["failures"]] + [""]
    lines += ["## Metrics (retrieval first, then answers, then authorization)", ""]
    lines += ["| metric | value | threshold | status |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _metric_rows(result)]
    lat = _latency_rows(result)
    if lat:
        lines += ["", "## Latency (ms)", "", "| stage | p50 | p95 | p99 |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in lat]
    lines += ["", "## Diff against the previous run", ""]
    lines += _diff_md(result.get("diff"))
    if plot_files:
        lines += ["", "## Plots", ""] + [f"![{n}]({f})" for n, f in plot_files.items()]
    lines += [
        "",
        "## Questions",
        "",
        "| id | ok | hit | nDCG@10 | abstained | citations | exposures | answer |",
    ]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for q in result.get("questions", []):
        ans = (q.get("error") or q.get("answer") or "").replace("|", "\\|").replace("\n", " ")[:120]
        lines.append(
            f"| {q['id']} | {'✓' if q['ok'] else '✗'} | {_fmt(q.get('hit'))} | {_fmt(q.get('ndcg_at_10'))} | "
            f"{q.get('abstained')} | {len(q.get('citations', []))} | "
            f"{', '.join(f'{k}: {v}' for k, v in q.get('exposures', {}).items()) or '-'} | {ans} |"
        )
    return "\n".join(lines) + "\n"


def _diff_md(diff: Mapping[str, Any] | None) -> list[str]:
    if not diff:
        return ["No previous run of this set."]
    out = [
        f"Previous run `{diff.get('previous_run_id')}` "
        f"(generation `{diff.get('previous_generation') or 'live'}`, "
        f"{'passed' if diff.get('previous_passed') else 'failed'}).",
        "",
    ]
    changed = [
        (n, e)
        for n, e in diff["metrics"].items()
        if e["change"] in ("better", "worse") and not n.startswith("latency_")
    ]
    if changed:
        out += ["| metric | previous | current | delta | |", "|---|---|---|---|---|"]
        for n, e in changed:
            out.append(
                f"| {n} | {_fmt(e['previous'])} | {_fmt(e['current'])} | {e['delta']:+.4f} | {e['change']} |"
            )
    else:
        out.append("No quality metric changed.")
    if diff.get("broken"):
        out += ["", "Questions now failing: " + ", ".join(diff["broken"])]
    if diff.get("fixed"):
        out += ["", "Questions now passing: " + ", ".join(diff["fixed"])]
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}
h1 .pass{color:#2d8a4e}h1 .fail{color:#c0392b}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ddd;padding:4px 8px;font-size:13px}
th{background:#f3f3f3;text-align:left}tr.fail td{background:#fdecea}td.num{text-align:right}
.plots{display:flex;flex-wrap:wrap;gap:16px}.better{color:#2d8a4e}.worse{color:#c0392b}
code{background:#f3f3f3;padding:1px 4px}
"""


def html_report(result: Mapping[str, Any], svgs: Mapping[str, str]) -> str:
    """One self-contained HTML page with the plots inlined."""
    passed = bool(result.get("passed"))
    e = _esc
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Evaluation {e(result.get('set'))}</title><style>{_CSS}</style></head><body>",
        f"<h1>Evaluation: {e(result.get('set'))} — <span class='{'pass' if passed else 'fail'}'>"
        f"{'PASSED' if passed else 'FAILED'}</span></h1>",
        f"<p>run <code>{e(result.get('run_id'))}</code>, generation "
        f"<code>{e(result.get('generation') or 'live')}</code>, started {e(result.get('started_at'))}</p>",
    ]
    cfg = result.get("config") or {}
    if cfg:
        parts.append("<p>" + ", ".join(f"{e(k)}=<code>{e(v)}</code>" for k, v in cfg.items()) + "</p>")
    if result.get("failures"):
        parts.append(
            "<h2>Failures</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in result["failures"]) + "</ul>"
        )
    parts.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>threshold</th><th>status</th></tr>"
    )
    for a, b, c, d in _metric_rows(result):
        parts.append(
            f"<tr class='{'fail' if d == 'FAIL' else ''}'><td>{e(a)}</td><td class='num'>{e(b)}</td>"
            f"<td>{e(c)}</td><td>{e(d)}</td></tr>"
        )
    parts.append("</table>")
    lat = _latency_rows(result)
    if lat:
        parts.append(
            "<h2>Latency (ms)</h2><table><tr><th>stage</th><th>p50</th><th>p95</th><th>p99</th></tr>"
        )
        parts += [
            f"<tr><td>{e(a)}</td><td class='num'>{e(b)}</td><td class='num'>{e(c)}</td>"
            f"<td class='num'>{e(d)}</td></tr>"
            for a, b, c, d in lat
        ]
        parts.append("</table>")
    parts.append("<h2>Plots</h2><div class='plots'>" + "".join(svgs.values()) + "</div>")
    parts.append("<h2>Diff against the previous run</h2>")
    diff = result.get("diff")
    if not diff:
        parts.append("<p>No previous run of this set.</p>")
    else:
        parts.append(
            f"<p>previous run <code>{e(diff.get('previous_run_id'))}</code> "
            f"({'passed' if diff.get('previous_passed') else 'failed'})</p>"
            "<table><tr><th>metric</th><th>previous</th><th>current</th><th>delta</th></tr>"
        )
        for n, d in diff["metrics"].items():
            if d["change"] not in ("better", "worse") or n.startswith("latency_"):
                continue
            parts.append(
                f"<tr><td>{e(n)}</td><td class='num'>{_fmt(d['previous'])}</td><td class='num'>"
                f"{_fmt(d['current'])}</td><td class='{d['change']}'>{d['delta']:+.4f}</td></tr>"
            )
        parts.append("</table>")
        for key, label in (("broken", "now failing"), ("fixed", "now passing")):
            if diff.get(key):
                parts.append(f"<p>Questions {label}: {e(', '.join(diff[key]))}</p>")
    parts.append(
        "<h2>Questions</h2><table><tr><th>id</th><th>ok</th><th>question</th><th>retrieved</th>"
        "<th>answer</th><th>citations</th><th>exposures</th><th>ms</th></tr>"
    )
    for q in result.get("questions", []):
        cites = ", ".join(f"[{c['id']}] {c['document_id']}" for c in q.get("citations", []))
        exp = "; ".join(f"{k}: {', '.join(v)}" for k, v in q.get("exposures", {}).items())
        parts.append(
            f"<tr class='{'' if q['ok'] else 'fail'}'><td>{e(q['id'])}</td><td>{'✓' if q['ok'] else '✗'}</td>"
            f"<td>{e(q['question'])}</td><td>{e(', '.join(q.get('retrieved_docs', [])[:5]))}</td>"
            f"<td>{e(q.get('error') or q.get('answer') or '')}</td><td>{e(cites)}</td><td>{e(exp)}</td>"
            f"<td class='num'>{q.get('latency_ms', 0):.0f}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "".join(parts)


def write_run(
    result: dict[str, Any], root: Path | None = None, out_dir: Path | None = None
) -> dict[str, Path]:
    """Attach the diff against the previous stored run, then write result.json, the SVG plots and both
    reports into `out_dir` (default `<root>/<set>/<run id>/`). Returns the written paths."""
    root = root or default_root()
    if result.get("diff") is None:
        prev = previous_result(root, result["set"], result["run_id"])
        if prev is not None:
            result["diff"] = diff_results(prev, result)
    folder = out_dir or root / _slug(result["set"]) / result["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    svgs = plots(result)
    files = {}
    for name, svg in svgs.items():
        p = folder / f"{name}.svg"
        p.write_text(svg, encoding="utf-8")
        files[name] = p.name
    paths["result"] = folder / "result.json"
    paths["result"].write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    paths["markdown"] = folder / "report.md"
    paths["markdown"].write_text(markdown_report(result, files), encoding="utf-8")
    paths["html"] = folder / "report.html"
    paths["html"].write_text(html_report(result, svgs), encoding="utf-8")
    return paths
