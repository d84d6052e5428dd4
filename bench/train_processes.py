"""Stage 02 in 1 and in N processes at the same global batch: the loss curves step by step, and the
time. N > 1 goes through the stage's own launcher (accelerate launch, configs/accelerate/multi_gpu.yaml;
on a CPU the processes talk over gloo).

    .venv/bin/python bench/train_processes.py --from outputs/smoke --steps 60      # stage 01's sft/ and tokenizer/
    .venv/bin/python bench/train_processes.py --from outputs/smoke --processes 1 2 \
        --set train.train_sampling_strategy=group_by_length --json out.json

Each run trains the profile (default smoke) from its own copy of sft/ and tokenizer/ in a temporary
folder, with train.max_steps and accelerate.num_processes set and train.train_sampling_strategy random
unless --set says otherwise: the Trainer's group_by_length sorts the examples within windows of
per-device batch x accumulation, which differ between 1 and N processes, so the examples come in
another order. The profile's batch stays the global batch (lib/common/global_batch.py).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.common import config, store  # noqa: E402
from lib.train import train  # noqa: E402


def one_run(cfg, source: Path, folder: Path, processes: int, steps: int) -> dict:
    """Stage 02 in `processes` processes in `folder`: its losses by step, summary and wall time."""
    for name in ("sft", "tokenizer"):
        shutil.copytree(source / name, folder / name)
    run_cfg = config.derive(cfg, {"output_dir": str(folder), "train.max_steps": steps,
                                  "accelerate.num_processes": processes})
    started = time.time()
    summary = train.run(run_cfg, log=lambda *a, **k: None)
    wall = time.time() - started
    losses = {r["step"]: r["loss"] for r in store.read_jsonl(folder / "train_log.jsonl")}
    return {"processes": processes, "wall_s": round(wall, 1), "train_runtime_s": summary["train_runtime_s"],
            "per_process_batch": summary["per_process_batch"], "effective_batch": summary["effective_batch"],
            "losses": losses}


def compare(runs: list[dict]) -> dict:
    """Per run against the first: the largest absolute and relative loss difference over the steps
    both logged."""
    base = runs[0]["losses"]
    out = {}
    for run in runs[1:]:
        steps = sorted(set(base) & set(run["losses"]))
        diffs = [abs(run["losses"][s] - base[s]) for s in steps]
        out[run["processes"]] = {"steps": len(steps), "max_abs": max(diffs, default=None),
                                 "max_rel": max((d / abs(base[s]) for d, s in zip(diffs, steps)), default=None)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config.add_arguments(parser, example="train.train_sampling_strategy=group_by_length")
    parser.add_argument("--from", dest="source", default="outputs/smoke",
                        help="an output folder holding stage 01's sft/ and tokenizer/")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", help="write the runs and the comparison there")
    args = parser.parse_args(argv)
    overrides = {"train.train_sampling_strategy": "random", **config.overrides_of(parser, args)}
    cfg = config.load(args.profile, overrides)
    source = config.path(cfg, args.source)
    runs = []
    with tempfile.TemporaryDirectory(prefix="train-processes-") as tmp:
        for n in args.processes:
            runs.append(one_run(cfg, source, Path(tmp) / f"processes-{n}", n, args.steps))
            print(f"{n} process(es): batch {runs[-1]['per_process_batch']} each, global {runs[-1]['effective_batch']}, "
                  f"wall {runs[-1]['wall_s']} s, train_runtime {runs[-1]['train_runtime_s']} s", flush=True)
    steps = sorted(runs[0]["losses"])
    print("step  " + "  ".join(f"loss ({r['processes']} proc.)" for r in runs))
    for s in steps:
        print(f"{s:>4}  " + "  ".join(f"{r['losses'].get(s, float('nan')):>15.6f}" for r in runs))
    differences = compare(runs)
    for n, d in differences.items():
        print(f"{n} processes vs {runs[0]['processes']}: {d['steps']} logged steps, largest difference "
              f"{d['max_abs']:.3g} (relative {d['max_rel']:.3g})")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "overrides": overrides, "steps": args.steps,
                                               "runs": runs, "differences": differences}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
