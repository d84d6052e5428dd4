"""lib.common.paper: the paper's facts from data/paper_claims.csv, and the arithmetic of its epoch
(lib.common.trainer_steps)."""
import pytest

from lib.common import paper, trainer_steps


def test_paper_step_arithmetic():
    steps = paper.epoch_steps()
    # 187,542 / 8 -> 23,443 batches; / 4 -> 5,860.75: floor is the paper's 5,860, ceil today's Trainer.
    assert (steps["floor"], steps["ceil"], steps["paper"]) == (5860, 5861, 5860)


def test_trainer_steps_per_epoch_floor_and_ceil():
    assert trainer_steps.steps_per_epoch(100, 8, 4) == {"floor": 3, "ceil": 4}


def test_the_paper_constants_come_from_the_claims_file():
    assert paper.number("train_examples") == 187542 and paper.number("stated_steps") == 5860
    assert paper.epoch_steps()["examples"] == paper.number("train_examples")
    with pytest.raises(KeyError, match="paper_claims.csv: no claim 'nope'"):
        paper.number("nope")
