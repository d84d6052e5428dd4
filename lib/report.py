"""Stage 05: the paper's tables and figure regenerated beside ours, the claim audit, contamination.

`run(cfg)` reads, top to bottom: the paper's published numbers (`report.paper_results`), ToolBench
README's numbers (`report.toolbench_results`), the paper's other stated figures
(`report.paper_claims`), our pass_rate.csv files (the profile's own plus `report.runs`), and whatever
upstream outputs exist (data_stats.json, train_summary.json, the model's safetensors). It writes into
outputs/<profile>/figures/: Table 1 and Table 2 (CSV + Markdown), Figure 1 (radar, PNG + SVG), the
paper-vs-reproduced chart (CSV, PNG, SVG), audit.csv/.md, contamination.csv/.md and index.json.

Printed numbers are kept as the strings the paper printed, so every consistency rule can be stated
as "equal after rounding to the printed precision": |recomputed - printed| <= half a unit of the
printed last digit. Arithmetic on printed numbers uses Decimal, so 77.545 vs 77.55 is decided exactly.
"""
from __future__ import annotations

import csv
import json
import math
import re
import struct
import textwrap
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from lib import config

GROUPS = config.GROUPS
SVG_SALT = "toolsft-repro"
OFFLINE_NOTE = "offline judge, not ToolEval"
PAPER_AGGREGATION = "majority"          # the paper says majority voting over >= 4 assessments


def is_majority(aggregation: str) -> bool:
    """'majority' or stage 04's 'majority_vote': the aggregation the paper comparison uses."""
    return aggregation.startswith(PAPER_AGGREGATION)


def is_offline(judge: str) -> bool:
    """'offline' or 'offline judge': the rule-based judge, not ToolEval."""
    return judge.startswith("offline")


# ----------------------------------------------------------------------------- small helpers
def group_label(group: str) -> str:
    """File names use G1_instruction; tables print G1-instruction."""
    return {"overall": "Overall", "average": "Avg (printed)"}.get(group, group.replace("_", "-"))


def _decimals(printed: str) -> int:
    return len(printed.split(".")[1]) if "." in printed else 0


def half_unit(printed: str) -> Decimal:
    """Half a unit of the last printed digit: '77.55' -> 0.005, '77.6' -> 0.05, '26' -> 0.5."""
    return Decimal(5).scaleb(-_decimals(printed) - 1)


def matches_printed(value: Decimal, printed: str) -> bool:
    return abs(Decimal(value) - Decimal(printed)) <= half_unit(printed)


def round_like(value: Decimal, printed: str) -> Decimal:
    """value rounded half-up to the precision `printed` shows."""
    return Decimal(value).quantize(Decimal(1).scaleb(-_decimals(printed)), rounding=ROUND_HALF_UP)


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        value = float(value)
    return f"{value:.{digits}f}"


