"""Stage 02's learning curve: first-step accuracy and parse-error rate on a fixed dev split, during training.

At format_check.curve_points steps (plus before the first and after the last) the model completes
the held-out examples' first steps greedily, scored by lib/checks/first_step.py against the functions
each prompt lists, into learning_curve.jsonl and figures/learning_curve.png (docs/formats.md).
"""
from __future__ import annotations

import ast
import time
from pathlib import Path

from transformers import TrainerCallback

from lib.common import plots, progress, store
from lib.checks import first_step
from lib.toolbench.formats import APIS_PREFIX     # the sentence before the function list of a system prompt


def dev_prompts(heldout) -> list[dict]:
    """[{prompt, functions, query}]: the first step of each held-out example (its system message and
    query), one per distinct query."""
    out, seen = [], set()
    for prompt in heldout["prompt"]:
        prompt = prompt[:2]
        if len(prompt) != 2 or prompt[0]["role"] != "system" or prompt[1]["role"] != "user":
            continue
        if prompt[1]["content"] in seen:
            continue
        seen.add(prompt[1]["content"])
        system = prompt[0]["content"]
        if APIS_PREFIX not in system:
            continue
        try:
            functions = ast.literal_eval(system.rsplit(APIS_PREFIX, 1)[1])
        except (ValueError, SyntaxError):
            continue          # a function list that is not a Python literal: not scorable
        query = prompt[1]["content"].strip().removesuffix("Begin!").strip()
        out.append({"prompt": prompt, "functions": functions, "query": query})
    return out


def measure(generate, dev: list[dict]) -> dict:
    """First turns on the dev prompts (`generate`: prompts -> texts), scored with first_step's
    criteria: {n, parses, names_function, has_required, values_from_query, correct, parse_error_rate,
    first_turns (the texts, in dev order)}."""
    texts = generate([d["prompt"] for d in dev])
    checks = [first_step.check_against(t, d["functions"], d["query"]) for t, d in zip(texts, dev)]
    rates = first_step.rates(checks)
    rates["parse_error_rate"] = round(1 - rates["parses"], 4) if checks else None
    rates["first_turns"] = list(texts)
    return rates


def side_by_side(records: list[dict], dev: list[dict], index: int = 0) -> str:
    """One dev query's first turn before training (step 0) and at the last point measured, with
    first_step's verdict on each: what training changed, on a query it never trained on."""
    records = sorted((r for r in records if r.get("first_turns")), key=lambda r: r["step"])
    if len(records) < 2 or index >= len(dev):
        return "(no learning curve with first turns: format_check.heldout or curve_points is 0)"
    d = dev[index]
    out = [f"dev query: {d['query']}", f"its functions: {', '.join(f['name'] for f in d['functions'])}"]
    for label, record in (("untrained (step 0)", records[0]), (f"fine-tuned (step {records[-1]['step']})", records[-1])):
        text = record["first_turns"][index]
        check = first_step.check_against(text, d["functions"], d["query"])
        verdict = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in check.items() if isinstance(v, bool))
        out += ["", f"--- {label}: {verdict}", text.strip() or "(nothing)"]
    return "\n".join(out)


def points(max_steps: int, count: int) -> set[int]:
    """`count` evenly spaced optimizer steps inside (0, max_steps); the last step is measured apart."""
    return {round(max_steps * (k + 1) / (count + 1)) for k in range(count)} - {0, max_steps}


class LearningCurve(TrainerCallback):
    """Measures the dev split at step 0 (a fresh run only), at `points`, and at the end."""

    def __init__(self, path, generate, dev: list[dict], count: int, log=print):
        """`generate(model, prompts) -> texts` makes the completions (stage 02's greedy decoder)."""
        self.path, self.generate, self.dev, self.count = Path(path), generate, dev, count
        # Printed during training, under stage 02's progress line, not glued to its end.
        self.log = progress.say if log is print else log
        self.todo: set[int] = set()

    def _measure(self, model, state) -> None:
        if not state.is_world_process_zero:
            return
        t0, was_training = time.time(), model.training
        rates = measure(lambda prompts: self.generate(model, prompts), self.dev)
        model.train(was_training)
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **rates,
                  "seconds": round(time.time() - t0, 1)}
        store.append_jsonl(self.path, record)
        if self.log:
            self.log(f"[02 dev] step {state.global_step}: first step parses {rates['parses']:.2f}, "
                     f"correct {rates['correct']:.2f} (n={rates['n']})")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.todo = points(state.max_steps, self.count)
        done = {r["step"] for r in store.read_jsonl(self.path)}
        if state.global_step == 0 and 0 not in done:
            self._measure(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.todo:
            self.todo.discard(state.global_step)
            self._measure(model, state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.global_step not in {r["step"] for r in store.read_jsonl(self.path)}:
            self._measure(model, state)


def plot(records: list[dict], png, stamp: str | None = None) -> Path:
    """First-step accuracy and parse-error rate on the dev split against optimizer step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = sorted(records, key=lambda r: r["step"])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if records:
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["correct"] for r in records], marker="o", label="first step correct")
        ax.plot(steps, [r["parses"] for r in records], marker=".", ls=":", label="first step parses")
        ax.plot(steps, [r["parse_error_rate"] for r in records], marker="x", ls="--",
                label="parse-error rate")
        ax.legend(fontsize=8, loc="center right")
        ax.set_title(f"dev split: {records[-1]['n']} held-out first steps (not test queries)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no dev split (format_check.heldout is 0\nor format_check.curve_points is 0)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="optimizer step", ylabel="share of dev first steps", ylim=(-0.03, 1.03))
    fig.tight_layout(rect=(0, 0, 1, 0.9) if stamp else (0, 0, 1, 1))
    plots.stamp_figure(fig, stamp, size=18)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)
