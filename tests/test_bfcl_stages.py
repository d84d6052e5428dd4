"""BFCL beside stages 03, 04 and 05 (issue 23, item 3): questions asked through a scripted backend,
answers appended and resumed, scored by BFCL's rules (unparsable steps wrong with their reason,
never an error), the stage-05 table beside the untrained row; BFCL's files missing fail before
anything is asked or written. Needs bfcl-eval's data (make setup installs it)."""
import json

import pytest

from lib.common import config, tables
from lib.checks import bfcl_prompts, bfcl_questions
from lib.infer import bfcl_answers, untrained
from lib.judge import bfcl_scores
from lib.report import bfcl_report
from lib.toolbench import formats
from lib.models import backends
from test_bfcl_rules import _fed_back

pytestmark = pytest.mark.skipif(
    not __import__("importlib.util").util.find_spec(bfcl_questions.PACKAGE),
    reason=f"BFCL's data is not installed ({bfcl_questions.INSTALL})")

CATEGORIES = ["simple_python", "parallel", "irrelevance"]
FINISH = formats.format_step("Done.", "Finish", json.dumps({"return_type": "give_answer", "final_answer": "ok"}))


def profile(tmp_path, k=2, categories=CATEGORIES, **more):
    return config.derive(config.load("smoke"), {"output_dir": str(tmp_path / "out"), "inference.batch_size": 3,
                                                "bfcl.questions_per_category": k, "bfcl.categories": categories,
                                                **more})


class Oracle:
    """Answers with the possible answer (one call a step, then Finish) the questions in `right`,
    with text that is no step the others; irrelevance questions get Finish. Counts its turns."""

    def __init__(self, cfg, right, fail_after=None):
        self.by_text, self.right, self.fail_after, self.turns = {}, set(right), fail_after, 0
        for qs in bfcl_answers.selected(cfg).values():
            for q in qs:
                self.by_text[formats.user_message(q.turns[0][-1]["content"])] = q
        self.fingerprint = "oracle"

    def generate(self, conversations):
        out = []
        for conversation in conversations:
            if self.fail_after is not None and self.turns >= self.fail_after:
                raise RuntimeError("the backend stopped")
            self.turns += 1
            q = self.by_text[next(m["content"] for m in conversation if m["role"] == "user")]
            done = sum(m["role"] == "assistant" for m in conversation)
            out.append(backends.Generation(self.turn(q, done), tokens=3))
        return out

    def turn(self, q, done):
        if q.id not in self.right:
            return "I am not sure what to do here."
        calls = _fed_back(q) if q.ground_truth else []
        if done >= len(calls):
            return FINISH
        name, args = next(iter(calls[done].items()))
        return formats.format_step("I call it.", bfcl_prompts.presented_name(name), json.dumps(args))


def first_ids(cfg):
    return {c: qs[0].id for c, qs in bfcl_answers.selected(cfg).items()}


def test_sample_is_fixed_and_nested():
    questions = bfcl_questions.read("simple_python")
    three, five = bfcl_questions.sample(questions, 3, 1234), bfcl_questions.sample(questions, 5, 1234)
    assert [q.id for q in three] == [q.id for q in bfcl_questions.sample(questions, 3, 1234)]
    assert {q.id for q in three} < {q.id for q in five}
    assert {q.id for q in three} != {q.id for q in bfcl_questions.sample(questions, 3, 7)}
    assert len(bfcl_questions.sample(questions, None, 1)) == len(questions) == 400


def test_ask_takes_one_step_or_every_call_before_finish():
    simple, parallel = (bfcl_questions.read(c)[0] for c in ("simple_python", "parallel"))
    loop = bfcl_answers.ask(simple, max_steps=10)
    next(loop)
    with pytest.raises(StopIteration) as stop:
        loop.send("Thought: x\nAction: f\nAction Input: {}")
    assert stop.value.value == (["Thought: x\nAction: f\nAction Input: {}"], "one_step")

    loop, call = bfcl_answers.ask(parallel, max_steps=10), formats.format_step("a", "f", "{}")
    first = next(loop)
    second = loop.send(call)
    # The call is kept as ToolBench's assistant turn, followed by the recorded-call observation.
    assert second[len(first):] == [{"role": "assistant", "content": call},
                                   {"role": "function", "content": bfcl_answers.RECORDED}]
    with pytest.raises(StopIteration) as stop:
        loop.send(FINISH)
    assert stop.value.value == ([call, FINISH], "finish")

    loop = bfcl_answers.ask(parallel, max_steps=2)
    next(loop), loop.send(call)
    with pytest.raises(StopIteration) as stop:
        loop.send(call)
    assert stop.value.value[1] == "max_steps"
    loop = bfcl_answers.ask(parallel, max_steps=5)
    next(loop)
    with pytest.raises(StopIteration) as stop:
        loop.send("no step at all")
    assert stop.value.value[1] == "parse_error"


