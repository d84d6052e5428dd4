"""Stage 02 (lib/train/, lib/models/model.py) on hand-made tiny data: config mapping, loss mask,
length limits, resume, determinism, model loading. The notebook itself runs in the pipeline test."""
from __future__ import annotations

import collections
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from lib.common import config, resume, store, trainer_steps
from lib.models import model as model_lib
from lib.train import loss_mask, recipe, resuming, train, training_log

SYSTEM = ("You are AutoGPT, you can use many tools (functions) to do the following task.\n"
          "Specifically, you have access to the following APIs: [{'name': 'get_weather_for_meteo', "
          "'parameters': {'city': 'string'}}, {'name': 'Finish'}]")
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Lisbon", "Prague", "Dublin",
          "Athens", "Warsaw", "Zurich"]


def record(i: int, city: str) -> dict:
    query = f"What is the weather in {city} today?" + " Please be quick." * 12 * (i % 3)
    completion = (f"\nThought: I should look up the weather in {city}.\nAction: get_weather_for_meteo\n"
                  f"Action Input: {{\"city\": \"{city}\"}}")
    return {"id": f"Step 1: {query}",
            "prompt": [{"role": "system", "content": SYSTEM},
                       {"role": "user", "content": f"\n{query}\nBegin!\n"}],
            "completion": [{"role": "assistant", "content": completion}]}


TINY = {"num_hidden_layers": 1, "hidden_size": 32, "ffn_dim": 64, "num_attention_heads": 2,
        "word_embed_proj_dim": 32, "max_position_embeddings": 512, "vocab_size": 400}
FAST_TRAIN = {"num_train_epochs": 1, "per_device_train_batch_size": 4, "logging_steps": 1,
              "save_steps": 2, "save_total_limit": 10, "warmup_steps": 0, "learning_rate": 3e-3,
              "dataset_num_proc": None, "max_length": 512}


def make_cfg(tmp_path, **overrides) -> dict:
    base = {"output_dir": str(tmp_path), "model": {"tiny": TINY},
            "format_check": {"heldout": 4, "max_new_tokens": 12}, "train": FAST_TRAIN}
    for key, value in overrides.items():
        base[key] = value
    return config.load("smoke", base)


@pytest.fixture(scope="module")
def records():
    return [record(i, CITIES[i % len(CITIES)]) for i in range(28)]


@pytest.fixture
def cfg(tmp_path, records):
    """A smoke config in tmp_path with sft/ and tokenizer/ as stage 01 would leave them."""
    cfg = make_cfg(tmp_path)
    Dataset.from_list(records).save_to_disk(str(tmp_path / "sft"))
    texts = [m["content"] for r in records for m in r["prompt"] + r["completion"]]
    tokenizer = model_lib.train_tokenizer(texts * 4, TINY["vocab_size"])
    tokenizer.chat_template = cfg.model.chat_template
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    return cfg


class Crash(RuntimeError):
    pass


class CrashAfter(TrainerCallback):
    """Simulates a killed job: raises once step k is logged (k between two checkpoints)."""

    def __init__(self, step):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"killed after step {self.step}")


def test_train_section_is_sftconfig_verbatim(cfg, tmp_path):
    from trl import SFTConfig
    args, precision = recipe.sft_config(cfg)
    direct = SFTConfig(output_dir=str(tmp_path / "checkpoints"), **cfg.train)
    assert args.to_dict() == direct.to_dict()          # nothing renamed, dropped or added
    assert (args.learning_rate, args.per_device_train_batch_size) == (3e-3, 4)
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert precision == "fp32"


def test_fp16_without_cuda_falls_back(tmp_path, cfg):
    notes = []
    args, precision = recipe.sft_config(make_cfg(tmp_path, train={**FAST_TRAIN, "fp16": True}), log=notes.append)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert (args.fp16, precision) == (False, "fp32") and "fp16" in notes[0]


def test_max_length_capped_at_model_positions(tmp_path, cfg):
    notes = []
    args, _ = recipe.sft_config(make_cfg(tmp_path, train={**FAST_TRAIN, "max_length": 4096}), log=notes.append)
    assert args.max_length == TINY["max_position_embeddings"] and "512 positions" in notes[0]


def _trainer(cfg, dataset=None):
    tokenizer = model_lib.load_tokenizer(cfg)
    model = model_lib.load_model(cfg, tokenizer)
    args, _ = recipe.sft_config(cfg)
    dataset = dataset if dataset is not None else train.load_data(cfg)[0]
    return recipe.make_trainer(cfg, model, tokenizer, dataset, args), tokenizer