def wilson(passed: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval for passed/n (stage 04's), in percent; 0-100 with no queries."""
    from lib import judge

    if n == 0:
        return (0.0, 100.0)
    low, high = judge.wilson(passed, n)
    return (100 * low, 100 * high)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# ----------------------------------------------------------------------------- row sets
# A "series" is one row of Table 1 / Table 2: a dict with label, kind (paper | readme | run), method,
# params_b, source, paper_label, and per group: printed (str), value (float), n, ci (lo, hi).

def reference_series(path: Path, kind: str) -> list[dict]:
    """Series from a tidy long file (label,model,method,params_b,group,pass_rate,n,source,paper_label)."""
    series: dict[str, dict] = {}
    for row in _read_csv(path):
        s = series.setdefault(row["label"], {
            "label": row["label"], "kind": kind, "model": row["model"], "method": row["method"],
            "params_b": row["params_b"], "source": row["source"], "paper_label": row["paper_label"],
            "printed": {}, "value": {}, "n": {}, "ci": {}, "aggregation": "", "judge": ""})
        s["printed"][row["group"]] = row["pass_rate"]
        s["value"][row["group"]] = float(row["pass_rate"])
        s["n"][row["group"]] = int(row["n"]) if row["n"] else None
    return list(series.values())


def read_pass_rate(path: Path, label: str) -> list[dict]:
    """Series from a stage-04 pass_rate.csv: one per method and aggregation, majority first."""
    rows = _read_csv(path)
    aggregations = sorted({r["aggregation"] for r in rows}, key=lambda a: (not is_majority(a), a))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    series = []
    for method in methods:
        for i, agg in enumerate(aggregations):
            picked = [r for r in rows if r["method"] == method and r["aggregation"] == agg]
            if picked:
                series.append(_run_series(picked, label, method, agg, primary=(i == 0), path=path,
                                          several_methods=len(methods) > 1))
    return series


def _run_series(rows, label, method, agg, primary, path, several_methods) -> dict:
    name = f"{label} [{method}]" if several_methods else label
    s = {"label": name if primary else f"{name}, {agg}", "kind": "run", "model": label,
         "method": method, "params_b": "", "source": str(path), "paper_label": "",
         "aggregation": agg, "judge": ",".join(sorted({r["judge"] for r in rows})),
         "primary": primary, "printed": {}, "value": {}, "n": {}, "ci": {}}
    for r in rows:
        n, passed = int(r["n"]), float(r["passed"])        # a mean score's "passed" is fractional
        s["value"][r["group"]] = float(r["pass_rate"])
        s["printed"][r["group"]] = r["pass_rate"]
        s["n"][r["group"]] = n
        ci = (r.get("ci_low"), r.get("ci_high"))
        # A missing interval is computed only for majority votes (a pass count); a mean of
        # 1 / 0.5 / 0 scores has no Wilson interval, so none is shown.
        s["ci"][r["group"]] = (tuple(map(float, ci)) if all(ci) else
                               wilson(passed, n) if is_majority(agg) else (None, None))
    return s


def run_series(cfg: dict) -> list[dict]:
    """Our runs: the profile's fine-tuned model (its pass_rate.csv, when stage 04 has run), the same
    model untrained (lib/untrained.py, when run), then report.runs. The fine-tuned row comes first:
    the tables' "Fine-tuned minus row" column is measured from it."""
    from lib import untrained

    out = config.path(cfg, cfg["output_dir"])
    wanted = [{"label": f"Fine-tuned ({cfg['profile']})", "path": out / "pass_rate.csv"},
              {"label": f"Untrained ({cfg['profile']})", "path": untrained.pass_rate_path(cfg),
               "model": out / "model"}]     # the same architecture, so the same parameter count
    wanted += [{"label": r["label"], "path": config.path(cfg, r["path"])}
               for r in (cfg["report"].get("runs") or [])]
    series = []
    for run in wanted:
        if Path(run["path"]).exists():
            found = read_pass_rate(Path(run["path"]), run["label"])
            params = count_params(run.get("model") or Path(run["path"]).parent / "model")
            for s in found:
                s["params_b"] = f"{params / 1e9:.3g}" if params else ""
            series += found
    return series


def count_params(model_dir: Path) -> int | None:
    """Parameters of a saved model, summed from its safetensors headers (no weights loaded)."""
    files = sorted(model_dir.glob("*.safetensors")) if model_dir.is_dir() else []
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total or None


def table_order(paper: list[dict], readme: list[dict], runs: list[dict]) -> list[dict]:
    """Paper's Ours, then our runs beside it, then each paper baseline followed by the README's
    numbers for the same baseline, then the README's other rows."""
    rows = paper[:1] + runs
    for p in paper[1:]:
        rows += [p] + [r for r in readme if r["paper_label"] == p["label"]]
    return rows + [r for r in readme if not r["paper_label"]]


def weighted_mean(s: dict) -> float | None:
    """Query-weighted mean over the six groups (None if a group or its size is missing)."""
    if not all(g in s["value"] and s["n"].get(g) for g in GROUPS):
        return None
    return sum(s["value"][g] * s["n"][g] for g in GROUPS) / sum(s["n"][g] for g in GROUPS)


def covered_groups(s: dict) -> list[str]:
    """The test groups a series has figures for (those its overall pools), in GROUPS order."""
    found = [g for g in s["value"] if g not in ("overall", "average")]
    return [g for g in GROUPS if g in found] + [g for g in found if g not in GROUPS]


def overall_note(s: dict) -> str:
    """'' when the series' overall pools all six groups, else which groups it pools (stage 04's words)."""
    from lib import judge

    return judge.overall_note(covered_groups(s))


def overall(s: dict) -> tuple[float | None, str]:
    """The Table 1 figure of a series and what it is."""
    if "overall" in s["value"]:
        what = {"paper": "Table 1 (query-weighted)", "run": "overall row of pass_rate.csv"}
        note = f" ({overall_note(s)})" if overall_note(s) else ""
        return s["value"]["overall"], what.get(s["kind"], "overall") + note
    if "average" in s["value"]:
        return s["value"]["average"], "README Average (unweighted mean of six groups)"
    return weighted_mean(s), "query-weighted mean of the groups"


# ----------------------------------------------------------------------------- captions
def captions(cfg: dict, runs: list[dict]) -> list[str]:
    """Lines every table and figure carries: stamp, judge, aggregation."""
    lines = [cfg["stamp"]] if cfg.get("stamp") else []
    judges = {j for s in runs for j in s["judge"].split(",") if j}
    if any(map(is_offline, judges)):
        lines.append(f"Rows of our runs: {OFFLINE_NOTE} (rule-based).")
    elif judges:
        lines.append(f"Rows of our runs judged by: {', '.join(sorted(judges))}.")
    for s in runs:
        lines.append(f"{s['label']}: {s['aggregation']} aggregation, judge {s['judge']}.")
        if overall_note(s):
            lines.append(f"{s['label']}: {overall_note(s)}.")
    if not runs:
        lines.append("No reproduced run yet (no pass_rate.csv): published numbers only.")
    lines.append("Published rows: the paper's Table 1/2 (ChatGPT judge, ToolEval) and ToolBench README.")
    return lines


def _markdown(title: str, caption: list[str], header: list[str], rows: list[list[str]],
              stamp: str | None) -> str:
    out = [f"**{stamp}**", ""] if stamp else []
    out += [f"### {title}", "", *[f"_{line}_  " for line in caption], ""]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _cell(s: dict, group: str) -> str:
    if group not in s["value"]:
        return ""
    lo, hi = s["ci"].get(group, (None, None))
    if s["kind"] == "run" and lo is not None:
        return f"{s['value'][group]:.1f} [{lo:.1f}, {hi:.1f}]"
    if s["kind"] == "run":
        return f"{s['value'][group]:.1f}"
    return s["printed"][group]


# ----------------------------------------------------------------------------- tables
TABLE1_COLUMNS = ["row", "kind", "method", "params_b", "pass_rate", "ci_low", "ci_high", "figure",
                  "gap_to_paper_ours_pts", "gap_to_reproduced_pts", "aggregation", "judge", "source",
                  "covers"]


def table1(rows: list[dict], runs: list[dict]) -> list[dict]:
    paper_ours = overall(rows[0])[0]
    ours = overall(runs[0])[0] if runs else None
    table = []
    for s in rows:
        value, what = overall(s)
        ci = s["ci"].get("overall", (None, None))
        table.append({
            "row": s["label"], "kind": s["kind"], "method": s["method"], "params_b": s["params_b"],
            "pass_rate": fmt(value), "ci_low": fmt(ci[0]), "ci_high": fmt(ci[1]), "figure": what,
            "gap_to_paper_ours_pts": fmt(paper_ours - value) if value is not None else "",
            "gap_to_reproduced_pts": fmt(ours - value) if ours is not None and value is not None else "",
            "aggregation": s["aggregation"], "judge": s["judge"], "source": s["source"],
            "covers": "+".join(covered_groups(s))})
    return table


def table1_markdown(table: list[dict], rows: list[dict], caption: list[str], stamp) -> str:
    header = ["Model", "Params (B)", "Pass rate %", "95% CI", "Ours (paper) minus row, pts",
              "Fine-tuned minus row, pts", "Figure"]
    body = []
    for t, s in zip(table, rows):
        shown = s["printed"].get("overall") or s["printed"].get("average") or t["pass_rate"]
        ci = f"[{t['ci_low']}, {t['ci_high']}]" if t["ci_low"] else ""
        body.append([t["row"], t["params_b"], shown, ci, t["gap_to_paper_ours_pts"],
                     t["gap_to_reproduced_pts"], t["figure"]])
    return _markdown("Table 1 (regenerated): overall pass rate", caption, header, body, stamp)


def table2(rows: list[dict]) -> list[dict]:
    table = []
    for s in rows:
        row = {"row": s["label"], "kind": s["kind"], "method": s["method"], "source": s["source"]}
        row.update({g: fmt(s["value"].get(g), 1) if g in s["value"] else "" for g in GROUPS})
        row["weighted_mean"] = fmt(weighted_mean(s))
        row["printed_avg"] = s["printed"].get("average", "")
        table.append(row)
    return table


def table2_markdown(rows: list[dict], caption: list[str], stamp) -> str:
    header = ["Model", *map(group_label, GROUPS), "Query-weighted mean", "Avg (printed)"]
    body = [[s["label"], *[_cell(s, g) for g in GROUPS], fmt(weighted_mean(s)),
             s["printed"].get("average", "")] for s in rows]
    return _markdown("Table 2 (regenerated): pass rate % by test group", caption, header, body, stamp)


# ----------------------------------------------------------------------------- figures
def stamp_figure(fig, stamp: str | None, size: float = 26) -> None:
    """The profile's stamp across a figure and in a red banner at its top right (nothing if None).
    Every stage's plots use it, so a smoke figure can never pass for the paper's."""
    if stamp:
        fig.text(0.5, 0.55, stamp, fontsize=size, color="red", alpha=0.15, rotation=25,
                 ha="center", va="center", weight="bold")
        fig.text(0.99, 0.985, stamp, fontsize=10, color="white", ha="right", va="top", weight="bold",
                 bbox={"facecolor": "red", "edgecolor": "none", "pad": 3})


def _stamp_and_caption(fig: Figure, caption: list[str], stamp: str | None) -> None:
    text = "\n".join(textwrap.fill(line, 150) for line in caption)
    fig.text(0.01, 0.01, text, fontsize=7.5, va="bottom", ha="left", color="#333333")
    stamp_figure(fig, stamp)


def _save(fig: Figure, folder: Path, stem: str) -> tuple[Path, Path]:
    png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
    # Text stays text in the SVG (searchable stamp and captions); the salt fixes its ids.
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "none"}):
        fig.savefig(png, dpi=110)
        fig.savefig(svg, metadata={"Date": None})
    return png, svg


