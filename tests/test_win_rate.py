"""lib/win_rate.py: the win rate against a reference method, by the offline judge and by the LLM
judge on a scripted server, through stage 04's judge.run."""
from __future__ import annotations

from pathlib import Path

import pytest

from lib import judge, store

from judge_helpers import (GOOD, FakeServer, finish, function_of, llm_cfg, make_cfg, query, read_csv,
                           scripted_judge, step, traj, write_jsonl)


def test_offline_win_rate_pass_beats_fail_and_ties_apart(tmp_path):
    ours = [traj(1, GOOD), traj(2, GOOD), traj(3, GOOD[:1], finish_type="max_iterations")]
    ref = [traj(1, GOOD[:1], finish_type="max_iterations"), traj(2, GOOD),
           traj(3, [step("get_weather_for_weather_hub", '{"city": "P"}'), finish()])]
    write_jsonl(tmp_path / "ref" / "trajectories" / "G1_instruction.jsonl", ref)
    cfg = make_cfg(tmp_path, {"G1_instruction": ours}, {"G1_instruction": [query(i) for i in (1, 2, 3)]},
                   kind="offline", win_rate_reference=str(tmp_path / "ref"))
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg["output_dir"])
    prefs = {r["query_id"]: r for r in store.read_jsonl(out / "preferences" / "G1_instruction.jsonl")}
    assert prefs[1]["outcome"] == "win" and prefs[1]["rounds"][0]["why"] == "pass beats fail"
    assert prefs[2]["outcome"] == "tie"                       # identical runs
    assert prefs[3]["outcome"] == "loss"
    rows = {r["group"]: r for r in read_csv(out / "win_rate.csv")}
    assert (rows["overall"]["wins"], rows["overall"]["ties"], rows["overall"]["losses"]) == ("1", "1", "1")
    assert rows["overall"]["judge"] == "offline judge"
    assert (out / "reference_judgments" / "G1_instruction.jsonl").exists()


@pytest.fixture
def server():
    srv = FakeServer(scripted_judge)
    yield srv
    srv.close()


def test_llm_win_rate_randomises_order_and_skips_the_judge_for_pass_vs_fail(tmp_path, server, monkeypatch):
    better = [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish("BETTER: 20 C")]
    ours = [traj(1, better, "SOLVED a"), traj(2, GOOD, "SOLVED b"), traj(3, GOOD, "SOLVED c")]
    ref = [traj(1, GOOD, "SOLVED a"), traj(2, better, "SOLVED b"),
           traj(3, GOOD[:1], "SOLVED c", finish_type="max_iterations")]
    write_jsonl(tmp_path / "ref" / "trajectories" / "G1_instruction.jsonl", ref)
    cfg = llm_cfg(tmp_path, server, ours, monkeypatch, win_rate_reference=str(tmp_path / "ref"))
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg["output_dir"])
    prefs = {r["query_id"]: r for r in store.read_jsonl(out / "preferences" / "G1_instruction.jsonl")}
    assert prefs[1]["outcome"] == "win" and prefs[2]["outcome"] == "loss"
    assert prefs[3]["outcome"] == "win" and all(r["call"] is None for r in prefs[3]["rounds"])
    orders = {r["why"] for q in (1, 2) for r in prefs[q]["rounds"]}
    assert orders == {"judge, shown order output first", "judge, shown order reference first"}
    selects = [r for r in server.bodies if function_of(r) == "select_better_answer"]
    assert len(selects) == 8                                          # 2 queries x 4 rounds
    rows = {r["group"]: r for r in read_csv(out / "win_rate.csv")}
    assert rows["overall"]["win_rate"] == "66.67" and rows["overall"]["losses"] == "1"
    sent = len(server.requests)
    judge.run(cfg, log=lambda *a: None)
    assert len(server.requests) == sent
