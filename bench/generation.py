"""Generation throughput: batched (batch 8, KV cache, left padding) vs one query at a time.

    .venv/bin/python -m bench.generation [--profile smoke] [--prompts 8] [--max-new-tokens 64]

Same model, same prompts (the first turn of the profile's test queries, rendered with the training
chat template), greedy, every sequence forced to generate exactly --max-new-tokens tokens so both
modes do the same work. Uses outputs/<profile>/model/ when it exists, else a random-init model of the
profile's tiny OPT configuration (throughput does not depend on the weights). Prints tokens/s of
both modes and their ratio.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def load(cfg):
    from transformers import OPTConfig, OPTForCausalLM

    from lib.common import config
    from lib.models import backends, model as model_lib

    folder = config.path(cfg, f"{cfg.output_dir}/model")
    if (folder / "config.json").exists():
        backend = backends.load_hf_backend(cfg)
        return backend.model, backend.tokenizer, str(folder)
    tokenizer = model_lib.load_tokenizer(cfg)
    tiny = dict(cfg.model.tiny, vocab_size=len(tokenizer))
    torch.manual_seed(cfg.seed)
    model = OPTForCausalLM(OPTConfig(**tiny, pad_token_id=tokenizer.pad_token_id,
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    return model, tokenizer, "random-init tiny OPT (no trained model yet)"


def prompts(cfg, n):
    from lib.common import config
    from lib.toolbench import formats

    out = []
    for group in cfg.inference.groups:
        path = config.path(cfg, cfg.data.test_dir) / f"{group}.json"
        if path.exists():
            out += [formats.Query(r, group).start() for r in formats.load_queries(path)]
        if len(out) >= n:
            break
    if not out:
        raise SystemExit("no test queries found: run stage 01 first")
    return (out * n)[:n]


def timed(backend, conversations, batch):
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(conversations), batch):
        tokens += sum(g.tokens for g in backend.generate(conversations[i:i + batch]))
    return tokens, time.perf_counter() - start


def main(argv=None):
    from lib.common import config
    from lib.models import backends

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    cfg = config.load(args.profile)
    model, tokenizer, which = load(cfg)
    model.generation_config.min_new_tokens = args.max_new_tokens     # equal work in both modes
    backend = backends.HFBackend(model, tokenizer, args.max_new_tokens, temperature=0, seed=cfg.seed)
    conversations = prompts(cfg, args.prompts)
    prompt_tokens = [len(backend.encode(c)[0]) for c in conversations]
    timed(backend, conversations[:1], 1)                             # warm-up
    seq_tokens, seq_s = timed(backend, conversations, 1)
    bat_tokens, bat_s = timed(backend, conversations, args.batch)
    result = {
        "model": which, "threads": torch.get_num_threads(), "prompts": len(conversations),
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "max_new_tokens": args.max_new_tokens, "batch": args.batch,
        "sequential_tokens": seq_tokens, "sequential_s": round(seq_s, 2),
        "sequential_tokens_per_s": round(seq_tokens / seq_s, 1),
        "batched_tokens": bat_tokens, "batched_s": round(bat_s, 2),
        "batched_tokens_per_s": round(bat_tokens / bat_s, 1),
    }
    result["speedup"] = round(result["batched_tokens_per_s"] / result["sequential_tokens_per_s"], 2)
    print(json.dumps(result, indent=2))
    print(f"batched (batch {args.batch}) / sequential tokens/s: {result['speedup']}x")
    return result


if __name__ == "__main__":
    main()
