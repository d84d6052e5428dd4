"""Stage 02's format check: does the model's greedy output parse as a ToolBench step?

format_check.heldout examples of sft/ are kept out of training; before and after training the model
completes their prompts greedily (format_check.max_new_tokens) through stage 03's own generation
path, and the share that ToolBench's step parser accepts is the format rate in train_summary.json.
"""
from __future__ import annotations

from lib.common.settings import FormatCheck
from lib.toolbench import formats
from lib.models import backends


def parses(text: str) -> bool:
    """True if text is a usable Thought / Action / Action Input step, by ToolBench's step parser
    (the one stage 03 runs on every generated turn), so train and inference agree on 'parses'."""
    return formats.parse_step(text).error is None


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int,
             batch_size: int = 8) -> list[str]:
    """Greedy completions of chat prompts by stage 03's own generation path (lib.models.backends'
    HFBackend: left-padded batches, cut at the next turn), so the format check and the learning
    curve judge what inference will produce."""
    side = tokenizer.padding_side
    backend = backends.HFBackend(model, tokenizer, max_new_tokens, temperature=0, seed=0)
    try:
        return [g.text for i in range(0, len(prompts), batch_size)
                for g in backend.generate(prompts[i:i + batch_size])]
    finally:
        tokenizer.padding_side = side     # training pads on its own side


def format_rate(model, tokenizer, heldout, format_cfg: FormatCheck) -> float | None:
    """Share of held-out prompts whose greedy completion parses as a ReAct step (None: no slice)."""
    if len(heldout) == 0:
        return None
    texts = generate(model, tokenizer, list(heldout["prompt"]), format_cfg.max_new_tokens)
    return round(sum(parses(t) for t in texts) / len(texts), 4)