def radar(series: list[dict], caption: list[str], stamp, folder: Path) -> tuple[Path, Path]:
    """Figure 1: the paper's five models and our runs over the six groups."""
    fig = Figure(figsize=(10, 7.5))
    ax = fig.add_axes([0.07, 0.17, 0.52, 0.7], projection="polar")
    ax.set_theta_offset(math.pi / 2)
    ax.set_theta_direction(-1)
    ax.set_rlabel_position(360 / len(GROUPS) / 2)
    angles = [2 * math.pi * i / len(GROUPS) for i in range(len(GROUPS))] + [0.0]
    for i, s in enumerate(series):
        values = [s["value"].get(g, float("nan")) for g in GROUPS]
        run = s["kind"] == "run"
        ax.plot(angles, values + values[:1], color=f"C{i}", lw=2.6 if run else 1.6,
                ls="--" if run else "-", marker="o", ms=4, label=_legend(s))
        ax.fill(angles, values + values[:1], color=f"C{i}", alpha=0.05)
    ax.set_xticks(angles[:-1], [group_label(g) for g in GROUPS], fontsize=9)
    ax.set_ylim(0, 100)
    ax.set_yticks([20, 40, 60, 80, 100], ["20", "40", "60", "80", "100"], fontsize=7)
    ax.set_title("Figure 1 (regenerated): pass rate % by test group", pad=28, fontsize=12)
    fig.legend(*ax.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(0.64, 0.52),
               fontsize=8.5, frameon=False)
    _stamp_and_caption(fig, caption, stamp)
    return _save(fig, folder, "radar")


def _legend(s: dict) -> str:
    if s["kind"] == "run":
        return f"{s['label']} ({s['aggregation']}, judge {s['judge']})"
    return f"{s['label']} (paper)" if s["kind"] == "paper" else s["label"]


def paper_vs_reproduced_rows(paper: list[dict], runs: list[dict]) -> list[dict]:
    rows = []
    for g in GROUPS + ["overall"]:
        for s in paper + runs:
            if g in s["value"]:
                lo, hi = s["ci"].get(g, (None, None))
                rows.append({"group": g, "series": s["label"], "kind": s["kind"],
                             "pass_rate": fmt(s["value"][g]), "ci_low": fmt(lo), "ci_high": fmt(hi),
                             "n": s["n"].get(g) or "", "aggregation": s["aggregation"],
                             "judge": s["judge"],
                             "covers": "+".join(covered_groups(s)) if g == "overall" else g})
    return rows


