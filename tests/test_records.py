"""lib.toolbench.records: ToolBench's training records read as a stream and checked field by field."""
import json

import pytest

from conftest import TOOLBENCH_SAMPLE as SAMPLES
from lib.toolbench import records
from test_data import answer, collect, needs_samples, record, write_answers, write_list


def test_json_list_is_streamed_across_chunk_boundaries(tmp_path, monkeypatch):
    rows = [record(f"Step 2: q{i} " + "x" * 50) for i in range(40)]
    path = write_list(tmp_path / "train.json", rows)
    original = records._decoded_chunks
    monkeypatch.setattr(records, "_decoded_chunks", lambda p: original(p, size=37))
    assert [r for _, r in records.iter_json_list(path)] == rows


def test_jsonl_and_list_give_the_same_records(tmp_path):
    rows = [record(f"Step 4: q{i}") for i in range(3)]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert collect(jsonl)[0] == collect(write_list(tmp_path / "train.json", rows))[0] == rows


@pytest.mark.parametrize("mutate, reason, field", [
    (lambda r: r.pop("conversations"), "missing_conversations", "conversations"),
    (lambda r: r["conversations"][1].update({"from": "human"}), "unknown_role", "conversations[1].from"),
    (lambda r: r["conversations"][3].update({"value": "  "}), "empty_value", "conversations[3].value"),
    (lambda r: r.update({"conversations": [r["conversations"][0]]}), "no_assistant_turn", "conversations"),
    (lambda r: r["conversations"][2].update({"value": "Thought: I will just answer."}), "no_action",
     "conversations[2].value"),
])
def test_bad_records_name_file_record_and_field(tmp_path, mutate, reason, field):
    bad = record("Step 4: the bad one")
    mutate(bad)
    path = write_list(tmp_path / "train.json", [record(), bad, record()])
    with pytest.raises(records.DataError) as err:
        collect(path)
    assert (err.value.file, err.value.field, err.value.reason) == (str(path), field, reason)
    assert "record 1 (id 'Step 4: the bad one')" in str(err.value) and str(path) in str(err.value)
    kept, dropped = collect(path, "skip")
    assert len(kept) == 2 and dropped == {reason: 1}


def test_non_utf8_bytes_are_reported_against_their_field(tmp_path):
    good = json.dumps(record()).encode()
    bad = json.dumps(record("Step 4: latin")).encode().replace(b"3 C", b"3 \xb0C")
    path = tmp_path / "train.jsonl"
    path.write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(records.DataError, match=r"line 2 \(id 'Step 4: latin'\): field 'conversations\[4\].value'"):
        collect(path)
    kept, dropped = collect(path, "skip")
    assert len(kept) == 1 and dropped == {"non_utf8": 1}


def test_malformed_json_line_is_skippable_but_a_broken_list_always_raises(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(record()) + "\n{\"id\": \"Step 2: cut\", \"conversations\": [\n")
    with pytest.raises(records.DataError, match=r"line 2: field '\(json\)'"):
        collect(path)
    assert collect(path, "skip")[1] == {"malformed_json": 1}
    broken = tmp_path / "train.json"
    broken.write_text("[" + json.dumps(record()) + ", {\"id\": \"Step 2\", \"conversations\": [}]")
    with pytest.raises(records.DataError, match="record 1: field '\\(json\\)': malformed JSON"):
        collect(broken, "skip")
    with pytest.raises(records.DataError, match="expected a JSON list"):
        collect(write_list(tmp_path / "obj.json", {"id": "x"}))


def test_raw_answer_files_become_toolbench_records(tmp_path):
    functions = [{"name": "current_weather_for_weathernow", "parameters": {}}]
    system = "Intro, with a function call to actually excute your step.\nTools:\n"
    call = {"name": "current_weather_for_weathernow", "arguments": "{\"city\": \"Oslo\"}"}
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "\nOslo?\nBegin!\n"},
                {"role": "assistant", "content": "I will look.", "function_call": None},
                {"role": "assistant", "content": None, "function_call": call}]
    del messages[2]["function_call"]
    answer = {"answer_generation": {"valid_data": True, "query": "Oslo?", "function": functions,
                                    "train_messages": [messages, messages[:3]], "final_answer": "",
                                    "finish_type": "give_answer"}}
    folder = tmp_path / "G1_answer"
    folder.mkdir()
    (folder / "1_ChatGPT_DFS_woFilter_w2.json").write_text(json.dumps(answer))
    (folder / "2_ChatGPT_DFS_woFilter_w2.json").write_text(json.dumps({"answer_generation": {"valid_data": False}}))
    kept, dropped = collect(tmp_path)
    assert dropped == {"last_turn_not_a_call": 1, "invalid_answer_file": 1}
    [rec] = kept
    assert rec["id"] == "Step 3: Oslo?"
    assert rec["conversations"][0]["value"] == (
        "Intro, with a function call to actually excute your step. Your output should follow this format:"
        "\nThought:\nAction\nAction Input:\n\nTools:\n\nSpecifically, you have access to the following APIs: "
        + str(functions))
    assert rec["conversations"][2] == {"from": "assistant", "value":
                                       "\nThought: I will look.\nAction: current_weather_for_weathernow"
                                       "\nAction Input: {\"city\": \"Oslo\"}"}


