"""lib.infer.inference (ReAct, DFSDT, trajectory files, the stage) and lib.models.backends (HF, OpenAI)."""
import ast
import json

import pytest

from conftest import LoopbackServer, chat_completion
from lib.common import config
from lib.common.settings import Inference
from lib.toolbench import apis, environments, formats, offline_env, trajectories, virtual_env
from lib.models import backends
from lib.infer import inference
from test_toolbench import QUERY

from conftest import TOOLBENCH_SAMPLE as SAMPLE
needs_sample = pytest.mark.skipif(not SAMPLE.exists(), reason="toolbench-sample not present")

CW = "current_weather_for_weather_api"


def step(action, args, thought="t"):
    return formats.format_step(thought, action, json.dumps(args))


ANSWER = step("Finish", {"return_type": "give_answer", "final_answer": "21 degrees"})
GIVE_UP = step("Finish", {"return_type": "give_up_and_restart"})


class Scripted:
    """Returns canned outputs: script(conversation) -> text, or a list consumed in order."""

    def __init__(self, script):
        self.script, self.calls, self.batches = script, 0, []

    def generate(self, conversations):
        self.batches.append(len(conversations))
        out = []
        for conversation in conversations:
            text = self.script(conversation) if callable(self.script) else self.script[self.calls]
            self.calls += 1
            out.append(backends.Generation(text, tokens=len(text.split()), truncated=False))
        return out


@pytest.fixture
def env(tmp_path):
    rows = [{"category": "Weather", "tool_name": "Weather API!", "api_name": "Current Weather",
             "arguments": {"city": "Paris"}, "response": {"temp": 21}}]
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return offline_env.OfflineToolEnv(tmp_path / "responses.jsonl")


def query(qid=7, group="G1_instruction"):
    return formats.Query(dict(QUERY, query_id=qid), group, {"weather_api": "Weather for all"})


def drive(coroutine, outputs):
    prompts = [next(coroutine)]
    try:
        for text in outputs:
            prompts.append(coroutine.send(text))
    except StopIteration as stop:
        return stop.value, prompts
    raise AssertionError("the loop did not finish")


def test_react_calls_tool_then_finishes(env):
    q = query()
    result, prompts = drive(inference.react(q, env, 10), [step(CW, {"city": "Paris"}), ANSWER])
    assert result["finish_type"] == "give_answer" and result["final_answer"] == "21 degrees"
    first, second = result["steps"]
    # As ToolBench's data writes a structured response: its Python repr, as text.
    assert json.loads(first["observation"]) == {"error": "", "response": "{'temp': 21}"}
    # the second prompt is the conversation so far, roles as in training
    assert [m["role"] for m in prompts[1]] == ["system", "user", "assistant", "function"]
    assert prompts[1][1]["content"] == "\nWhat is the weather in Paris?\nBegin!\n"
    assert prompts[1][2]["content"] == '\nThought: t\nAction: current_weather_for_weather_api\nAction Input: {"city": "Paris"}'
    assert "1.weather_api: Weather for all\n" in prompts[0][0]["content"]


def test_the_next_prompt_is_the_prompt_plus_the_steps_turns(env):
    """Notebook 03 walks one step by hand with take_step and step_turns: ReAct and DFSDT must build
    their next prompt exactly so."""
    call = step(CW, {"city": "Paris"}, thought="weather first")
    _, prompts = drive(inference.react(query(), env, 1), [call])
    by_hand = inference.take_step(query(), call, env)
    assert prompts[0] == query().start()
    _, react_prompts = drive(inference.react(query(), env, 2), [call, ANSWER])
    assert react_prompts[1] == query().start() + inference.step_turns(by_hand)
    assert [t["role"] for t in inference.step_turns(by_hand)] == ["assistant", "function"]
    _, tree_prompts = drive(inference.dfsdt(query(), env, 10, 2, 20), [call, ANSWER])
    assert tree_prompts[1] == react_prompts[1]
    # nothing parsed: the raw text goes back as the assistant turn, the error as the observation
    lost = inference.take_step(query(), "  I would check the weather", env)
    assert inference.step_turns(lost)[0]["content"] == "\nI would check the weather"
    assert json.loads(inference.step_turns(lost)[1]["content"])["error"] == "missing 'Action:'"