def bars(paper: list[dict], runs: list[dict], caption, stamp, folder: Path) -> tuple[Path, Path]:
    """Paper vs reproduced: the paper's rows as bars, ours with Wilson 95% error bars."""
    fig = Figure(figsize=(12, 6.5))
    ax = fig.add_axes([0.06, 0.36, 0.92, 0.55])
    groups = GROUPS + ["overall"]
    series = paper[:1] + runs + paper[1:]
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(groups))]
        ys = [s["value"].get(g, float("nan")) for g in groups]
        err = None
        if s["kind"] == "run":
            cis = [s["ci"].get(g, (None, None)) for g in groups]
            err = [[y - lo if lo is not None else 0 for y, (lo, _) in zip(ys, cis)],
                   [hi - y if hi is not None else 0 for y, (_, hi) in zip(ys, cis)]]
        ax.bar(xs, ys, width, yerr=err, capsize=3, color=f"C{i}", label=_legend(s),
               edgecolor="black" if s["kind"] == "run" else "none", hatch="//" if s["kind"] == "run" else None)
    ax.set_xticks(range(len(groups)), [group_label(g) for g in groups], fontsize=9)
    ax.set_ylabel("pass rate %")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Paper vs reproduced: pass rate % (ours with Wilson 95% intervals)", fontsize=12)
    fig.legend(*ax.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.285),
               fontsize=8, frameon=False, ncol=3)
    _stamp_and_caption(fig, caption, stamp)
    return _save(fig, folder, "paper_vs_reproduced")


# ----------------------------------------------------------------------------- claim audit
AUDIT_COLUMNS = ["section", "claim", "claimed", "recomputed", "verdict", "rule", "note"]
HALF_UNIT_RULE = "equal after rounding to the printed precision (|diff| <= half a unit of the last printed digit)"


def _line(section, claim, claimed, recomputed, verdict, rule, note=""):
    if isinstance(verdict, bool):
        verdict = "consistent" if verdict else "inconsistent"
    return {"section": section, "claim": claim, "claimed": str(claimed), "recomputed": str(recomputed),
            "verdict": verdict, "rule": rule, "note": note}


def read_claims(path: Path) -> list[dict]:
    return _read_csv(path)


def _claim(claims: list[dict], name: str) -> dict | None:
    return next((c for c in claims if c["claim"] == name), None)


def _dec(s: dict, group: str) -> Decimal:
    return Decimal(s["printed"][group])


def audit_training(claims: list[dict]) -> list[dict]:
    """Step count and sequence length, from the paper's stated figures."""
    c = {k: _claim(claims, k) for k in ("train_examples", "per_device_train_batch_size",
                                         "gradient_accumulation_steps", "effective_batch",
                                         "num_train_epochs", "stated_steps", "max_seq_length",
                                         "max_position_embeddings")}
    examples, per_device = int(c["train_examples"]["value"]), int(c["per_device_train_batch_size"]["value"])
    accum, batch = int(c["gradient_accumulation_steps"]["value"]), int(c["effective_batch"]["value"])
    epochs, stated = int(c["num_train_epochs"]["value"]), int(c["stated_steps"]["value"])
    exact = Decimal(examples) * epochs / batch
    trainer_steps = math.ceil(math.ceil(examples / per_device) / accum) * epochs
    lines = [
        _line("training", "effective batch = per-device batch x accumulation", batch, per_device * accum,
              batch == per_device * accum, "exact"),
        _line("training", f"{stated:,} optimizer steps for {examples:,} examples at batch {batch}, "
              f"{epochs} epoch", stated, f"{exact:.2f} (floor {math.floor(exact)}, ceil {math.ceil(exact)})",
              stated in (math.floor(exact), math.ceil(exact)),
              "stated steps equal floor or ceil of examples x epochs / effective batch",
              f"HF Trainer (transformers >= 4.46 keeps the partial last accumulation) would run "
              f"ceil(ceil({examples}/{per_device})/{accum}) = {trainer_steps} steps"),
    ]
    seq, positions = int(c["max_seq_length"]["value"]), int(c["max_position_embeddings"]["value"])
    lines.append(_line("training", f"max sequence length {seq} with {c['max_position_embeddings']['model_a']}",
                       seq, f"{positions} learned positions", seq <= positions,
                       "sequence length <= the model's max_position_embeddings",
                       f"OPT cannot attend past {positions} tokens; {seq} is {seq / positions:.0f}x that"))
    return lines


def audit_tables(paper: list[dict], claims: list[dict]) -> list[dict]:
    """Table 1 against Table 2, per model: weighted mean, unweighted mean, printed Avg."""
    lines = []
    sizes = [paper[0]["n"][g] for g in GROUPS]
    total = _claim(claims, "test_queries")
    lines.append(_line("tables", "test queries over the six groups", total["value"],
                       f"{' + '.join(map(str, sizes))} = {sum(sizes)}",
                       int(total["value"]) == sum(sizes), "exact"))
    for s in paper:
        values = [_dec(s, g) for g in GROUPS]
        weighted = sum(v * s["n"][g] for v, g in zip(values, GROUPS)) / sum(s["n"][g] for g in GROUPS)
        plain = sum(values) / len(values)
        t1, avg = s["printed"]["overall"], s["printed"]["average"]
        lines += [
            _line("tables", f"{s['label']}: Table 1 overall = query-weighted mean of Table 2", t1,
                  f"{weighted:.4f}", matches_printed(weighted, t1), HALF_UNIT_RULE),
            _line("tables", f"{s['label']}: Table 2 Avg = unweighted mean of Table 2", avg,
                  f"{plain:.4f}", matches_printed(plain, avg), HALF_UNIT_RULE),
            _line("tables", f"{s['label']}: Table 2 Avg = query-weighted mean of Table 2", avg,
                  f"{weighted:.4f}", matches_printed(weighted, avg), HALF_UNIT_RULE),
            _line("tables", f"{s['label']}: Table 2 Avg = Table 1 overall rounded to Avg's precision", avg,
                  f"{round_like(Decimal(t1), avg)} (from {t1})", round_like(Decimal(t1), avg) == Decimal(avg),
                  "equal after rounding half-up", "a double rounding: Table 1 was rounded first"),
        ]
    return lines


