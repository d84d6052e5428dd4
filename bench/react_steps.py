"""Stage 03 on a CPU: re-encoding every ReAct step's prompt vs reusing the key/value cache.

    .venv/bin/python -m bench.react_steps [--profile smollm2] [--group G1_instruction] [--queries 8]
                                          [--untrained] [--batch-sizes 1,8,16,32] [--costs-only]
                                          [--modes recompute,reuse,chunked] [--decode-chunk 16]
                                          [--chunk-batch 16] [--dtype bfloat16] [--json out.json]

Runs one group's queries through stage 03's own loop (lib.infer.inference.run_group: ReAct, batched, the
offline tool environment) with the same model in each of --modes, side by side in one process:
`recompute` encodes each prompt whole; `reuse` keeps the key/value cache (inference.reuse_kv_cache,
lib/models/prefix_cache.py); `chunked` adds inference.decode_chunk at --chunk-batch rows a call (a turn that
ends leaves the batch, a waiting query joins). Greedy (temperature 0): the script counts the
trajectories that came out the same as the first mode's (a row's rounding depends on the batch it
is in, so a different batch make-up can flip a near-tie, in float32 rarely, in bfloat16 more often). Prints per mode the wall
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
    from lib.common import config
    from lib.models import backends

    trained = config.path(cfg, f"{cfg.output_dir}/model") / "config.json"
    if trained.exists() and not untrained:
        return backends.load_hf_backend(cfg), "trained (outputs/<profile>/model)"
    return backends.untrained_backend(cfg), "untrained (the base model)"


class Timed:
    """Wraps backend.advance (the call stage 03 makes): counts calls, prompt tokens and seconds."""

    def __init__(self, backend):
        self.backend, self.calls, self.seconds, self.prompt_tokens = backend, 0, 0.0, 0

    def advance(self, conversations, partials):
        self.prompt_tokens += sum(len(self.backend.encode(c)[0]) + len(p) for c, p in zip(conversations, partials))
        start = time.perf_counter()
        out = self.backend.advance(conversations, partials)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


MODES = ("recompute", "reuse", "chunked")


def run_mode(cfg, backend, queries, env, folder: Path, mode: str, chunk: int = 16,
             chunk_batch: int = 16) -> tuple[dict, list[dict]]:
    """One pass of stage 03's loop: `recompute` (every prompt encoded whole, whole turns),
    `reuse` (inference.reuse_kv_cache, whole turns), `chunked` (reuse and inference.decode_chunk
    `chunk` at `chunk_batch` rows a call: a turn that ends makes room for a waiting query)."""
    from lib.common import config
    from lib.toolbench import trajectories
    from lib.infer import inference
    from lib.models.prefix_cache import PrefixCache

    batch = chunk_batch if mode == "chunked" else cfg.inference.batch_size
    backend.prefix_cache = PrefixCache(2 * batch) if mode != "recompute" else None
    backend.decode_chunk = chunk if mode == "chunked" else None
    timed = Timed(backend)
    path = folder / f"{mode}.jsonl"
    for q in queries:
        q.tool_calls = []
    start = time.perf_counter()
    how = config.derive(cfg, {"inference.method": "react", "inference.batch_size": batch}).inference
    counters = inference.run_group(queries, timed, env, path, how)
    wall = time.perf_counter() - start
    lines = trajectories.read(path, partial=True)
    encoded = backend.prefix_cache.prefilled_tokens if backend.prefix_cache else timed.prompt_tokens
    return {"wall_s": round(wall, 1), "batch_size": batch, "decode_chunk": backend.decode_chunk,
            "generate_calls": timed.calls, "queries": counters["ran"],
            "steps": sum(l["total_steps"] for l in lines), "tokens_generated": counters["tokens"],
            "prompt_tokens": timed.prompt_tokens, "prompt_tokens_encoded": encoded,
            "prompt_tokens_reused": timed.prompt_tokens - encoded,
            "s_per_step": round(wall / max(1, sum(l["total_steps"] for l in lines)), 2)}, lines


def compare(result: dict, lines: dict, modes: list[str]) -> None:
    """Adds `<mode>_vs_<first mode>` to result: the speed-up and how many trajectories (steps, final
    answer, finish type) came out the same as the first mode's."""
    keep = ("steps", "final_answer", "finish_type")
    by_id = {m: {l["query_id"]: {k: l[k] for k in keep} for l in lines[m]} for m in modes}
    base = modes[0]
    for mode in modes[1:]:
        same = sum(by_id[mode].get(q) == line for q, line in by_id[base].items())
        result[f"{mode}_vs_{base}"] = {"speedup": round(result[base]["wall_s"] / result[mode]["wall_s"], 2),
                                       "same_trajectories": f"{same}/{len(by_id[base])}"}