def test_react_parse_errors_become_observations_and_limit(env):
    bad = ["Thought: no action here", step("nope_for_x", {}), "Thought: x\nAction: Finish\nAction Input: {bad",
           step("Finish", {"return_type": "give_answer"})]
    result, prompts = drive(inference.react(query(), env, 4), bad)
    assert result["finish_type"] == "max_iterations" and len(result["steps"]) == 4
    errors = [s["parse_error"] for s in result["steps"]]
    assert errors[0] == "missing 'Action:'" and errors[1] == "unknown function 'nope_for_x'"
    assert "not valid JSON" in errors[2] and "final_answer" in errors[3]
    assert all(json.loads(s["observation"])["error"] for s in result["steps"])
    assert prompts[-1][-1]["role"] == "function"       # the model saw the last error


def test_react_give_up_ends_the_chain(env):
    result, _ = drive(inference.react(query(), env, 10), [GIVE_UP])
    assert result["finish_type"] == "give_up" and result["final_answer"] == ""


def test_dfsdt_backtracks_after_give_up_and_errors(env):
    # root: child 1 errors (unknown API) -> sibling 2 calls the tool -> its child 1 gives up ->
    # sibling 2 answers.
    outputs = [step("nope", {}), step(CW, {"city": "Paris"}), GIVE_UP, ANSWER]
    result, prompts = drive(inference.dfsdt(query(), env, 10, 2, 20), outputs)
    assert result["finish_type"] == "give_answer" and result["expansions"] == 4
    assert [s["action"] for s in result["steps"]] == [CW, "Finish"]
    tree = result["tree"]
    assert [c["step"]["action"] for c in tree["children"]] == ["nope", CW]
    assert [c["step"]["action"] for c in tree["children"][1]["children"]] == ["Finish", "Finish"]
    # the sibling after a dead end is sampled from the same parent conversation
    assert prompts[1] == prompts[0] and prompts[3] == prompts[2]


def test_dfsdt_stops_at_max_expansions_and_depth(env):
    call = step(CW, {"city": "Paris"})
    result, _ = drive(inference.dfsdt(query(), env, 2, 2, 5), [call] * 5)
    # depth 2 leaves: root -> a -> (a1, a2) ; root -> b -> (b1) = 5 generations
    assert result["expansions"] == 5 and result["finish_type"] == "max_iterations"
    assert len(result["steps"]) == 2


def test_tooleval_answer_structure(env):
    result, _ = drive(inference.react(query(), env, 10), [step(CW, {"city": "Paris"}), ANSWER])
    answer = formats.tooleval_answer("What is the weather in Paris?", "CoT@1", result["steps"], "give_answer")
    assert answer["total_steps"] == 4 and json.loads(answer["final_answer"])["final_answer"] == "21 degrees"
    system = answer["answer_details"][0]
    assert system["role"] == "system" and system["message"] == ""
    user = system["next"][0]
    tool = user["next"][0]
    assert tool["role"] == "tool" and tool["message"]["name"] == CW
    finish = tool["next"][0]
    assert finish["message"]["response"] == "" and finish["next"] == []
    failed = formats.tooleval_answer("q", "CoT@1", result["steps"][:1], "max_iterations")
    assert failed["final_answer"] == "" and failed["answer_details"][0]["next"][0]["next"][0]["role"] == "assistant"


def _shape(node):
    return (node["role"], type(node["message"]).__name__, [_shape(n) for n in node["next"]])


@needs_sample
@pytest.mark.parametrize("path,method,truncate", [
    ("toolbench/tooleval/results/default_evalset/gpt-3.5-turbo_CoT/G1_instruction.json", "CoT@1", True),
    ("stabletoolbench/data_example/model_predictions_converted/virtual_chatgpt_cot/G1_instruction.json", "CoT@1", False),
])
def test_converter_matches_real_converted_files(env, path, method, truncate):
    real = json.loads((SAMPLE / path).read_text())
    item = next(v for v in real.values() if v["answer"]["final_answer"])
    assert set(item) == {"query", "available_tools", "answer"}
    result, _ = drive(inference.react(query(), env, 10), [step(CW, {"city": "Paris"}), ANSWER])
    ours = formats.tooleval_answer("What is the weather in Paris?", method, result["steps"], "give_answer", truncate)
    assert set(ours) == set(item["answer"])
    theirs_root, ours_root = item["answer"]["answer_details"][0], ours["answer_details"][0]
    assert set(ours_root) == set(theirs_root) == {"role", "message", "next"}
    assert (theirs_root["role"], theirs_root["message"]) == (ours_root["role"], ours_root["message"]) == ("system", "")
    # a finished CoT run: system -> user -> tool calls (Finish last), one path, same node types
    def chain(node):
        return [(node["role"], type(node["message"]).__name__)] + (chain(node["next"][0]) if node["next"] else [])
    real_chain = chain(theirs_root)
    assert real_chain[0][0] == "system" and real_chain[1][0] == "user"
    tool_kinds = {kind for role, kind in real_chain if role == "tool"}
    assert tool_kinds == {kind for role, kind in chain(ours_root) if role == "tool"}
    assert item["answer"]["total_steps"] == len(real_chain)
    assert ours["total_steps"] == len(chain(ours_root))
    # the real final_answer is Finish's raw JSON arguments, as ours
    assert '"return_type"' in item["answer"]["final_answer"]
    assert set(item["available_tools"][0]) == set(query().functions[0])


