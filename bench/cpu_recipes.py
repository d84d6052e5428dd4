"""Training a pretrained model on a CPU: which recipe is fastest per useful token, side by side.

    .venv/bin/python bench/cpu_recipes.py [--profile smollm2] [--steps 2] [--loss-only] [--json out.json]

On the profile's model (smollm2: SmolLM2-135M-Instruct) and stage 01's examples (outputs/<profile>/sft),
through stage 02's own trainer (lib.train.recipe.make_trainer), one process, measured now:
  - LoRA (the profile's lora:) vs full fine-tuning, each with bf16 autocast and in fp32: tokens/s
    over --steps optimizer steps after one warm-up step, model FLOPs per token (6 N + attention;
    LoRA computes no weight gradients for the frozen matrices, so it does about 4 N of that work),
    MFU against this machine's measured bf16 and fp32 matmul peaks, peak RSS;
  - one example per conversation (the loss on its assistant turns) vs one per record (ToolBench's
    unrolling: the system prompt and every earlier turn again for each step): examples and tokens
    per epoch, and the epoch's time at the fastest recipe's tokens/s;
  - padding: the share of padded positions in the first batches (group_by_length, the profile's
    batch), the most that padding-free batches could save; and whether packing is exact for this
    model's attention (the largest log-prob gap of a packed row against the padded batch);
  - the profile's recipe with and without LoRA dropout (its random masks), and with TRL's fused LM
    head projecting every position (TRL's own choice where Triton does not run) against only the
    positions the loss reads (lib/train/recipe.py, score_loss_positions_only), on the same batches.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.train_throughput import matmul_peak, measure, padding_free_exact  # noqa: E402
from lib.common import config  # noqa: E402
from lib.models import model as model_lib  # noqa: E402
from lib.data import data  # noqa: E402
from lib.train import recipe, train  # noqa: E402


def epoch_tokens(cfg: dict, tokenizer) -> dict:
    """Examples and tokens per epoch for each data.example_per choice, from the training records."""
    records = list(data.training_records(cfg))
    out = {}
    for choice in ("conversation", "record"):
        examples = [e for r in records for e in data.examples_from_record(r, choice)]
        lengths = [len(tokenizer.apply_chat_template(e["prompt"] + e["completion"])["input_ids"]) for e in examples]
        out[choice] = {"examples": len(examples), "tokens": sum(lengths)}
    return out


def loss_and_dropout(cfg: dict, tokenizer, dataset, steps: int, peak: float) -> list[dict]:
    """The profile's recipe (LoRA, bf16) three ways, on the same batches: LoRA dropout 0.05 with the
    loss projected at every position (TRL's choice without Triton), dropout 0 the same, dropout 0
    with only the loss positions projected."""
    import trl.trainer.utils as trl_utils

    recipe.score_loss_positions_only()
    compact = trl_utils._use_triton
    rows = []
    for name, dropout, only_loss_positions in (("dropout 0.05, every position", 0.05, False),
                                               ("dropout 0, every position", 0.0, False),
                                               ("dropout 0, loss positions only", 0.0, True)):
        run = config.derive(cfg, {"lora.lora_dropout": dropout})
        trl_utils._use_triton = compact if only_loss_positions else compact.original
        installer, recipe.score_loss_positions_only = recipe.score_loss_positions_only, lambda: True
        try:
            row = measure(name, run, lambda: model_lib.load_model(run, tokenizer), tokenizer, dataset, "ours",
                          steps, peak, cuda=False)
        finally:
            recipe.score_loss_positions_only, trl_utils._use_triton = installer, compact
        row.update(lora_dropout=dropout, loss_positions_only=only_loss_positions)
        rows.append(row)
        print(f"{name}: {row['tokens_per_s']:,.0f} tokens/s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smollm2")
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps per recipe")
    parser.add_argument("--loss-only", action="store_true", help="only the dropout / loss-positions rows")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    cfg = config.load(args.profile)
    tokenizer = model_lib.load_tokenizer(cfg)
    dataset = train.load_data(cfg)[0]
    peaks = {"bf16": matmul_peak("cpu", torch.bfloat16), "fp32": matmul_peak("cpu", torch.float32)}
    result = {"profile": args.profile, "threads": torch.get_num_threads(),
              "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()}, "recipes": []}
    print(f"matmul peak: bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s", flush=True)
    if args.loss_only:
        result["loss_and_dropout"] = loss_and_dropout(cfg, tokenizer, dataset, args.steps, peaks["bf16"])
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    for adapter in ("lora", "full"):
        for precision in ("bf16", "fp32"):
            run = config.derive(cfg, {"train.bf16": precision == "bf16", "lora": cfg.lora if adapter == "lora" else None})
            start = time.perf_counter()
            row = measure(f"{adapter} {precision}", run, lambda: model_lib.load_model(run, tokenizer), tokenizer,
                          dataset, "ours", args.steps, peaks[precision], cuda=False)
            row.update(adapter=adapter, wall_s=round(time.perf_counter() - start, 1),
                       s_per_step=round(row["mean_tokens_per_seq"] * cfg.train["per_device_train_batch_size"]
                                        * cfg.train["gradient_accumulation_steps"] / row["tokens_per_s"], 1))
            result["recipes"].append(row)
            print(f"{adapter:>4} {precision}: {row['tokens_per_s']:,.0f} tokens/s, {row['s_per_step']} s/step, "
                  f"MFU {row['mfu']:.3f}, padding {row['padding_fraction']:.3f}, peak RSS {row['peak_memory_gb']} GiB",
                  flush=True)
    result["loss_and_dropout"] = loss_and_dropout(cfg, tokenizer, dataset, args.steps, peaks["bf16"])
    best = max(result["recipes"], key=lambda r: r["tokens_per_s"])
    result["example_per"] = epoch_tokens(cfg, tokenizer)
    for choice, counts in result["example_per"].items():
        counts["epoch_minutes_at_best"] = round(counts["tokens"] / best["tokens_per_s"] / 60, 1)
    conversation, record = result["example_per"]["conversation"], result["example_per"]["record"]
    print(f"one example per conversation: {conversation['examples']} examples, {conversation['tokens']:,} tokens "
          f"an epoch; per record: {record['examples']}, {record['tokens']:,} ({record['tokens'] / conversation['tokens']:.2f}x)")
    result["packing_max_logprob_gap"] = round(padding_free_exact(model_lib.load_model(cfg, tokenizer), tokenizer,
                                                                 dataset), 4)
    print(f"packing two examples in one row: largest log-prob gap {result['packing_max_logprob_gap']} "
          "(0 would be exact; this model's sdpa attention sees across the boundary)")
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
