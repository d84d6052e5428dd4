"""Beside stage 03: the model answers BFCL's questions in ToolBench's format (issue 23, item 3).

Each question of the profile's sample (`bfcl.categories`, `bfcl.questions_per_category`,
lib/checks/bfcl_questions.py's seeded `sample`) is put to the model as a ToolBench query
(lib/checks/bfcl_prompts.py) with the backend, chat template and sampling stage 03 uses. One
assistant step is asked, except in the parallel categories, whose answer is every call before
Finish: there each call is answered with RECORDED and the model goes on, for at most
`bfcl.max_steps` steps. Nothing is executed: BFCL scores the calls, not their results.

Each answered question is one line of outputs/<profile>/bfcl_answers/<category>.jsonl, appended
as it finishes (a rerun resumes; other settings or another model set the folder aside), with the
raw step texts: stage 04 (lib/judge/bfcl_scores.py) reads them back into calls and scores them.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import time

from lib.common import config, resume, store
from lib.common.progress import Progress
from lib.common.settings import Profile
from lib.toolbench import formats
from lib.models import backends
from lib.checks import bfcl_prompts, bfcl_questions
from lib.infer import untrained

FOLDER = "bfcl_answers"
SUMMARY = "bfcl_answers_summary.json"
# The observation after a call in a parallel category. BFCL runs nothing, so it is neither a result
# nor an error; it says the call was taken, as a ToolBench tool's JSON reply does.
RECORDED = json.dumps({"error": "", "response": "Call recorded. This benchmark scores the calls "
                       "made and does not run them."})
# What the model's inference settings change in an answer (the tool settings do not apply here).
GENERATION_KEYS = ("temperature", "max_new_tokens", "batch_size", "dtype", "reuse_kv_cache", "decode_chunk")


def selected(cfg: Profile) -> dict[str, list[bfcl_questions.Question]]:
    """{category: its questions asked}: every file checked first (missing or of another version:
    BfclDataError naming it), then each category read and sampled."""
    categories = list(cfg.bfcl.categories)
    bfcl_questions.check_installed(categories)
    return {c: bfcl_questions.sample(bfcl_questions.read(c), cfg.bfcl.questions_per_category, cfg.seed)
            for c in categories}


def ask(question, max_steps: int):
    """One question as a coroutine: yields the conversation that needs the next assistant turn,
    receives its text; returns (step texts, why it ended: one_step, finish, parse_error or
    max_steps). In a parallel category a usable call is followed by RECORDED and the next step."""
    messages, texts = bfcl_prompts.messages(question), []
    steps = max_steps if bfcl_prompts.is_parallel(question.category) else 1
    for _ in range(steps):
        text = yield messages
        texts.append(text)
        step = formats.parse_step(text)
        if steps == 1:
            return texts, "one_step"
        if step.error:
            return texts, "parse_error"
        if step.action == formats.FINISH["name"]:
            return texts, "finish"
        messages = messages + [
            {"role": "assistant", "content": formats.format_step(step.thought, step.action, step.action_input)},
            {"role": "function", "content": RECORDED}]
    return texts, "max_steps"


@dataclasses.dataclass
class Asking:
    """A question in the batch: its coroutine, the conversation it waits on, what it cost."""
    question: object
    loop: object
    prompt: list
    out: object             # the appender of its category's file
    tokens: int = 0
    truncated: int = 0
    partial: list = dataclasses.field(default_factory=list)     # its turn's tokens so far (decode_chunk)


def answer_line(question, texts: list[str], ended: str, tokens: int, truncated: int) -> dict:
    return {"id": question.id, "category": question.category, "steps": texts, "ended": ended,
            "tokens_generated": tokens, "prompts_truncated": truncated}


def answer_all(work: list[tuple[list, object]], backend, batch_size: int, max_steps: int,
               progress_log=None) -> dict:
    """Ask the questions of each (questions, path) pair not yet in its path, `batch_size`
    conversations per generate call from one queue over all pairs (a backend with `advance` is
    driven a chunk at a time, so a waiting question joins as soon as any turn ends). Each line is
    appended (flushed, fsynced) as its question finishes. Returns {ran, skipped, tokens}."""
    pending, counts = collections.deque(), {"ran": 0, "skipped": 0, "tokens": 0}
    with contextlib.ExitStack() as files:
        for questions, path in work:
            done = {line["id"] for line in store.read_jsonl(path)}
            todo = [q for q in questions if q.id not in done]
            counts["skipped"] += len(questions) - len(todo)
            if todo:
                out = files.enter_context(store.JsonlAppender(path))
                pending.extend((q, out) for q in todo)
        progress = Progress("bfcl questions", counts["skipped"] + len(pending),
                            log=progress_log or (lambda *a, **k: None), start_at=counts["skipped"])
        files.callback(progress.close)
        active: list[Asking] = []
        while pending or active:
            while pending and len(active) < batch_size:
                question, out = pending.popleft()
                loop = ask(question, max_steps)
                active.append(Asking(question, loop, next(loop), out))
            active, ended = backends.advance_batch(backend, active)
            for asking, (texts, why_ended) in ended:
                asking.out.write(answer_line(asking.question, texts, why_ended, asking.tokens, asking.truncated))
                counts["ran"] += 1
                counts["tokens"] += asking.tokens
                progress.update(counts["ran"] + counts["skipped"])
    return counts


def read_answers(folder, category: str, ids) -> dict[str, dict]:
    """{question id: its answer line} of `category` for the ids asked (others a larger run left)."""
    wanted = set(ids)
    return {l["id"]: l for l in store.read_jsonl(folder / f"{category}.jsonl") if l["id"] in wanted}


@resume.one_writer("BFCL answers", lambda cfg, *_, **__: config.output_dir(cfg) / FOLDER)
def run(cfg: Profile, backend=None, log=print) -> dict | None:
    """Ask the profile's BFCL sample; writes bfcl_answers/<category>.jsonl (resumable) and
    bfcl_answers_summary.json. None (nothing written) when bfcl.questions_per_category is 0."""
    if not cfg.bfcl.enabled:
        if log:
            log("[bfcl] off (bfcl.questions_per_category: 0)")
        return None
    # BFCL's files are checked before the model loads and before the folder is touched.
    questions = selected(cfg)
    if backend is not None:
        return ask_selected(cfg, questions, backend, log)
    # A backend made here is closed here: a model server it started (inference.serve) stops with it.
    with backends.closing(backends.make_backend(cfg)) as made:
        return ask_selected(cfg, questions, made, log)


def ask_selected(cfg: Profile, questions: dict, backend, log=print) -> dict:
    """`run` once BFCL's files are read and checked."""
    generation = {k: v for k, v in config.as_dict(cfg.inference).items() if k in GENERATION_KEYS}
    folder = resume.resumable(config.output_dir(cfg) / FOLDER, {
        "model": getattr(backend, "fingerprint", type(backend).__name__), "inference": generation,
        "max_steps": cfg.bfcl.max_steps, "seed": cfg.seed, "bfcl": bfcl_questions.VERSION}, log=log)
    t0 = time.perf_counter()
    counts = answer_all([(qs, folder / f"{c}.jsonl") for c, qs in questions.items()], backend,
                        cfg.inference.batch_size, cfg.bfcl.max_steps, progress_log=log)
    wall = time.perf_counter() - t0
    categories = {}
    for category, qs in questions.items():
        lines = list(read_answers(folder, category, [q.id for q in qs]).values())
        categories[category] = {
            "questions": len(qs), "answered": len(lines),
            "steps": sum(len(l["steps"]) for l in lines),
            "tokens_generated": sum(l["tokens_generated"] for l in lines),
            "prompts_truncated": sum(l["prompts_truncated"] for l in lines)}
    summary = {"bfcl_version": bfcl_questions.VERSION, "questions_per_category": cfg.bfcl.questions_per_category,
               "max_steps": cfg.bfcl.max_steps, "model": getattr(backend, "fingerprint", None),
               "categories": categories, "ran_now": counts["ran"], "skipped_done": counts["skipped"],
               "wall_time_s": round(wall, 1),
               "s_per_question": round(wall / counts["ran"], 2) if counts["ran"] else None,
               "stamp": cfg.stamp}
    (config.output_dir(cfg) / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if log:
        asked = sum(c["questions"] for c in categories.values())
        log(f"[bfcl] {asked} questions in {len(categories)} categories: {counts['ran']} asked now in "
            f"{wall:.0f} s, {counts['skipped']} answered before")
    return summary


def run_untrained(cfg: Profile, log=print) -> dict | None:
    """The same questions for the model before training (lib/infer/untrained.py), when enabled."""
    if not untrained.enabled(cfg) or not cfg.bfcl.enabled:
        return None
    return run(untrained.settings(cfg), backend=backends.untrained_backend(cfg), log=log)


def summary_table(summary: dict):
    """bfcl_answers_summary.json's categories as a DataFrame, one row per category."""
    import pandas as pd     # for the notebook's table only

    return pd.DataFrame(summary["categories"]).T
