"""lib.records: ToolBench's training records read as a stream and checked field by field."""
import json

import pytest

from conftest import TOOLBENCH_SAMPLE as SAMPLES
from lib import records
from test_data import collect, needs_samples, record, write_list


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
