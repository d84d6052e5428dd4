"""lib/common/progress.py: the throttled progress lines the long stages print on the terminal."""
import pytest

from lib.common import progress


def test_progress_lines_are_throttled_and_give_an_eta(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    lines = []
    p = progress.Progress("02 train step", 100, every_s=30, log=lambda line, **_: lines.append(line),
                          start_at=20)          # resumed at step 20: only the steps run now count
    for step in range(21, 101):
        now[0] += 1.0                              # one step a second
        p.update(step, "loss 1.0")
    assert len(lines) == 4                         # at once, then 30 s and 60 s later, and the last step
    assert lines[1] == "[02 train step] 51/100 (51.0%) loss 1.0 | elapsed 0:00:31, ETA 0:00:49"
    assert lines[-1].startswith("[02 train step] 100/100 (100.0%)") and lines[-1].endswith("ETA 0:00:00")
    assert progress.clock(5 * 3600 + 62) == "5:01:02"


def test_printed_progress_is_one_line_that_updates_in_place(capsys):
    """On stdout (the stages' default, copied to the terminal by `python -m lib.pipeline.run`), progress is one
    tqdm line redrawn with carriage returns at most every every_s, left standing with the wall time."""
    p = progress.Progress("03 G1_instruction queries", 1000, every_s=3600, start_at=0)
    for done in range(1, 1001):
        p.update(done, "3 parse errors")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n")
    states = [s for s in out.rstrip("\n").split("\r") if s]
    assert len(states) <= 3                        # not one per update
    assert states[-1].startswith("[03 G1_instruction queries] 1,000/1,000 (100.0%), 3 parse errors | elapsed ")


def test_a_stage_stopped_by_an_error_ends_its_progress_line(tmp_path, capsys):
    from tqdm import tqdm

    from lib.judge import judgments

    class Broken:
        name = "a judge that fails"

    before = len(tqdm._instances)
    with pytest.raises(KeyError) as stopped:      # a trajectory without steps; the error (and its frames) kept
        judgments.judge_group([{"query_id": 1}], {}, tmp_path / "j.jsonl", judgments.Judging(Broken(), 1, 0),
                              "G1_instruction", progress_log=print)
    assert stopped.value and len(tqdm._instances) == before