@needs_samples
def test_real_raw_answers_reproduce_toolbench_preprocessing():
    derived = json.loads((SAMPLES / "derived" / "toolllama_format_from_data_example.json").read_text())
    ours, dropped = collect(SAMPLES / "data_example" / "answer")
    key = lambda r: json.dumps(r, sort_keys=True)
    assert sorted(map(key, ours)) == sorted(map(key, derived))
    assert dropped == {"invalid_answer_file": 1, "last_turn_not_a_call": 1}


def test_answer_file_names_and_methods():
    assert records.answer_file_name("10_ChatGPT_DFS_woFilter_w2.json") == ("10", "ChatGPT_DFS_woFilter_w2")
    assert records.answer_file_name("1073_CoT@1.json") == ("1073", "CoT@1")
    assert records.answer_file_name("588_DFS_woFilter_w2.json") == ("588", "DFS_woFilter_w2")
    assert records.answer_file_name("notes.json") == ("notes", "")
    match = records.method_matches
    assert match("ChatGPT_DFS_woFilter_w2", "DFS_woFilter_w2") and match("DFS_woFilter_w2", "DFS_woFilter_w2")
    assert match("CoT@1", "CoT@1") and not match("CoT@10", "CoT@1") and not match("DFS_woFilter_w2", "CoT@1")
    assert not match("ChatGPT_DFS_woFilter_w2", "ChatGPT")


def test_answer_methods_pick_the_files_and_two_methods_of_one_query_is_an_error(tmp_path):
    root = tmp_path / "answer"
    write_answers(root / "G1_answer", {"1_CoT@1.json": answer("q1 cot"), "1_DFS_woFilter_w2.json": answer("q1 dfs"),
                                       "2_DFS_woFilter_w2.json": answer("q2 dfs"), "3_CoT@1.json": answer("q3 cot")})
    write_answers(root / "G2_answer", {"1_DFS_woFilter_w2.json": answer("g2 q1 dfs")})   # another query
    with pytest.raises(records.DataError) as err:
        collect(root)
    assert str(err.value) == (
        f"{root}: record query id '1' of G1_answer: field '(file name)': two answer files for the same query, "
        "G1_answer/1_CoT@1.json and G1_answer/1_DFS_woFilter_w2.json, so its records would be read twice; "
        "set data.answer_methods to the one method to read, e.g. [DFS_woFilter_w2] (methods here: CoT@1, "
        "DFS_woFilter_w2)")
    report = {}
    kept, _ = collect(root, answer_methods=["DFS_woFilter_w2"], report=report)
    assert sorted(r["id"] for r in kept) == ["Step 3: g2 q1 dfs", "Step 3: q1 dfs", "Step 3: q2 dfs"]
    assert report == {"form": "answer folder", "folder": str(root), "files_found": 5, "files_kept": 3,
                      "methods_found": {"CoT@1": 2, "DFS_woFilter_w2": 3}, "methods_kept": {"DFS_woFilter_w2": 3},
                      "answer_methods": ["DFS_woFilter_w2"],
                      "sample": ["G1_answer/1_DFS_woFilter_w2.json", "G1_answer/2_DFS_woFilter_w2.json",
                                 "G2_answer/1_DFS_woFilter_w2.json"]}
    assert sorted(r["id"] for r in collect(root, answer_methods=["CoT@1"])[0]) == ["Step 3: q1 cot", "Step 3: q3 cot"]
    with pytest.raises(records.DataError, match="query id '1' of G1_answer"):
        collect(root, answer_methods=["CoT@1", "DFS_woFilter_w2"])          # both methods: doubled again
    with pytest.raises(FileNotFoundError, match=r"no answer file of the methods \['CoT@10'\].*\['CoT@1', 'DFS_woFilter_w2'\]"):
        collect(root, answer_methods=["CoT@10"])
    with pytest.raises(ValueError, match="data.answer_methods must be a list"):
        collect(root, answer_methods="DFS_woFilter_w2")
    # the sample lists a few names, not every file
    many = write_answers(tmp_path / "many", {f"{i}_CoT@1.json": answer(f"q{i}") for i in range(40)})
    report = {}
    assert len(collect(many, report=report)[0]) == 40
    assert report["files_kept"] == 40 and len(report["sample"]) == records.ANSWER_SAMPLE == 5
    report = {}
    collect(write_list(tmp_path / "train.json", [record()]), report=report)
    assert report == {"form": "json list", "files_found": 1, "files_kept": 1, "sample": ["train.json"]}


