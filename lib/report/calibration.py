"""Judge calibration (stage 05): released baseline answers re-judged by this run's judge, beside the
pass rates the paper and ToolBench's README published for the same systems.

Each released run (outputs/<profile>/released/<name>/) is matched to its published rows by its
`compare_to`, else the paper label its name starts with; per group and over the judged groups it
shows the re-judged rate with its Wilson interval, the published figures and the gaps
(docs/calibration.md).
"""
from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from lib.common import config
from lib.common.settings import Profile
from lib.common.plots import stamp_figure
from lib.report.series import OFFLINE_NOTE, is_majority, is_offline, weighted_mean
from lib.common.tables import fmt, markdown_table, read_csv

COLUMNS = ["system", "compare_to", "group", "judge", "n", "rejudged", "ci_low", "ci_high", "paper",
           "readme", "gap_to_paper", "gap_to_readme", "rejudged_solvable", "not_available"]
# not_available: how many of the row's answers had their tool messages cut (lib/toolbench/released.py), so
# that the argument and response checks could not be computed for them.


def released_runs(cfg: Profile) -> list[dict]:
    """Every released run stage 04 judged for this profile: released.json plus its majority rows."""
    runs = []
    for info_path in sorted((config.path(cfg, cfg.output_dir) / "released").glob("*/released.json")):
        info = json.loads(info_path.read_text(encoding="utf-8"))
        rows = [r for r in read_csv(info_path.with_name("pass_rate.csv")) if is_majority(r["aggregation"])]
        runs.append({**info, "rows": rows})
    return runs


def published_label(run: dict, paper: list[dict], readme: list[dict]) -> str | None:
    """What a released run is compared with: its compare_to, else the longest paper or README label
    (without " (README)") that its name starts with."""
    if run.get("compare_to"):
        return run["compare_to"]
    labels = [s["label"] for s in paper] + [s["label"].removesuffix(" (README)") for s in readme]
    found = [label for label in labels if run["name"].lower().startswith(label.lower())]
    return max(found, key=len) if found else None


def _published(label: str | None, series: list[dict], readme: bool) -> dict | None:
    for s in series:
        if label and (s["label"] == label or (readme and (s["label"] == f"{label} (README)"
                                                          or s["paper_label"] == label))):
            return s
    return None


def _gap(ours, theirs) -> float | None:
    return None if ours is None or theirs is None else round(ours - theirs, 2)


def calibration_rows(runs: list[dict], paper: list[dict], readme: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        label = published_label(run, paper, readme)
        p, r = _published(label, paper, False), _published(label, readme, True)
        groups = [row["group"] for row in run["rows"] if row["group"] != "overall"]
        for row in run["rows"]:
            group = row["group"]
            on = groups if group == "overall" else [group]
            rejudged = float(row["pass_rate"])
            paper_rate, readme_rate = (weighted_mean(x, on) if x else None for x in (p, r))
            rows.append({
                "system": run["name"], "compare_to": label or "", "group":
                group if group != "overall" else f"pooled: {'+'.join(groups)}",
                "judge": row["judge"], "n": int(row["n"]), "rejudged": rejudged,
                "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"]),
                "paper": paper_rate, "readme": readme_rate,
                "gap_to_paper": _gap(rejudged, paper_rate), "gap_to_readme": _gap(rejudged, readme_rate),
                "rejudged_solvable": float(row["pass_rate_solvable"]) if row.get("pass_rate_solvable") else None,
                "not_available": sum((run.get("not_available") or {}).get(g, 0) for g in on),
            })
    return rows


