"""Training throughput of stage 02: tokens/s, model FLOPs per token, MFU against this machine's
measured matmul peak, padding fraction and peak memory, for the smoke model and an opt-350m-shaped
model (random weights), TRL's default batching vs ours.

    .venv/bin/python bench/train_throughput.py                 # needs outputs/smoke/sft (stage 01)
    .venv/bin/python bench/train_throughput.py --opt-seq 128 --opt-steps 3 --json out.json

Both settings use the profile's `train:` section (smoke for the tiny model, paper for the
opt-350m-shaped one: batch, accumulation, gradient checkpointing, precision); they differ only in
how batches are formed:
  trl-default    random order, each batch padded to its longest example (SFTConfig's defaults)
  ours           train_sampling_strategy=group_by_length: batches of similar lengths, far less padding
Packing / padding_free is measured for exactness first: OPT's sdpa/eager attention does not see the
sequence boundaries (only flash-attention kernels on CUDA do), so on CPU a packed row lets examples
attend to each other, and it is reported, not used.

FLOPs per token: 6 N (N = parameters without the position table; the tied token embedding counted
once, as the LM head's matmul) + 12 L d T (attention scores and values, T = mean tokens per
sequence), counted on non-padding tokens only, so padding shows up as lost MFU.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.common import config  # noqa: E402
from lib.models import model as model_lib  # noqa: E402
from lib.train import recipe, train  # noqa: E402

OPT_350M = dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, ffn_dim=4096,
                word_embed_proj_dim=512, vocab_size=50272, max_position_embeddings=2048,
                do_layer_norm_before=False)   # opt-350m is the one post-LayerNorm OPT


def matmul_peak(device: str, dtype, n: int = 2048, reps: int = 10) -> float:
    """Best FLOP/s of an n x n matmul on this machine, measured now."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def flops_per_token(model, mean_tokens: float) -> float:
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_positions" not in name)
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * mean_tokens


def padding_fraction(trainer, batches: int) -> tuple[float, float]:
    """(padding share, mean real tokens per sequence) over the first `batches` batches."""
    real = total = seqs = 0
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i == batches:
            break
        mask = batch["attention_mask"]
        real, total, seqs = real + int(mask.sum()), total + mask.numel(), seqs + mask.shape[0]
    return 1 - real / total, real / seqs


class StepTimer(TrainerCallback):
    """Wall time and TRL's non-padding token count per optimizer step (the first one is warm-up)."""

    def __init__(self):
        self.trainer, self.marks = None, []

    def on_step_end(self, args, state, control, **kwargs):
        if args.device.type == "cuda":
            torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), self.trainer._total_train_tokens))


def measure(name, cfg, make_model, tokenizer, dataset, setting, steps, peak, cuda):
    train_cfg = {**cfg.train, "max_steps": steps + 1, "save_strategy": "no", "logging_steps": 10 ** 6,
                 "disable_tqdm": True, "use_cpu": not cuda, "report_to": "none", "packing": False,
                 "padding_free": False, "train_sampling_strategy":
                     "group_by_length" if setting == "ours" else "random"}
    run_cfg = config.derive(cfg, {"train": train_cfg})
    args, precision = recipe.sft_config(run_cfg, log=lambda *_: None)
    torch.manual_seed(0)
    model = make_model()
    timer = StepTimer()
    trainer = recipe.make_trainer(run_cfg, model, tokenizer, dataset, args, [timer])
    timer.trainer = trainer
    pad, mean_tokens = padding_fraction(trainer, 50 * args.gradient_accumulation_steps)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    (t0, k0), (t1, k1) = timer.marks[0], timer.marks[-1]
    tokens_per_s = (k1 - k0) / (t1 - t0)
    fpt = flops_per_token(model, mean_tokens)
    memory = (torch.cuda.max_memory_allocated() if cuda
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": name, "setting": setting, "precision": precision,
            "batch": f"{args.per_device_train_batch_size}x{args.gradient_accumulation_steps}",
            "gradient_checkpointing": args.gradient_checkpointing, "timed_steps": steps,
            "tokens_per_s": round(tokens_per_s, 1), "flops_per_token": round(fpt),
            "mfu": round(tokens_per_s * fpt / peak, 4), "padding_fraction": round(pad, 4),
            "mean_tokens_per_seq": round(mean_tokens, 1),
            "peak_memory_gb": round(memory / 2 ** 30, 2),
            "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process max RSS (so far)"}


