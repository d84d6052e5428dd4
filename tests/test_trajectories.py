"""lib/toolbench/trajectories.py: stage 03's trajectory files read and checked, whole (stage 04) or
while stage 03 may still be writing them (partial)."""
from __future__ import annotations

import json

import pytest

from lib.toolbench import trajectories

from judge_helpers import GOOD, traj, write_jsonl


def test_a_bad_trajectory_line_names_file_line_query_and_field(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    bad = traj(42, GOOD)
    del bad["finish_type"]
    write_jsonl(path, [traj(1, GOOD), bad])
    with pytest.raises(trajectories.TrajectoryError) as err:
        trajectories.read(path)
    assert all(s in str(err.value) for s in (str(path), "line 2", "42", "finish_type"))
    bad = traj(7, GOOD)
    bad["steps"][0]["action_input"] = {"city": "Paris"}
    write_jsonl(path, [bad])
    with pytest.raises(trajectories.TrajectoryError, match=r"line 1, query_id 7: field 'steps\[0\].action_input'"):
        trajectories.read(path)
    path.write_text('{"query_id": 1,\n', encoding="utf-8")
    with pytest.raises(trajectories.TrajectoryError, match="line 1.*not valid JSON"):
        trajectories.read(path)


def test_a_query_id_twice_in_a_trajectory_file_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    write_jsonl(path, [traj(5, GOOD), traj(6, GOOD), traj("5", GOOD)])     # "5" is query 5 too
    with pytest.raises(trajectories.TrajectoryError) as err:
        trajectories.read(path)
    assert all(s in str(err.value) for s in (str(path), "'5'", "lines 1 and 3"))


def test_a_torn_last_trajectory_line_says_stage_03_was_interrupted(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    path.write_text(json.dumps(traj(1, GOOD)) + "\n" + json.dumps(traj(2, GOOD))[:50], encoding="utf-8")
    with pytest.raises(trajectories.TrajectoryError, match="line 2.*stage 03 was stopped mid-write"):
        trajectories.read(path)


def test_a_partial_file_skips_a_torn_last_line_and_may_be_absent(tmp_path):
    path = tmp_path / "G1_instruction.jsonl"
    assert trajectories.read(path, partial=True) == []
    path.write_text(json.dumps(traj(1, GOOD)) + "\n" + json.dumps(traj(2, GOOD))[:50], encoding="utf-8")
    assert [t["query_id"] for t in trajectories.read(path, partial=True)] == [1]
    with pytest.raises(FileNotFoundError):
        trajectories.read(tmp_path / "none.jsonl")


def test_a_bad_middle_line_is_refused_also_in_a_partial_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(traj(1, GOOD)) + "\nnot json\n" + json.dumps(traj(2, GOOD)) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        trajectories.read(path, partial=True)
