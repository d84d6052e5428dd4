"""Stage 03 on a CPU: re-encoding every ReAct step's prompt vs reusing the key/value cache.

    .venv/bin/python -m bench.react_steps [--profile smollm2] [--group G1_instruction] [--queries 8]
                                          [--untrained] [--batch-sizes 1,8,16,32] [--costs-only]
                                          [--json out.json]

Runs one group's queries through stage 03's own loop (lib.inference.run_group: ReAct, batched, the
offline tool environment) twice with the same model, side by side in one process: once encoding each
prompt whole, once with inference.reuse_kv_cache (lib/prefix_cache.py). Greedy (temperature 0), so
both must write the same trajectories; the script says whether they did. Prints per mode the wall
time, generate calls, prompt tokens encoded and reused, tokens generated, and the speed-up; and,
measured apart on the first query's prompt, the model's prefill time per token and decode time per
step at each of --batch-sizes (decode on a CPU is bound by per-step overheads, not by the batch).

The model is outputs/<profile>/model (stage 02) when it exists and --untrained is not given, else
the profile's base model as stage 02 starts from it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def backend_for(cfg, untrained: bool):
    from lib import backends, config

    trained = config.path(cfg, f"{cfg['output_dir']}/model") / "config.json"
    if trained.exists() and not untrained:
        return backends.load_hf_backend(cfg), "trained (outputs/<profile>/model)"
    return backends.untrained_backend(cfg), "untrained (the base model)"


class Timed:
    """Wraps backend.generate: counts calls, prompt tokens and seconds."""

    def __init__(self, backend):
        self.backend, self.calls, self.seconds, self.prompt_tokens = backend, 0, 0.0, 0

    def generate(self, conversations):
        self.prompt_tokens += sum(len(self.backend.encode(c)[0]) for c in conversations)
        start = time.perf_counter()
        out = self.backend.generate(conversations)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def run_mode(cfg, backend, queries, env, folder: Path, reuse: bool) -> tuple[dict, list[dict]]:
    from lib import inference
    from lib.prefix_cache import PrefixCache

    backend.prefix_cache = PrefixCache(2 * cfg["inference"]["batch_size"]) if reuse else None
    timed = Timed(backend)
    path = folder / f"{'reuse' if reuse else 'recompute'}.jsonl"
    for q in queries:
        q.tool_calls = []
    start = time.perf_counter()
    counters = inference.run_group(queries, timed, env, path, "react", cfg["inference"]["max_iterations"],
                                   cfg["inference"]["batch_size"],
                                   max_observation_length=cfg["inference"].get("max_observation_length"))
    wall = time.perf_counter() - start
    lines = inference.read_trajectories(path)
    encoded = backend.prefix_cache.prefilled_tokens if reuse else timed.prompt_tokens
    return {"wall_s": round(wall, 1), "generate_calls": timed.calls, "queries": counters["ran"],
            "steps": sum(l["total_steps"] for l in lines), "tokens_generated": counters["tokens"],
            "prompt_tokens": timed.prompt_tokens, "prompt_tokens_encoded": encoded,
            "prompt_tokens_reused": timed.prompt_tokens - encoded,
            "s_per_step": round(wall / max(1, sum(l["total_steps"] for l in lines)), 2)}, lines


def per_token_costs(backend, conversation, batches: list[int], decode_steps: int = 8) -> dict:
    """Prefill seconds per prompt token and decode seconds per step (every row one new token, the
    first query's prompt as the context) at each batch size."""
    model = backend.model
    ids = torch.tensor([backend.encode(conversation)[0]], device=model.device)
    out = {"prompt_tokens": ids.shape[1]}
    with torch.no_grad():
        model(ids[:, :32])                      # warm-up
        for rows in batches:
            start = time.perf_counter()
            result = model(ids.repeat(rows, 1), use_cache=True)
            prefill = time.perf_counter() - start
            cache, token = result.cache, ids[:, -1:].repeat(rows, 1)
            start = time.perf_counter()
            for _ in range(decode_steps):
                cache = model(token, cache=cache, use_cache=True).cache
            step = (time.perf_counter() - start) / decode_steps
            out[f"batch_{rows}"] = {"prefill_ms_per_token": round(1000 * prefill / (rows * ids.shape[1]), 2),
                                    "decode_ms_per_step": round(1000 * step, 1),
                                    "decode_tokens_per_s": round(rows / step, 1)}
            print(f"batch {rows}: prefill {out[f'batch_{rows}']['prefill_ms_per_token']} ms/token, decode "
                  f"{out[f'batch_{rows}']['decode_ms_per_step']} ms/step ({rows / step:.0f} tokens/s)", flush=True)
    return out


def main(argv=None):
    from lib import config, inference, tools

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smollm2")
    parser.add_argument("--group", default="G1_instruction")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--untrained", action="store_true", help="the base model, not stage 02's")
    parser.add_argument("--batch-sizes", default="1,8,16,32", help="batch sizes for the prefill/decode costs")
    parser.add_argument("--costs-only", action="store_true", help="only the prefill/decode costs")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    cfg = config.load(args.profile, {"inference.temperature": 0.0})
    queries = inference.load_test_queries(cfg)[args.group][:args.queries]
    backend, which = backend_for(cfg, args.untrained)
    env = tools.make_env(cfg)
    result = {"profile": args.profile, "model": which, "group": args.group, "threads": torch.get_num_threads(),
              "batch_size": cfg["inference"]["batch_size"], "max_iterations": cfg["inference"]["max_iterations"],
              "max_new_tokens": cfg["inference"]["max_new_tokens"],
              "costs": per_token_costs(backend, queries[0].start(), [int(b) for b in args.batch_sizes.split(",")])}
    if args.costs_only:
        print(json.dumps(result, indent=2))
        return result
    with tempfile.TemporaryDirectory() as tmp:
        result["recompute"], plain = run_mode(cfg, backend, queries, env, Path(tmp), reuse=False)
        result["reuse"], reused = run_mode(cfg, backend, queries, env, Path(tmp), reuse=True)
    keep = ("query_id", "steps", "final_answer", "finish_type")
    result["same_trajectories"] = [{k: l[k] for k in keep} for l in plain] == [{k: l[k] for k in keep} for l in reused]
    result["speedup"] = round(result["recompute"]["wall_s"] / result["reuse"]["wall_s"], 2)
    print(json.dumps(result, indent=2))
    print(f"reuse_kv_cache: {result['speedup']}x faster on {args.group} "
          f"({result['recompute']['wall_s']} s -> {result['reuse']['wall_s']} s); same trajectories: "
          f"{result['same_trajectories']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
