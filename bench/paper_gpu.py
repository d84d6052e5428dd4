"""The paper profile on a GPU in a few minutes: opt-350m's exact shape, the paper's precision and
batch, real-format ToolBench data, through the stages' own code.

    python bench/paper_gpu.py --toolbench DIR --steps 40 --json paper_gpu.json

DIR is laid out as ToolBench's `unzip data.zip` leaves it (DIR/data/toolllama_G123_dfs_train.json,
DIR/data/test_instruction/<group>.json). The model is a stand-in for facebook/opt-350m (no hub here):
its exact architecture with random weights, stored in float16 like the hub checkpoint, with a
tokenizer trained on the data (lib.models.model.save_stand_in). Everything else is configs/paper.yaml with
only size and location overrides. Five parts, each reported even if a later one fails:

  preflight the pre-flight table (lib/pipeline/preflight.py) for this configuration, network probes left out:
            its CUDA row sets the memory estimate beside the card's free memory.
  pipeline  stage 01 (data.prepare) and stage 02 (train.run) as the notebooks call them, for --steps
            optimizer steps at batch 8 x 4, fp16 mixed precision, gradient checkpointing, with one
            checkpoint saved midway: proves the recipe runs on CUDA and times it on real records.
  sweep     the same SFTTrainer settings on full-length rows of 512 / 1024 / 2048 tokens: seconds
            per optimizer step, tokens/s, MFU and peak memory per sequence length, the figures to
            predict a whole epoch: 5,860 steps x 32 sequences of the data's lengths.
  inference stage 03's HF backend (backends.load_hf_backend, inference.dtype) on the trained model
            (the stand-in when the pipeline part is left out): one batch of 8 test-query prompts at
            temperature 0.1, --new-tokens each, once per --inference-dtypes entry; on CUDA, one
            call of --profile-steps tokens per dtype under torch.profiler (GPU busy vs wall time a
            decode step, kernels launched, the top kernels and host ops).
  react     stage 03's loop (bench/react_steps.py) on 8 test queries, greedy, float32, per
            --react-modes: re-encoding every prompt, reusing the key/value cache, and that plus
            decode_chunk; and the prefill/decode costs per batch size.

MFU = tokens/s x FLOPs/token / peak, FLOPs/token as in bench/train_throughput.py (6N + 12 L d T),
against both the matmul peak measured in this run (fp16, 8192^3) and the card's datasheet figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.train_throughput import StepTimer, flops_per_token, matmul_peak  # noqa: E402
from lib.common import config, paper  # noqa: E402
from lib.toolbench import formats  # noqa: E402
from lib.models import backends, model as model_lib  # noqa: E402
from lib.data import data  # noqa: E402
from lib.train import recipe, train  # noqa: E402
from lib.pipeline import checklist, preflight  # noqa: E402

# Dense fp16/bf16 tensor-core peaks from NVIDIA's datasheets (no sparsity), for the MFU column.
DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A10G": 70.0, "L4": 121.0}


def datasheet_peak(name: str) -> float | None:
    return next((v * 1e12 for k, v in DATASHEET_TFLOPS.items() if k in name), None)


def paper_config(toolbench: Path, stand_in: Path, out: Path, steps: int) -> dict:
    """configs/paper.yaml with only the locations and the run's length changed."""
    root = toolbench / "data"
    return config.load("paper", {
        "output_dir": str(out), "model.name_or_path": str(stand_in),
        "data.train_path": str(root / "toolllama_G123_dfs_train.json"),
        "data.test_dir": str(root / "test_instruction"), "data.toolenv_dir": str(root / "toolenv"),
        "train.max_steps": steps, "train.save_steps": max(steps // 2, 1), "train.logging_steps": 5,
    })


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float:
    """CUDA: max allocated since the last reset. CPU: the process's max RSS so far (monotonic, so
    a sweep runs its lengths shortest first and each row holds that length's peak)."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)


class StepClock(TrainerCallback):
    """Wall time at the end of each optimizer step (the first one is warm-up)."""

    def __init__(self):
        self.marks = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())


def pipeline(cfg: dict) -> dict:
    stats = data.prepare(cfg)
    clock = StepClock()
    reset_peak()
    summary = train.run(cfg, callbacks=[clock])
    step_s = (clock.marks[-1] - clock.marks[0]) / max(len(clock.marks) - 1, 1)
    return {"examples": summary["examples"], "optimizer_steps": summary["optimizer_steps"],
            "precision": summary["precision"], "device": summary["device"],
            "token_length_percentiles": stats["token_length_percentiles"],
            "over_max_length": summary["over_max_length"], "seconds_per_step": round(step_s, 3),
            "tokens_per_s": summary["tokens_per_s"], "final_loss": summary["final_loss"],
            "train_loss": summary.get("train_loss"), "peak_memory_gb": peak_gb(),
            "checkpoints": sorted(p.name for p in (Path(cfg.output_dir) / "checkpoints").glob("checkpoint-*"))}


def sweep(cfg: dict, lengths: list[int], steps: int, peak: float, sheet: float | None,
          batch: int | None = None, accum: int | None = None) -> list[dict]:
    from datasets import Dataset

    tokenizer = model_lib.load_tokenizer(cfg)
    rows = []
    for length in lengths:
        g = torch.Generator().manual_seed(length)
        rows_needed = (steps + 1) * (batch or 8) * (accum or 4)
        ids = torch.randint(10, len(tokenizer), (rows_needed, length), generator=g).tolist()
        dataset = Dataset.from_dict({"input_ids": ids})
        run_cfg = config.derive(cfg, {"train": {"max_steps": steps + 1, "save_strategy": "no",
                                    "logging_steps": 10 ** 6, "disable_tqdm": True, "max_length": length,
                                    "completion_only_loss": False, "dataloader_num_workers": 0,
                                    **({"per_device_train_batch_size": batch} if batch else {}),
                                    **({"gradient_accumulation_steps": accum} if accum else {})}})
        args, precision = recipe.sft_config(run_cfg, log=lambda *_: None)
        torch.manual_seed(0)
        model = model_lib.load_model(run_cfg, tokenizer)
        timer = StepTimer()
        trainer = recipe.make_trainer(run_cfg, model, tokenizer, dataset, args, [timer])
        timer.trainer = trainer
        reset_peak()
        trainer.train()
        (t0, k0), (t1, k1) = timer.marks[0], timer.marks[-1]
        step_s, tokens_per_s = (t1 - t0) / steps, (k1 - k0) / (t1 - t0)
        fpt = flops_per_token(model, length)
        rows.append({"seq_len": length, "batch": f"{args.per_device_train_batch_size}x{args.gradient_accumulation_steps}",
                     "precision": precision, "gradient_checkpointing": args.gradient_checkpointing,
                     "seconds_per_step": round(step_s, 3), "tokens_per_s": round(tokens_per_s),
                     "flops_per_token": round(fpt), "mfu_measured_peak": round(tokens_per_s * fpt / peak, 4),
                     "mfu_datasheet": round(tokens_per_s * fpt / sheet, 4) if sheet else None,
                     "peak_memory_gb": peak_gb(),
                     "seconds_per_sequence": round(step_s / (args.per_device_train_batch_size
                                                             * args.gradient_accumulation_steps), 3),
                     "hours_for_5860_steps": round(step_s * paper.number("stated_steps") / 3600, 2)})
        print(json.dumps(rows[-1]), flush=True)
        del trainer, model
    return rows


def inference(cfg: dict, new_tokens: int, dtypes: list[str], profile_steps: int = 0,
              cudnn_too: bool = False) -> list[dict]:
    """Stage 03's backend on the same 8 prompts once per dtype, side by side in one run; with
    `profile_steps`, where each dtype's decode step goes (decode_profile)."""
    test_dir = config.path(cfg, cfg.data.test_dir)
    group = sorted(test_dir.glob("*.json"))[0]
    queries = [formats.Query(r, group.stem) for r in formats.load_queries(group)[:8]]
    prompts = [q.start() for q in queries]
    rows = []
    for dtype, cudnn in [(d, c) for d in dtypes for c in ((False, True) if cudnn_too else (False,))]:
        run_cfg = config.derive(cfg, {"inference": {"max_new_tokens": new_tokens, "dtype": dtype}})
        backend = backends.load_hf_backend(run_cfg)
        backend.cudnn_attention = cudnn
        backend.generate(prompts[:1])                      # warm-up
        reset_peak()
        t = time.perf_counter()
        out = backend.generate(prompts)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        tokens = sum(g.tokens for g in out)
        rows.append({"device": str(backend.model.device), "dtype": str(backend.model.dtype),
                     "attention": backend.model.config._attn_implementation, "cudnn_attention": cudnn,
                     "batch": len(prompts),
                     "prompt_tokens": [len(backend.encode(p)[0]) for p in prompts], "new_tokens": tokens,
                     "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
                     "ms_per_decode_step": round(1000 * wall / max(g.tokens for g in out), 1),
                     "peak_memory_gb": peak_gb()})
        print(json.dumps(rows[-1]), flush=True)
        if profile_steps and torch.cuda.is_available():
            rows[-1]["profile"] = decode_profile(backend, prompts, profile_steps)
            print(json.dumps(rows[-1]["profile"]), flush=True)
        del backend
    return rows


def decode_profile(backend, prompts: list, steps: int) -> dict:
    """Where a generate call's time goes, per decode step: one call of `steps` new tokens for the
    batch under torch.profiler (random weights never stop early, so every row runs `steps`). GPU
    busy time far below the wall time means the step is bound by the host launching kernels, not
    by the GPU; the CPU ops and kernel counts then say what the host does per step."""
    from torch.profiler import ProfilerActivity, profile

    backend.max_new_tokens = steps
    backend.generate(prompts[:1])                          # warm-up at this length
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        backend.generate(prompts)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    gpu = [e for e in events if e.self_device_time_total > 0 and e.device_type.name == "CUDA"]
    cpu = [e for e in events if e.device_type.name == "CPU"]
    per = lambda us: round(us / 1000 / steps, 3)            # noqa: E731 (microseconds -> ms a step)
    return {"dtype": str(backend.model.dtype), "steps": steps, "wall_ms_per_step": round(1000 * wall / steps, 2),
            "gpu_busy_ms_per_step": per(sum(e.self_device_time_total for e in gpu)),
            "kernels_per_step": round(sum(e.count for e in gpu) / steps, 1),
            "top_kernels": [[e.key[:90], per(e.self_device_time_total), round(e.count / steps, 1)]
                            for e in sorted(gpu, key=lambda e: -e.self_device_time_total)[:6]],
            "top_cpu_ops": [[e.key[:60], per(e.self_cpu_time_total), round(e.count / steps, 1)]
                            for e in sorted(cpu, key=lambda e: -e.self_cpu_time_total)[:10]]}


def react(cfg: dict, modes: list[str], queries: int, new_tokens: int, iterations: int,
          chunk: int, chunk_batch: int) -> dict:
    """Stage 03's own loop (ReAct, batched, offline tools) on one group's queries, once per mode
    of bench/react_steps.py (re-encoding, inference.reuse_kv_cache, + inference.decode_chunk),
    greedy, float32; and the prefill/decode costs per batch size on the first prompt."""
    from bench import react_steps
    from lib.toolbench import environments
    from lib.infer import inference

    responses = config.path(cfg, cfg.data.toolenv_dir) / "responses.jsonl"
    if not responses.exists():               # nothing recorded: every call gets the env's miss answer
        responses.write_text("")
    group = sorted(config.path(cfg, cfg.data.test_dir).glob("*.json"))[0].stem
    run_cfg = config.derive(cfg, {"inference": {"temperature": 0.0, "dtype": "float32",
                                    "max_new_tokens": new_tokens, "max_iterations": iterations,
                                    "tool_env": "offline", "groups": [group]}})
    picked = inference.load_test_queries(run_cfg)[group][:queries]
    backend = backends.load_hf_backend(run_cfg)
    env = environments.make_env(run_cfg)
    result = {"group": group, "queries": len(picked), "max_new_tokens": new_tokens, "max_iterations": iterations,
              "costs": react_steps.per_token_costs(backend, picked[0].start(), [1, 8, 16, 32])}
    lines = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            result[mode], lines[mode] = react_steps.run_mode(run_cfg, backend, picked, env, Path(tmp), mode,
                                                             chunk, chunk_batch)
            print(json.dumps({mode: result[mode]}), flush=True)
    react_steps.compare(result, lines, modes)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolbench", required=True, type=Path, help="folder holding data/ as data.zip lays it out")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of the pipeline part")
    parser.add_argument("--sweep-steps", type=int, default=4, help="timed optimizer steps per length")
    parser.add_argument("--lengths", default="512,1024,2048")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (24 = opt-350m)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cpu-check", action="store_true",
                        help="without CUDA, run every part anyway (tiny settings) to check the script")
    parser.add_argument("--parts", default="preflight,pipeline,sweep,inference,react")
    parser.add_argument("--inference-dtypes", default="float16",
                        help="inference.dtype values to time side by side, e.g. float32,float16,bfloat16")
    parser.add_argument("--profile-steps", type=int, default=64,
                        help="inference: decode steps profiled per dtype (0: none; CUDA only)")
    parser.add_argument("--cudnn-too", action="store_true",
                        help="inference: each dtype also with cuDNN's attention allowed (backends.attention_kernels)")
    parser.add_argument("--react-modes", default="recompute,reuse,chunked", help="react: bench/react_steps.py's modes")
    parser.add_argument("--react-queries", type=int, default=8)
    parser.add_argument("--react-new-tokens", type=int, default=128, help="react: max_new_tokens a step")
    parser.add_argument("--react-iterations", type=int, default=3, help="react: steps a query")
    parser.add_argument("--decode-chunk", type=int, default=16, help="react: tokens a call in the chunked mode")
    parser.add_argument("--chunk-batch", type=int, default=16, help="react: rows a call in the chunked mode")
    parser.add_argument("--batch", type=int, help="sweep: per-device batch instead of the paper's 8")
    parser.add_argument("--accum", type=int, help="sweep: accumulation instead of the paper's 4")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_check:
        print("no CUDA device: this script measures the paper profile on a GPU; nothing was run")
        return 2

    work = Path(tempfile.mkdtemp(prefix="paper-gpu-"))
    texts = (m["value"] for r in json.loads((args.toolbench / "data/toolllama_G123_dfs_train.json").read_text())
             for m in r["conversations"])
    stand_in = model_lib.save_stand_in(work / "opt-350m-stand-in", texts, num_hidden_layers=args.layers)
    cfg = paper_config(args.toolbench, stand_in, work / "outputs", args.steps)
    if "pipeline" not in args.parts.split(","):       # no trained model: generate with the stand-in
        cfg = config.derive(cfg, {"inference.model_dir": str(stand_in)})
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else "cpu (script check only)"
    peak = matmul_peak("cuda", torch.float16, n=8192) if cuda else matmul_peak("cpu", torch.float32, n=512)
    sheet = datasheet_peak(name)
    report = {"gpu": name, "torch": torch.__version__, "measured_matmul_tflops": round(peak / 1e12, 1),
              "datasheet_tflops": sheet and sheet / 1e12, "layers": args.layers}
    print(json.dumps(report), flush=True)
    for part, fn in (("preflight", lambda: checklist.table(preflight.check(cfg, probe=False)).splitlines()),
                     ("pipeline", lambda: pipeline(cfg)),
                     ("sweep", lambda: sweep(cfg, [int(x) for x in args.lengths.split(",")],
                                             args.sweep_steps, peak, sheet, args.batch, args.accum)),
                     ("inference", lambda: inference(cfg, args.new_tokens, args.inference_dtypes.split(","),
                                                     args.profile_steps, args.cudnn_too)),
                     ("react", lambda: react(cfg, args.react_modes.split(","), args.react_queries,
                                             args.react_new_tokens, args.react_iterations,
                                             args.decode_chunk, args.chunk_batch))):
        if part not in args.parts.split(","):
            continue
        t = time.time()
        try:
            report[part] = fn()
        except Exception:                    # report what failed and go on to the next part
            report[part] = {"error": traceback.format_exc(limit=6)}
        report[part + "_wall_s"] = round(time.time() - t, 1)
        print(f"--- {part} ({report[part + '_wall_s']} s)\n{json.dumps(report[part], indent=1)}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