@pytest.mark.parametrize("completion_only", [True, False])
def test_loss_mask_exact_positions(tmp_path, records, cfg, completion_only):
    cfg = make_cfg(tmp_path, train={**FAST_TRAIN, "completion_only_loss": completion_only})
    example = records[:1]
    trainer, tokenizer = _trainer(cfg, Dataset.from_list(example))
    prepared = trainer.train_dataset[0]
    prompt = tokenizer.apply_chat_template(example[0]["prompt"], add_generation_prompt=True)["input_ids"]
    full = tokenizer.apply_chat_template(example[0]["prompt"] + example[0]["completion"])["input_ids"]
    assert prepared["input_ids"] == full and full[:len(prompt)] == prompt
    assert tokenizer.eos_token_id in full[len(prompt):]   # the model learns to stop
    if completion_only:
        assert prepared["labels"][:len(prompt)] == [-100] * len(prompt)
        assert prepared["labels"][len(prompt):] == full[len(prompt):]
        assert tokenizer.decode(full[len(prompt):]).startswith("\nThought:")
    else:
        assert prepared["labels"] == full


def _lengths_and_limit(cfg):
    """(tokenizer, training split, full lengths, prompt lengths, a limit between the shortest and
    the longest prompt): three prompt lengths, far apart, so at that limit the shortest fit, the
    middle ones are cut inside their completion, the longest lose it all."""
    tokenizer = model_lib.load_tokenizer(cfg)
    dataset = train.load_data(cfg)[0]
    lengths = recipe.sequence_lengths(dataset, tokenizer)
    prompt_lengths = [len(tokenizer.apply_chat_template(p, add_generation_prompt=True)["input_ids"])
                      for p in dataset["prompt"]]
    return tokenizer, dataset, lengths, prompt_lengths, (min(prompt_lengths) + max(prompt_lengths)) // 2 + 5


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_too_long_counted(tmp_path, cfg, policy):
    cfg = make_cfg(tmp_path, model={"tiny": TINY, "over_max_positions": policy})
    tokenizer, dataset, lengths, prompt_lengths, limit = _lengths_and_limit(cfg)
    over = sum(n > limit for n in lengths)
    no_completion = sum(p >= limit for p in prompt_lengths)
    assert 0 < no_completion < over < len(dataset)
    kept, stats = recipe.limit_length(dataset, tokenizer, cfg, limit)
    assert stats["over_max_length"] == over
    if policy == "drop":
        assert (len(kept), stats["dropped_too_long"], stats["truncated"]) == (len(dataset) - over, over, 0)
        assert max(recipe.sequence_lengths(kept, tokenizer)) <= limit
    else:
        assert (len(kept), stats["truncated"], stats["dropped_too_long"]) == (len(dataset), over, 0)
        # TRL then truncates to max_length and, with the loss on completions only, drops those left
        # without completion tokens.
        cfg = make_cfg(tmp_path, train={**FAST_TRAIN, "max_length": limit, "completion_only_loss": True})
        trainer, _ = _trainer(cfg, kept)
        assert len(trainer.train_dataset) == len(dataset) - no_completion
        assert max(len(x) for x in trainer.train_dataset["input_ids"]) == limit


def test_tokens_per_second_count_what_trl_trains_on(tmp_path, cfg):
    """tokens_per_s rests on padding_free_tokens: after TRL's cut to max_length, and without the
    examples it drops (a prompt alone filling max_length leaves no completion to learn)."""
    _, _, lengths, prompts, limit = _lengths_and_limit(cfg)
    assert any(p >= limit for p in prompts)
    run_cfg = make_cfg(tmp_path, model={"tiny": TINY, "over_max_positions": "truncate"},
                       train={**FAST_TRAIN, "max_length": limit, "completion_only_loss": True, "max_steps": 1})
    summary = train.run(run_cfg, log=lambda *a, **k: None)
    assert summary["dropped_too_long"] == sum(p >= limit for p in prompts)
    assert summary["padding_free_tokens"] == sum(min(n, limit) for n, p in zip(lengths, prompts) if p < limit)