def calibration_markdown(rows: list[dict], runs: list[dict], caption: list[str], stamp) -> str:
    if not rows:
        return markdown_table(["system"], [], "Judge calibration", caption + [
            "No released answers were judged: list them in judge.released (stage 04) or run "
            "`python -m lib.judge.judge --answers PATH --group G --name NAME`."], stamp)
    judges = sorted({r["judge"] for r in rows})
    lines = caption + [
        f"Released answers re-judged by {', '.join(judges)} (majority vote over each query's "
        "assessments, Wilson 95% interval), beside the pass rates published for the same system; "
        "gap = re-judged minus published, in points. Published figures over several groups are "
        "query-weighted over the groups judged here."]
    if any(is_offline(j) for j in judges):
        lines.append(f"**{OFFLINE_NOTE}**: these re-judged figures are the offline judge's rule, not "
                     "ToolEval's; an answer whose tool responses are not available is Unsure under it "
                     "(its votes are coins).")
    for run in runs:
        lines += [f"{run['name']}: {note}" for note in run.get("notes", [])]
        sources = "; ".join(f"{g}: {src}" for g, src in (run.get("sources") or {}).items())
        lines.append(f"{run['name']}: prompts {run.get('prompts')}; answers from {sources}")
    header = ["system", "compared with", "group", "judge", "n", "re-judged [95% CI]", "paper", "README",
              "gap to paper", "gap to README", "on solvable", "not available"]
    body = [[r["system"], r["compare_to"] or "-", r["group"], r["judge"], str(r["n"]),
             f"{fmt(r['rejudged'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
             fmt(r["paper"]) or "-", fmt(r["readme"]) or "-", fmt(r["gap_to_paper"]) or "-",
             fmt(r["gap_to_readme"]) or "-", fmt(r["rejudged_solvable"]) or "-",
             f"{r['not_available']} answers cut" if r["not_available"] else "-"]
            for r in rows]
    return markdown_table(header, body, "Judge calibration: released baselines, published vs re-judged",
                          lines, stamp)


def figure(rows: list[dict], caption: list[str], stamp, folder: Path) -> tuple[Path, Path]:
    """Per released system and group: paper, README and re-judged (with its interval) side by side."""
    fig = Figure(figsize=(10, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    keys = [f"{r['system']}\n{r['group']}" for r in rows]
    x = range(len(rows))
    for offset, field, name in ((-0.27, "paper", "paper"), (0.0, "readme", "ToolBench README"),
                                (0.27, "rejudged", "re-judged here")):
        values = [r[field] if r[field] is not None else 0 for r in rows]
        bars = ax.bar([i + offset for i in x], values, width=0.26, label=name)
        if field == "rejudged":
            ax.errorbar([i + offset for i in x], values, fmt="none", ecolor="black", capsize=3,
                        yerr=[[v - r["ci_low"] for v, r in zip(values, rows)],
                              [r["ci_high"] - v for v, r in zip(values, rows)]])
        for bar, r in zip(bars, rows):
            if r[field] is None:
                ax.text(bar.get_x() + bar.get_width() / 2, 1, "n/a", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(list(x), keys, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("pass rate %")
    judges = ", ".join(sorted({r["judge"] for r in rows})) or "none"
    ax.set_title(f"Released baselines: published vs re-judged (judge: {judges})", fontsize=11)
    ax.legend(fontsize=8)
    fig.subplots_adjust(bottom=0.3)
    fig.text(0.01, 0.01, "\n".join(caption)[:400], fontsize=7, va="bottom")
    stamp_figure(fig, stamp)
    png, svg = folder / "calibration.png", folder / "calibration.svg"
    fig.savefig(png, dpi=120)
    fig.savefig(svg, metadata={"Date": None})
    return png, svg


def audit_lines(rows: list[dict], primary: list[dict], claims: list[dict], line) -> list[dict]:
    """How the paper's headline compares once both sides use one judge: our run and each re-judged
    baseline under the same judge, against the paper's gap. `line` is lib.report.audit's line builder."""
    headline = next((float(c["value"]) for c in claims if c["claim"] == "headline_pass_rate"), None)
    out = []
    pooled = [r for r in rows if r["group"].startswith("pooled")]
    if not pooled:
        return [line("calibration", "the paper's baselines under our judge", "judged by ToolEval",
                     "no released answers judged", "not available", "same judge on both sides",
                     "list released answers in judge.released to compare")]
    for r in pooled:
        ours = next((s for s in primary if s.get("judge") == r["judge"] and "overall" in s["value"]), None)
        ours_text = (f"ours {ours['value']['overall']:.2f} ({ours['label']})" if ours
                     else "our run has no overall under this judge")
        note = "; ".join(filter(None, [OFFLINE_NOTE if is_offline(r["judge"]) else "",
                                      f"{r['not_available']} answers with cut tool messages"
                                      if r["not_available"] else ""]))
        out.append(line(
            "calibration", f"paper: Ours {headline} vs {r['compare_to'] or r['system']} "
            f"{fmt(r['paper']) or '?'} (published judge)", f"gap {fmt(headline - r['paper']) if r['paper'] is not None and headline is not None else '?'}",
            f"{r['system']} re-judged {fmt(r['rejudged'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] "
            f"on {r['group']} (n {r['n']}, judge {r['judge']}); {ours_text}",
            "info", "one judge on both sides", note))
    return out