def test_run_group_batches_writes_and_resumes(env, tmp_path):
    queries = [query(i) for i in range(5)]
    path = tmp_path / "G1_instruction.jsonl"

    def script(conversation):      # answer on the second turn, one query (id 3) gives up
        if "3" in conversation[1]["content"]:
            return GIVE_UP
        return ANSWER if len(conversation) > 2 else step(CW, {"city": "Paris"})

    for q in queries:
        q.text = f"query {q.query_id}"
    backend = Scripted(script)
    counters = inference.run_group(queries[:3], backend, env, path, Inference(batch_size=2))
    assert counters["ran"] == 3 and backend.batches[0] == 2
    # simulated crash: a torn last line after the three complete ones
    with open(path, "a") as fh:
        fh.write('{"query_id": 3, "group": "G1_instr')
    lines = trajectories.read(path, partial=True)
    assert [l["query_id"] for l in lines] == [0, 1, 2]
    counters = inference.run_group(queries, backend, env, path, Inference(batch_size=8))
    assert counters == dict(counters, skipped=3, ran=2)
    # The torn tail was cut before the first append: query 3's line is whole and only once.
    assert path.read_text().count('{"query_id": 3, "group": "G1_instr') == 1
    assert len(path.read_text().splitlines()) == 5
    lines = trajectories.read(path, partial=True)
    assert sorted(l["query_id"] for l in lines) == [0, 1, 2, 3, 4]
    by_id = {l["query_id"]: l for l in lines}
    assert by_id[3]["finish_type"] == "give_up" and by_id[4]["final_answer"] == "21 degrees"
    line = by_id[4]
    assert set(line) >= {"query_id", "group", "query", "method", "available_tools", "finish_type", "final_answer",
                         "total_steps", "parse_errors", "tokens_generated", "steps", "tree", "answer"}
    assert line["available_tools"][-1]["name"] == "Finish" and line["answer"]["method"] == "CoT@1"
    summary = inference.summarize(lines)
    assert (summary["queries"], summary["finished_with_answer"], summary["gave_up"]) == (5, 4, 1)


# ---------------------------------------------------------------------------------------------
# Real backends: a tiny random OPT, and an OpenAI-compatible server on loopback.
# ---------------------------------------------------------------------------------------------

def test_run_groups_keeps_the_batch_full_across_groups_and_writes_each_to_its_file(env, tmp_path):
    a = [query(i, "G1_instruction") for i in range(3)]
    b = [query(i, "G1_tool") for i in range(3)]
    for q in a + b:
        q.text = f"{q.group} query {q.query_id}"

    def script(conversation):       # query 0 of each group takes a call first; the others answer at once
        if " query 0" in conversation[1]["content"] and len(conversation) == 2:
            return step(CW, {"city": "Paris"})
        return ANSWER

    backend = Scripted(script)
    paths = [tmp_path / "G1_instruction.jsonl", tmp_path / "G1_tool.jsonl"]
    counters = inference.run_groups([(a, paths[0]), (b, paths[1])], backend, env, Inference(batch_size=4))
    # One queue: the first batch takes G1_tool's first query beside G1_instruction's three, and the
    # two slots the answered queries free are filled from G1_tool at once: two calls of 4, where one
    # group at a time would make four calls (3, 1, 3, 1).
    assert backend.batches == [4, 4]
    assert [c["ran"] for c in counters] == [3, 3] and all(c["generate_calls"] == 2 for c in counters)
    for path, group in zip(paths, ("G1_instruction", "G1_tool")):
        lines = trajectories.read(path, partial=True)
        assert sorted(l["query_id"] for l in lines) == [0, 1, 2] and {l["group"] for l in lines} == {group}
        assert {l["query_id"]: l["total_steps"] for l in lines} == {0: 2, 1: 1, 2: 1}
    again = inference.run_groups([(a, paths[0]), (b, paths[1])], backend, env, Inference(batch_size=4))
    assert [c["skipped"] for c in again] == [3, 3] and backend.batches == [4, 4]