def padding_free_exact(model, tokenizer, dataset) -> float:
    """Largest per-token log-prob gap between two examples padded vs packed in one row."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    ids = [tokenizer.apply_chat_template(p + c)["input_ids"][:128]
           for p, c in zip(dataset["prompt"][:2], dataset["completion"][:2])]
    examples = [{"input_ids": i} for i in ids]
    model.eval()
    with torch.no_grad():
        padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)
        packed = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
        a = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        b = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits
    second = a[1, :len(ids[1])].log_softmax(-1)
    return float((second - b[0, len(ids[0]):].log_softmax(-1)).abs().max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps, smoke model")
    parser.add_argument("--opt-steps", type=int, default=2, help="timed steps, opt-350m-shaped model")
    parser.add_argument("--opt-seq", type=int, default=128, help="max_length for the opt-350m-shaped model")
    parser.add_argument("--opt-batch", type=int, default=4, help="per-device batch, opt-350m-shaped (CPU)")
    parser.add_argument("--skip-opt", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    smoke = config.load("smoke")
    paper = config.load("paper")
    dataset = train.load_data(config.derive(smoke, {"format_check.heldout": 0}))[0]
    tokenizer = model_lib.load_tokenizer(smoke)

    _, precision, _ = recipe.precision_kwargs(paper.train if cuda else smoke.train, cuda)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    peak = matmul_peak(device, dtype)
    machine = (torch.cuda.get_device_name() if cuda
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print(f"machine: {machine}; measured {precision} matmul peak {peak / 1e9:.1f} GFLOP/s")

    tiny = lambda: model_lib.load_model(smoke, tokenizer)  # noqa: E731
    drift = padding_free_exact(tiny(), tokenizer, dataset)
    print(f"padding_free/packing on OPT ({tiny().config._attn_implementation}): max log-prob "
          f"difference packed vs padded = {drift:.3g} -> {'exact' if drift < 1e-4 else 'NOT exact, not used'}")

    results = [measure("smoke tiny OPT", smoke, tiny, tokenizer, dataset, s, args.steps, peak, cuda)
               for s in ("trl-default", "ours")]
    if not args.skip_opt:
        from transformers import OPTConfig, OPTForCausalLM
        shaped = lambda: OPTForCausalLM(OPTConfig(**OPT_350M, pad_token_id=tokenizer.pad_token_id,  # noqa: E731
                                                  bos_token_id=tokenizer.bos_token_id,
                                                  eos_token_id=tokenizer.eos_token_id))
        opt_cfg = config.derive(paper, {"model.name_or_path": None, "model.tiny": OPT_350M,
                                        "train.max_length": args.opt_seq, "train.completion_only_loss": False,
                                        "train.dataloader_num_workers": 0})
        if not cuda:
            opt_cfg = config.derive(opt_cfg, {"train.per_device_train_batch_size": args.opt_batch,
                                              "train.gradient_accumulation_steps": 1})
        results += [measure("opt-350m-shaped", opt_cfg, shaped, tokenizer, dataset, s, args.opt_steps, peak, cuda)
                    for s in ("trl-default", "ours")]

    cols = ["model", "setting", "precision", "batch", "tokens_per_s", "flops_per_token", "mfu",
            "padding_fraction", "mean_tokens_per_seq", "peak_memory_gb"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "peak_flops": peak,
                                               "padding_free_drift": drift, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