def test_answers_scored_by_bfcl_rules_resumed_and_grown(tmp_path):
    cfg = profile(tmp_path)
    right = first_ids(cfg).values()
    summary = bfcl_answers.run(cfg, backend=Oracle(cfg, right), log=None)
    assert summary["ran_now"] == 6 and summary["categories"]["parallel"]["answered"] == 2
    folder = config.output_dir(cfg) / bfcl_answers.FOLDER
    lines = {l["id"]: l for c in CATEGORIES for l in bfcl_answers.read_answers(folder, c, [
        q.id for q in bfcl_answers.selected(cfg)[c]]).values()}
    parallel_right = lines[first_ids(cfg)["parallel"]]
    assert parallel_right["ended"] == "finish" and len(parallel_right["steps"]) == len(
        bfcl_answers.selected(cfg)["parallel"][0].ground_truth) + 1

    rows = {r["category"]: r for r in bfcl_scores.score(cfg, log=None)}
    assert (rows["simple_python"]["correct"], rows["parallel"]["correct"]) == (1, 1)
    # Irrelevance: Finish is no call, and so is a step that does not parse (BFCL's rule).
    assert rows["irrelevance"]["correct"] == 2
    assert (rows[bfcl_scores.POOLED]["n"], rows[bfcl_scores.POOLED]["correct"]) == (6, 4)
    assert (rows["simple_python"]["parsed"], rows["irrelevance"]["parsed"]) == (1, 1)
    assert rows["simple_python"]["accuracy"] == 50.0 and rows["simple_python"]["ci_low"] < 50 < rows["simple_python"]["ci_high"]
    verdicts = bfcl_scores.read_verdicts(config.output_dir(cfg))
    unparsed = [v for v in verdicts if v["category"] == "simple_python" and not v["correct"]]
    assert unparsed[0]["reason"].startswith("does not parse: step 1: ") and unparsed[0]["calls"] is None
    assert bfcl_scores.failures(verdicts) == {"simple_python": {"does not parse": 1}, "parallel": {"does not parse": 1}}
    assert [r["category"] for r in tables.read_csv(config.output_dir(cfg) / bfcl_scores.SCORES)][-1] == bfcl_scores.POOLED

    class Refuses:
        fingerprint = "oracle"

        def generate(self, conversations):
            raise AssertionError("a finished question was asked again")

    assert bfcl_answers.run(cfg, backend=Refuses(), log=None)["skipped_done"] == 6
    # A larger sample holds the smaller one: only the new questions are asked.
    grown = profile(tmp_path, k=3)
    assert bfcl_answers.run(grown, backend=Oracle(grown, right), log=None)["ran_now"] == 3


def test_stopped_run_keeps_its_answers_and_scores_what_it_has(tmp_path):
    cfg = profile(tmp_path, k=5, categories=["simple_python"])      # batches of 3: the second fails
    with pytest.raises(RuntimeError, match="the backend stopped"):
        bfcl_answers.run(cfg, backend=Oracle(cfg, first_ids(cfg).values(), fail_after=3), log=None)
    folder = config.output_dir(cfg) / bfcl_answers.FOLDER
    assert len(bfcl_answers.read_answers(folder, "simple_python", [q.id for q in bfcl_answers.selected(cfg)["simple_python"]])) == 3
    logged = []
    row = bfcl_scores.score(cfg, log=logged.append)[0]
    assert (row["n"], row["unanswered"]) == (3, 2) and "WARNING: bfcl simple_python: 2 of 5" in logged[0]
    assert bfcl_answers.run(cfg, backend=Oracle(cfg, []), log=None)["ran_now"] == 2


def test_another_model_sets_the_answers_aside(tmp_path):
    cfg = profile(tmp_path, k=1, categories=["simple_python"])
    bfcl_answers.run(cfg, backend=Oracle(cfg, []), log=None)
    other = Oracle(cfg, [])
    other.fingerprint = "another model"
    assert bfcl_answers.run(cfg, backend=other, log=None)["ran_now"] == 1
    assert len(list((config.output_dir(cfg)).glob(f"{bfcl_answers.FOLDER}.run-*"))) == 1


def test_missing_bfcl_file_fails_before_anything_is_asked_or_written(tmp_path, monkeypatch):
    cfg = profile(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(bfcl_questions, "_data_root", lambda: tmp_path / "data")

    class Unused:
        fingerprint = "unused"

        def generate(self, conversations):
            raise AssertionError("asked before the files were checked")

    with pytest.raises(bfcl_questions.BfclDataError, match=r"BFCL_v4_simple_python\.json") as err:
        bfcl_answers.run(cfg, backend=Unused(), log=None)
    assert bfcl_questions.INSTALL in str(err.value)
    assert not (config.path(cfg, cfg.output_dir) / bfcl_answers.FOLDER).exists()


def test_off_writes_nothing_and_unknown_category_is_refused(tmp_path):
    cfg = profile(tmp_path, k=0)
    assert bfcl_answers.run(cfg, backend=None, log=None) is None and bfcl_scores.score(cfg) is None
    with pytest.raises(config.ConfigError, match=r"smoke\.yaml.*bfcl\.categories: unknown 'simple'"):
        config.load("smoke", {"bfcl.categories": ["simple"]})


def test_stage_05_table_sets_fine_tuned_beside_untrained(tmp_path):
    cfg = profile(tmp_path, k=2)
    bfcl_answers.run(cfg, backend=Oracle(cfg, first_ids(cfg).values()), log=None)
    bfcl_scores.score(cfg, log=None)
    folder = config.output_dir(cfg, "figures")
    alone = bfcl_report.write(cfg, folder)
    assert "| simple_python | 2 | 50.0 [" in alone["bfcl_md"].read_text() and "not run" in alone["bfcl_md"].read_text()
    before = untrained.settings(cfg)
    bfcl_answers.run(before, backend=Oracle(before, []), log=None)
    bfcl_scores.score(before, log=None)
    table = {r["category"]: r for r in bfcl_report.rows(cfg)}
    assert table["simple_python"]["untrained"] == 0.0 and table["simple_python"]["difference"] == 50.0
    assert table["irrelevance"]["difference"] == 0.0
    paths = bfcl_report.write(cfg, folder)
    assert paths["bfcl_png"].stat().st_size > 0 and cfg.stamp in paths["bfcl_svg"].read_text()
    assert "| +50.0 | 1 / 0 |" in paths["bfcl_md"].read_text()
    assert [r["category"] for r in tables.read_csv(paths["bfcl_csv"])][-1] == bfcl_scores.POOLED
