"""The claim audit: every figure the paper states, recomputed from data files and judged.

Sections "training", "tables", "text", "readme" (the paper's baselines against ToolBench README's)
and "ours"; each line is a claim, the claimed and recomputed value, a verdict and its rule.
Printed numbers stay strings, so a rule reads "equal after rounding to the printed precision", and
arithmetic on them uses Decimal (77.545 vs 77.55 is decided exactly).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from lib.common import config
from lib.common.settings import Profile
from lib.report.series import OFFLINE_NOTE, covered_groups, is_offline, overall_note
from lib.common.tables import fmt, group_label, markdown_table, read_csv

GROUPS = config.GROUPS
AUDIT_COLUMNS = ["section", "claim", "claimed", "recomputed", "verdict", "rule", "note"]
HALF_UNIT_RULE = "equal after rounding to the printed precision (|diff| <= half a unit of the last printed digit)"


# ----------------------------------------------------------------------------- printed numbers
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


# ----------------------------------------------------------------------------- claims
# Seven parameters: one per column of audit.csv.
def line(section, claim, claimed, recomputed, verdict, rule, note=""):
    if isinstance(verdict, bool):
        verdict = "consistent" if verdict else "inconsistent"
    return {"section": section, "claim": claim, "claimed": str(claimed), "recomputed": str(recomputed),
            "verdict": verdict, "rule": rule, "note": note}


def read_claims(path: Path) -> list[dict]:
    return read_csv(path)


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
        line("training", "effective batch = per-device batch x accumulation", batch, per_device * accum,
              batch == per_device * accum, "exact"),
        line("training", f"{stated:,} optimizer steps for {examples:,} examples at batch {batch}, "
              f"{epochs} epoch", stated, f"{exact:.2f} (floor {math.floor(exact)}, ceil {math.ceil(exact)})",
              stated in (math.floor(exact), math.ceil(exact)),
              "stated steps equal floor or ceil of examples x epochs / effective batch",
              f"HF Trainer (transformers >= 4.46 keeps the partial last accumulation) would run "
              f"ceil(ceil({examples}/{per_device})/{accum}) = {trainer_steps} steps"),
    ]
    seq, positions = int(c["max_seq_length"]["value"]), int(c["max_position_embeddings"]["value"])
    lines.append(line("training", f"max sequence length {seq} with {c['max_position_embeddings']['model_a']}",
                       seq, f"{positions} learned positions", seq <= positions,
                       "sequence length <= the model's max_position_embeddings",
                       f"OPT cannot attend past {positions} tokens; {seq} is {seq / positions:.0f}x that"))
    return lines


def query_weighted_mean(s: dict) -> Decimal:
    """The six printed group figures of a published series, weighted by their query counts (the
    paper's Table 1 figure, if Table 2 and Table 1 agree), exactly."""
    return sum(_dec(s, g) * s["n"][g] for g in GROUPS) / sum(s["n"][g] for g in GROUPS)


def unweighted_mean(s: dict) -> Decimal:
    """The plain mean of the six printed group figures of a published series, exactly."""
    return sum(_dec(s, g) for g in GROUPS) / len(GROUPS)


def table_lines(s: dict) -> list[dict]:
    """One paper row's Table 1 against its Table 2: overall = query-weighted mean; the printed Avg
    against the unweighted and the query-weighted mean, and against Table 1 rounded."""
    weighted, plain = query_weighted_mean(s), unweighted_mean(s)
    t1, avg = s["printed"]["overall"], s["printed"]["average"]
    return [
        line("tables", f"{s['label']}: Table 1 overall = query-weighted mean of Table 2", t1,
              f"{weighted:.4f}", matches_printed(weighted, t1), HALF_UNIT_RULE),
        line("tables", f"{s['label']}: Table 2 Avg = unweighted mean of Table 2", avg,
              f"{plain:.4f}", matches_printed(plain, avg), HALF_UNIT_RULE),
        line("tables", f"{s['label']}: Table 2 Avg = query-weighted mean of Table 2", avg,
              f"{weighted:.4f}", matches_printed(weighted, avg), HALF_UNIT_RULE),
        line("tables", f"{s['label']}: Table 2 Avg = Table 1 overall rounded to Avg's precision", avg,
              f"{round_like(Decimal(t1), avg)} (from {t1})", round_like(Decimal(t1), avg) == Decimal(avg),
              "equal after rounding half-up", "a double rounding: Table 1 was rounded first"),
    ]


def audit_tables(paper: list[dict], claims: list[dict]) -> list[dict]:
    """Table 1 against Table 2, per model: weighted mean, unweighted mean, printed Avg."""
    sizes = [paper[0]["n"][g] for g in GROUPS]
    total = _claim(claims, "test_queries")
    lines = [line("tables", "test queries over the six groups", total["value"],
                  f"{' + '.join(map(str, sizes))} = {sum(sizes)}", int(total["value"]) == sum(sizes), "exact")]
    for s in paper:
        lines += table_lines(s)
    return lines


def audit_text(paper: list[dict], readme: list[dict], claims: list[dict]) -> list[dict]:
    """The text's quoted figures, gaps and ratios against Table 1 and Table 2."""
    by_label = {s["label"]: s for s in paper}
    lines = []
    for c in claims:
        if c["claim"] == "headline_pass_rate":
            t1 = by_label[c["model_a"]]["printed"]["overall"]
            lines.append(line("text", c["text"], c["value"], f"Table 1: {t1}",
                               Decimal(c["value"]) == Decimal(t1), "exact (same printed figure)"))
        if c["claim"] == "ahead_of":
            lines += _ahead_of(c, by_label[c["model_a"]], by_label[c["model_b"]])
        if c["claim"] == "ratio":
            a, b = _dec(by_label[c["model_a"]], "overall"), _dec(by_label[c["model_b"]], "overall")
            readme_b = [r for r in readme if r["paper_label"] == c["model_b"] and "average" in r["printed"]]
            note = "; ".join(f"with {r['label']} Average {r['printed']['average']}: "
                             f"{a / _dec(r, 'average'):.2f}x" for r in readme_b)
            lines.append(line("text", f"{c['text']} ({c['model_a']} / {c['model_b']}, Table 1)",
                               c["value"], f"{a} / {b} = {a / b:.4f}", matches_printed(a / b, c["value"]),
                               HALF_UNIT_RULE, note))
    return lines


def _ahead_of(c: dict, a: dict, b: dict) -> list[dict]:
    ta, tb = _dec(a, "overall"), _dec(b, "overall")
    ahead = sum(_dec(a, g) > _dec(b, g) for g in GROUPS)
    gaps = [_dec(a, g) - _dec(b, g) for g in GROUPS]
    return [
        line("text", f"{c['text']}: quoted figure = Table 1", c["value"], f"Table 1: {b['printed']['overall']}",
              Decimal(c["value"]) == tb, "exact (same printed figure)"),
        line("text", f"{c['model_a']} ahead of {c['model_b']} overall (gap in points)", f"{ta} > {tb}",
              f"{ta - tb:+.2f} pts, ratio {ta / tb:.2f}x", ta > tb, "gap > 0",
              f"per group: ahead in {ahead}/{len(GROUPS)}, gaps {min(gaps):+.1f} to {max(gaps):+.1f} pts"),
    ]


def audit_readme(paper: list[dict], readme: list[dict]) -> list[dict]:
    """The paper's baseline rows against ToolBench README's numbers for the same baselines."""
    lines = []
    rule = "equal within half a unit of the coarser printed precision"
    for p in paper[1:]:
        for r in [r for r in readme if r["paper_label"] == p["label"]]:
            plain, weighted = unweighted_mean(r), query_weighted_mean(r)
            avg = r["printed"]["average"]
            lines.append(line("readme", f"{r['label']}: README Average = unweighted mean of its groups",
                               avg, f"{plain:.4f}", matches_printed(plain, avg), HALF_UNIT_RULE))
            coarse = max(half_unit(p["printed"]["overall"]), half_unit(avg))
            diff = _dec(p, "overall") - Decimal(avg)
            lines.append(line("readme", f"{p['label']} (paper Table 1) vs {r['label']} Average",
                               p["printed"]["overall"], f"README {avg} (query-weighted {weighted:.2f}); "
                               f"paper minus README {diff:+.2f} pts", abs(diff) <= coarse, rule))
            diffs = [_dec(p, g) - _dec(r, g) for g in GROUPS]
            same = sum(abs(d) <= max(half_unit(p["printed"][g]), half_unit(r["printed"][g]))
                       for d, g in zip(diffs, GROUPS))
            lines.append(line(
                "readme", f"{p['label']} (paper Table 2) vs {r['label']} per group",
                "/".join(p["printed"][g] for g in GROUPS), "README " + "/".join(r["printed"][g] for g in GROUPS),
                same == len(GROUPS), rule,
                f"{same}/{len(GROUPS)} groups agree; paper minus README "
                + ", ".join(f"{group_label(g)} {d:+.1f}" for g, d in zip(GROUPS, diffs))))
    return lines


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def audit_ours(cfg: Profile, claims: list[dict], runs: list[dict]) -> list[dict]:
    """Our own outputs (where they exist) against the paper's counts."""
    out = config.path(cfg, cfg.output_dir)
    stats, summary = _read_json(out / "data_stats.json"), _read_json(out / "train_summary.json")
    examples = int(_claim(claims, "train_examples")["value"])
    stated = int(_claim(claims, "stated_steps")["value"])
    batch = int(_claim(claims, "effective_batch")["value"])
    scope = f"not comparable (profile {cfg.profile}: sample data)" if cfg.stamp else None
    na = "not available"
    lines = []
    if stats is None:
        lines.append(line("ours", f"data prep yields {examples:,} examples", examples, "no data_stats.json", na, "exact"))
    else:
        lines.append(line("ours", f"data prep yields {examples:,} examples (example_per={stats.get('example_per')})",
                           examples, stats.get("examples_written"),
                           scope or stats.get("examples_written") == examples, "exact",
                           f"{stats.get('records_read')} records read from {stats.get('source')}"))
        for choice, n in (stats.get("examples_per_choice") or {}).items():
            lines.append(line("ours", f"examples with one example per {choice}", examples, n,
                               scope or n == examples, "exact"))
        lines.append(line("ours", "training sequences longer than the model's positions", "none implied",
                           f"{stats.get('over_max_positions')} over {stats.get('max_positions')} positions; "
                           f"token length percentiles {stats.get('token_length_percentiles')}", "info", "count"))
    if summary is None:
        lines.append(line("ours", f"training runs {stated:,} steps", stated, "no train_summary.json", na, "exact"))
    else:
        ours = summary.get("examples"), summary.get("effective_batch"), summary.get("optimizer_steps")
        epochs = cfg.train.get("num_train_epochs", 1)
        expected = math.ceil(ours[0] / ours[1]) * math.ceil(epochs) if all(ours) else None
        lines += [
            line("ours", "our optimizer steps = ceil(examples / effective batch) x epochs", expected, ours[2],
                  expected == ours[2] if expected else na, "exact",
                  f"{ours[0]} examples, effective batch {ours[1]}, {epochs} epochs"),
            _paper_steps_line(summary.get("paper_steps_at_batch_32"), stated, examples, batch),
            line("ours", f"paper's {stated:,} steps vs our run", stated, ours[2], scope or ours[2] == stated, "exact"),
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
            lines.append(line("ours", f"{s['label']} overall pass rate vs the paper's {paper_ours}", paper_ours,
                               f"{s['value']['overall']:.2f} [{fmt(lo)}, {fmt(hi)}] ({s['aggregation']}, "
                               f"judge {s['judge']})", scope or partial or inside,
                               "paper's figure inside our Wilson 95% interval", "; ".join(filter(None, notes))))
    return lines


def _paper_steps_line(steps: dict | None, stated: int, examples: int, batch: int) -> dict:
    """The paper's stated steps against train_summary's lib.common.paper.epoch_steps(): older Trainers ran
    floor(batches / accumulation) steps, today's (transformers >= 4.46) keep the partial last one."""
    claim = f"paper's steps at batch {batch} (train_summary.paper_steps_at_batch_32)"
    rule = f"stated steps equal floor or ceil of {examples:,} / {batch}"
    if not isinstance(steps, dict):
        return line("ours", claim, stated, steps, "not available", rule)
    floor, ceil = steps["floor"], steps["ceil"]
    note = {floor: f"the paper's {stated:,} is the floor, older Trainers' count; today's Trainer "
                   f"(transformers >= 4.46, keeping the partial last accumulation) runs the ceil, {ceil:,}",
            ceil: f"the paper's {stated:,} is the ceil, today's Trainer's count; older Trainers ran "
                  f"the floor, {floor:,}"}.get(stated)
    return line("ours", claim, stated,
                 f"floor {floor}, ceil {ceil} ({examples} / {batch} = {steps.get('examples_over_32')})",
                 note is not None, rule,
                 note or f"neither floor {floor:,} (older Trainers) nor ceil {ceil:,} (today's Trainer)")


def _test_count_line(cfg: Profile, claims: list[dict], scope) -> dict:
    test_dir = config.path(cfg, cfg.data.test_dir)
    claimed = int(_claim(claims, "test_queries")["value"])
    files = [test_dir / f"{g}.json" for g in GROUPS]
    if not all(f.exists() for f in files):
        return line("ours", "test queries in data.test_dir", claimed, f"missing files in {test_dir}",
                     "not available", "exact")
    counts = [len(json.loads(f.read_text(encoding="utf-8"))) for f in files]
    return line("ours", "test queries in data.test_dir", claimed, f"{'/'.join(map(str, counts))} = {sum(counts)}",
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
    return markdown_table(header, [[c.replace("|", "/") for c in r] for r in body],
                          "Claim audit (every value recomputed from data files)", caption + [summary], stamp)
