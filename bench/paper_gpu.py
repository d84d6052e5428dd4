"""The paper profile on a GPU in a few minutes: opt-350m's exact shape, the paper's precision and
batch, real-format ToolBench data, through the stages' own code.

    python bench/paper_gpu.py --toolbench DIR --steps 40 --json paper_gpu.json

DIR is laid out as ToolBench's `unzip data.zip` leaves it (DIR/data/toolllama_G123_dfs_train.json,
DIR/data/test_instruction/<group>.json). The model is a stand-in for facebook/opt-350m (no hub here):
its exact architecture with random weights, stored in float16 like the hub checkpoint, with a
tokenizer trained on the data (lib.model.save_stand_in). Everything else is configs/paper.yaml with
only size and location overrides. Four parts, each reported even if a later one fails:

  preflight the pre-flight table (lib/preflight.py) for this configuration, network probes left out:
            its CUDA row sets the memory estimate beside the card's free memory.
  pipeline  stage 01 (data.prepare) and stage 02 (train.run) as the notebooks call them, for --steps
            optimizer steps at batch 8 x 4, fp16 mixed precision, gradient checkpointing, with one
            checkpoint saved midway: proves the recipe runs on CUDA and times it on real records.
  sweep     the same SFTTrainer settings on full-length rows of 512 / 1024 / 2048 tokens: seconds
            per optimizer step, tokens/s, MFU and peak memory per sequence length, the figures to
            predict a whole epoch: 5,860 steps x 32 sequences of the data's lengths.
  inference stage 03's HF backend (backends.load_hf_backend, inference.dtype) on the trained model
            (the stand-in when the pipeline part is left out): one batch of 8 test-query prompts at
            temperature 0.1, --new-tokens each, once per --inference-dtypes entry.

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
from lib import backends, checklist, config, data, model as model_lib, paper, preflight, toolbench, train  # noqa: E402

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
            "checkpoints": sorted(p.name for p in (Path(cfg["output_dir"]) / "checkpoints").glob("checkpoint-*"))}


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
        run_cfg = {**cfg, "train": {**cfg["train"], "max_steps": steps + 1, "save_strategy": "no",
                                    "logging_steps": 10 ** 6, "disable_tqdm": True, "max_length": length,
                                    "completion_only_loss": False, "dataloader_num_workers": 0,
                                    **({"per_device_train_batch_size": batch} if batch else {}),
                                    **({"gradient_accumulation_steps": accum} if accum else {})}}
        args, precision = train.sft_config(run_cfg, log=lambda *_: None)
        torch.manual_seed(0)
        model = model_lib.load_model(run_cfg, tokenizer)
        timer = StepTimer()
        trainer = train.make_trainer(run_cfg, model, tokenizer, dataset, args, [timer])
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


def inference(cfg: dict, new_tokens: int, dtypes: list[str]) -> list[dict]:
    """Stage 03's backend on the same 8 prompts once per dtype, side by side in one run."""
    test_dir = config.path(cfg, cfg["data"]["test_dir"])
    group = sorted(test_dir.glob("*.json"))[0]
    queries = [toolbench.Query(r, group.stem) for r in toolbench.load_queries(group)[:8]]
    prompts = [q.start() for q in queries]
    rows = []
    for dtype in dtypes:
        run_cfg = {**cfg, "inference": {**cfg["inference"], "max_new_tokens": new_tokens, "dtype": dtype}}
        backend = backends.load_hf_backend(run_cfg)
        backend.generate(prompts[:1])                      # warm-up
        reset_peak()
        t = time.perf_counter()
        out = backend.generate(prompts)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        tokens = sum(g.tokens for g in out)
        rows.append({"device": str(backend.model.device), "dtype": str(backend.model.dtype),
                     "attention": backend.model.config._attn_implementation, "batch": len(prompts),
                     "prompt_tokens": [len(backend.encode(p)[0]) for p in prompts], "new_tokens": tokens,
                     "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
                     "ms_per_decode_step": round(1000 * wall / max(g.tokens for g in out), 1),
                     "peak_memory_gb": peak_gb()})
        print(json.dumps(rows[-1]), flush=True)
        del backend
    return rows


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
    parser.add_argument("--parts", default="preflight,pipeline,sweep,inference")
    parser.add_argument("--inference-dtypes", default="float16",
                        help="inference.dtype values to time side by side, e.g. float32,float16,bfloat16")
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
        cfg["inference"]["model_dir"] = str(stand_in)
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
                     ("inference", lambda: inference(cfg, args.new_tokens, args.inference_dtypes.split(",")))):
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
