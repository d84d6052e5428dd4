"""Stage 05's BFCL table and figure: accuracy per category, fine-tuned beside untrained (issue 23).

Reads stage 04's bfcl_scores.csv of the fine-tuned run and of the untrained one (when made) and
writes figures/bfcl.csv, bfcl.md and bfcl.png/.svg: per category the questions asked, each model's
accuracy with its Wilson 95% interval, and the difference in points.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from matplotlib.figure import Figure

from lib.common import config, tables
from lib.common.plots import save_png_svg, stamp_figure
from lib.common.settings import Profile
from lib.checks import bfcl_questions
from lib.infer import bfcl_answers, untrained
from lib.judge import bfcl_scores

COLUMNS = ["category", "n", "fine_tuned", "fine_tuned_low", "fine_tuned_high", "untrained",
           "untrained_low", "untrained_high", "difference", "fine_tuned_parsed", "untrained_parsed"]


def _read(path: Path) -> dict[str, dict]:
    return {r["category"]: r for r in tables.read_csv(path)} if path.exists() else {}


def _number(value) -> float | None:
    return None if value in (None, "") or value != value else float(value)


def rows(cfg: Profile) -> list[dict]:
    """One row per category scored (and the pooled one): n, both models' accuracy and interval
    (None where that model was not scored), fine-tuned minus untrained."""
    out = config.path(cfg, cfg.output_dir)
    tuned, before = _read(out / bfcl_scores.SCORES), _read(untrained.output_dir(cfg) / bfcl_scores.SCORES)
    table = []
    for category, r in tuned.items():
        u = before.get(category, {})
        row = {"category": category, "n": int(r["n"])}
        for name, source in (("fine_tuned", r), ("untrained", u)):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = (
                _number(source.get("accuracy")), _number(source.get("ci_low")), _number(source.get("ci_high")))
        for name, source in (("fine_tuned", r), ("untrained", u)):
            row[f"{name}_parsed"] = int(source["parsed"]) if source.get("parsed") not in (None, "") else None
        both = row["fine_tuned"] is not None and row["untrained"] is not None
        row["difference"] = round(row["fine_tuned"] - row["untrained"], 2) if both else None
        table.append(row)
    return table


def caption(cfg: Profile) -> list[str]:
    """What the table is and is not, with what the answers cost when the summary says."""
    k = cfg.bfcl.questions_per_category
    summary_path = config.path(cfg, cfg.output_dir) / bfcl_answers.SUMMARY
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    lines = [f"BFCL v4 (bfcl-eval {bfcl_questions.VERSION}) single-turn questions, "
             + ("all of each category" if k is None else f"{k} per category, a fixed sample (seed {cfg.seed})")
             + ", put to the model as ToolBench queries (ToolBench's system prompt with the question's "
               "functions) and scored by BFCL's AST rules (lib/checks/bfcl_rules.py; bench/bfcl_agreement.py: "
               "the same verdicts as BFCL's checker). Accuracy % with Wilson 95% intervals; the pooled row "
               "counts every question asked once.",
             "An answer parses when every step the model wrote is a ToolBench step (Thought, Action, "
             "Action Input as JSON) or Finish.",
             "In the irrelevance categories no call is right, and a turn that does not parse counts as no "
             "call (BFCL's rule): a model that writes no usable step scores 100 there.",
             "Not a BFCL leaderboard score: the leaderboard prompts each model in its own format and "
             "covers more categories; a sample of a few questions per category has wide intervals."]
    if summary.get("s_per_question"):
        lines.append(f"Fine-tuned model's answers: {summary['s_per_question']} s a question in the last "
                     f"run that asked any ({summary['ran_now']} questions in {summary['wall_time_s']} s).")
    return lines


def _cell(value, low, high) -> str:
    return "not run" if value is None else f"{value:.1f} [{low:.1f}, {high:.1f}]"


def markdown(table: list[dict], caption_lines: list[str], stamp, label: str) -> str:
    header = ["Category", "Questions", f"Fine-tuned ({label})", f"Untrained ({label})", "Difference (points)",
              "Answers that parse (fine-tuned / untrained)"]
    body = [[r["category"], str(r["n"]), _cell(r["fine_tuned"], r["fine_tuned_low"], r["fine_tuned_high"]),
             _cell(r["untrained"], r["untrained_low"], r["untrained_high"]),
             "" if r["difference"] is None else f"{r['difference']:+.1f}",
             " / ".join("-" if p is None else str(p) for p in (r["fine_tuned_parsed"], r["untrained_parsed"]))]
            for r in table]
    return tables.markdown_table(header, body, "BFCL: accuracy % by category (BFCL's rules, no judge)",
                                 caption_lines, stamp)


def figure(table: list[dict], caption_lines: list[str], stamp, label: str, folder: Path) -> tuple[Path, Path]:
    """Per category, fine-tuned and untrained accuracy as bars with Wilson 95% error bars."""
    fig = Figure(figsize=(11, 6))
    ax = fig.add_axes([0.07, 0.27, 0.9, 0.65])
    for offset, name, shown in ((-0.2, "fine_tuned", f"Fine-tuned ({label})"),
                                (0.2, "untrained", f"Untrained ({label})")):
        xs = [i + offset for i, r in enumerate(table) if r[name] is not None]
        got = [r for r in table if r[name] is not None]
        ys = [r[name] for r in got]
        err = [[y - r[f"{name}_low"] for y, r in zip(ys, got)], [r[f"{name}_high"] - y for y, r in zip(ys, got)]]
        ax.bar(xs, ys, 0.4, yerr=err, capsize=3, label=shown,
               hatch="//" if name == "fine_tuned" else None, edgecolor="black")
    ax.set_xticks(range(len(table)), [f"{r['category']}\n(n={r['n']})" for r in table], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy %")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("BFCL: accuracy % by category, fine-tuned vs untrained (Wilson 95% intervals)", fontsize=12)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "\n".join(textwrap.fill(line, 160) for line in caption_lines), fontsize=7,
             va="bottom", ha="left", color="#333333")
    stamp_figure(fig, stamp)
    return save_png_svg(fig, folder, "bfcl")


def write(cfg: Profile, folder: Path) -> dict[str, Path]:
    """bfcl.csv, bfcl.md and the figure into `folder`, when stage 04 scored BFCL; {} otherwise."""
    table = rows(cfg)
    if not table:
        return {}
    label, lines = cfg.profile or "this profile", caption(cfg)
    paths = {"bfcl_csv": tables.write_csv(folder / "bfcl.csv", table, COLUMNS)}
    paths["bfcl_md"] = folder / "bfcl.md"
    paths["bfcl_md"].write_text(markdown(table, lines, cfg.stamp, label), encoding="utf-8")
    paths["bfcl_png"], paths["bfcl_svg"] = figure(table, lines, cfg.stamp, label, folder)
    return paths