def audit_text(paper: list[dict], readme: list[dict], claims: list[dict]) -> list[dict]:
    """The text's quoted figures, gaps and ratios against Table 1 and Table 2."""
    by_label = {s["label"]: s for s in paper}
    lines = []
    for c in claims:
        if c["claim"] == "headline_pass_rate":
            t1 = by_label[c["model_a"]]["printed"]["overall"]
            lines.append(_line("text", c["text"], c["value"], f"Table 1: {t1}",
                               Decimal(c["value"]) == Decimal(t1), "exact (same printed figure)"))
        if c["claim"] == "ahead_of":
            lines += _ahead_of(c, by_label[c["model_a"]], by_label[c["model_b"]])
        if c["claim"] == "ratio":
            a, b = _dec(by_label[c["model_a"]], "overall"), _dec(by_label[c["model_b"]], "overall")
            readme_b = [r for r in readme if r["paper_label"] == c["model_b"] and "average" in r["printed"]]
            note = "; ".join(f"with {r['label']} Average {r['printed']['average']}: "
                             f"{a / _dec(r, 'average'):.2f}x" for r in readme_b)
            lines.append(_line("text", f"{c['text']} ({c['model_a']} / {c['model_b']}, Table 1)",
                               c["value"], f"{a} / {b} = {a / b:.4f}", matches_printed(a / b, c["value"]),
                               HALF_UNIT_RULE, note))
    return lines


def _ahead_of(c: dict, a: dict, b: dict) -> list[dict]:
    ta, tb = _dec(a, "overall"), _dec(b, "overall")
    ahead = sum(_dec(a, g) > _dec(b, g) for g in GROUPS)
    gaps = [_dec(a, g) - _dec(b, g) for g in GROUPS]
    return [
        _line("text", f"{c['text']}: quoted figure = Table 1", c["value"], f"Table 1: {b['printed']['overall']}",
              Decimal(c["value"]) == tb, "exact (same printed figure)"),
        _line("text", f"{c['model_a']} ahead of {c['model_b']} overall (gap in points)", f"{ta} > {tb}",
              f"{ta - tb:+.2f} pts, ratio {ta / tb:.2f}x", ta > tb, "gap > 0",
              f"per group: ahead in {ahead}/{len(GROUPS)}, gaps {min(gaps):+.1f} to {max(gaps):+.1f} pts"),
    ]


def audit_readme(paper: list[dict], readme: list[dict]) -> list[dict]:
    """The paper's baseline rows against ToolBench README's numbers for the same baselines."""
    lines = []
    rule = "equal within half a unit of the coarser printed precision"
    for p in paper[1:]:
        for r in [r for r in readme if r["paper_label"] == p["label"]]:
            plain = sum(_dec(r, g) for g in GROUPS) / len(GROUPS)
            weighted = sum(_dec(r, g) * r["n"][g] for g in GROUPS) / sum(r["n"][g] for g in GROUPS)
            avg = r["printed"]["average"]
            lines.append(_line("readme", f"{r['label']}: README Average = unweighted mean of its groups",
                               avg, f"{plain:.4f}", matches_printed(plain, avg), HALF_UNIT_RULE))
            coarse = max(half_unit(p["printed"]["overall"]), half_unit(avg))
            diff = _dec(p, "overall") - Decimal(avg)
            lines.append(_line("readme", f"{p['label']} (paper Table 1) vs {r['label']} Average",
                               p["printed"]["overall"], f"README {avg} (query-weighted {weighted:.2f}); "
                               f"paper minus README {diff:+.2f} pts", abs(diff) <= coarse, rule))
            diffs = [_dec(p, g) - _dec(r, g) for g in GROUPS]
            same = sum(abs(d) <= max(half_unit(p["printed"][g]), half_unit(r["printed"][g]))
                       for d, g in zip(diffs, GROUPS))
            lines.append(_line(
                "readme", f"{p['label']} (paper Table 2) vs {r['label']} per group",
                "/".join(p["printed"][g] for g in GROUPS), "README " + "/".join(r["printed"][g] for g in GROUPS),
                same == len(GROUPS), rule,
                f"{same}/{len(GROUPS)} groups agree; paper minus README "
                + ", ".join(f"{group_label(g)} {d:+.1f}" for g, d in zip(GROUPS, diffs))))
    return lines


