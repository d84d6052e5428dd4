"""Stage 05: the paper's tables and figure regenerated beside ours, then the claim audit and contamination.

`run(cfg)` reads the published numbers (`report.paper_results`, `report.toolbench_results`,
`report.paper_claims`), our pass_rate.csv files and whatever upstream outputs exist, and writes
Tables 1 and 2, the figures, the calibration, audit and contamination files and index.json into
outputs/<profile>/figures/ (docs/formats.md, "05 figures").
"""
from __future__ import annotations

import json
import math
import struct
import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from lib.common import config, stats
from lib.common.settings import Profile
from lib.infer import untrained
from lib.report import audit, bfcl_report, calibration, contamination
from lib.common.plots import save_png_svg, stamp_figure
from lib.report.series import (OFFLINE_NOTE, covered_groups, is_majority, is_offline, overall, overall_note,
                        weighted_mean)
from lib.common.tables import fmt, group_label, markdown_table, read_csv, write_csv

GROUPS = config.GROUPS


# ----------------------------------------------------------------------------- row sets
def reference_series(path: Path, kind: str) -> list[dict]:
    """Series from a tidy long file (label,model,method,params_b,group,pass_rate,n,source,paper_label)."""
    series: dict[str, dict] = {}
    for row in read_csv(path):
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
    rows = read_csv(path)
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


# Seven parameters: what read_pass_rate's loop knows of the series (its run, method, aggregation, rank).
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
                               stats.wilson_percent(passed, n) if is_majority(agg) else (None, None))
    return s


def run_series(cfg: Profile) -> list[dict]:
    """Our runs: the profile's fine-tuned model (its pass_rate.csv, when stage 04 has run), the same
    model untrained (lib/infer/untrained.py, when run), then report.runs. The fine-tuned row comes first:
    the tables' "Fine-tuned minus row" column is measured from it."""
    out = config.path(cfg, cfg.output_dir)
    wanted = [{"label": f"Fine-tuned ({cfg.profile})", "path": out / "pass_rate.csv"},
              {"label": f"Untrained ({cfg.profile})", "path": untrained.pass_rate_path(cfg),
               "model": out / "model"}]     # the same architecture, so the same parameter count
    wanted += [{"label": r["label"], "path": config.path(cfg, r["path"])}
               for r in (cfg.report.runs or [])]
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


# ----------------------------------------------------------------------------- captions
def captions(cfg: Profile, runs: list[dict]) -> list[str]:
    """Lines every table and figure carries: stamp, judge, aggregation."""
    lines = [cfg.stamp] if cfg.stamp else []
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


def table2_cell(s: dict, group: str) -> str:
    """A series' Table 2 cell for `group`: our run's rate to one decimal with its Wilson 95% interval,
    a published row's figure as printed."""
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
    return markdown_table(header, body, "Table 1 (regenerated): overall pass rate", caption, stamp)


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
    body = [[s["label"], *[table2_cell(s, g) for g in GROUPS], fmt(weighted_mean(s)),
             s["printed"].get("average", "")] for s in rows]
    return markdown_table(header, body, "Table 2 (regenerated): pass rate % by test group", caption, stamp)


# ----------------------------------------------------------------------------- figures
def _stamp_and_caption(fig: Figure, caption: list[str], stamp: str | None) -> None:
    text = "\n".join(textwrap.fill(line, 150) for line in caption)
    fig.text(0.01, 0.01, text, fontsize=7.5, va="bottom", ha="left", color="#333333")
    stamp_figure(fig, stamp)


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
    return save_png_svg(fig, folder, "radar")


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
    return save_png_svg(fig, folder, "paper_vs_reproduced")