@pytest.fixture(scope="module")
def tiny_hf():
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from lib.common import config
    from lib.models import model as model_lib

    cfg = config.load("smoke")
    texts = [formats.system_prompt(formats.functions_for_query(QUERY)), ANSWER, GIVE_UP, step(CW, {"city": "Paris"})] * 20
    tok = model_lib.train_tokenizer(texts, 400)
    tok.chat_template = cfg.model.chat_template
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=len(tok), hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                     num_attention_heads=2, word_embed_proj_dim=64, max_position_embeddings=512,
                                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                     eos_token_id=tok.eos_token_id))
    return cfg, model, tok


def test_hf_backend_batches_truncates_and_is_seeded(tiny_hf):
    cfg, model, tok = tiny_hf
    backend = backends.HFBackend(model, tok, max_new_tokens=16, temperature=0.1, seed=1)
    short = [{"role": "user", "content": "hi"}]
    long = query().start()
    outs = backend.generate([short, long])
    assert len(outs) == 2 and all(1 <= o.tokens <= 16 for o in outs)
    assert outs[0].truncated is False and outs[1].truncated is True     # 512 positions - 16
    ids, truncated = backend.encode(long)
    assert truncated and len(ids) == 512 - 16
    rendered = tok.apply_chat_template(long, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("Begin!\n\nAssistant: ")
    # left padding gives the same output for the short prompt alone as in the batch (greedy)
    greedy = backends.HFBackend(model, tok, max_new_tokens=8, temperature=0, seed=1)
    alone = greedy.generate([short])[0].text
    assert greedy.generate([short, long])[0].text == alone
    # sampling is reproducible from the seed
    a = backends.HFBackend(model, tok, 16, 0.9, seed=5).generate([short, short])
    b = backends.HFBackend(model, tok, 16, 0.9, seed=5).generate([short, short])
    assert [o.text for o in a] == [o.text for o in b]


def test_hf_backend_renders_what_it_encodes(tiny_hf, env):
    cfg, model, tok = tiny_hf
    backend = backends.HFBackend(model, tok, max_new_tokens=16, temperature=0, seed=1)
    messages = query().start()
    text = backend.render(messages)
    assert text == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids, truncated = backend.encode(messages)
    assert truncated and backend.prompt_tokens(messages) > backend.max_prompt == len(ids) == 512 - 16
    assert backend.prompt_tokens([{"role": "user", "content": "hi"}]) == \
        len(tok(backend.render([{"role": "user", "content": "hi"}]), add_special_tokens=False)["input_ids"])
    # With the profiles' chat template the next prompt extends the last one, whose generation
    # prompt opens the assistant turn: what follows it is exactly what the step added.
    turn = inference.take_step(query(), step(CW, {"city": "Paris"}), env)
    after = backend.render(messages + inference.step_turns(turn))
    assert after.startswith(text)
    assert after[len(text):] == (turn["assistant"] + tok.eos_token + "\nFunction: " + turn["observation"]
                                 + "\nAssistant: ")


def test_openai_backend_renders_the_messages_it_sends():
    backend = backends.OpenAIBackend("http://127.0.0.1:9/v1", "m", "", 8, 0.1, client=object())
    conversation = query().start() + [{"role": "function", "content": "{}"}]
    text = backend.render(conversation)
    assert [json.loads(line) for line in text.splitlines()] == backends.OpenAIBackend.chat_messages(conversation)
    assert text.startswith(backend.render(conversation[:2]))
    assert backend.prompt_tokens(conversation) is None and backend.max_prompt is None



@pytest.mark.parametrize("function_role", ["user", "function"])
def test_openai_backend_sends_observations_in_the_role_the_profile_names(env, tmp_path, function_role):
    """inference.openai_function_role: `user` for chat endpoints without a function role; `function`
    for a server that applies this project's template to a model trained here (transformers serve
    on outputs/<profile>/model answered exactly as HFBackend only with the turn in its own role)."""
    replies = iter([step(CW, {"city": "Paris"}), ANSWER])
    with LoopbackServer(lambda path, headers, body: (200, chat_completion(body["model"], next(replies), 5))) as server:
        cfg = config.load("smoke", {"inference.backend": "openai", "inference.openai_base_url": server.url + "/v1",
                                    "inference.openai_model": "served", "inference.openai_function_role": function_role})
        backend = backends.make_backend(cfg)
        inference.run_group([query(1)], backend, env, tmp_path / "g.jsonl")
    sent = server.requests[-1][2]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", function_role]
    observation = trajectories.read(tmp_path / "g.jsonl", partial=True)[0]["steps"][0]["observation"]
    assert sent[-1]["content"] == ("Observation: " if function_role == "user" else "") + observation
    with pytest.raises(config.ConfigError, match="openai_function_role"):
        config.load("smoke", {"inference.openai_function_role": "tool"})

def test_cut_at_next_turn():
    assert backends.cut_at_next_turn('x\nAction Input: {}\nFunction: {"a": 1}') == "x\nAction Input: {}"


def test_openai_backend_over_real_http(env, tmp_path):
    with LoopbackServer(lambda path, headers, body: (200, chat_completion(body["model"], ANSWER, 11))) as server:
        backend = backends.OpenAIBackend(server.url + "/v1", "baseline-model", "sk-test",
                                      max_new_tokens=64, temperature=0.1, seed=3)
        counters = inference.run_group([query(1)], backend, env, tmp_path / "g.jsonl")
    path, headers, body = server.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "baseline-model" and body["temperature"] == 0.1 and body["max_tokens"] == 64
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    line = trajectories.read(tmp_path / "g.jsonl", partial=True)[0]
    assert line["finish_type"] == "give_answer" and line["tokens_generated"] == 11
    assert counters["tokens"] == 11
    assert "sk-test" not in (tmp_path / "g.jsonl").read_text()
    assert backends.OpenAIBackend.chat_messages([{"role": "function", "content": "{}"}]) == \
        [{"role": "user", "content": "Observation: {}"}]


def test_stage_run_end_to_end_on_fixtures(tiny_hf, tmp_path):
    from lib.common import config

    cfg, model, tok = tiny_hf
    test_dir = tmp_path / "test_instruction"
    test_dir.mkdir()
    for group in config.GROUPS[:2]:
        (test_dir / f"{group}.json").write_text(json.dumps([dict(QUERY, query_id=i) for i in range(3)]))
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.test_dir": str(test_dir),
                                "data.toolenv_dir": str(tmp_path / "toolenv"),
                                "inference.groups": config.GROUPS[:2], "inference.max_iterations": 2,
                                "inference.max_queries_per_group": 2})
    env = offline_env.OfflineToolEnv.__new__(offline_env.OfflineToolEnv)
    env.recordings, env.docs = {}, {}
    backend = backends.HFBackend(model, tok, max_new_tokens=8, temperature=0.1, seed=cfg.seed)
    summary = inference.run(cfg, backend=backend, env=env, log=None)
    g = summary["groups"]["G1_instruction"]
    assert g["queries"] == 2 and g["hit_limit"] + g["gave_up"] + g["finished_with_answer"] == 2
    assert g["prompts_truncated"] > 0 and g["tokens_generated"] > 0 and g["tokens_per_s"] > 0
    assert summary["total"]["queries"] == 4
    saved = json.loads((tmp_path / "out" / "inference_summary.json").read_text())
    assert saved["groups"] == summary["groups"]
    again = inference.run(cfg, backend=backend, env=env, log=None)
    assert again["total"]["ran_now"] == 0 and again["total"]["queries"] == 4
    # Fewer queries asked: the summary counts this selection, not every line left in the files.
    one = inference.run(config.derive(cfg, {"inference.max_queries_per_group": 1}),
                    backend=backend, env=env, log=None)
    assert one["total"]["queries"] == 2 and one["groups"]["G1_instruction"]["queries"] == 1

    # The sequences: a bad test file, then another run holding the folder, then a valid run
    # with other settings. The finished trajectories stay, and are set aside, never deleted.
    out = tmp_path / "out"
    finished = {p.name: p.read_text() for p in (out / "trajectories").glob("*.jsonl")}
    good = (test_dir / "G1_instruction.json").read_text()
    (test_dir / "G1_instruction.json").write_text(json.dumps([dict(QUERY, query_id=0)] * 2))
    with pytest.raises(formats.QueryError, match="share query_id"):
        inference.run(config.derive(cfg, {"inference.max_iterations": 3}), backend=backend, env=env, log=None)
    (test_dir / "G1_instruction.json").write_text(good)
    from lib.common import resume
    with resume.exclusive(out / "trajectories", "stage 03 inference"):
        with pytest.raises(resume.FolderBusy, match=r"pid \d+, stage 03 inference"):
            inference.run(cfg, backend=backend, env=env, log=None)
    assert {p.name: p.read_text() for p in (out / "trajectories").glob("*.jsonl")} == finished
    said = []
    inference.run(config.derive(cfg, {"inference.max_iterations": 1}), backend=backend, env=env,
              log=lambda *a, **k: said.append(a[0]))
    aside = list(out.glob("trajectories.run-*"))
    assert len(aside) == 1 and {p.name: p.read_text() for p in aside[0].glob("*.jsonl")} == finished
    assert any(str(aside[0]) in line for line in said)


