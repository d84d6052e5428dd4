"""Key/value caches of earlier prompts, reused when a new prompt starts with the same tokens.

Each ReAct step's prompt extends the previous one, so without reuse every step encodes the whole
conversation again (seconds per step on a CPU for ToolBench's system prompt). `PrefixCache` keeps
the last few sequences' token ids and key/value tensors; `HFBackend.advance` builds each batch's
cache from them (docs/stages.md, "03: the prefix cache", says how rows are aligned).
"""
from __future__ import annotations

import collections


def common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """Up to `capacity` cached sequences (least recently used dropped first), each as its token ids
    and one (keys, values) pair per layer of shape [heads, tokens, head_dim]."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: collections.OrderedDict[tuple, list] = collections.OrderedDict()
        # Prompt tokens over the cache's life: `reused` were taken from a cached sequence (counted
        # in extend); `prefilled` went through the model (extend's new ones, and in assemble the
        # last token of each prompt, which generate runs). Together: every prompt token once.
        self.reused_tokens = self.prefilled_tokens = 0

    def longest(self, ids: list[int]) -> tuple[tuple | None, int]:
        """(the cached sequence sharing the longest prefix with `ids`, how many tokens of it to
        reuse): at most len(ids) - 1, since the last prompt token must be run to get its logits."""
        best, length = None, 0
        for key in self.entries:
            n = common_prefix(key, ids)
            if n > length:
                best, length = key, n
        return best, min(length, len(ids) - 1)

    def extend(self, model, ids: list[int]) -> None:
        """Encode ids[:-1] onto its longest cached prefix, one row alone, and keep it: a batch then
        has one new token per row, never a long new prompt padded across every row."""
        import torch
        from transformers import DynamicCache

        key, n = self.longest(ids)
        self.reused_tokens += n
        if n >= len(ids) - 1:
            return
        device = model.device
        layers = [(k[None, :, :n], v[None, :, :n]) for k, v in self.entries[key]] if n else None
        cache = DynamicCache(layers) if layers else DynamicCache()
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids[n:-1]], device=device),
                        position_ids=torch.arange(n, len(ids) - 1, device=device)[None],
                        attention_mask=torch.ones(1, len(ids) - 1, dtype=torch.long, device=device),
                        cache=cache, use_cache=True, logits_to_keep=1)
        self.prefilled_tokens += len(ids) - 1 - n
        self.entries[tuple(ids[:-1])] = [(layer.keys[0], layer.values[0]) for layer in out.cache.layers]

    def assemble(self, prompts: list[list[int]], pad: int, device):
        """(input_ids, attention_mask, DynamicCache or None) for one generate call over `prompts`."""
        import torch
        from transformers import DynamicCache

        found = [self.longest(ids) for ids in prompts]
        cached = max(n for _, n in found)
        new = max(len(ids) - n for ids, (_, n) in zip(prompts, found))
        rows, masks = [], []
        for ids, (_, n) in zip(prompts, found):
            hole, gap = cached - n, new - (len(ids) - n)
            rows.append([pad] * hole + ids[:n] + [pad] * gap + ids[n:])
            masks.append([0] * hole + [1] * n + [0] * gap + [1] * (len(ids) - n))
            self.prefilled_tokens += len(ids) - n       # after extend: the last prompt token
        input_ids = torch.tensor(rows, device=device)
        attention = torch.tensor(masks, device=device)
        if cached == 0:
            return input_ids, attention, None
        layers, shapes = [], next(iter(self.entries.values()))      # any entry: per layer, (keys, values)
        for layer in range(len(shapes)):
            pairs = []
            for kind in (0, 1):
                sample = shapes[layer][kind]
                block = sample.new_zeros((len(prompts), sample.shape[0], cached, sample.shape[2]))
                for row, (key, n) in enumerate(found):
                    if n:
                        block[row, :, cached - n:] = self.entries[key][layer][kind][:, :n]
                pairs.append(block)
            layers.append(tuple(pairs))
        for key, n in found:
            if n:
                self.entries.move_to_end(key)
        return input_ids, attention, DynamicCache(layers)

    def store(self, prompts: list[list[int]], attention, sequences, cache, kept: list[int]) -> None:
        """After generate: keep each row's prompt and the first kept[i] tokens it generated (those
        the cache holds: the last token generated is never run through the model)."""
        width = attention.shape[1]
        steps = cache.get_seq_length() - width + 1      # tokens generated by the call
        for row, ids in enumerate(prompts):
            generated = min(kept[row], steps - 1)
            where = attention[row].nonzero().flatten().tolist() + list(range(width, width + generated))
            index = sequences.new_tensor(where)
            self.entries.pop(tuple(ids[:-1]), None)     # extend's entry: a prefix of this one
            key = tuple(ids) + tuple(sequences[row, width:width + generated].tolist())
            self.entries[key] = [(layer.keys[row].index_select(1, index), layer.values[row].index_select(1, index))
                                 for layer in cache.layers]
            self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
