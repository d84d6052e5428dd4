"""Recipe candidates for the tiny model, side by side: what does each teach per training minute?

    .venv/bin/python bench/recipes.py --profile smoke --candidate baseline \\
        --candidate wider="model.tiny.hidden_size=256 model.tiny.ffn_dim=1024" --json out.json

Each candidate is the profile plus a few `key=value` overrides (values parsed as YAML, as
`python -m lib.pipeline.run --set` takes them). Every candidate runs stages 01-04 through the stages' own code
(not the notebooks) into its own folder under --work, one after the other on the same machine, and
the table gives, per candidate: training minutes, first-step accuracy of the fine-tuned and the
untrained model (lib/checks/first_step.py), the share of inference steps that failed to parse, the share of
queries ended with Finish -> give_answer, and the offline judge's pass rate overall and on
G1-instruction (majority vote), each over the profile's test queries.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.common import config  # noqa: E402
from lib.data import data  # noqa: E402
from lib.train import train  # noqa: E402
from lib.infer import first_step_report, inference, untrained  # noqa: E402
from lib.judge import judge  # noqa: E402


def parse_candidate(text: str) -> tuple[str, dict]:
    name, _, sets = text.partition("=")
    try:
        return name, config.parse_overrides(sets.split())
    except config.ConfigError as err:
        raise SystemExit(f"candidate {name}: {err}") from None


def run_candidate(profile: str, name: str, overrides: dict, work: Path) -> dict:
    cfg = config.load(profile, {**overrides, "output_dir": str(work / name)})
    if cfg.data.generate_sample:
        # Each candidate generates its own sample (its data.sample_* options may differ).
        sample_dir = work / name / "sample"
        cfg = config.load(profile, {**overrides, "output_dir": str(work / name),
                                    "data.sample_dir": str(sample_dir),
                                    "data.train_path": str(sample_dir / "train" / "toolllama_G123_dfs_train.json"),
                                    "data.test_dir": str(sample_dir / "test_instruction"),
                                    "data.toolenv_dir": str(sample_dir / "toolenv")})
    quiet = lambda *a, **k: None  # noqa: E731
    t0 = time.time()
    data.prepare(cfg)
    summary = train.run(cfg, log=quiet)
    inferred = inference.run(cfg, log=quiet)
    first = first_step_report.run(cfg, untrained.first_turns(cfg))
    judge.run(cfg, log=quiet)
    with open(Path(cfg.output_dir) / "pass_rate.csv") as fh:
        rows = {(r["aggregation"], r["group"]): r for r in csv.DictReader(fh)}
    total = inferred["total"]
    steps = total["steps"]
    return {"candidate": name, "overrides": overrides,
            "train_minutes": round(summary["train_runtime_s"] / 60, 1),
            "optimizer_steps": summary["optimizer_steps"], "final_loss": summary["final_loss"],
            "first_step_correct": first["overall"]["trained"]["correct"],
            "first_step_parses": first["overall"]["trained"]["parses"],
            "first_step_correct_untrained": first["overall"]["untrained"]["correct"],
            "parse_error_rate": round(total["parse_errors"] / steps, 4) if steps else None,
            "answered": round(total["finished_with_answer"] / total["queries"], 4),
            "pass_rate": float(rows["majority", "overall"]["pass_rate"]),
            "pass_rate_G1_instruction": float(rows["majority", "G1_instruction"]["pass_rate"])
            if ("majority", "G1_instruction") in rows else None,
            "wall_minutes": round((time.time() - t0) / 60, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--candidate", action="append", required=True,
                        help="NAME or NAME=\"key=value key=value\"")
    parser.add_argument("--work", type=Path, default=Path("/tmp/recipes"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    for text in args.candidate:
        name, overrides = parse_candidate(text)
        results.append(run_candidate(args.profile, name, overrides, args.work))
        print(json.dumps(results[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    cols = ["candidate", "train_minutes", "first_step_correct", "first_step_correct_untrained",
            "parse_error_rate", "answered", "pass_rate", "pass_rate_G1_instruction"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