def test_load_test_queries_gives_the_stage_queries_and_trajectory_finds_a_line(tmp_path):
    from lib.common import config

    test_dir, tools_dir = tmp_path / "test_instruction", tmp_path / "toolenv" / "tools" / "Weather"
    test_dir.mkdir()
    tools_dir.mkdir(parents=True)
    (tools_dir / "weather_api.json").write_text(json.dumps({"tool_name": "Weather API!", "api_list": [],
                                                             "tool_description": "Weather for all"}))
    for group in config.GROUPS[:2]:
        (test_dir / f"{group}.json").write_text(json.dumps([dict(QUERY, query_id=i) for i in range(3)]))
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.test_dir": str(test_dir),
                                "data.toolenv_dir": str(tmp_path / "toolenv"),
                                "inference.groups": config.GROUPS[:2], "inference.max_queries_per_group": 2})
    queries = inference.load_test_queries(cfg)
    assert list(queries) == config.GROUPS[:2] and [q.query_id for q in queries["G1_instruction"]] == [0, 1]
    first = queries["G1_instruction"][0]
    assert first.group == "G1_instruction" and "1.weather_api: Weather for all\n" in first.system
    assert first.start() == query(0).start()
    assert inference.trajectory(cfg, first) is None
    counters = inference.run_group([first], Scripted([ANSWER]), offline_env.OfflineToolEnv.__new__(offline_env.OfflineToolEnv),
                                   tmp_path / "out" / "trajectories" / "G1_instruction.jsonl")
    assert counters["ran"] == 1
    assert inference.trajectory(cfg, first)["finish_type"] == "give_answer"
    assert inference.trajectory(cfg, queries["G1_instruction"][1]) is None