def audit_ours(cfg: dict, claims: list[dict], runs: list[dict]) -> list[dict]:
    """Our own outputs (where they exist) against the paper's counts."""
    out = config.path(cfg, cfg["output_dir"])
    stats, summary = _read_json(out / "data_stats.json"), _read_json(out / "train_summary.json")
    examples = int(_claim(claims, "train_examples")["value"])
    stated = int(_claim(claims, "stated_steps")["value"])
    batch = int(_claim(claims, "effective_batch")["value"])
    scope = f"not comparable (profile {cfg['profile']}: sample data)" if cfg.get("stamp") else None
    na = "not available"
    lines = []
    if stats is None:
        lines.append(_line("ours", f"data prep yields {examples:,} examples", examples, "no data_stats.json", na, "exact"))
    else:
        lines.append(_line("ours", f"data prep yields {examples:,} examples (example_per={stats.get('example_per')})",
                           examples, stats.get("examples_written"),
                           scope or stats.get("examples_written") == examples, "exact",
                           f"{stats.get('records_read')} records read from {stats.get('source')}"))
        for choice, n in (stats.get("examples_per_choice") or {}).items():
            lines.append(_line("ours", f"examples with one example per {choice}", examples, n,
                               scope or n == examples, "exact"))
        lines.append(_line("ours", "training sequences longer than the model's positions", "none implied",
                           f"{stats.get('over_max_positions')} over {stats.get('max_positions')} positions; "
                           f"token length percentiles {stats.get('token_length_percentiles')}", "info", "count"))
    if summary is None:
        lines.append(_line("ours", f"training runs {stated:,} steps", stated, "no train_summary.json", na, "exact"))
    else:
        ours = summary.get("examples"), summary.get("effective_batch"), summary.get("optimizer_steps")
        epochs = cfg["train"].get("num_train_epochs", 1)
        expected = math.ceil(ours[0] / ours[1]) * math.ceil(epochs) if all(ours) else None
        lines += [
            _line("ours", "our optimizer steps = ceil(examples / effective batch) x epochs", expected, ours[2],
                  expected == ours[2] if expected else na, "exact",
                  f"{ours[0]} examples, effective batch {ours[1]}, {epochs} epochs"),
            _paper_steps_line(summary.get("paper_steps_at_batch_32"), stated, examples, batch),
            _line("ours", f"paper's {stated:,} steps vs our run", stated, ours[2], scope or ours[2] == stated, "exact"),
        ]
    lines.append(_test_count_line(cfg, claims, scope))
    for s in runs:
        if s.get("primary") and "overall" in s["value"]:
            lo, hi = s["ci"]["overall"]
            paper_ours = float(_claim(claims, "headline_pass_rate")["value"])
            inside = (lo <= paper_ours <= hi) if lo is not None else "not available"
            # An overall over fewer groups is another quantity than the paper's six-group one.
            partial = overall_note(s) and f"not comparable ({len(covered_groups(s))} of {len(GROUPS)} groups)"
            notes = [OFFLINE_NOTE if is_offline(s["judge"]) else "", overall_note(s)]
            lines.append(_line("ours", f"{s['label']} overall pass rate vs the paper's {paper_ours}", paper_ours,
                               f"{s['value']['overall']:.2f} [{fmt(lo)}, {fmt(hi)}] ({s['aggregation']}, "
                               f"judge {s['judge']})", scope or partial or inside,
                               "paper's figure inside our Wilson 95% interval", "; ".join(filter(None, notes))))
    return lines


def _paper_steps_line(steps: dict | None, stated: int, examples: int, batch: int) -> dict:
    """The paper's stated steps against train_summary's lib.train.paper_steps(): older Trainers ran
    floor(batches / accumulation) steps, today's (transformers >= 4.46) keep the partial last one."""
    claim = f"paper's steps at batch {batch} (train_summary.paper_steps_at_batch_32)"
    rule = f"stated steps equal floor or ceil of {examples:,} / {batch}"
    if not isinstance(steps, dict):
        return _line("ours", claim, stated, steps, "not available", rule)
    floor, ceil = steps["floor"], steps["ceil"]
    note = {floor: f"the paper's {stated:,} is the floor, older Trainers' count; today's Trainer "
                   f"(transformers >= 4.46, keeping the partial last accumulation) runs the ceil, {ceil:,}",
            ceil: f"the paper's {stated:,} is the ceil, today's Trainer's count; older Trainers ran "
                  f"the floor, {floor:,}"}.get(stated)
    return _line("ours", claim, stated,
                 f"floor {floor}, ceil {ceil} ({examples} / {batch} = {steps.get('examples_over_32')})",
                 note is not None, rule,
                 note or f"neither floor {floor:,} (older Trainers) nor ceil {ceil:,} (today's Trainer)")


def _test_count_line(cfg: dict, claims: list[dict], scope) -> dict:
    test_dir = config.path(cfg, cfg["data"]["test_dir"])
    claimed = int(_claim(claims, "test_queries")["value"])
    files = [test_dir / f"{g}.json" for g in GROUPS]
    if not all(f.exists() for f in files):
        return _line("ours", "test queries in data.test_dir", claimed, f"missing files in {test_dir}",
                     "not available", "exact")
    counts = [len(json.loads(f.read_text(encoding="utf-8"))) for f in files]
    return _line("ours", "test queries in data.test_dir", claimed, f"{'/'.join(map(str, counts))} = {sum(counts)}",
                 scope or sum(counts) == claimed, "exact")


def audit_markdown(lines: list[dict], caption: list[str], stamp) -> str:
    header = ["Section", "Claim", "Claimed", "Recomputed", "Verdict", "Rule", "Note"]
    body = [[l["section"], l["claim"], l["claimed"], l["recomputed"],
             f"**{l['verdict']}**" if l["verdict"] == "inconsistent" else l["verdict"], l["rule"], l["note"]]
            for l in lines]
    counts = defaultdict(int)
    for l in lines:
        counts[l["verdict"]] += 1
    summary = ", ".join(f"{v}: {n}" for v, n in sorted(counts.items()))
    return _markdown("Claim audit (every value recomputed from data files)", caption + [summary],
                     header, [[c.replace("|", "/") for c in r] for r in body], stamp)


# ----------------------------------------------------------------------------- contamination
def normalise(text: str) -> str:
    """Lowercase; punctuation and runs of whitespace become one space."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of the normalised text (the whole text as one gram when shorter than n)."""
    words = text.split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _user_query(value: str) -> str:
    return re.sub(r"\s*Begin!\s*$", "", value.strip()).strip()


def training_queries(cfg: dict) -> tuple[list[tuple[str, str, frozenset]], str]:
    """(record id, user query, tools its functions belong to) of every training record, and where
    they came from.

    From data.train_path (a JSON list or JSONL of ToolBench records, or a folder of raw answer
    files), else from outputs/<profile>/sft/ (role=user prompt messages)."""
    train = config.path(cfg, cfg["data"]["train_path"])
    sft = config.path(cfg, cfg["output_dir"]) / "sft"
    if train is not None and train.exists():
        return list(_file_queries(train)), str(train)
    if sft.exists():
        return list(_sft_queries(sft)), str(sft)
    return [], "not available"


