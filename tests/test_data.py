import json
from collections import Counter
from pathlib import Path

import pytest

from lib.common import config
from lib.toolbench import records, sample, sample_world
from lib.data import data

from conftest import TOOLBENCH_SAMPLE as SAMPLES
needs_samples = pytest.mark.skipif(not SAMPLES.exists(), reason="../shared/toolbench-sample/ not present")

SYSTEM = "You are a helper. At each step, call a function."


def record(rid="Step 4: weather in Oslo", turns=None):
    turns = turns or [
        ("system", SYSTEM),
        ("user", "\nweather in Oslo\nBegin!\n"),
        ("assistant", '\nThought: look it up\nAction: current_weather_for_weathernow\nAction Input: {"city": "Oslo"}'),
        ("function", '{"error": "", "response": "{\'temp_c\': 3}"}'),
        ("assistant", '\nThought: done\nAction: Finish\nAction Input: {"return_type": "give_answer", "final_answer": "3 C"}'),
    ]
    return {"id": rid, "conversations": [{"from": f, "value": v} for f, v in turns]}


def write_list(path, rows):
    path.write_text(json.dumps(rows))
    return path


def collect(path, on_bad="raise", answer_methods=None, report=None):
    dropped = Counter()
    return list(records.iter_valid_records(path, on_bad, dropped, answer_methods, report)), dropped


def answer(query="Oslo?", city="Oslo", valid=True, thought="I will look."):
    """A raw answer file's content (ToolBench's answer_generation) whose one train_messages entry
    ends in a call: one training record, id "Step 3: <query>"."""
    functions = [{"name": "current_weather_for_weathernow", "parameters": {}}]
    call = {"name": "current_weather_for_weathernow", "arguments": json.dumps({"city": city})}
    messages = [{"role": "system", "content": "Intro, with a function call to actually excute your step.\nTools:\n"},
                {"role": "user", "content": f"\n{query}\nBegin!\n"},
                {"role": "assistant", "content": thought},
                {"role": "assistant", "content": None, "function_call": call}]
    return {"answer_generation": {"valid_data": valid, "query": query, "function": functions,
                                  "train_messages": [messages], "final_answer": "", "finish_type": "give_answer"}}