# ----------------------------------------------------------------------------- the stage
# Long: stage 05 top to bottom, one output after another, as the module docstring lists them.
def run(cfg: Profile) -> dict[str, Path]:
    """Stage 05, top to bottom: read, tables, figures, audit, contamination, index.json."""
    report_cfg, stamp = cfg.report, cfg.stamp
    folder = config.output_dir(cfg, "figures")
    paper = reference_series(config.path(cfg, report_cfg.paper_results), "paper")
    readme = reference_series(config.path(cfg, report_cfg.toolbench_results), "readme")
    claims = audit.read_claims(config.path(cfg, report_cfg.paper_claims))
    runs = run_series(cfg)
    primary = [s for s in runs if s.get("primary")]
    caption = captions(cfg, primary)
    paths: dict[str, Path] = {}

    rows = table_order(paper, readme, runs)
    t1 = table1(rows, primary)
    paths["table1_csv"] = write_csv(folder / "table1.csv", t1, TABLE1_COLUMNS)
    paths["table1_md"] = _write_text(folder / "table1.md", table1_markdown(t1, rows, caption, stamp))
    paths["table2_csv"] = write_csv(folder / "table2.csv", table2(rows),
                                    ["row", "kind", "method", "source", *GROUPS, "weighted_mean", "printed_avg"])
    paths["table2_md"] = _write_text(folder / "table2.md", table2_markdown(rows, caption, stamp))

    paths["radar_png"], paths["radar_svg"] = radar(paper[:1] + primary + paper[1:], caption, stamp, folder)
    paths["paper_vs_reproduced_csv"] = write_csv(
        folder / "paper_vs_reproduced.csv", paper_vs_reproduced_rows(paper, primary),
        ["group", "series", "kind", "pass_rate", "ci_low", "ci_high", "n", "aggregation", "judge", "covers"])
    paths["paper_vs_reproduced_png"], paths["paper_vs_reproduced_svg"] = bars(paper, primary, caption,
                                                                              stamp, folder)

    # Judge calibration: released baselines re-judged by stage 04, beside their published rates.
    released = calibration.released_runs(cfg)
    calibrated = calibration.calibration_rows(released, paper, readme)
    paths["calibration_csv"] = write_csv(folder / "calibration.csv", calibrated, calibration.COLUMNS)
    paths["calibration_md"] = _write_text(folder / "calibration.md", calibration.calibration_markdown(
        calibrated, released, caption, stamp))
    if calibrated:
        paths["calibration_png"], paths["calibration_svg"] = calibration.figure(calibrated, caption, stamp, folder)

    # BFCL: an independent check of what fine-tuning taught, scored by BFCL's rules in stage 04.
    paths.update(bfcl_report.write(cfg, folder))

    lines = (audit.audit_training(claims) + audit.audit_tables(paper, claims)
             + audit.audit_text(paper, readme, claims) + audit.audit_readme(paper, readme)
             + audit.audit_ours(cfg, claims, primary)
             + calibration.audit_lines(calibrated, primary, claims, audit.line))
    paths["audit_csv"] = write_csv(folder / "audit.csv", lines, audit.AUDIT_COLUMNS)
    paths["audit_md"] = _write_text(folder / "audit.md", audit.audit_markdown(lines, caption, stamp))

    n, threshold = report_cfg.contamination_ngram, report_cfg.contamination_threshold
    train, source = contamination.training_queries(cfg)
    rows_c, pairs = contamination.contamination(contamination.test_queries(cfg), train, n, threshold)
    for r in rows_c:
        r["train_source"] = source
    paths["contamination_csv"] = write_csv(folder / "contamination.csv", rows_c,
                                           contamination.CONTAMINATION_COLUMNS)
    paths["contamination_pairs_csv"] = write_csv(folder / "contamination_pairs.csv", pairs,
                                                 contamination.PAIR_COLUMNS)
    split = contamination.split_check(cfg, contamination.test_queries(cfg), train)
    paths["split_csv"] = write_csv(folder / "split.csv", split, contamination.SPLIT_COLUMNS)
    paths["contamination_md"] = _write_text(folder / "contamination.md", contamination.contamination_markdown(
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


def _relative(cfg: Profile, p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(cfg.root).resolve()))
    except ValueError:
        return str(p)
