"""The loss mask as SFTTrainer builds it, and how notebooks 01 and 02 show it: an example
tokenized with its labels, the loss-bearing text bracketed, a table of positions, a batch's padding.
"""
from __future__ import annotations

from lib.common.settings import Profile


def loss_settings(cfg: Profile) -> dict:
    """The profile's two loss-mask settings, as tokenize_example takes them."""
    return {k: bool((cfg.train or {}).get(k)) for k in ("completion_only_loss", "assistant_only_loss")}


def tokenize_example(tokenizer, example: dict, completion_only_loss: bool,
                     assistant_only_loss: bool = False) -> dict:
    """One prompt-completion example tokenized as SFTTrainer does it, before its cut to max_length:
    `input_ids` (the chat template over prompt + completion), `prompt_length` (where the completion
    starts: the tokens the prompt shares with that, the prompt rendered with its generation prompt),
    `completion_mask` (1 from there on), `assistant_masks` (1 on every assistant turn, from the
    template's generation tags) and `labels` (the ids, -100 where no loss is computed: the prompt
    with completion_only_loss, all but the assistant turns with assistant_only_loss).
    tests/test_train.py checks every field against TRL's own prepared dataset."""
    from trl.data_utils import common_prefix_length

    prompt = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True,
                                           return_dict=True)["input_ids"]
    whole = tokenizer.apply_chat_template(example["prompt"] + example["completion"], return_dict=True,
                                          return_assistant_tokens_mask=assistant_only_loss)
    ids = whole["input_ids"]
    start = common_prefix_length(prompt, ids)
    mask = [0] * start + [1] * (len(ids) - start)
    assistant = whole["assistant_masks"] if assistant_only_loss else [1] * len(ids)
    labels = [t if (m or not completion_only_loss) and a else -100 for t, m, a in zip(ids, mask, assistant)]
    return {"input_ids": ids, "prompt_length": start, "completion_mask": mask,
            "assistant_masks": list(assistant), "labels": labels}


def mark_loss(tokenizer, input_ids, labels, width: int = 600) -> str:
    """The text of a tokenized sequence with each run of loss-bearing tokens (label not -100)
    between >>> and <<<. A run longer than `width` characters keeps its start and end around
    [... N characters ...], so a long system prompt does not hide where the loss starts."""
    def shown(text):
        if len(text) <= width:
            return text
        return f"{text[:width // 2]}[... {len(text) - width:,} characters ...]{text[-width // 2:]}"

    runs, start = [], 0
    labels = [int(x) for x in labels]
    for end in range(1, len(labels) + 1):
        if end == len(labels) or (labels[end] == -100) != (labels[start] == -100):
            text = shown(tokenizer.decode([int(t) for t in input_ids[start:end]]))
            runs.append(text if labels[start] == -100 else f">>>{text}<<<")
            start = end
    return "".join(runs)


def describe_tokens(tokenizer, input_ids, columns: dict, start: int, stop: int) -> str:
    """A table of positions start..stop-1: position, token id, the token's text, then one column per
    entry of `columns` (name: values per position; in labels, -100 means no loss there)."""
    names = list(columns)
    lines = [f"{'position':>8} {'id':>6}  {'token':<16}" + "".join(f"  {name}" for name in names)]
    for i in range(max(start, 0), min(stop, len(input_ids))):
        token = repr(tokenizer.decode([int(input_ids[i])]))
        lines.append(f"{i:>8} {int(input_ids[i]):>6}  {token:<16}"
                     + "".join(f"  {int(columns[name][i]):>{len(name)}}" for name in names))
    return "\n".join(lines)


def describe_batch(batch: dict) -> str:
    """Per row of a collated batch: its positions, and of them the padding (attention 0; the
    collator pads labels with -100), the other masked positions (-100: the prompt, with
    completion_only_loss) and those that carry loss."""
    lines = []
    for i, (attention, labels) in enumerate(zip(batch["attention_mask"], batch["labels"])):
        padding = int((attention == 0).sum())
        masked = int(((labels == -100) & (attention == 1)).sum())
        lines.append(f"row {i}: {len(labels)} positions = {len(labels) - padding} tokens + {padding} padding; "
                     f"-100 on the {padding} padding and {masked} prompt positions; "
                     f"{int((labels != -100).sum())} carry loss")
    return "\n".join(lines)