def test_inference_prompt_matches_the_sample_training_prompts(tmp_path):
    """The system prompt built at inference (tool descriptions from the tool documents, as ToolBench)
    must be the text the training records hold for the same functions."""
    from lib.toolbench import sample
    sample.generate(tmp_path, seed=5, train_queries=30, queries_per_group=2)
    docs = {k: d.get("tool_description", "") for k, d in apis.load_tool_docs(tmp_path / "toolenv" / "tools").items()}
    records = json.loads(next((tmp_path / "train").glob("*.json")).read_text())
    for record in records:
        text = record["conversations"][0]["value"]
        fns = ast.literal_eval(text.split("Specifically, you have access to the following APIs: ", 1)[1])
        tools_in_order = []
        for fn in fns[:-1]:
            tool = fn["description"].split('"', 2)[1]
            if tool not in tools_in_order:
                tools_in_order.append(tool)
        assert formats.system_prompt(fns, [(t, docs.get(t, "")) for t in tools_in_order]) == text


def test_run_group_dfsdt_writes_the_tree(env, tmp_path):
    outputs = iter([step("nope", {}), step(CW, {"city": "Paris"}), ANSWER])
    backend = Scripted(lambda conversation: next(outputs))
    inference.run_group([query(1)], backend, env, tmp_path / "g.jsonl",
                        Inference(method="dfsdt", dfsdt_width=2))
    line = trajectories.read(tmp_path / "g.jsonl", partial=True)[0]
    assert line["method"] == "dfsdt" and line["finish_type"] == "give_answer"
    assert line["parse_errors"] == 1 and line["total_steps"] == 2      # the dead end counts, off the chain
    assert len(line["tree"]["children"]) == 2 and line["answer"]["method"] == "DFS_woFilter_w2"
    with pytest.raises(ValueError, match="react, dfsdt"):
        inference.run_group([query(2)], backend, env, tmp_path / "h.jsonl", Inference(method="bfs"))