def test_tiny_model_tied_to_tokenizer(cfg):
    tokenizer = model_lib.load_tokenizer(cfg)
    m = model_lib.load_model(cfg, tokenizer)
    assert m.config.vocab_size == len(tokenizer) <= TINY["vocab_size"]
    assert (m.config.bos_token_id, m.config.eos_token_id, m.config.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert m.config.num_hidden_layers == 1 and m.config.model_type == "opt"


def test_run_resume_and_determinism(cfg, tmp_path_factory):
    # Reference: an uninterrupted run.
    summary = train.run(cfg)
    out = config.path(cfg, cfg.output_dir)
    log = store.read_jsonl(out / "train_log.jsonl")
    steps = summary["optimizer_steps"]
    assert steps == trainer_steps.steps_per_epoch(24, 4, 1)["ceil"] == 6
    assert [r["step"] for r in log] == list(range(1, steps + 1))
    assert summary["examples"] == 24 and summary["heldout_examples"] == 4
    assert (out / "model" / "model.safetensors").exists() and (out / "figures" / "loss_curve.png").exists()
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["final_loss"] == log[-1]["loss"] and saved["stamp"] == cfg.stamp
    assert 0 <= saved["format_rate_trained"] <= 1 and saved["precision"] == "fp32"
    # Downstream loads model/ like any hub model.
    reloaded = AutoModelForCausalLM.from_pretrained(str(out / "model"))
    assert AutoTokenizer.from_pretrained(str(out / "model")).chat_template == cfg.model.chat_template
    assert reloaded.config.vocab_size == len(AutoTokenizer.from_pretrained(str(out / "model")))

    # Same seed, another folder: the same losses, bit for bit.
    other = tmp_path_factory.mktemp("again")
    for name in ("sft", "tokenizer"):
        shutil.copytree(out / name, other / name)
    cfg2 = make_cfg(other)
    assert train.run(cfg2)["final_loss"] == summary["final_loss"]

    # Killed after step 3 (between checkpoints 2 and 4), then rerun: resumes from checkpoint-2.
    crashed = tmp_path_factory.mktemp("crashed")
    for name in ("sft", "tokenizer"):
        shutil.copytree(out / name, crashed / name)
    cfg3 = make_cfg(crashed)
    with pytest.raises(Crash):
        train.run(cfg3, callbacks=[CrashAfter(3)])
    assert [r["step"] for r in store.read_jsonl(crashed / "train_log.jsonl")] == [1, 2, 3]
    resumed = train.run(cfg3)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    relog = store.read_jsonl(crashed / "train_log.jsonl")
    assert [r["step"] for r in relog] == list(range(1, steps + 1))     # unique and complete
    assert resumed["optimizer_steps"] == steps
    assert [r["loss"] for r in relog] == pytest.approx([r["loss"] for r in log], rel=1e-5)
    # The learning curve too: measured at the same steps as the uninterrupted run, none twice.
    from lib.train import learning_curve
    curve = [r["step"] for r in store.read_jsonl(out / "learning_curve.jsonl")]
    assert curve == [0, *sorted(learning_curve.points(steps, 4)), steps]
    assert [r["step"] for r in store.read_jsonl(crashed / "learning_curve.jsonl")] == curve


def test_training_further_resumes_and_a_second_run_is_refused(cfg):
    out = config.path(cfg, cfg.output_dir)
    four = make_cfg(out, train={**FAST_TRAIN, "max_steps": 4})
    assert train.run(four)["optimizer_steps"] == 4
    six = make_cfg(out, train={**FAST_TRAIN, "max_steps": 6})
    said = []
    summary = train.run(six, log=lambda *a, **k: said.append(" ".join(map(str, a))))
    assert summary["resumed_from"].endswith("checkpoint-4") and summary["optimizer_steps"] == 6
    assert any("resuming from" in line and "to step 6" in line for line in said)
    assert [r["step"] for r in store.read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert {p.name for p in (out / "checkpoints").glob("checkpoint-*")} >= {"checkpoint-2", "checkpoint-4"}
    assert not list(out.glob("checkpoints.run-*"))
    # Run again, finished: nothing is trained or re-saved (the Trainer, resumed at its last step
    # mid-epoch, would take one more step), so stage 03 keeps its trajectories.
    model_bytes = (out / "model" / "model.safetensors").read_bytes()
    said.clear()
    again = train.run(six, log=lambda *a, **k: said.append(" ".join(map(str, a))))
    assert again == summary and any("already trained to step 6" in line for line in said)
    assert (out / "model" / "model.safetensors").read_bytes() == model_bytes
    assert not (out / "checkpoints" / "checkpoint-7").exists()
    # While one process trains the profile, another is refused at once, naming it.
    with resume.exclusive(out / "checkpoints", "stage 02 training"):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            message = pool.apply(_train_in_another_process, (six,))
    assert f"pid {__import__('os').getpid()}, stage 02 training" in message


def _train_in_another_process(cfg) -> str:
    try:
        train.run(cfg)
    except resume.FolderBusy as err:
        return str(err)
    return "not refused"


def test_checkpoints_of_another_config_are_set_aside_not_deleted(cfg):
    with resume.exclusive(config.output_dir(cfg, "checkpoints"), "stage 02 training"):
        _set_aside_not_deleted(cfg)


def _set_aside_not_deleted(cfg):
    out = config.path(cfg, cfg.output_dir)
    checkpoints = config.output_dir(cfg, "checkpoints")
    (checkpoints / "checkpoint-99").mkdir()
    said = []
    assert resuming.prepare_output(cfg, str(checkpoints), log=said.append) is True
    first = [p for p in out.glob("checkpoints.run-unkeyed.*")]
    assert len(first) == 1 and (first[0] / "checkpoint-99").is_dir() and str(first[0]) in said[0]
    (checkpoints / "checkpoint-2").mkdir()
    (out / "train_log.jsonl").write_text('{"step": 2}\n')
    assert resuming.prepare_output(cfg, str(checkpoints), planned=6) is False   # same run: resume
    assert resuming.prepare_output(cfg, str(checkpoints), planned=8) is False   # trains further
    assert resuming.prepare_output(cfg, str(checkpoints), planned=1) is True    # past it: aside
    other = make_cfg(out, train={**FAST_TRAIN, "learning_rate": 1e-4})
    (checkpoints / "checkpoint-3").mkdir()
    assert resuming.prepare_output(other, str(checkpoints)) is True
    aside = sorted(out.glob("checkpoints.run-*"))
    assert len(aside) == 3
    assert sum((p / "checkpoint-2").is_dir() for p in aside) == 1
    assert sum((p / "train_log.jsonl").exists() for p in aside) == 1


def test_hub_model_unreachable_says_how_to_point_at_a_local_copy(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config.load("paper", {"model.name_or_path": "facebook/opt-350m-not-cached-here"})
    with pytest.raises(OSError, match="set model.name_or_path"):
        model_lib.load_tokenizer(cfg)
    with pytest.raises(OSError, match="local-dir"):
        model_lib.max_positions(cfg.model)


def test_paper_profile_loads_a_local_folder(cfg, tmp_path):
    tokenizer = model_lib.load_tokenizer(cfg)
    torch.manual_seed(0)
    tiny = model_lib.load_model(cfg, tokenizer)
    folder = model_lib.save(tiny, tokenizer, tmp_path / "local-opt")
    paper = config.load("paper", {"model.name_or_path": str(folder)})
    loaded_tokenizer = model_lib.load_tokenizer(paper)
    loaded = model_lib.load_model(paper, loaded_tokenizer)
    assert loaded_tokenizer.chat_template == paper.model.chat_template
    assert model_lib.max_positions(paper.model) == TINY["max_position_embeddings"]
    for (name, a), (_, b) in zip(tiny.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_lora_run_saves_a_merged_model(cfg, tmp_path):
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
            "task_type": "CAUSAL_LM"}
    cfg = make_cfg(tmp_path, lora=lora, train={**FAST_TRAIN, "max_steps": 2, "save_strategy": "no"},
                   format_check={"heldout": 2, "max_new_tokens": 4})
    tokenizer = model_lib.load_tokenizer(cfg)
    torch.manual_seed(cfg.seed)
    base = model_lib.load_model(cfg, tokenizer).state_dict()
    summary = train.run(cfg)
    assert summary["lora"] and summary["optimizer_steps"] == 2
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    names = set(merged.state_dict())
    assert not any("lora" in n for n in names) and names == set(base)
    # Only the adapted projections moved.
    q = "model.decoder.layers.0.self_attn.q_proj.weight"
    k = "model.decoder.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(merged.state_dict()[q], base[q])
    assert torch.equal(merged.state_dict()[k], base[k])


def test_half_precision_checkpoint_is_loaded_in_float32_for_mixed_precision(cfg, tmp_path):
    """The hub's opt-350m is stored in float16; fp16 training needs float32 master weights."""
    folder = model_lib.save_stand_in(tmp_path / "opt-350m-stand-in", [SYSTEM] * 20, tokenizer_vocab=300,
                                     num_hidden_layers=1, hidden_size=32, ffn_dim=64,
                                     num_attention_heads=2, word_embed_proj_dim=16)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    paper = config.load("paper", {"model.name_or_path": str(folder)})
    assert paper.train["fp16"]
    loaded = model_lib.load_model(paper, model_lib.load_tokenizer(paper))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    # Keeping the stored half precision with fp16 training is refused, naming the key.
    half = config.load("paper", {"model.name_or_path": str(folder), "model.dtype": "float16"})
    with pytest.raises(ValueError, match="model.dtype: float32"):
        model_lib.load_model(half, model_lib.load_tokenizer(half))


def test_stand_in_has_opt_350m_architecture_where_not_overridden(tmp_path):
    folder = model_lib.save_stand_in(tmp_path / "m", [SYSTEM] * 20, tokenizer_vocab=300,
                                     num_hidden_layers=1, hidden_size=32, ffn_dim=64,
                                     num_attention_heads=2, word_embed_proj_dim=16)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["vocab_size"] == 50272 and saved["max_position_embeddings"] == 2048
    assert saved["do_layer_norm_before"] is False and saved["activation_function"] == "relu"


def test_nothing_left_to_train_says_why(cfg, tmp_path):
    """Every example longer than max_length with its completion cut away: a clear error, not
    TRL's 'num_samples=0'."""
    cfg = make_cfg(tmp_path, train={**FAST_TRAIN, "max_length": 40, "completion_only_loss": True})
    with pytest.raises(ValueError, match=r"no training example left.*train.max_length=40"):
        train.run(cfg)


def test_run_shorter_than_one_logging_window_still_summarises(cfg, tmp_path):
    """2 steps with logging_steps 10: no loss line is logged, yet the summary and curve are made."""
    cfg = make_cfg(tmp_path, train={**FAST_TRAIN, "max_steps": 2, "logging_steps": 10,
                                    "save_strategy": "no"}, format_check={"heldout": 0, "max_new_tokens": 4})
    summary = train.run(cfg)
    assert summary["final_loss"] is None and summary["train_loss"] > 0
    assert (tmp_path / "figures" / "loss_curve.png").stat().st_size > 0
    assert "final loss" in training_log.describe(summary)


@pytest.mark.parametrize("pretokenize, pieces", [("gpt2", 7), ("identifiers", 1)])
def test_identifier_pretokenizer_keeps_function_names_whole(pretokenize, pieces):
    """GPT-2's rule splits get_weather_for_meteo at each underscore; 'identifiers' lets BPE make a
    frequent name one token. Both decode back to the text exactly."""
    texts = [record(i, city)["completion"][0]["content"] for i, city in enumerate(CITIES)] * 3
    tokenizer = model_lib.train_tokenizer(texts, 400, pretokenize)
    assert len(tokenizer.tokenize(" get_weather_for_meteo")) == pieces
    ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == texts[0]
    with pytest.raises(ValueError, match="tokenizer_pretokenize"):
        model_lib.train_tokenizer(texts, 400, "words")


def two_turn_example(city: str = "Oslo") -> dict:
    """A prompt holding an earlier assistant turn and its function reply, as ToolBench's later
    records do: with completion_only_loss that earlier turn carries no loss."""
    first = record(0, city)
    return {"id": first["id"],
            "prompt": first["prompt"] + first["completion"]
            + [{"role": "function", "content": '{"error": "", "response": "3 C"}'}],
            "completion": [{"role": "assistant", "content": "\nThought: done\nAction: Finish\n"
                            'Action Input: {"return_type": "give_answer", "final_answer": "3 C"}'}]}


@pytest.mark.parametrize("completion_only,assistant_only", [(True, False), (False, False), (False, True),
                                                             (True, True)])
def test_tokenize_example_is_what_trl_trains_on(tmp_path, cfg, completion_only, assistant_only):
    cfg = make_cfg(tmp_path, train={**FAST_TRAIN, "completion_only_loss": completion_only,
                                    "assistant_only_loss": assistant_only})
    examples = [two_turn_example("Oslo"), record(1, "Lima")]
    trainer, tokenizer = _trainer(cfg, Dataset.from_list(examples))
    assert loss_mask.loss_settings(cfg) == {"completion_only_loss": completion_only, "assistant_only_loss": assistant_only}
    for example, prepared in zip(examples, trainer.train_dataset):
        ours = loss_mask.tokenize_example(tokenizer, example, completion_only, assistant_only)
        labels = prepared["labels"] if "labels" in prepared else [
            t if (c or not completion_only) and a else -100 for t, c, a in zip(
                prepared["input_ids"], prepared.get("completion_mask") or [1] * len(prepared["input_ids"]),
                prepared.get("assistant_masks") or [1] * len(prepared["input_ids"]))]
        assert ours["input_ids"] == prepared["input_ids"] and ours["labels"] == labels
        if "completion_mask" in prepared:           # TRL keeps it when it did not fold it into labels
            assert ours["completion_mask"] == prepared["completion_mask"]
        if "assistant_masks" in prepared:
            assert ours["assistant_masks"] == prepared["assistant_masks"]
        start = ours["prompt_length"]
        assert tokenizer.decode(ours["input_ids"][start:]) == (
            example["completion"][0]["content"] + tokenizer.eos_token + "\n")
        carrying = tokenizer.decode([t for t in ours["labels"] if t != -100])
        turns = [m["content"] + tokenizer.eos_token for m in example["prompt"] + example["completion"]
                 if m["role"] == "assistant"]
        if assistant_only:      # every assistant turn and its eos, nothing else; the last alone with both
            assert carrying == "".join(turns[-1:] if completion_only else turns)
        else:
            assert sum(label != -100 for label in ours["labels"]) == (
                len(ours["input_ids"]) - start if completion_only else len(ours["input_ids"]))


def test_a_retried_calls_failed_try_is_context_not_target(tmp_path, cfg):
    """data.retried_calls_in_loss: false marks the failed first try of a retried call (loss: false);
    the chat template renders the same text and leaves it out of the assistant mask, in TRL's own
    prepared dataset as in tokenize_example."""
    from lib.data import data

    def call(city):
        return (f"\nThought: I should look up the weather in {city}.\nAction: get_weather_for_meteo\n"
                f"Action Input: {{\"city\": \"{city}\"}}")
    first = record(0, "Oslo")
    conversation = [{"from": m["role"], "value": m["content"]} for m in first["prompt"]] + [
        {"from": "assistant", "value": call("Olso")},
        {"from": "function", "value": '{"error": "No recorded response", "response": ""}'},
        {"from": "assistant", "value": call("Oslo")},
        {"from": "function", "value": '{"error": "", "response": "3 C"}'},
        {"from": "assistant", "value": "\nThought: done\nAction: Finish\n"
                                       'Action Input: {"return_type": "give_answer", "final_answer": "3 C"}'}]
    whole = {"id": first["id"], "conversations": conversation, "extended": False}
    assert data.retried_calls(data._messages(conversation)) == {2}
    [plain] = data.examples_from_record(whole, "conversation")
    [marked] = data.examples_from_record(whole, "conversation", retried_in_loss=False)
    assert [m.get("loss") for m in marked["prompt"]] == [True, True, False, True, True, True]
    cfg = make_cfg(tmp_path, train={**FAST_TRAIN, "completion_only_loss": False, "assistant_only_loss": True})
    trainer, tokenizer = _trainer(cfg, Dataset.from_list([marked]))
    render = lambda e: tokenizer.apply_chat_template(e["prompt"] + e["completion"], tokenize=False)  # noqa: E731
    assert render(marked) == render(plain)
    ours = loss_mask.tokenize_example(tokenizer, marked, False, True)
    prepared = trainer.train_dataset[0]
    trl_labels = prepared["labels"] if "labels" in prepared else [
        t if a else -100 for t, a in zip(prepared["input_ids"], prepared["assistant_masks"])]
    assert ours["input_ids"] == prepared["input_ids"] and ours["labels"] == trl_labels
    carrying = tokenizer.decode([t for t in ours["labels"] if t != -100])
    assert carrying == call("Oslo") + tokenizer.eos_token + conversation[-1]["value"] + tokenizer.eos_token
    every = loss_mask.tokenize_example(tokenizer, plain, False, True)
    assert tokenizer.decode([t for t in every["labels"] if t != -100]).startswith(call("Olso"))


def test_mark_loss_brackets_the_loss_bearing_text(cfg):
    tokenizer = model_lib.load_tokenizer(cfg)
    example = two_turn_example()
    prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
    only = loss_mask.tokenize_example(tokenizer, example, True)
    every = loss_mask.tokenize_example(tokenizer, example, False)
    wide = 10 * len(full)
    assert loss_mask.mark_loss(tokenizer, only["input_ids"], only["labels"], wide) == f"{prompt}>>>{full[len(prompt):]}<<<"
    assert loss_mask.mark_loss(tokenizer, every["input_ids"], every["labels"], wide) == f">>>{full}<<<"
    # A long run keeps its two ends and says how much it left out.
    cut = loss_mask.mark_loss(tokenizer, only["input_ids"], only["labels"], 40)
    assert cut.startswith(prompt[:20] + f"[... {len(prompt) - 40:,} characters ...]" + prompt[-20:] + ">>>")
    start = only["prompt_length"]
    table = loss_mask.describe_tokens(tokenizer, only["input_ids"], {"mask": only["completion_mask"],
                                                                "labels": only["labels"]}, start - 1, start + 1)
    assert [row.split()[-2:] for row in table.splitlines()] == [
        ["mask", "labels"], ["0", "-100"], ["1", str(only["input_ids"][start])]]


@pytest.mark.parametrize("completion_only", [True, False])
def test_describe_batch_says_which_positions_are_masked_and_why(tmp_path, cfg, completion_only):
    cfg = make_cfg(tmp_path, train={**FAST_TRAIN, "completion_only_loss": completion_only})
    examples = [two_turn_example("Oslo"), record(2, "Lima")]     # a long and a short one
    trainer, tokenizer = _trainer(cfg, Dataset.from_list(examples))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tokenized = [loss_mask.tokenize_example(tokenizer, e, completion_only) for e in examples]
    width = max(len(t["input_ids"]) for t in tokenized)
    lines = loss_mask.describe_batch(batch).splitlines()
    for line, t in zip(lines, tokenized):
        n, padding = len(t["input_ids"]), width - len(t["input_ids"])
        prompt = t["prompt_length"] if completion_only else 0
        assert line.endswith(f"{width} positions = {n} tokens + {padding} padding; -100 on the {padding} "
                             f"padding and {prompt} prompt positions; {n - prompt} carry loss")


def test_describe_recipe_sets_profiles_side_by_side():
    smoke, paper_cfg = config.load("smoke"), config.load("paper")
    lines = recipe.describe_recipe(smoke, paper_cfg, keys=("train.completion_only_loss", "train.max_steps",
                                                           "model.name_or_path")).splitlines()
    assert lines[0].split() == ["key", "smoke", "paper"]
    assert lines[1].split() == ["train.completion_only_loss", "False", "True"]
    assert lines[2].split() == ["train.max_steps", "(default)", "(default)"]
    assert lines[3].split() == ["model.name_or_path", "null", "facebook/opt-350m"]


def test_on_a_cpu_the_loss_projects_only_the_positions_it_reads_and_is_the_same(monkeypatch):
    import trl.trainer.utils as trl_utils
    from transformers import LlamaConfig, LlamaForCausalLM

    assert recipe.score_loss_positions_only(), "TRL no longer has the hook: re-measure the CPU loss cost"
    compact = trl_utils._use_triton
    assert compact(torch.device("cpu")) and recipe.score_loss_positions_only()
    assert trl_utils._use_triton is compact                     # installed once
    projected, kernel = [], trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            projected.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    ids = torch.randint(3, 100, (2, 24))
    labels = ids.clone()
    labels[:, :16] = -100                                       # the loss on the last 8 tokens of each row

    def loss_and_grads(choose):
        monkeypatch.setattr(trl_utils, "_use_triton", choose)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
        trl_utils.add_fused_lm_head(model)
        loss = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    every, every_grads = loss_and_grads(compact.original)
    kept, kept_grads = loss_and_grads(compact)
    assert projected == [2 * 23, 2 * 8]                         # shifted: 23 positions a row, 8 of them read
    assert torch.allclose(every, kept, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(every_grads, kept_grads))


# ---------------------------------------------------------------------------------------------
# Several processes: accelerate launch, on this CPU over gloo (docs/stages.md, "02: keys of our own,
# several GPUs")

# Its sitecustomize.py, on the launched processes' PYTHONPATH: which process writes which file, and
# rank 0 killed at a chosen write.
WRITE_AUDIT = Path(__file__).parent / "write_audit"
# Two processes of 2 x 1 make the global batch of one process of 2 x 2. Random order: the Trainer's
# group_by_length sorts within windows of per-device batch x accumulation, which differ between the two.
SHARED_BATCH = {**FAST_TRAIN, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                "train_sampling_strategy": "random", "max_steps": 6}
WHOLE_FILES = ("model/config.json", "train_summary.json", "figures/loss_curve.png", "figures/learning_curve.png")


def test_the_profiles_batch_is_the_global_batch_whatever_the_processes():
    from lib.common import global_batch
    for processes, share in [(1, (8, 4)), (2, (8, 2)), (4, (8, 1)), (8, (4, 1)), (32, (1, 1))]:
        assert global_batch.per_process(8, 4, processes) == share      # the paper's 8 x 4 = 32 each time
    with pytest.raises(config.ConfigError, match=r"train.per_device_train_batch_size x "
                       r"train.gradient_accumulation_steps = 8 x 4 = 32 .* do not divide among 3 processes"):
        config.load("paper", {"accelerate.num_processes": 3})
    assert config.load("paper", {"accelerate.num_processes": 4}).train["gradient_accumulation_steps"] == 4
    with pytest.raises(config.ConfigError, match="'accelerate.config_file' nowhere.yaml does not exist"):
        config.load("smoke", {"accelerate.num_processes": 2, "accelerate.config_file": "nowhere.yaml"})


def test_the_shipped_accelerate_configs_are_what_accelerate_reads():
    """configs/accelerate/: one GPU, DDP and FSDP as accelerate launch reads them; the multi-process
    ones leave the count to --num_processes (the profile's accelerate.num_processes)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers.models.opt import modeling_opt
    read = {p.stem: load_config_from_file(str(p)) for p in (config.CONFIG_DIR / "accelerate").glob("*.yaml")}
    assert {name: (c.distributed_type.value, c.num_processes, c.mixed_precision) for name, c in read.items()} == {
        "one_gpu": ("NO", 1, "no"), "multi_gpu": ("MULTI_GPU", -1, "no"), "fsdp": ("FSDP", -1, "no")}
    assert hasattr(modeling_opt, read["fsdp"].fsdp_config["fsdp_transformer_layer_cls_to_wrap"])
    assert read["fsdp"].fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert config.load("smoke").accelerate.config_file == "configs/accelerate/multi_gpu.yaml"


def test_the_launch_rebuilds_the_same_profile_and_relays_progress_lines():
    import argparse
    import io
    from lib.train import launch
    cfg = config.derive(config.load("smoke", {"train.learning_rate": 1e-5, "model": {"tiny": TINY}}),
                        {"format_check.heldout": 0, "model.chat_template": "{{ 'a\nb' }} 'x'",
                         "accelerate.num_processes": 2})
    command = launch.command(cfg)
    assert command[command.index("--num_processes") + 1] == "2" and command[-len(config.launch_arguments(cfg)) - 1] == "lib.train.train"
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(config.launch_arguments(cfg))
    assert config.load(args.profile, config.overrides_of(parser, args)) == cfg
    # tqdm redraws its line with carriage returns: each state arrives as a line of its own.
    stream = io.BufferedReader(io.BytesIO("a\r[02] 1/6\r[02] 2/6 é\nlast".encode()), buffer_size=3)
    assert list(launch.relay(stream)) == ["a", "[02] 1/6", "[02] 2/6 é", "last"]


def _audited(audit, root, monkeypatch, kill_at=None):
    """The launched processes' writes under `root` go to `audit` (tests/write_audit/sitecustomize.py)."""
    audit.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(WRITE_AUDIT), str(config.ROOT)]))
    monkeypatch.setenv("WRITE_AUDIT_DIR", str(audit))
    monkeypatch.setenv("WRITE_AUDIT_ROOT", str(root))
    if kill_at:
        monkeypatch.setenv("KILL_AT", kill_at)
    else:
        monkeypatch.delenv("KILL_AT", raising=False)


