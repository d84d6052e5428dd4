"""lib/judge/win_rate.py: the win rate against a reference method, by the offline judge and by the LLM
judge on a scripted server, through stage 04's judge.run."""
from __future__ import annotations

from pathlib import Path

import pytest

from lib.common import store
from lib.judge import judge, judgments, win_rate

from judge_helpers import (GOOD, finish, function_of, llm_cfg, make_cfg, query, read_csv, step, traj,
                           write_jsonl)


def test_offline_win_rate_pass_beats_fail_and_ties_apart(tmp_path):
    ours = [traj(1, GOOD), traj(2, GOOD), traj(3, GOOD[:1], finish_type="max_iterations")]
    ref = [traj(1, GOOD[:1], finish_type="max_iterations"), traj(2, GOOD),
           traj(3, [step("get_weather_for_weather_hub", '{"city": "P"}'), finish()])]
    write_jsonl(tmp_path / "ref" / "trajectories" / "G1_instruction.jsonl", ref)
    cfg = make_cfg(tmp_path, {"G1_instruction": ours}, {"G1_instruction": [query(i) for i in (1, 2, 3)]},
                   kind="offline", win_rate_reference=str(tmp_path / "ref"))
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
    prefs = {r["query_id"]: r for r in store.read_jsonl(out / "preferences" / "G1_instruction.jsonl")}
    assert prefs[1]["outcome"] == "win" and prefs[1]["rounds"][0]["why"] == "pass beats fail"
    assert prefs[2]["outcome"] == "tie"                       # identical runs
    assert prefs[3]["outcome"] == "loss"
    rows = {r["group"]: r for r in read_csv(out / "win_rate.csv")}
    assert (rows["overall"]["wins"], rows["overall"]["ties"], rows["overall"]["losses"]) == ("1", "1", "1")
    assert rows["overall"]["judge"] == "offline judge"
    assert (out / "reference_judgments" / "G1_instruction.jsonl").exists()


def test_llm_win_rate_randomises_order_and_skips_the_judge_for_pass_vs_fail(tmp_path, server, monkeypatch):
    better = [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish("BETTER: 20 C")]
    ours = [traj(1, better, "SOLVED a"), traj(2, GOOD, "SOLVED b"), traj(3, GOOD, "SOLVED c")]
    ref = [traj(1, GOOD, "SOLVED a"), traj(2, better, "SOLVED b"),
           traj(3, GOOD[:1], "SOLVED c", finish_type="max_iterations")]
    write_jsonl(tmp_path / "ref" / "trajectories" / "G1_instruction.jsonl", ref)
    cfg = llm_cfg(tmp_path, server, ours, monkeypatch, win_rate_reference=str(tmp_path / "ref"))
    judge.run(cfg, log=lambda *a: None)
    out = Path(cfg.output_dir)
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


# ---------------------------------------------------------------------------------------------
# The two properties of a win rate: a run against itself is 50 %, and swapping the output and the
# reference turns W into 100 - W (a tie counts half a win for either side).
# ---------------------------------------------------------------------------------------------

def _mixed_runs():
    """Two runs of eight queries with every kind of comparison: pass vs fail, both passing or both
    failing (decided by the offline score or the judge), identical answers."""
    slow = [step("get_time_for_weather_hub"), step("get_weather_for_weather_hub", '{"city": "Paris"}'),
            finish("BETTER: 20 C in Paris")]
    partial = [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish("It is 20 C, SOLVED.")]
    stuck = GOOD[:1]
    a = [traj(1, GOOD, "SOLVED 1"), traj(2, slow, "SOLVED 2"), traj(3, partial, "SOLVED 3"),
         traj(4, stuck, "UNSOLVED 4", finish_type="max_iterations"), traj(5, GOOD, "SOLVED 5"),
         traj(6, stuck, "UNSOLVED 6", finish_type="max_iterations"), traj(7, slow, "SOLVED 7"),
         traj(8, GOOD, "SOLVED 8")]
    b = [traj(1, stuck, "SOLVED 1", finish_type="max_iterations"), traj(2, GOOD, "SOLVED 2"),
         traj(3, GOOD, "SOLVED 3"), traj(4, GOOD, "UNSOLVED 4"), traj(5, GOOD, "SOLVED 5"),
         traj(6, [step("get_time_for_weather_hub"), step("nope_for_weather_hub")], "UNSOLVED 6",
              finish_type="max_iterations"), traj(7, GOOD, "SOLVED 7"), traj(8, slow, "SOLVED 8")]
    return a, b