def test_the_same_query_answered_by_two_systems_is_an_error_the_filter_cannot_fix(tmp_path):
    root = tmp_path / "answer"
    write_answers(root / "chatgpt_dfs" / "G1_instruction", {"588_DFS_woFilter_w2.json": answer("a")})
    write_answers(root / "gpt4_dfs" / "G1_instruction", {"588_DFS_woFilter_w2.json": answer("b")})
    with pytest.raises(records.DataError, match=r"query id '588' of G1_instruction.*both are method DFS_woFilter_w2: "
                                                r"point data.train_path at one system's folder \(chatgpt_dfs or gpt4_dfs\)"):
        collect(root, answer_methods=["DFS_woFilter_w2"])


def test_a_bad_answer_file_names_the_file_record_and_field(tmp_path):
    broken = answer("q2")
    del broken["answer_generation"]["train_messages"]
    folder = write_answers(tmp_path / "G1_answer", {"1_CoT@1.json": answer("q1"), "2_CoT@1.json": broken})
    with pytest.raises(records.DataError) as err:
        collect(folder)
    assert str(err.value) == f"{folder / '2_CoT@1.json'}: record 0: field 'answer_generation.train_messages': missing"
    assert collect(folder, "skip")[1] == {"missing_field": 1}


@needs_samples
def test_real_answer_folders_by_method():
    """StableToolBench's example answers: answer/virtual_chatgpt_{cot,dfs}/G1_instruction/<id>_<method>.json,
    the same three queries answered by CoT@1 and DFS_woFilter_w2."""
    root = SAMPLES / "stabletoolbench" / "data_example" / "answer"
    with pytest.raises(records.DataError, match=r"query id '1073' of G1_instruction.*virtual_chatgpt_cot/G1_instruction/"
                                                r"1073_CoT@1.json and virtual_chatgpt_dfs/G1_instruction/1073_DFS_woFilter_w2"
                                                r".json.*set data.answer_methods"):
        collect(root)
    report = {}
    dfs, dropped = collect(root, answer_methods=["DFS_woFilter_w2"], report=report)
    assert report["files_kept"] == 3 and report["methods_found"] == {"CoT@1": 3, "DFS_woFilter_w2": 3}
    assert len({r["id"].partition(": ")[2] for r in dfs}) == 3 and len(dfs) == len({r["id"] for r in dfs})
    cot, cot_dropped = collect(root, answer_methods=["CoT@1"])
    assert cot_dropped.get("invalid_answer_file", 0) >= 1            # valid_data false: skipped, as upstream
    # ToolBench's own folder: the method filter ToolBench's script uses reads what it reads
    toolbench = SAMPLES / "data_example" / "answer"
    key = lambda r: json.dumps(r, sort_keys=True)
    assert sorted(map(key, collect(toolbench, answer_methods=["DFS_woFilter_w2"])[0])) == \
        sorted(map(key, collect(toolbench)[0]))
    with pytest.raises(FileNotFoundError, match=r"no answer file of the methods \['CoT@1'\]"):
        collect(toolbench, answer_methods=["CoT@1"])


def test_first_record_is_read_as_is_and_outlined(tmp_path):
    broken = record("Step 2: no call")
    broken["conversations"] = broken["conversations"][:2]
    path = write_list(tmp_path / "train.json", [broken, record()])
    file, where, first = records.first_record(path)
    # Not checked yet: the first record comes back even though check_record would refuse it.
    assert (file, where, first) == (str(path), 0, broken)
    assert records.check_record(first)[0] == "no_assistant_turn"
    lines = records.outline(record(), width=12).splitlines()
    assert lines[0] == "id: 'Step 4: weather in Oslo'"
    assert lines[3] == "  [2] assistant     90 chars  '\\nThought: lo...'"
    assert len(lines) == 1 + len(record()["conversations"])


def test_first_record_of_an_answer_folder_passes_over_what_toolbench_skips(tmp_path):
    write_answers(tmp_path / "G1_answer", {"1_DFS_woFilter_w2.json": answer(valid=False),
                                     "2_DFS_woFilter_w2.json": answer(query="Lima?", city="Lima")})
    file, where, first = records.first_record(tmp_path)
    assert file.endswith("2_DFS_woFilter_w2.json") and first["id"] == "Step 3: Lima?"
    write_answers(tmp_path / "G1_answer", {"2_DFS_woFilter_w2.json": answer(valid=False)})
    with pytest.raises(records.DataError, match="no record"):
        records.first_record(tmp_path)
