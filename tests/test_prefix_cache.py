"""lib/models/prefix_cache.py through HFBackend: reusing the key/value tensors of earlier prompts gives the
same greedy tokens as encoding every prompt whole, while encoding far fewer tokens."""
from __future__ import annotations

import pytest
import torch
import yaml

from lib.common import config
from lib.common.settings import Inference
from lib.models import backends, model as model_lib
from lib.models.prefix_cache import PrefixCache, common_prefix

TEXTS = ["System: tools listed here. User: weather in Paris? Assistant: Thought: call it. Action: get_weather"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    tok = model_lib.train_tokenizer(TEXTS, 300)
    tok.chat_template = yaml.safe_load((config.CONFIG_DIR / "base.yaml").read_text())["model"]["chat_template"]
    return tok


def tiny(kind: str, tok, positions: int = 512, init: float = 0.02):
    """A random 2-layer model; a larger `init` makes its greedy turns depend more on the prompt."""
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, max_position_embeddings=positions, num_hidden_layers=2,
               num_attention_heads=4, hidden_size=64, init_std=init, initializer_range=init)
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
    assert smoke.inference.reuse_kv_cache is True
    assert config.load("paper").inference.reuse_kv_cache is False
    backend = backends.hf_backend(smoke, tiny("opt", tokenizer), tokenizer)
    assert backend.prefix_cache.capacity == 2 * smoke.inference.batch_size


def questions() -> list[list[dict]]:
    return [[{"role": "system", "content": "tools listed here " * (i + 1)},
             {"role": "user", "content": f"weather in city {i}?"}] for i in range(5)]


def with_eos_inside_turns(tokenizer, model, conversations=None):
    """A copy of the tokenizer whose eos is a token the model writes in some rows' greedy turns and
    not in others, so turns of one batch end at different lengths (a random model rarely writes eos)."""
    import collections
    import copy

    conversations = conversations or questions()
    rows = backends.HFBackend(model, tokenizer, 10, 0.0, 0, reuse_cache=True, decode_chunk=9).advance(
        conversations, [[] for _ in conversations])     # 9 of 10 tokens: every row comes back unfinished
    seen = collections.Counter(t for row in rows for t in set(row))
    token = next(t for t, n in seen.most_common() if n < len(rows))
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = tok.convert_ids_to_tokens(token)
    return tok


@pytest.mark.parametrize("kind", ["llama", "opt"])
def test_turns_written_a_chunk_at_a_time_are_the_same_tokens(tokenizer, kind):
    model = tiny(kind, tokenizer)
    tok = with_eos_inside_turns(tokenizer, model)
    whole = backends.HFBackend(model, tok, 10, 0.0, 0, reuse_cache=True)
    plain = run_steps(whole)
    chunked = backends.HFBackend(model, tok, 10, 0.0, 0, reuse_cache=True, decode_chunk=3)
    assert run_steps(chunked) == plain
    assert chunked.calls > whole.calls
    conversations = questions()
    lengths = [g.tokens for g in chunked.generate(conversations)]
    assert lengths == [g.tokens for g in whole.generate(conversations)]
    assert min(lengths) < 10 == max(lengths)        # some turns ended early, some ran to the limit
    # advance hands back an unfinished turn as its tokens so far, and takes it back to continue it
    first = backends.HFBackend(model, tok, 10, 0.0, 0, reuse_cache=True, decode_chunk=4).advance(conversations, [[]] * 5)
    assert any(isinstance(o, list) and len(o) == 4 for o in first)
    assert all(isinstance(o, backends.Generation) or len(o) == 4 for o in first)


def test_run_groups_lets_a_waiting_query_in_as_soon_as_a_turn_ends(tokenizer, tmp_path):
    from lib.toolbench import formats, offline_env, trajectories
    from lib.infer import inference

    model = tiny("llama", tokenizer, positions=4096, init=0.2)     # ToolBench prompts, not truncated
    env = offline_env.OfflineToolEnv.__new__(offline_env.OfflineToolEnv)
    env.recordings, env.docs = {}, {}
    query = {"query_id": 0, "query": "weather in Paris?", "api_list": [
        {"category_name": "Weather", "tool_name": "Weather API", "api_name": "Current Weather",
         "api_description": "now", "required_parameters": [], "optional_parameters": []}]}
    queries = [formats.Query(dict(query, query_id=i, query="weather in Paris? " * (i + 1)), "G1_tool", {})
               for i in range(6)]
    tok = with_eos_inside_turns(tokenizer, model, [q.start() for q in queries])
    lines, calls = {}, {}
    for chunk in (None, 3):
        backend = backends.HFBackend(model, tok, 10, 0.0, 0, reuse_cache=True, cache_capacity=8, decode_chunk=chunk)
        mixed, advance = [], backend.advance

        def watched(conversations, partials):
            # a call where a turn starts while another is half written: a slot was refilled mid-turn
            mixed.append(any(p == [] for p in partials) and any(partials))
            return advance(conversations, partials)

        backend.advance = watched
        path = tmp_path / f"chunk-{chunk}.jsonl"
        counters = inference.run_group(queries, backend, env, path, Inference(max_iterations=3, batch_size=3))
        lines[chunk] = trajectories.read(path, partial=True)
        calls[chunk] = counters["generate_calls"]
        assert any(mixed) == bool(chunk)
    key = lambda line: line["query_id"]
    assert sorted(lines[3], key=key) == sorted(lines[None], key=key)
    assert calls[3] > calls[None]
    assert len({line["tokens_generated"] for line in lines[3]}) > 2       # turns of many lengths


def test_decode_chunk_needs_the_cache(tokenizer):
    with pytest.raises(config.ConfigError, match="decode_chunk.*reuse_kv_cache: true"):
        config.load("smoke", {"inference.reuse_kv_cache": False, "inference.decode_chunk": 16})
    with pytest.raises(ValueError, match="reuse_kv_cache"):
        backends.HFBackend(tiny("opt", tokenizer), tokenizer, 10, 0.0, 0, decode_chunk=4)


def test_bfloat16_generation_on_a_cpu_only_where_it_multiplies_natively(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: True)
    assert backends.inference_device("bfloat16") == ("cpu", "bfloat16")
    assert backends.inference_device("float16") == ("cpu", "float32")
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)
    assert backends.inference_device("bfloat16") == ("cpu", "float32")
    assert backends.inference_device(None) == ("cpu", "auto")