def test_hf_backend_feeds_the_model_on_its_own_device(monkeypatch):
    """Stage 03 on a GPU: the prompts must go where the model is, and the model to the GPU."""
    import torch
    from types import SimpleNamespace

    from lib.models import model as model_lib

    tokenizer = model_lib.train_tokenizer(["Thought: a\nAction: b\nAction Input: {}"] * 20, 300)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"

    class ElsewhereModel:           # stands for a model on the GPU: its device is not the CPU
        device = torch.device("meta")
        config = SimpleNamespace(max_position_embeddings=64)

        def eval(self):
            return self

        def generate(self, input_ids, attention_mask, return_dict_in_generate=False, **kwargs):
            assert input_ids.device == self.device and attention_mask.device == self.device
            new = torch.full((input_ids.shape[0], 2), tokenizer.eos_token_id)
            sequences = torch.cat([torch.zeros(input_ids.shape, dtype=torch.long), new], dim=1)
            return SimpleNamespace(sequences=sequences, cache=None) if return_dict_in_generate else sequences

    backend = backends.HFBackend(ElsewhereModel(), tokenizer, max_new_tokens=4, temperature=0, seed=0)
    assert backend.generate([[{"role": "user", "content": "hi"}]])[0].tokens == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backends.inference_device("float16") == ("cuda", "float16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backends.inference_device("float16") == ("cpu", "float32")



def test_generation_on_cuda_leaves_out_cudnn_attention():
    """cuDNN's attention builds a plan per shape and a decode step is a new shape each time: on an
    H200 it made half-precision decoding 5x slower than float32 (bench/README.md). HFBackend's
    generate runs inside backends.attention_kernels; the switch holds only inside it."""
    import torch

    enabled = torch.backends.cuda.cudnn_sdp_enabled
    before = enabled()
    with backends.attention_kernels(torch.device("cuda")):
        assert not enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert enabled() == before
    for device, cudnn in ((torch.device("cpu"), False), (torch.device("cuda"), True)):
        with backends.attention_kernels(device, cudnn):
            assert enabled() == before

# ---------------------------------------------------------------------------------------------
# The tool environment's health: checked first, errors counted, a failing run stopped.
# ---------------------------------------------------------------------------------------------

class Flaky:
    """A StableToolBench-like /virtual endpoint: the city "Rome" is an API error (HTTP 200 with an
    error field), "down" gets HTTP 500 while `down` is set (a transport error)."""

    def __init__(self):
        self.down = True

    def __call__(self, path, headers, body):
        city = json.loads(body["tool_input"] or "{}").get("city")
        if city == "down" and self.down:
            return 500, {"detail": "Internal Server Error"}
        if city == "Rome":
            return 200, {"error": "no such city", "response": ""}
        return 200, {"error": "", "response": {"temp": 21}}


def by_query(plans):
    """A backend script: the query's text names its plan, a list of turns taken in order."""
    def script(conversation):
        plan = plans[conversation[1]["content"].strip().split("\n")[0]]
        return plan[(len(conversation) - 2) // 2]
    return script


def test_stage_run_counts_tool_errors_and_redoes_queries_that_failed_in_transport(tmp_path):
    from lib.common import config

    plans = {"q0": [step(CW, {"city": "Paris"}), ANSWER],                        # ok
             "q1": [step(CW, {"city": "Rome"}), ANSWER],                         # an API error
             "q2": [step(CW, {"city": "down"}), GIVE_UP],                        # every call failed
             "q3": [step(CW, {"city": "Paris"}), step(CW, {"city": "down"}), ANSWER]}   # one of two
    test_dir = tmp_path / "test_instruction"
    test_dir.mkdir()
    records = [dict(QUERY, query_id=i, query=f"q{i}") for i in range(4)]
    (test_dir / "G1_instruction.json").write_text(json.dumps(records))
    flaky, logged = Flaky(), []
    with LoopbackServer(flaky) as server:
        cfg = config.load("smoke", {
            "output_dir": str(tmp_path / "out"), "data.test_dir": str(test_dir),
            "data.toolenv_dir": str(tmp_path / "toolenv"), "inference.groups": ["G1_instruction"],
            "inference.tool_env": "virtual", "inference.virtual_server_url": server.url + "/virtual"})
        summary = inference.run(cfg, backend=Scripted(by_query(plans)), log=lambda *a, **k: logged.append(a[0]))
        # the check came first: a call of the first query's first API
        assert server.requests[0][2]["api_name"] == "current_weather" and "answered" in logged[0]
        path = tmp_path / "out" / "trajectories" / "G1_instruction.jsonl"
        assert sorted(l["query_id"] for l in trajectories.read(path, partial=True)) == [0, 1, 3]
        g = summary["groups"]["G1_instruction"]
        tool_figures = (g["tool_calls"], g["tool_api_errors"], g["tool_transport_errors"], g["transport_failed"])
        assert tool_figures == (5, 1, 2, 1)
        assert summary["total"]["transport_failed"] == 1 and summary["total"]["tool_transport_errors"] == 2
        saved = json.loads((tmp_path / "out" / "inference_summary.json").read_text())
        assert saved["groups"]["G1_instruction"]["tool_calls"] == 5
        assert any("G1_instruction 2: not kept, all 1 tool calls failed in transport" in m for m in logged)
        q3 = next(l for l in trajectories.read(path, partial=True) if l["query_id"] == 3)
        assert [s["tool_outcome"] for s in q3["steps"]] == ["ok", "transport_error", None]
        assert (q3["tool_calls"], q3["tool_transport_errors"]) == (2, 1)
        # the server is back: a rerun (also with a longer time-out: the same run) redoes query 2 only
        flaky.down = False
        cfg = config.derive(cfg, {"inference.tool_timeout_s": 120})
        again = inference.run(cfg, backend=Scripted(by_query(plans)), log=None)
    g = again["groups"]["G1_instruction"]
    assert (g["ran_now"], g["skipped_done"], g["queries"], g["transport_failed"]) == (1, 3, 4, 0)
    assert (g["tool_calls"], g["tool_transport_errors"]) == (5, 1)


def test_stage_run_stops_before_anything_when_the_environment_does_not_answer(tmp_path):
    from lib.common import config

    test_dir = tmp_path / "test_instruction"      # its own queries: a fresh clone has no data/sample yet
    test_dir.mkdir()
    (test_dir / "G1_instruction.json").write_text(json.dumps([QUERY]))
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "inference.tool_env": "virtual",
                                "inference.virtual_server_url": "http://127.0.0.1:9/virtual",
                                "data.test_dir": str(test_dir), "inference.groups": ["G1_instruction"]})
    with pytest.raises(environments.EnvUnavailable, match=r"http://127.0.0.1:9/virtual.*inference\.virtual_server_url"):
        inference.run(cfg, backend=Scripted([]), log=None)
    assert not (tmp_path / "out" / "trajectories").exists()


