"""lib/judge/judgments.py: reading stage 03's trajectory files, and a judgments file resumed after an
interrupted run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.judge import judge, judgments

from judge_helpers import GOOD, llm_cfg, traj, write_jsonl


# ------------------------------------------------------------------------------------------------
# Reading trajectories
# ------------------------------------------------------------------------------------------------
def test_a_bad_trajectory_line_names_file_line_query_and_field(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    bad = traj(42, GOOD)
    del bad["finish_type"]
    write_jsonl(path, [traj(1, GOOD), bad])
    with pytest.raises(judgments.JudgeInputError) as err:
        judgments.read_trajectories(path)
    assert all(s in str(err.value) for s in (str(path), "line 2", "42", "finish_type"))
    bad = traj(7, GOOD)
    bad["steps"][0]["action_input"] = {"city": "Paris"}
    write_jsonl(path, [bad])
    with pytest.raises(judgments.JudgeInputError, match=r"line 1, query_id 7: field 'steps\[0\].action_input'"):
        judgments.read_trajectories(path)
    path.write_text('{"query_id": 1,\n', encoding="utf-8")
    with pytest.raises(judgments.JudgeInputError, match="line 1.*not valid JSON"):
        judgments.read_trajectories(path)


def test_a_query_id_twice_in_a_trajectory_file_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    write_jsonl(path, [traj(5, GOOD), traj(6, GOOD), traj("5", GOOD)])     # "5" is query 5 too
    with pytest.raises(judgments.JudgeInputError) as err:
        judgments.read_trajectories(path)
    assert all(s in str(err.value) for s in (str(path), "'5'", "lines 1 and 3"))


def test_a_torn_last_trajectory_line_says_stage_03_was_interrupted(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    path.write_text(json.dumps(traj(1, GOOD)) + "\n" + json.dumps(traj(2, GOOD))[:50], encoding="utf-8")
    with pytest.raises(judgments.JudgeInputError, match="line 2.*stage 03 was stopped mid-write"):
        judgments.read_trajectories(path)


# ------------------------------------------------------------------------------------------------
# Resuming
# ------------------------------------------------------------------------------------------------
def test_llm_judge_resumes_an_interrupted_run(tmp_path, server, monkeypatch):
    trajs = [traj(i, GOOD, f"SOLVED number {i}") for i in range(1, 4)]
    cfg = llm_cfg(tmp_path, server, trajs, monkeypatch, evaluate_times=2)
    calls = {"n": 0}
    original = judgments.judge_query

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(judgments, "judge_query", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
    assert len((out / "judgments" / "G1_instruction.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(judgments, "judge_query", original)
    sent = len(server.requests)
    judge.run(cfg, log=lambda *a: None)
    assert len(server.requests) == sent + 2                          # only query 3, two assessments
    assert len((out / "judgments" / "G1_instruction.jsonl").read_text().splitlines()) == 3
