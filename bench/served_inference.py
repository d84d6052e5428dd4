"""Stage 03 in process and served, side by side in one run: tokens/s and seconds per ReAct step.

    .venv/bin/python -m bench.served_inference [--profile smollm2] [--model-dir DIR] [--group G1_instruction]
                                               [--queries 8] [--max-iterations N] [--serve transformers]
                                               [--dtype float32] [--serve-arg=--continuous-batching]
                                               [--json out.json]

The same queries (the group's first --queries) go through stage 03's own loop
(lib.infer.inference.run_group: ReAct, greedy, the offline tool environment) twice, on the same model
folder: the in-process HFBackend with the profile's batching (inference.batch_size rows, its key/value
cache and decode_chunk settings), then ServedBackend on a server started on that folder
(lib.models.served, inference.serve; the start is timed apart). Prints per backend the wall time,
ReAct steps, tokens generated, tokens/s, seconds per step (wall / steps), and how many trajectories
came out the same as in process, and for the others the first step that differs. The sample data is
generated into a temporary folder from the profile's seed, as stage 01 does. --dtype sets
inference.dtype for both (the profile's bfloat16 rounds differently in a batch of 16 rows than in
the server's one-request generate, so greedy turns can part; float32 shows what the path alone
does); --serve-arg adds to the server's command line (--continuous-batching: its paged batching).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def settings(profile: str, model_dir: str | None, folder: Path, group: str, queries: int, iterations: int | None,
             serve: str, dtype: str | None = None, serve_args: list | None = None):
    """The profile with the sample in `folder`, one group, greedy; and its served twin."""
    from lib.common import config
    from lib.data import data

    cfg = config.load(profile, {"data.sample_dir": str(folder), "data.test_dir": str(folder / "test_instruction"),
                                "data.toolenv_dir": str(folder / "toolenv"), "inference.groups": [group],
                                "inference.max_queries_per_group": queries, "inference.temperature": 0,
                                "inference.untrained_run": False,
                                **({"inference.max_iterations": iterations} if iterations else {}),
                                **({"inference.dtype": dtype} if dtype else {}),
                                **({"inference.model_dir": model_dir} if model_dir else {})})
    data.ensure_sample(cfg)
    return cfg, config.derive(cfg, {"inference.backend": "openai", "inference.serve": serve,
                                    "inference.serve_args": list(serve_args or [])})


def first_difference(mine: dict, theirs: dict | None) -> str:
    """Where a served trajectory first parts from the in-process one: "step N" (1-based), or "same"."""
    if theirs is None:
        return "missing in process"
    for n, (a, b) in enumerate(zip(mine["steps"], theirs["steps"]), 1):
        if a != b:
            return f"step {n}"
    return "same" if mine == theirs else f"step {min(len(mine['steps']), len(theirs['steps'])) + 1}"


def run_once(cfg, backend, path: Path) -> dict:
    """One pass of stage 03's loop over the group's queries; its figures and its lines."""
    from lib.infer import inference
    from lib.toolbench import environments, trajectories

    group = cfg.inference.groups[0]
    queries = inference.load_test_queries(cfg)[group]
    start = time.perf_counter()
    counters = inference.run_group(queries, backend, environments.make_env(cfg), path, cfg.inference)
    wall = time.perf_counter() - start
    lines = trajectories.read(path, partial=True)
    steps = sum(l["total_steps"] for l in lines)
    return {"queries": len(lines), "wall_s": round(wall, 2), "steps": steps, "tokens": counters["tokens"],
            "generate_calls": counters["generate_calls"],
            "tokens_per_s": round(counters["tokens"] / wall, 2), "s_per_step": round(wall / max(steps, 1), 3),
            "prompts_truncated": sum(l["prompts_truncated"] for l in lines),
            "lines": {str(l["query_id"]): l for l in lines}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.served_inference", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smollm2")
    parser.add_argument("--model-dir", help="the model folder (default: outputs/<profile>/model)")
    parser.add_argument("--group", default="G1_instruction")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--max-iterations", type=int, help="ReAct's step limit (default: the profile's)")
    parser.add_argument("--serve", default="transformers", choices=("transformers", "vllm"))
    parser.add_argument("--dtype", help="inference.dtype for both backends (default: the profile's)")
    parser.add_argument("--serve-arg", action="append", default=[], help="more of the server's arguments")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from lib.models import backends

    with tempfile.TemporaryDirectory(prefix="served-bench-") as tmp:
        tmp = Path(tmp)
        cfg, served_cfg = settings(args.profile, args.model_dir, tmp / "sample", args.group, args.queries,
                                   args.max_iterations, args.serve, args.dtype, args.serve_arg)
        print(f"profile {args.profile}, model {backends.model_folder(cfg)}, {args.group} x {args.queries} "
              f"queries, ReAct <= {cfg.inference.max_iterations} steps, greedy, max_new_tokens {cfg.inference.max_new_tokens}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        figures = {}
        local = backends.load_hf_backend(cfg)
        figures["in-process"] = run_once(cfg, local, tmp / "in_process.jsonl")
        figures["in-process"]["setup"] = (f"HFBackend {local.model.dtype}, batch {cfg.inference.batch_size}, "
                                          f"reuse_kv_cache {cfg.inference.reuse_kv_cache}, "
                                          f"decode_chunk {cfg.inference.decode_chunk}")
        del local
        start = time.perf_counter()
        with backends.closing(backends.make_backend(served_cfg)) as remote:
            started = time.perf_counter() - start
            figures["served"] = run_once(served_cfg, remote, tmp / "served.jsonl")
            figures["served"]["setup"] = f"{args.serve} serve <folder> {' '.join(remote.server.cmd[3:])}"
            figures["served"]["server_start_s"] = round(started, 1)
    reference = figures["in-process"]["lines"]
    parted = {k: first_difference(line, reference.get(k)) for k, line in figures["served"]["lines"].items()}
    same = sum(where == "same" for where in parted.values())
    print(f"{'':12}{'wall s':>9}{'steps':>7}{'tokens':>8}{'tokens/s':>10}{'s/step':>8}{'cut':>5}")
    for name, f in figures.items():
        print(f"{name:12}{f['wall_s']:>9}{f['steps']:>7}{f['tokens']:>8}{f['tokens_per_s']:>10}{f['s_per_step']:>8}"
              f"{f['prompts_truncated']:>5}   {f['setup']}")
    print(f"served: server started in {figures['served']['server_start_s']} s; "
          f"{same} of {len(reference)} trajectories the same as in process"
          + (f"; the others part at {', '.join(f'{k}: {w}' for k, w in parted.items() if w != 'same')}"
             if same < len(parted) else ""))
    if args.json:
        out = {name: {k: v for k, v in f.items() if k != "lines"} for name, f in figures.items()}
        out["same_trajectories"], out["queries"], out["parted_at"] = same, len(reference), parted
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