def test_run_group_stops_when_transport_errors_pass_the_share(tmp_path):
    plans = {f"q{i}": [step(CW, {"city": "Paris"}), ANSWER] for i in range(4)}
    plans.update({f"q{i}": [step(CW, {"city": "down"})] * 3 for i in range(4, 12)})
    queries = []
    for i in range(12):
        queries.append(query(i))
        queries[-1].text = f"q{i}"
    path = tmp_path / "g.jsonl"
    flaky = Flaky()
    with LoopbackServer(flaky) as server:
        env = virtual_env.VirtualToolEnv(server.url + "/virtual", retries=0)
        with pytest.raises(environments.EnvUnavailable) as err:
            inference.run_group(queries, Scripted(by_query(plans)), env, path,
                                Inference(max_iterations=3, batch_size=4, max_transport_error_share=0.25))
        # 4 ok calls, then 4 rounds of 4 failing ones: 16 of 20 > 25 %
        message = str(err.value)
        assert "16 of 20 tool calls failed in transport" in message and server.url + "/virtual" in message
        assert "inference.max_transport_error_share 0.25" in message and "HTTP 500" in message
        assert "(4 in this run) are kept" in message and "a rerun redoes the rest" in message
        assert [l["query_id"] for l in trajectories.read(path, partial=True)] == [0, 1, 2, 3]
        # fewer than MIN_TOOL_CALLS calls never stop, nor does a share of None
        counters = inference.run_group(queries[4:9], Scripted(by_query(plans)), env, tmp_path / "h.jsonl",
                                       Inference(max_iterations=3, batch_size=8, max_transport_error_share=0.25))
        assert counters["transport_failed"] == 5 and counters["tool_transport_errors"] == 15
        assert trajectories.read(tmp_path / "h.jsonl", partial=True) == []
        counters = inference.run_group(queries[4:], Scripted(by_query(plans)), env, tmp_path / "i.jsonl",
                                       Inference(max_iterations=3, batch_size=8, max_transport_error_share=None))
        assert counters["tool_transport_errors"] == 24 and counters["transport_failed"] == 8
        flaky.down = False
        counters = inference.run_group(queries, Scripted(by_query(plans)), env, path,
                                       Inference(max_iterations=3, batch_size=4, max_transport_error_share=0.25))
    assert counters["skipped"] == 4 and counters["ran"] == 8 and counters["tool_transport_errors"] == 0
