"""lib/prefix_cache.py through HFBackend: reusing the key/value tensors of earlier prompts gives the
same greedy tokens as encoding every prompt whole, while encoding far fewer tokens."""
from __future__ import annotations

import pytest
import torch
import yaml

from lib import backends, config, model as model_lib
from lib.prefix_cache import PrefixCache, common_prefix

TEXTS = ["System: tools listed here. User: weather in Paris? Assistant: Thought: call it. Action: get_weather"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    tok = model_lib.train_tokenizer(TEXTS, 300)
    tok.chat_template = yaml.safe_load((config.CONFIG_DIR / "base.yaml").read_text())["model"]["chat_template"]
    return tok


def tiny(kind: str, tok):
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, max_position_embeddings=512, num_hidden_layers=2,
               num_attention_heads=4, hidden_size=64)
    if kind == "llama":     # rotary positions, grouped-query attention (SmolLM2's architecture)
        return LlamaForCausalLM(LlamaConfig(intermediate_size=128, num_key_value_heads=2, **ids))
    return OPTForCausalLM(OPTConfig(ffn_dim=128, word_embed_proj_dim=64, **ids))    # learned positions


def run_steps(backend, steps: int = 4) -> list[str]:
    """ReAct-like: each step's prompt is the last one + the model's turn (changed, as take_step
    re-formats it) + an observation; the batch changes make-up from step to step."""
    conversations = [[{"role": "system", "content": "tools listed here " * (i + 1)},
                      {"role": "user", "content": f"weather in city {i}?"}] for i in range(5)]
    texts = []
    for step in range(steps):
        batch = conversations[step % 2:]
        for conversation, generation in zip(batch, backend.generate(batch)):
            texts.append(generation.text)
            conversation += [{"role": "assistant", "content": generation.text + " re-formatted"},
                             {"role": "function", "content": f"observation {step}"}]
    return texts


@pytest.mark.parametrize("kind", ["llama", "opt"])
def test_reuse_gives_the_same_greedy_tokens_and_encodes_less(tokenizer, kind):
    model = tiny(kind, tokenizer)
    plain = run_steps(backends.HFBackend(model, tokenizer, 10, 0.0, 0))
    backend = backends.HFBackend(model, tokenizer, 10, 0.0, 0, reuse_cache=True)
    assert run_steps(backend) == plain
    assert any(plain) and len(set(plain)) > 3           # the rows generated something, and differ
    cache = backend.prefix_cache
    assert cache.reused_tokens > cache.prefilled_tokens > 0
    assert len(cache.entries) == 16 and all(len(layers) == 2 for layers in cache.entries.values())


def test_sampling_with_reuse_follows_the_seed(tokenizer):
    model = tiny("llama", tokenizer)
    first = run_steps(backends.HFBackend(model, tokenizer, 10, 0.7, 5, reuse_cache=True))
    assert first == run_steps(backends.HFBackend(model, tokenizer, 10, 0.7, 5, reuse_cache=True))


def test_longest_prefix_keeps_one_token_to_run_and_capacity_drops_the_oldest():
    cache = PrefixCache(capacity=2)
    entry = [(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2))]
    for key in [(1, 2, 3, 4), (1, 2, 9), (7, 7)]:
        cache.entries[key] = entry
        while len(cache.entries) > cache.capacity:
            cache.entries.popitem(last=False)
    assert list(cache.entries) == [(1, 2, 9), (7, 7)]
    assert cache.longest([1, 2, 9]) == ((1, 2, 9), 2)       # a prompt equal to a cached one
    assert cache.longest([1, 2, 9, 5, 6]) == ((1, 2, 9), 3)
    assert cache.longest([3]) == (None, 0)
    assert common_prefix([1, 2], [1, 2, 3]) == 2 and common_prefix([], [1]) == 0


def test_profiles_say_whether_they_reuse(tokenizer):
    smoke = config.load("smoke")
    assert smoke["inference"]["reuse_kv_cache"] is True
    assert config.load("paper")["inference"]["reuse_kv_cache"] is False
    backend = backends.hf_backend(smoke, tiny("opt", tokenizer), tokenizer)
    assert backend.prefix_cache.capacity == 2 * smoke["inference"]["batch_size"]
