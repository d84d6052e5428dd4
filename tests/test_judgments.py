"""lib/judge/judgments.py: a judgments file resumed after an interrupted run."""
from __future__ import annotations

from pathlib import Path

import pytest

from lib.judge import judge, judgments

from judge_helpers import GOOD, llm_cfg, traj


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