def per_token_costs(backend, conversation, batches: list[int], decode_steps: int = 8) -> dict:
    """Prefill seconds per prompt token and decode seconds per step (every row one new token, the
    first query's prompt as the context) at each batch size."""
    model = backend.model
    # A GPU runs ahead of the host: time only after its queue is drained.
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    # Room for the decode steps after the prompt (encode leaves only max_new_tokens of it).
    ids = torch.tensor([backend.encode(conversation)[0][-(backend.max_positions - decode_steps):]],
                       device=model.device)
    out = {"prompt_tokens": ids.shape[1]}
    with torch.no_grad():
        model(ids[:, :32])                      # warm-up
        for rows in batches:
            sync()
            start = time.perf_counter()
            result = model(ids.repeat(rows, 1), use_cache=True)
            sync()
            prefill = time.perf_counter() - start
            cache, token = result.cache, ids[:, -1:].repeat(rows, 1)
            start = time.perf_counter()
            for _ in range(decode_steps):
                cache = model(token, cache=cache, use_cache=True).cache
            sync()
            step = (time.perf_counter() - start) / decode_steps
            out[f"batch_{rows}"] = {"prefill_ms_per_token": round(1000 * prefill / (rows * ids.shape[1]), 2),
                                    "decode_ms_per_step": round(1000 * step, 1),
                                    "decode_tokens_per_s": round(rows / step, 1)}
            print(f"batch {rows}: prefill {out[f'batch_{rows}']['prefill_ms_per_token']} ms/token, decode "
                  f"{out[f'batch_{rows}']['decode_ms_per_step']} ms/step ({rows / step:.0f} tokens/s)", flush=True)
    return out


def main(argv=None):
    from lib.common import config
    from lib.toolbench import environments
    from lib.infer import inference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smollm2")
    parser.add_argument("--group", default="G1_instruction")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--untrained", action="store_true", help="the base model, not stage 02's")
    parser.add_argument("--batch-sizes", default="1,8,16,32", help="batch sizes for the prefill/decode costs")
    parser.add_argument("--costs-only", action="store_true", help="only the prefill/decode costs")
    parser.add_argument("--modes", default="recompute,reuse", help=f"side by side, of {', '.join(MODES)}")
    parser.add_argument("--decode-chunk", type=int, default=16, help="tokens per call in the chunked mode")
    parser.add_argument("--chunk-batch", type=int, default=16, help="rows per call in the chunked mode")
    parser.add_argument("--dtype", help="inference.dtype for this run (default: the profile's)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if len(modes) < 2 or not set(modes) <= set(MODES):
        parser.error(f"--modes takes two or more of {', '.join(MODES)}")
    overrides = {"inference.temperature": 0.0, **({"inference.dtype": args.dtype} if args.dtype else {})}
    cfg = config.load(args.profile, overrides)
    queries = inference.load_test_queries(cfg)[args.group][:args.queries]
    backend, which = backend_for(cfg, args.untrained)
    env = environments.make_env(cfg)
    result = {"profile": args.profile, "model": which, "group": args.group, "threads": torch.get_num_threads(),
              "batch_size": cfg.inference.batch_size, "max_iterations": cfg.inference.max_iterations,
              "max_new_tokens": cfg.inference.max_new_tokens,
              "costs": per_token_costs(backend, queries[0].start(), [int(b) for b in args.batch_sizes.split(",")])}
    if args.costs_only:
        print(json.dumps(result, indent=2))
        return result
    lines = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            result[mode], lines[mode] = run_mode(cfg, backend, queries, env, Path(tmp), mode,
                                                 args.decode_chunk, args.chunk_batch)
    compare(result, lines, modes)
    base = modes[0]
    print(json.dumps(result, indent=2))
    for mode in modes[1:]:
        r = result[f"{mode}_vs_{base}"]
        print(f"{mode} vs {base} on {args.group}: {r['speedup']}x ({result[base]['wall_s']} s -> "
              f"{result[mode]['wall_s']} s); same trajectories: {r['same_trajectories']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