def _file_queries(path: Path):
    """User queries of a training file or answer folder, read as stage 01 reads them (streamed)."""
    from lib import data

    for _, where, record, _ in data.iter_records(path):
        turns = (record.get("conversations") or []) if isinstance(record, dict) else []
        user = next((t["value"] for t in turns if t.get("from") == "user"), None)
        system = next((t["value"] for t in turns if t.get("from") == "system"), "")
        if user is not None:
            yield str(record.get("id", where)), _user_query(user), _prompt_tools(system)


def _sft_queries(folder: Path):
    from datasets import load_from_disk

    ds = load_from_disk(str(folder)).select_columns(["id", "prompt"])
    for batch in ds.iter(batch_size=1000):
        for rid, prompt in zip(batch["id"], batch["prompt"]):
            user = next((m["content"] for m in prompt if m["role"] == "user"), None)
            system = next((m["content"] for m in prompt if m["role"] == "system"), "")
            if user is not None:
                yield str(rid), _user_query(user), _prompt_tools(system)


_FUNCTION_NAME = re.compile(r"\{'name': '([^']+)'")


def _prompt_tools(system: str) -> frozenset:
    """The tools of the functions a system prompt lists (ToolBench's `<api>_for_<tool>` names)."""
    return frozenset(name.rsplit("_for_", 1)[1] for name in _FUNCTION_NAME.findall(system)
                     if "_for_" in name)


SPLIT_COLUMNS = ["group", "n_test", "seen_tool", "seen_category", "train_tools", "train_categories"]


def split_check(cfg: dict, tests: dict[str, list[dict]], train: list[tuple]) -> list[dict]:
    """Per group: how many test queries use a tool, and how many a category, that training used.
    ToolBench's split wants 0 and 0 for G1-tool's tools and the *-category groups' categories.
    A training tool's category comes from the tool documents (data.toolenv_dir/tools/<category>/)."""
    from lib import toolbench, tools as tools_lib

    docs = tools_lib.load_tool_docs(config.path(cfg, cfg["data"]["toolenv_dir"]) / "tools")
    train_tools = set().union(*(t[2] for t in train)) if train else set()
    train_categories = {docs[t]["category"] for t in train_tools if t in docs}
    rows = []
    for group in [*tests, "overall"]:
        queries = [q for g, qs in tests.items() if group in (g, "overall") for q in qs]
        used = [[(toolbench.standardize_name(a["tool_name"]), a.get("category_name"))
                 for a in q.get("api_list") or []]
                for q in queries]
        rows.append({"group": group, "n_test": len(queries),
                     "seen_tool": sum(any(t in train_tools for t, _ in u) for u in used),
                     # Without tool documents a training tool's category is unknown: no count.
                     "seen_category": sum(any(c in train_categories for _, c in u) for u in used)
                     if docs else "",
                     "train_tools": len(train_tools), "train_categories": len(train_categories)})
    return rows


def test_queries(cfg: dict) -> dict[str, list[dict]]:
    test_dir = config.path(cfg, cfg["data"]["test_dir"])
    found = {}
    for g in GROUPS:
        f = test_dir / f"{g}.json"
        if f.exists():
            found[g] = json.loads(f.read_text(encoding="utf-8"))
    return found


def contamination(tests: dict[str, list[dict]], train: list[tuple[str, str]], n: int,
                  threshold: float) -> tuple[list[dict], list[dict]]:
    """Exact and near-duplicate overlap of test queries with training queries.

    An inverted index maps each test n-gram to the test queries holding it; each distinct training
    query is streamed through it once, so the cost is linear in the training text, never a pairwise
    comparison of all test and training queries. Near duplicate: n-gram Jaccard >= threshold.
    Overlap: the share of a test query's n-grams found in one training query."""
    flat = [(g, q) for g, qs in tests.items() for q in qs]
    norm = [normalise(q["query"]) for _, q in flat]
    grams = [ngrams(t, n) for t in norm]
    index = defaultdict(list)
    for i, gs in enumerate(grams):
        for gram in gs:
            index[gram].append(i)
    best = [(0.0, 0.0, "") for _ in flat]          # (jaccard, overlap, train id)
    exact_ids: dict[str, str] = {}
    seen: set[str] = set()
    test_texts = set(norm)
    for rid, query, *_ in train:
        text = normalise(query)
        if text in seen:
            continue
        seen.add(text)
        if text in test_texts:
            exact_ids.setdefault(text, rid)
        hits = defaultdict(int)
        tgrams = ngrams(text, n)
        for gram in tgrams:
            for i in index.get(gram, ()):
                hits[i] += 1
        for i, c in hits.items():
            jac = c / (len(grams[i]) + len(tgrams) - c)
            if jac > best[i][0]:
                best[i] = (jac, c / len(grams[i]), rid)
    return _contamination_rows(tests, flat, norm, best, exact_ids, threshold, len(seen))


def _contamination_rows(tests, flat, norm, best, exact_ids, threshold, n_train):
    """Per group (and overall): counts and maxima; plus one row per flagged test query."""
    pairs = []
    for (g, q), text, (jac, ovl, rid) in zip(flat, norm, best):
        kind = "exact" if text in exact_ids else ("near" if jac >= threshold else "")
        if kind:
            pairs.append({"group": g, "query_id": q.get("query_id"), "kind": kind,
                          "jaccard": f"{jac:.3f}", "overlap": f"{ovl:.3f}",
                          "train_id": exact_ids.get(text, rid), "query": q["query"]})
    rows = []
    for g in list(tests) + ["overall"]:
        idx = [i for i, (gg, _) in enumerate(flat) if g in (gg, "overall")]
        mine = [p for p in pairs if g in (p["group"], "overall")]
        rows.append({"group": g, "n_test": len(idx), "n_train_queries": n_train,
                     "exact_dups": sum(p["kind"] == "exact" for p in mine),
                     "near_dups": sum(p["kind"] == "near" for p in mine),
                     "max_overlap": f"{max((best[i][1] for i in idx), default=0):.3f}",
                     "max_jaccard": f"{max((best[i][0] for i in idx), default=0):.3f}"})
    return rows, pairs


