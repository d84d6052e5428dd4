"""lib/train/learning_curve.py: the dev split's first steps, scored during training, and its figure."""
import json

from datasets import Dataset

from lib.common import store
from lib.toolbench import formats, sample
from lib.train import learning_curve


def heldout_from_sample(tmp_path, n=6):
    sample.generate(tmp_path / "s", seed=2, train_queries=n, queries_per_group=1)
    records = json.loads((tmp_path / "s" / "train" / "toolllama_G123_dfs_train.json").read_text())
    role = {"system": "system", "user": "user", "assistant": "assistant", "function": "function"}
    prompts, answers = [], []
    for r in records:
        turns = [{"role": role[t["from"]], "content": t["value"]} for t in r["conversations"]]
        prompts.append(turns[:-1])
        answers.append(turns[-1]["content"])
    return Dataset.from_dict({"prompt": prompts, "completion": [[{"role": "assistant", "content": a}] for a in answers]}), answers


def test_dev_prompts_are_the_first_steps_with_their_functions_and_query(tmp_path):
    heldout, _ = heldout_from_sample(tmp_path)
    dev = learning_curve.dev_prompts(heldout)
    # Every held-out example gives its first step (system message and query), once per query,
    # whatever later turns its prompt holds (stage 01's "conversation" examples hold them all).
    queries = {p[1]["content"] for p in heldout["prompt"]}
    assert len(dev) == len(queries) >= 6 and all(len(d["prompt"]) == 2 for d in dev)
    for d in dev:
        assert d["functions"][-1]["name"] == "Finish" and "Begin!" not in d["query"]
        assert d["query"] and d["query"] in d["prompt"][1]["content"]


def test_measure_scores_the_reference_first_steps_as_correct_and_garbage_as_parse_errors(tmp_path):
    heldout, answers = heldout_from_sample(tmp_path)
    dev = learning_curve.dev_prompts(heldout)
    reference = {json.dumps(p): a for p, a in zip(heldout["prompt"], answers)}
    right = learning_curve.measure(lambda ps: [reference[json.dumps(p)] for p in ps], dev)
    # The training data's own first steps: a function of the prompt, its keys, the query's values
    # (a few sample conversations open with a call that fails on purpose, so not always all of them).
    assert right["parses"] == 1.0 and right["correct"] >= 0.8 and right["parse_error_rate"] == 0.0
    wrong = learning_curve.measure(lambda ps: ["I think the weather is nice"] * len(ps), dev)
    assert wrong["parses"] == 0.0 and wrong["parse_error_rate"] == 1.0 and wrong["n"] == len(dev)


def test_points_and_the_callback_write_a_resumable_curve(tmp_path):
    assert learning_curve.points(100, 4) == {20, 40, 60, 80}
    assert learning_curve.points(3, 4) <= {1, 2}
    heldout, _ = heldout_from_sample(tmp_path)
    dev = learning_curve.dev_prompts(heldout)

    class Model:
        training = True
        def train(self, mode=True):
            self.training = mode

    class State:
        is_world_process_zero, max_steps, global_step, epoch = True, 10, 0, 0.0

    path = tmp_path / "learning_curve.jsonl"
    cb = learning_curve.LearningCurve(path, lambda m, ps: ["nothing"] * len(ps), dev, 1, log=None)
    state, model = State(), Model()
    cb.on_train_begin(None, state, None, model=model)
    for step in range(1, 11):
        state.global_step = step
        cb.on_step_end(None, state, None, model=model)
    cb.on_train_end(None, state, None, model=model)
    assert [r["step"] for r in store.read_jsonl(path)] == [0, 5, 10] and model.training
    store.rewrite_jsonl(path, [r for r in store.read_jsonl(path) if r["step"] <= 5])
    assert [r["step"] for r in store.read_jsonl(path)] == [0, 5]
    png = learning_curve.plot(store.read_jsonl(path), tmp_path / "curve.png", "a stamp")
    assert png.stat().st_size > 1000
    assert learning_curve.plot([], tmp_path / "empty.png").exists()


def test_functions_parsed_from_the_prompt_are_the_functions_stage_03_lists(tmp_path):
    heldout, _ = heldout_from_sample(tmp_path)
    d = learning_curve.dev_prompts(heldout)[0]
    assert formats.system_prompt(d["functions"]).split(learning_curve.APIS_PREFIX)[1] == \
        d["prompt"][0]["content"].split(learning_curve.APIS_PREFIX)[1]


def test_side_by_side_shows_one_dev_query_before_and_after(tmp_path):
    heldout, answers = heldout_from_sample(tmp_path)
    dev = learning_curve.dev_prompts(heldout)
    reference = {json.dumps(p): a for p, a in zip(heldout["prompt"], answers)}
    before = {"step": 0, **learning_curve.measure(lambda ps: ["I think the weather is nice"] * len(ps), dev)}
    after = {"step": 30, **learning_curve.measure(lambda ps: [reference[json.dumps(p)] for p in ps], dev)}
    assert before["first_turns"] == ["I think the weather is nice"] * len(dev)
    text = learning_curve.side_by_side([after, before], dev)
    lines = text.splitlines()
    assert lines[0] == f"dev query: {dev[0]['query']}"
    assert "--- untrained (step 0): parses no" in text and "I think the weather is nice" in text
    assert "--- fine-tuned (step 30): parses yes, names_function yes" in text
    assert text.index("untrained (step 0)") < text.index("fine-tuned (step 30)")
    assert learning_curve.side_by_side([before], dev).startswith("(no learning curve")