def _win_rows(tmp_path, ours, ref, kind="offline", server=None, monkeypatch=None) -> dict:
    """judge.run on `ours` against `ref` (a run folder with trajectories/); win_rate.csv by group."""
    ref_dir = tmp_path / "ref"
    write_jsonl(ref_dir / "trajectories" / "G1_instruction.jsonl", ref)
    if kind == "offline":
        cfg = make_cfg(tmp_path, {"G1_instruction": ours}, {"G1_instruction": [query(t["query_id"]) for t in ours]},
                       kind="offline", win_rate_reference=str(ref_dir))
    else:
        cfg = llm_cfg(tmp_path, server, ours, monkeypatch, win_rate_reference=str(ref_dir))
    judge.run(cfg, log=lambda *a: None)
    return {r["group"]: r for r in read_csv(Path(cfg.output_dir) / "win_rate.csv")}


def test_a_run_against_itself_is_a_50_percent_win_rate(tmp_path, server, monkeypatch):
    a, _ = _mixed_runs()
    rows = _win_rows(tmp_path / "offline", a, a)
    assert (rows["overall"]["n"], rows["overall"]["ties"], float(rows["overall"]["win_rate"])) == ("8", "8", 50.0)
    rows = _win_rows(tmp_path / "llm", a, a, "llm", server, monkeypatch)
    assert (rows["overall"]["ties"], float(rows["overall"]["win_rate"])) == ("8", 50.0)
    assert not [b for b in server.bodies if function_of(b) == "select_better_answer"]    # identical: no call


@pytest.mark.parametrize("kind", ["offline", "llm"])
def test_swapping_output_and_reference_turns_w_into_100_minus_w(tmp_path, server, monkeypatch, kind):
    a, b = _mixed_runs()
    forward = _win_rows(tmp_path / "ab", a, b, kind, server, monkeypatch)
    backward = _win_rows(tmp_path / "ba", b, a, kind, server, monkeypatch)
    w = float(forward["overall"]["win_rate"])
    assert 0 < int(forward["overall"]["ties"]) < 8 and w not in (0.0, 50.0, 100.0)     # not a trivial case
    for group in ("G1_instruction", "overall"):
        assert float(forward[group]["win_rate"]) + float(backward[group]["win_rate"]) == pytest.approx(100.0)
        assert (forward[group]["wins"], forward[group]["ties"]) == (backward[group]["losses"], backward[group]["ties"])


class PositionJudge:
    """A fake LLM judge that always prefers the answer it is shown at `pick` (0: the first)."""

    name = "position-biased fake judge"

    def __init__(self, pick=0):
        self.pick, self.shown = pick, []

    def ask(self, function, fields, index):
        assert function == "select_better_answer"
        self.shown.append((fields["answer_0"], fields["answer_1"]))
        return {"function": function, "reply": "", "parsed": {"reason": "r", "index": self.pick}}


def _solved(times):
    return {"passed": True, "assessments": [{"answer_status": "Solved"}] * times, "checks": {}}


def test_a_position_biased_judge_against_an_equal_run_is_50_percent_within_noise():
    """Two different but equally good answers per query, a judge that always takes the first it is
    shown: the seeded order leaves the win rate at 50 % within binomial noise, and swapping the runs
    shows the judge the same pair in the same order, so W becomes exactly 100 - W."""
    n, times = 400, 1
    ours = [traj(q, GOOD, f"q{q}", answer=f"It is 20 C in Paris ({q}).") for q in range(n)]
    ref = [traj(q, GOOD, f"q{q}", answer=f"Paris: 20 C ({q}).") for q in range(n)]
    for t, text in zip(ours + ref, [t["final_answer"] for t in ours + ref]):
        t["answer"]["final_answer"] = text
    judge_ = PositionJudge()
    forward = [win_rate.compare((o, _solved(times)), (r, _solved(times)), judgments.Judging(judge_, times, 7),
                                "G1_instruction")
               for o, r in zip(ours, ref)]
    backward = [win_rate.compare((r, _solved(times)), (o, _solved(times)), judgments.Judging(judge_, times, 7),
                                 "G1_instruction")
                for o, r in zip(ours, ref)]
    assert judge_.shown[:n] == judge_.shown[n:]              # the same pair, the same order, both ways
    rows = []
    for outcomes in (forward, backward):
        counts = {k: [c["outcome"] for c in outcomes].count(k) for k in ("win", "loss", "tie")}
        rows.append(win_rate._win_row("G1_instruction", n, counts, judge_.name, "ref"))
    assert abs(rows[0]["win_rate"] - 50) < 4 * 100 * (0.25 / n) ** 0.5          # 4 standard errors: 10 points
    assert rows[0]["win_rate"] + rows[1]["win_rate"] == pytest.approx(100.0)
    assert [c["outcome"] for c in forward] == [{"win": "loss", "loss": "win", "tie": "tie"}[c["outcome"]]
                                               for c in backward]


def test_win_rate_counts_a_tie_as_half():
    row = win_rate._win_row("G1_instruction", 10, {"win": 3, "loss": 5, "tie": 2}, "offline judge", "ref")
    assert (row["win_rate"], row["tie_rate"], row["loss_rate"]) == (40.0, 20.0, 50.0)