CONTAMINATION_COLUMNS = ["group", "n_test", "n_train_queries", "exact_dups", "near_dups", "max_overlap",
                         "max_jaccard", "train_source"]
PAIR_COLUMNS = ["group", "query_id", "kind", "jaccard", "overlap", "train_id", "query"]


def contamination_markdown(rows, source, n, threshold, caption, stamp, split=()) -> str:
    cap = caption + [f"Training queries from {source}; {n}-gram Jaccard >= {threshold} is a near duplicate "
                     f"(exact ones not counted again); overlap = share of a test query's {n}-grams in one "
                     "training query."]
    body = [[group_label(r["group"]), *[str(r[c]) for c in CONTAMINATION_COLUMNS[1:-1]]] for r in rows]
    text = _markdown("Contamination: test queries vs training queries", cap,
                     ["Group", "Test queries", "Distinct training queries", "Exact dups", "Near dups",
                      "Max n-gram overlap", "Max Jaccard"], body, stamp)
    if split:
        body = [[group_label(r["group"]), *[str(r[c]) for c in SPLIT_COLUMNS[1:4]]] for r in split]
        text += "\n" + _markdown(
            "The split: tools and categories of the test queries seen in training", [
                f"Test queries using at least one tool (category) that the training prompts list: "
                f"{split[-1]['train_tools']} tools in {split[-1]['train_categories']} categories "
                "(categories from the tool documents). ToolBench's split: 0 tools seen in G1-tool, "
                "0 categories seen in G1-category and G2-category."],
            ["Group", "Test queries", "With a tool seen in training", "With a category seen in training"],
            body, None)
    return text


# ----------------------------------------------------------------------------- the stage
def run(cfg: dict) -> dict[str, Path]:
    """Stage 05, top to bottom: read, tables, figures, audit, contamination, index.json."""
    rep, stamp = cfg["report"], cfg.get("stamp")
    folder = config.output_dir(cfg, "figures")
    paper = reference_series(config.path(cfg, rep["paper_results"]), "paper")
    readme = reference_series(config.path(cfg, rep["toolbench_results"]), "readme")
    claims = read_claims(config.path(cfg, rep["paper_claims"]))
    runs = run_series(cfg)
    primary = [s for s in runs if s.get("primary")]
    caption = captions(cfg, primary)
    paths: dict[str, Path] = {}

    rows = table_order(paper, readme, runs)
    t1 = table1(rows, primary)
    paths["table1_csv"] = _write_csv(folder / "table1.csv", t1, TABLE1_COLUMNS)
    paths["table1_md"] = _write_text(folder / "table1.md", table1_markdown(t1, rows, caption, stamp))
    paths["table2_csv"] = _write_csv(folder / "table2.csv", table2(rows),
                                     ["row", "kind", "method", "source", *GROUPS, "weighted_mean", "printed_avg"])
    paths["table2_md"] = _write_text(folder / "table2.md", table2_markdown(rows, caption, stamp))

    paths["radar_png"], paths["radar_svg"] = radar(paper[:1] + primary + paper[1:], caption, stamp, folder)
    paths["paper_vs_reproduced_csv"] = _write_csv(
        folder / "paper_vs_reproduced.csv", paper_vs_reproduced_rows(paper, primary),
        ["group", "series", "kind", "pass_rate", "ci_low", "ci_high", "n", "aggregation", "judge", "covers"])
    paths["paper_vs_reproduced_png"], paths["paper_vs_reproduced_svg"] = bars(paper, primary, caption,
                                                                              stamp, folder)

    audit = (audit_training(claims) + audit_tables(paper, claims) + audit_text(paper, readme, claims)
             + audit_readme(paper, readme) + audit_ours(cfg, claims, primary))
    paths["audit_csv"] = _write_csv(folder / "audit.csv", audit, AUDIT_COLUMNS)
    paths["audit_md"] = _write_text(folder / "audit.md", audit_markdown(audit, caption, stamp))

    n, threshold = int(rep["contamination_ngram"]), float(rep["contamination_threshold"])
    train, source = training_queries(cfg)
    rows_c, pairs = contamination(test_queries(cfg), train, n, threshold)
    for r in rows_c:
        r["train_source"] = source
    paths["contamination_csv"] = _write_csv(folder / "contamination.csv", rows_c, CONTAMINATION_COLUMNS)
    paths["contamination_pairs_csv"] = _write_csv(folder / "contamination_pairs.csv", pairs, PAIR_COLUMNS)
    split = split_check(cfg, test_queries(cfg), train)
    paths["split_csv"] = _write_csv(folder / "split.csv", split, SPLIT_COLUMNS)
    paths["contamination_md"] = _write_text(folder / "contamination.md", contamination_markdown(
        rows_c, source, n, threshold, caption, stamp, split))

    # The earlier stages' figures belong in the index too, where they exist.
    earlier = {"token_lengths_png": folder / "token_lengths.png", "loss_curve_png": folder / "loss_curve.png",
               "learning_curve_png": folder / "learning_curve.png"}
    index = {name: _relative(cfg, p) for name, p in {**{k: p for k, p in earlier.items() if p.exists()},
                                                      **paths}.items()}
    paths["index"] = _write_text(folder / "index.json", json.dumps(index, indent=2) + "\n")
    return paths


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _relative(cfg: dict, p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(cfg["root"]).resolve()))
    except ValueError:
        return str(p)