def write_answers(folder, files: dict):
    """{file name: answer content} into `folder` (made), as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    return folder


# ---------------------------------------------------------------- transformation

def test_record_mode_trains_the_last_assistant_turn():
    [example] = data.examples_from_record(record(), "record")
    assert example["id"] == "Step 4: weather in Oslo"
    assert [m["role"] for m in example["prompt"]] == ["system", "user", "assistant", "function"]
    assert example["prompt"][1]["content"] == "\nweather in Oslo\nBegin!\n"
    assert example["completion"] == [{"role": "assistant", "content":
                                      '\nThought: done\nAction: Finish\nAction Input: '
                                      '{"return_type": "give_answer", "final_answer": "3 C"}'}]


def test_assistant_turn_mode_makes_one_example_per_assistant_turn():
    first, second = data.examples_from_record(record(), "assistant_turn")
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert first["completion"][0]["content"].startswith("\nThought: look it up\nAction: current_weather")
    assert len(second["prompt"]) == 4
    with pytest.raises(ValueError, match="example_per"):
        data.examples_from_record(record(), "dialogue")


def test_rendered_example_marks_exactly_the_completion_as_assistant_tokens(tmp_path):
    # The chat template's generation tags give the positions the loss is computed on.
    from lib.models import model
    cfg = config.load("smoke")
    tok = model.train_tokenizer(["Thought: Action: Action Input: System: User: Function: Assistant: " * 20,
                                 json.dumps(record())], vocab_size=300)
    tok.chat_template = cfg.model.chat_template
    [example] = data.examples_from_record(record(), "record")
    messages = example["prompt"] + example["completion"]
    text = tok.apply_chat_template(messages, tokenize=False)
    prompt_text = tok.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt_text)
    assert text == (f"System: {SYSTEM}\nUser: \nweather in Oslo\nBegin!\n\n"
                    f"Assistant: {record()['conversations'][2]['value']}</s>\n"
                    f"Function: {record()['conversations'][3]['value']}\n"
                    f"Assistant: {example['completion'][0]['content']}</s>\n")
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    marked = tok.decode([i for i, m in zip(ids, mask) if m])
    # Both assistant turns are marked by the template; TRL's completion mask then keeps only the last.
    assert marked == record()["conversations"][2]["value"] + "</s>" + example["completion"][0]["content"] + "</s>"


def test_percentiles_are_nearest_rank():
    assert data.percentiles(range(1, 101)) == {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "max": 100}
    assert data.percentiles([7]) == {"p50": 7, "p90": 7, "p95": 7, "p99": 7, "max": 7}


# ---------------------------------------------------------------- reading

@needs_samples
def test_real_sample_files_parse():
    rows, dropped = collect(SAMPLES / "derived" / "toolllama_format_from_data_example.json")
    assert len(rows) == 33 and not dropped
    examples = [e for r in rows for e in data.examples_from_record(r, "assistant_turn")]
    assert all(e["completion"][0]["content"].startswith("\nThought:") for e in examples)
    for path in (SAMPLES / "stabletoolbench" / "solvable_queries" / "test_instruction").glob("*.json"):
        queries = json.loads(path.read_text())
        assert queries and all({"query", "query_id", "api_list", "relevant APIs"} <= set(q) for q in queries)


# ---------------------------------------------------------------- the sample corpus and the stage

def test_sample_generator_is_deterministic_and_splits_like_toolbench(tmp_path):
    a = sample.generate(tmp_path / "a", seed=7, train_queries=30, queries_per_group=4)
    sample.generate(tmp_path / "b", seed=7, train_queries=30, queries_per_group=4)
    for f in (tmp_path / "a").rglob("*.json*"):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f
    assert a["test_queries"] == {"G1_instruction": 4, "G1_category": 4, "G1_tool": 4, "G2_instruction": 4,
                                 "G2_category": 4, "G3_instruction": 2}
    train = json.loads((tmp_path / "a" / "train" / "toolllama_G123_dfs_train.json").read_text())
    train_tools = {t for r in train for t in r["conversations"][0]["value"].split("'name': '")[1:]}
    train_functions = {t.split("'")[0] for t in train_tools}
    for group in ("G1_tool", "G1_category", "G2_category"):
        for q in json.loads((tmp_path / "a" / "test_instruction" / f"{group}.json").read_text()):
            assert q["relevant APIs"] and q["api_list"]
            tools = {api["tool_name"] for api in q["api_list"]}
            assert tools & set(sample.UNSEEN_TOOLS + ()) or {a["category_name"] for a in q["api_list"]} & set(
                sample.UNSEEN_CATEGORIES), (group, tools)
            assert not any(f.endswith(sample.formats.standardize_name(t)) for f in train_functions for t in tools)
    responses = [json.loads(l) for l in (tmp_path / "a" / "toolenv" / "responses.jsonl").read_text().splitlines()]
    assert all({"category", "tool_name", "api_name", "arguments", "response"} <= set(r) for r in responses)
    outcomes = Counter(r["conversations"][-1]["value"].split('"return_type": "')[1].split('"')[0]
                       for r in train if "Action: Finish" in r["conversations"][-1]["value"])
    assert outcomes["give_answer"] > outcomes["give_up_and_restart"] > 0


def test_prepare_writes_dataset_stats_and_histogram(tmp_path):
    from datasets import load_from_disk
    sample.generate(tmp_path / "sample", seed=3, train_queries=12, queries_per_group=2)
    train = tmp_path / "sample" / "train" / "toolllama_G123_dfs_train.json"
    rows = json.loads(train.read_text())
    rows.insert(5, {"id": "Step 2: broken", "conversations": []})
    train.write_text(json.dumps(rows))
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.generate_sample": False,
                                "data.train_path": str(train), "data.on_bad_record": "skip",
                                "data.example_per": "assistant_turn", "model.tokenizer_train_texts": 50})
    stats = data.prepare(cfg)
    assert stats["records_read"] == len(rows) and stats["records_used"] == len(rows) - 1
    assert stats["dropped"] == {"missing_conversations": 1}
    assert stats["examples_written"] == stats["examples_per_choice"]["assistant_turn"] > len(rows)
    assert stats["examples_per_choice"]["record"] == len(rows) - 1
    assert stats["examples_per_choice"]["conversation"] == 12
    sft = load_from_disk(str(tmp_path / "out" / "sft"))
    assert len(sft) == stats["examples_written"]
    assert set(sft.column_names) == {"id", "prompt", "completion", "n_tokens", "n_completion_tokens"}
    assert all(n > c > 0 for n, c in zip(sft["n_tokens"], sft["n_completion_tokens"]))
    assert stats["token_length_percentiles"]["max"] == max(sft["n_tokens"])
    written = json.loads((tmp_path / "out" / "data_stats.json").read_text())
    assert written["examples_written"] == stats["examples_written"]
    assert Path(stats["histogram"]).stat().st_size > 5000
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").exists()


def test_prepare_errors_name_the_file_record_and_field_not_the_datasets_wrapper(tmp_path):
    sample.generate(tmp_path / "sample", seed=3, train_queries=6, queries_per_group=2)
    train = tmp_path / "sample" / "train" / "toolllama_G123_dfs_train.json"
    rows = json.loads(train.read_text())
    rows[3]["conversations"][2]["from"] = "robot"
    train.write_text(json.dumps(rows))
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.generate_sample": False,
                                "data.train_path": str(train), "model.tokenizer_train_texts": 50})
    with pytest.raises(records.DataError, match=rf"{train}: record 3 .*field 'conversations\[2\].from'"):
        data.prepare(cfg)
    train.write_text("[]")
    with pytest.raises(records.DataError, match=rf"{train}: .*no usable training record"):
        data.prepare(cfg)


def test_conversation_mode_keeps_only_records_no_later_record_extends():
    short = record("Step 2: weather in Oslo")
    short["conversations"] = short["conversations"][:3]
    other = record("Step 4: weather in Lima")
    flagged = list(data.with_extension_flags([short, record(), other]))
    assert [r["extended"] for r in flagged] == [True, False, False]
    examples = [e for r in flagged for e in data.examples_from_record(r, "conversation")]
    assert [e["id"] for e in examples] == ["Step 4: weather in Oslo", "Step 4: weather in Lima"]
    assert len(examples[0]["prompt"]) == 4
    # A record is extended only by the same query's continuation, not by another query or a branch.
    branch = record("Step 4: weather in Oslo")
    branch["conversations"][2] = {"from": "assistant", "value": "\nThought: other\nAction: x\nAction Input: {}"}
    assert not data.extends(short, other) and not data.extends(short, branch) and data.extends(short, record())


def test_sample_options_come_from_the_profile(tmp_path):
    from lib.common import config
    from lib.toolbench import sample
    from lib.data import data
    smoke = config.load("smoke")
    assert data.sample_options(smoke.data)["train_queries"] == 240
    assert data.sample_options(smoke.data)["queries_per_group"] == 8
    cfg = config.load("smoke", {"data.sample_dir": str(tmp_path / "s"), "data.sample_train_queries": 6,
                                "data.sample_queries_per_group": 1})
    data.ensure_sample(cfg)
    manifest = json.loads((tmp_path / "s" / "MANIFEST.json").read_text())
    assert manifest["test_queries"] == dict.fromkeys(config.GROUPS, 1)
    assert sample.is_current(tmp_path / "s", cfg.seed, **data.sample_options(cfg.data))
    assert not sample.is_current(tmp_path / "s", cfg.seed)


def test_invented_values_make_training_values_unguessable_and_leave_the_test_queries_alone(tmp_path):
    plain = sample.generate(tmp_path / "plain", seed=11, train_queries=40, queries_per_group=3)
    sample.generate(tmp_path / "inv", seed=11, train_queries=40, queries_per_group=3, invented_values=1.0)
    w = sample_world
    listed = {str(v) for pool in (w.CITIES, w.NEW_CITIES, w.CURRENCIES, w.SYMBOLS, w.COINS, w.LEAGUES,
                                  w.PLAYERS, w.MOVIES, w.INGREDIENTS, w.FOODS, w.WORDS, w.FLIGHTS,
                                  ("science", "history", "geography", "art")) for v in pool}
    rows = json.loads((tmp_path / "inv" / "train" / "toolllama_G123_dfs_train.json").read_text())
    calls = [json.loads(t["value"].split("Action Input: ", 1)[1]) for r in rows for t in r["conversations"]
             if t["from"] == "assistant" and "Action: Finish" not in t["value"]]
    values = [v for args in calls for v in args.values() if isinstance(v, str)]
    assert values and not set(values) & listed
    for number in (v for args in calls for v in args.values() if isinstance(v, int)):
        assert number >= 2
    # The test split is drawn from the listed values either way.
    assert plain["test_queries"] == json.loads((tmp_path / "inv" / "MANIFEST.json").read_text())["test_queries"]
    for group in ("G1_instruction", "G1_tool"):
        for q in json.loads((tmp_path / "inv" / "test_instruction" / f"{group}.json").read_text()):
            assert any(v in q["query"] for v in listed), q["query"]


def test_retry_conversations_show_the_offline_environment_error_and_the_corrected_call(tmp_path):
    from lib.toolbench import formats, offline_env
    sample.generate(tmp_path, seed=4, train_queries=30, queries_per_group=1, retry_share=1.0)
    env = offline_env.OfflineToolEnv(tmp_path / "toolenv" / "responses.jsonl", tmp_path / "toolenv" / "tools")
    rows = json.loads((tmp_path / "train" / "toolllama_G123_dfs_train.json").read_text())
    whole = {}
    for r in rows:          # the last record of a query holds its whole conversation
        whole[r["id"].split(": ", 1)[1]] = r["conversations"]
    retried, left_out = 0, 0
    for conversation in whole.values():
        turns = conversation[2:]
        for k in range(len(turns) - 2):
            first, observed, second = turns[k], turns[k + 1], turns[k + 2]
            if first["from"] != "assistant" or observed["from"] != "function" or second["from"] != "assistant":
                continue
            if "failed: its arguments must be" not in second["value"]:
                continue
            _, action, wrong, _ = formats.parse_step(first["value"])
            _, again, right, _ = formats.parse_step(second["value"])
            assert action == again and wrong != right
            # The observation is what the offline environment itself answers to the miscopied call.
            api = next(a for a in sample._apis(sample_world.world()) if a.function == action)
            assert observed["value"] == env.call(api.category, api.tool, api.name, json.loads(wrong))
            assert json.loads(env.call(api.category, api.tool, api.name, json.loads(right)))["error"] == ""
            retried += 1
            left_out += set(json.loads(wrong)) < set(json.loads(right))
    assert retried >= 20, retried
    assert 0 < left_out < retried, (left_out, retried)      # miscopied values and left-out ones
    # Retries draw from their own stream: the same queries to train on and to test.
    sample.generate(tmp_path / "plain", seed=4, train_queries=30, queries_per_group=1)
    assert set(whole) == {r["id"].split(": ", 1)[1] for r in json.loads(
        (tmp_path / "plain" / "train" / "toolllama_G123_dfs_train.json").read_text())}
    tests = sorted((tmp_path / "plain" / "test_instruction").glob("*.json"))
    assert len(tests) == 6
    for path in tests:
        assert path.read_text() == (tmp_path / "test_instruction" / path.name).read_text()


def test_prepare_reads_the_answer_methods_asked_for_and_says_which_files(tmp_path):
    folder = write_answers(tmp_path / "answer" / "G1_answer", {
        f"{i}_{method}.json": answer(f"weather in city {i} please ({method})", f"C{i}")
        for i in range(8) for method in ("CoT@1", "ChatGPT_DFS_woFilter_w2")})
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.generate_sample": False,
                                "data.train_path": str(tmp_path / "answer"), "model.tokenizer_train_texts": 50})
    with pytest.raises(records.DataError) as err:
        data.prepare(cfg)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'answer'}: record query id '0' of G1_answer: field '(file name)'")
    assert "G1_answer/0_ChatGPT_DFS_woFilter_w2.json and G1_answer/0_CoT@1.json" in message
    assert "set data.answer_methods to the one method to read, e.g. [DFS_woFilter_w2]" in message
    assert err.value.reason == "duplicate_query"
    cfg = config.derive(cfg, {"data.answer_methods": ["DFS_woFilter_w2"]})
    stats = data.prepare(cfg)
    assert stats["records_used"] == 8
    files = json.loads((tmp_path / "out" / "data_stats.json").read_text())["input_files"]
    assert files == {"form": "answer folder", "folder": str(tmp_path / "answer"), "files_found": 16,
                     "files_kept": 8, "methods_found": {"ChatGPT_DFS_woFilter_w2": 8, "CoT@1": 8},
                     "methods_kept": {"ChatGPT_DFS_woFilter_w2": 8}, "answer_methods": ["DFS_woFilter_w2"],
                     "sample": [f"G1_answer/{i}_ChatGPT_DFS_woFilter_w2.json" for i in range(5)]}
    ids = [r["id"] for r in collect(folder, answer_methods=["DFS_woFilter_w2"])[0]]
    assert len(ids) == 8 and all(i.endswith("(ChatGPT_DFS_woFilter_w2)") for i in ids)
    assert "read: 8 of 16 answer files (ChatGPT_DFS_woFilter_w2 8), data.answer_methods ['DFS_woFilter_w2']" \
        in data.describe(stats)


def test_example_counts_are_the_examples_each_choice_makes():
    short = record("Step 2: weather in Oslo")
    short["conversations"] = short["conversations"][:3]
    flagged = list(data.with_extension_flags([short, record(), record("Step 4: weather in Lima")]))
    assert [data.example_counts(r) for r in flagged] == [
        {"record": 1, "assistant_turn": 1, "conversation": 0},
        {"record": 1, "assistant_turn": 2, "conversation": 1},
        {"record": 1, "assistant_turn": 2, "conversation": 1}]
    for r in flagged:
        assert data.example_counts(r) == {c: len(data.examples_from_record(r, c)) for c in data.EXAMPLE_PER}
    [example] = data.examples_from_record(record(), "record")
    assert data.outline_examples([example], width=10).splitlines() == [
        "[0] prompt: 4 messages (system, user, assistant, function)",
        "    completion: assistant '\\nThought: ...'"]
    table = data.describe_unrolling(flagged).splitlines()
    assert table[0].split()[-3:] == list(data.EXAMPLE_PER)
    assert table[1].split()[-7:] == ["Oslo", "3", "1", "True", "1", "1", "0"]
    assert table[-1].split() == ["examples", "3", "5", "2"]


def test_training_records_and_the_first_query_are_what_stage_01_reads(tmp_path):
    short = record("Step 2: weather in Oslo")
    short["conversations"] = short["conversations"][:3]
    lima = record("Step 4: weather in Lima")
    train = write_list(tmp_path / "train.json", [short, record(), lima])
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.generate_sample": False,
                                "data.train_path": str(train)})
    assert [(r["id"], r["extended"]) for r in data.training_records(cfg)] == [
        ("Step 2: weather in Oslo", True), ("Step 4: weather in Oslo", False), ("Step 4: weather in Lima", False)]
    assert data.first_query(cfg) == [short | {"extended": True}, record() | {"extended": False}]
    # data.max_records stops the stream, and the lookahead with it.
    one = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.generate_sample": False,
                                "data.train_path": str(train), "data.max_records": 1})
    assert data.first_query(one) == [short | {"extended": False}]
    # Bad records are counted (skip) or raise, as in the stage.
    train.write_text(json.dumps([{"id": "Step 2: x", "conversations": []}, lima]))
    skip = config.load("smoke", {"output_dir": str(tmp_path / "out"), "data.generate_sample": False,
                                 "data.train_path": str(train), "data.on_bad_record": "skip"})
    dropped = Counter()
    assert [r["id"] for r in data.training_records(skip, dropped)] == ["Step 4: weather in Lima"]
    assert dropped == {"missing_conversations": 1}