def _writes(audit) -> list[dict]:
    return [r for f in sorted(audit.glob("*.jsonl")) for r in store.read_jsonl(f)]


@pytest.mark.slow
def test_two_processes_train_as_one_write_once_and_resume_after_a_kill(cfg, tmp_path_factory, monkeypatch):
    """A real 2-process run (accelerate launch, gloo): the loss curve of one process at the same
    global batch, every file written by rank 0 alone, and after rank 0 is SIGKILLed mid-run the
    launch resumes from its last checkpoint. About 45 s on 2 cores."""
    from lib.train import launch
    out = config.path(cfg, cfg.output_dir)
    reference = train.run(make_cfg(out, train=SHARED_BATCH))
    one = store.read_jsonl(out / "train_log.jsonl")
    assert (reference["processes"], reference["per_process_batch"], reference["effective_batch"]) == (1, [2, 2], 4)

    two_dir = tmp_path_factory.mktemp("two")
    for name in ("sft", "tokenizer"):
        shutil.copytree(out / name, two_dir / name)
    two = make_cfg(two_dir, train=SHARED_BATCH, accelerate={"num_processes": 2})
    # Killed as rank 0 opens train_log.jsonl for its third line: step 3 done, checkpoint-2 saved.
    _audited(tmp_path_factory.mktemp("audit") / "killed", two_dir, monkeypatch, kill_at="train_log.jsonl:3")
    said = []
    with pytest.raises(launch.LaunchFailed, match=r"(?s)exit code .*SIGKILL"):
        train.run(two, log=said.append)
    assert said[0].startswith("launching: accelerate launch --config_file ") and "--num_processes 2" in said[0]
    assert [r["step"] for r in store.read_jsonl(two_dir / "train_log.jsonl")] == [1, 2]
    assert sorted(p.name for p in (two_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert {p.name for p in (two_dir / "checkpoints" / "checkpoint-2").glob("rng_state_*")} == {
        "rng_state_0.pth", "rng_state_1.pth"}

    # Launched again: the lock went with the killed run, and the 2 processes resume from checkpoint-2.
    audit = tmp_path_factory.mktemp("audit") / "resumed"
    _audited(audit, two_dir, monkeypatch)
    summary = train.run(two, log=said.append)
    assert any(line.startswith("resuming from") and line.endswith("checkpoint-2 (training to step 6)") for line in said)
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["optimizer_steps"] == 6
    assert (summary["processes"], summary["per_process_batch"], summary["effective_batch"]) == (2, [2, 1], 4)
    assert json.loads((two_dir / "train_summary.json").read_text()) == summary
    log = store.read_jsonl(two_dir / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]                     # each step once
    # The same loss curve as one process (docs/stages.md: measured equal to the last bit; the tolerance
    # leaves room for another summation order of the gradients' all-reduce).
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in one], rel=1e-5)
    curve = [r["step"] for r in store.read_jsonl(two_dir / "learning_curve.jsonl")]
    assert curve == [r["step"] for r in store.read_jsonl(out / "learning_curve.jsonl")]

    # Who wrote what in the resumed launch: rank 0 alone (the others only make sure checkpoint
    # folders exist, for their RNG states, which torch writes below Python's reach), each whole
    # file once, each log line once.
    writes = _writes(audit)
    assert {r["event"] for r in writes if r["rank"] != 0} <= {"os.mkdir"}
    opened = collections.Counter(r["path"] for r in writes if r["event"] == "open")
    assert all(opened[name] == 1 for name in WHOLE_FILES), opened
    assert opened["train_log.jsonl"] == 4 and opened["checkpoints/run_fingerprint.txt"] == 0     # lines 3-6


@pytest.mark.slow
def test_a_second_launch_on_a_busy_profile_stops_at_once_in_every_process(cfg):
    """Through lib: refused before any process starts. By hand (accelerate launch without the lib's
    launcher): rank 0 finds the lock held and every rank stops with the same error, none left waiting."""
    import subprocess
    import time
    from lib.train import launch
    out = config.path(cfg, cfg.output_dir)
    two = make_cfg(out, train=SHARED_BATCH, accelerate={"num_processes": 2})
    with resume.exclusive(out / "checkpoints", "stage 02 training"):
        started = time.time()
        with pytest.raises(resume.FolderBusy, match=f"pid {os.getpid()}, stage 02 training"):
            train.run(two)
        assert time.time() - started < 5
        done = subprocess.run(launch.command(two), cwd=config.ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(config.ROOT)})
    said = done.stdout + done.stderr
    assert done.returncode != 0 and not (out / "train_log.jsonl").exists()
    # Both ranks raised FolderBusy themselves: rank 1 was told, not left waiting until torchrun ended it.
    assert said.count(f"FolderBusy: {out / 'checkpoints'} is being written by another run (pid {os.getpid()}") == 2
