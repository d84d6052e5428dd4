"""The inference stage: a model answers ToolBench test queries by calling tools.

ReAct ("CoT@1") and DFSDT run as coroutines over one query each (they yield a conversation that
needs the next assistant turn and receive the generated text), so `run_group` can batch many
queries into one generate call. Each finished query is one line of
outputs/<profile>/trajectories/<group>.jsonl, appended as it finishes, so a rerun resumes; `run` is
the stage. The formats (prompts, the step parser, converted answers) are lib/toolbench/formats.py's.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import time

from lib.common import config, resume, store
from lib.common.settings import Inference, Profile
from lib.toolbench import apis, environments, observations, trajectories
from lib.models import backends
from lib.common.progress import Progress
from lib.toolbench.formats import (TOOLEVAL_METHOD, Query, format_step, load_queries, parse_step,
                           tooleval_answer)

# ---------------------------------------------------------------------------------------------
# One query: taking a step, ReAct and DFSDT as coroutines (they yield a conversation that needs
# the next assistant turn and receive the generated text), so a driver can batch many queries.
# ---------------------------------------------------------------------------------------------

FINISH_OK = json.dumps({"response": "successfully giving the final answer."})
GIVE_UP = json.dumps({"response": "chose to give up and restart"})


def _truncate(text: str, limit: int | None) -> str:
    return text if not limit or len(text) <= limit else text[:limit] + "..."


def take_step(query: Query, text: str, env, max_observation_length: int | None = None) -> dict:
    """Parse one generated turn and act on it. Returns the step record:
    {thought, action, action_input, observation, parse_error, finish, final_answer, assistant}
    where finish is None, "give_answer" or "give_up"; `assistant` is the turn as the model sees it."""
    thought, action, action_input, error = parse_step(text, {fn["name"] for fn in query.functions})
    step = {"thought": thought, "action": action, "action_input": action_input, "observation": "",
            "parse_error": error, "finish": None, "final_answer": ""}
    step["assistant"] = format_step(thought, action, action_input) if action else "\n" + text.strip()
    if error is not None:
        step["observation"] = json.dumps({"error": error, "response": ""})
        return step
    args = json.loads(action_input, strict=False) if action_input else {}
    if action == "Finish":
        kind = args.get("return_type")
        if kind == "give_up_and_restart":
            step["finish"], step["observation"] = "give_up", GIVE_UP
        elif kind == "give_answer" and "final_answer" in args:
            step["finish"], step["observation"] = "give_answer", FINISH_OK
            step["final_answer"] = str(args["final_answer"])
        else:
            problem = ("must have \"final_answer\"" if kind == "give_answer"
                       else "must have \"return_type\" give_answer or give_up_and_restart")
            step["parse_error"] = f"Finish {problem}"
            step["observation"] = json.dumps({"error": problem, "response": ""})
        return step
    api = query.apis[action]
    text = env.call(api["category_name"], api["tool_name"], api["api_name"], args)
    step["observation"] = _truncate(text, max_observation_length)
    # lib.toolbench's environments (tool_env.ToolEnv) say whether the call failed in transport; other envs: by the error field.
    step["tool_outcome"] = getattr(env, "last_outcome", None) or ("api_error" if observation_error(step) else "ok")
    query.tool_calls.append((step["tool_outcome"], text))
    return step


def step_turns(step: dict) -> list[dict]:
    """What a step adds to the conversation: the assistant turn as ToolBench writes it (the parsed
    step re-formatted, or the raw text when nothing parsed) and the observation as a function turn.
    ReAct and DFSDT build the next prompt as `messages + step_turns(step)`."""
    return [{"role": "assistant", "content": step["assistant"]},
            {"role": "function", "content": step["observation"]}]


def _public(step: dict) -> dict:
    return {**{k: step[k] for k in ("thought", "action", "action_input", "observation", "parse_error")},
            "tool_outcome": step.get("tool_outcome")}


def observation_error(step: dict) -> bool:
    """A step whose observation reports an error (parse error, unknown API, failed call)."""
    return bool(step["parse_error"]) or observations.reports_error(step["observation"])


def react(query: Query, env, max_iterations: int, max_observation_length=None):
    """ReAct ("CoT@1"): one chain, ending at Finish or after max_iterations turns."""
    messages, steps = query.start(), []
    for _ in range(max_iterations):
        text = yield messages
        step = take_step(query, text, env, max_observation_length)
        steps.append(step)
        messages = messages + step_turns(step)
        if step["finish"]:
            break
    finish = steps[-1]["finish"] if steps and steps[-1]["finish"] else "max_iterations"
    return {"steps": steps, "finish_type": finish, "tree": None,
            "final_answer": steps[-1]["final_answer"] if steps else ""}


def dfsdt(query: Query, env, max_iterations: int, width: int, max_expansions: int,
          max_observation_length=None):
    """DFSDT as in ToolLLM: depth-first over a tree of steps. Each node gets up to `width` children,
    sampled one at a time; a child that gives up, reports an error (parse error or an error
    observation) or reaches depth `max_iterations` is a dead end and the search backtracks to try a
    sibling; the search stops at the first give_answer or after `max_expansions` generations.
    The returned chain is the path to the answer, else the last path explored."""
    root = {"step": None, "children": [], "messages": query.start(), "path": []}
    state = {"expansions": 0, "last": root}

    def expand(node):
        for _ in range(width):
            if state["expansions"] >= max_expansions:
                return None
            text = yield node["messages"]
            state["expansions"] += 1
            step = take_step(query, text, env, max_observation_length)
            child = {"step": step, "children": [], "messages": node["messages"] + step_turns(step),
                     "path": node["path"] + [step]}
            node["children"].append(child)
            state["last"] = child
            if step["finish"] == "give_answer":
                return child
            if step["finish"] or observation_error(step) or len(child["path"]) >= max_iterations:
                continue
            found = yield from expand(child)
            if found is not None:
                return found
        return None

    found = yield from expand(root)
    leaf = found or state["last"]
    steps = leaf["path"]
    if found:
        finish = "give_answer"
    elif steps and steps[-1]["finish"] == "give_up":
        finish = "give_up"
    else:
        finish = "max_iterations"

    def tree(node):
        return {"step": _public(node["step"]) if node["step"] else None,
                "children": [tree(c) for c in node["children"]]}

    return {"steps": steps, "finish_type": finish, "tree": tree(root),
            "final_answer": found["step"]["final_answer"] if found else "", "expansions": state["expansions"]}


# ---------------------------------------------------------------------------------------------
# Trajectory files: append-only JSONL, resumable.
# ---------------------------------------------------------------------------------------------

def trajectory_line(query: Query, method: str, result: dict, tokens: int, truncated: int) -> dict:
    steps = result["steps"]
    return {
        "query_id": query.query_id, "group": query.group, "query": query.text, "method": method,
        "available_tools": query.functions, "finish_type": result["finish_type"],
        "final_answer": result["final_answer"], "total_steps": len(steps),
        "parse_errors": sum(1 for s in _all_steps(result) if s["parse_error"]),
        "tokens_generated": tokens, "prompts_truncated": truncated, **tool_counts(_all_steps(result)),
        "steps": [_public(s) for s in steps], "tree": result["tree"],
        "answer": tooleval_answer(query.text, TOOLEVAL_METHOD[method], steps, result["finish_type"]),
    }


def tool_counts(steps) -> dict:
    """Tool calls among the steps and how many met an API error or a transport error."""
    outcomes = [s.get("tool_outcome") for s in steps if s.get("tool_outcome")]
    return {"tool_calls": len(outcomes), "tool_api_errors": outcomes.count("api_error"),
            "tool_transport_errors": outcomes.count("transport_error")}


def transport_failed(line: dict) -> bool:
    """Every tool call of the query failed in transport: its trajectory measures the environment,
    not the model, so it is not kept (not marked done) and a rerun redoes it."""
    return line.get("tool_calls", 0) > 0 and line["tool_transport_errors"] == line["tool_calls"]


MIN_TOOL_CALLS = 20     # a group's calls before its transport-error share may stop the stage


def stop_on_transport_errors(queries: list, share, env, path, kept: int) -> dict:
    """This run's tool counts over `queries` (those started); raise lib.toolbench.environments.EnvUnavailable when
    more than `share` of at least MIN_TOOL_CALLS calls failed in transport (None: never)."""
    calls = [c for q in queries for c in q.tool_calls]
    counts = tool_counts({"tool_outcome": outcome} for outcome, _ in calls)
    failed = counts["tool_transport_errors"]
    if share is None or len(calls) < MIN_TOOL_CALLS or failed <= share * len(calls):
        return counts
    # The environment's own account of the last failure (the observation holds ToolBench's words).
    last = getattr(env, "last_problem", None) or next(
        json.loads(t).get("error") for o, t in reversed(calls) if o == "transport_error")
    where = getattr(env, "url", None) or getattr(env, "name", "the tool environment")
    raise environments.EnvUnavailable(
        f"{queries[0].group}: {failed} of {len(calls)} tool calls failed in transport at {where} "
        f"(more than inference.max_transport_error_share {share:g}; last: {last}). Stopped: the queries "
        f"finished before ({kept} in this run) are kept in {path}; once the tool environment answers, "
        "a rerun redoes the rest.")


def probe_api(cfg: Profile) -> tuple[str, str, str]:
    """The API a tool-environment probe calls: the first test query's first API (a call the virtual
    server has cached), else a placeholder."""
    try:
        group = (cfg.inference.groups or [])[0]
        api = load_queries(config.path(cfg, cfg.data.test_dir) / f"{group}.json")[0]["api_list"][0]
        return api["category_name"], api["tool_name"], api["api_name"]
    except (IndexError, KeyError, OSError, ValueError):
        return "Data", "preflight", "probe"


def _all_steps(result: dict):
    if result["tree"] is None:
        return result["steps"]
    out, todo = [], [result["tree"]]
    while todo:
        node = todo.pop()
        if node["step"]:
            out.append(node["step"])
        todo.extend(node["children"])
    return out


@dataclasses.dataclass
class Running:
    """A query in the batch: its loop (a coroutine), the conversation it waits on, what it cost."""
    query: Query
    loop: object
    prompt: list
    tokens: int = 0
    truncated: int = 0
    work: int = 0           # which (queries, path) pair of run_groups it belongs to
    partial: list = dataclasses.field(default_factory=list)    # its turn's tokens so far (decode_chunk)


def run_group(queries: list[Query], backend, env, path, how: Inference = Inference(), log=None) -> dict:
    """`run_groups` for one file of queries; returns its counters."""
    return run_groups([(queries, path)], backend, env, how, log)[0]


def run_groups(work: list[tuple[list[Query], object]], backend, env, how: Inference = Inference(), log=None,
               progress_log=None) -> list[dict]:
    """Run the queries of each (queries, path) pair not yet in its path, `how.batch_size` conversations
    per generate call, drawn from one queue over all pairs, so a batch stays full while queries
    finish (a group's last, longest queries share the batch with the next group's first; with the
    HF backend's decode_chunk, while turns end). Each
    query's line is appended (flushed, fsynced) to its path as soon as it finishes, unless all its
    tool calls failed in transport (`transport_failed`). Stops (lib.toolbench.environments.EnvUnavailable) when more
    than `how.max_transport_error_share` of a path's calls fail in transport, and
    (lib.models.backends.EndpointUnavailable) when the model's endpoint stops answering; the queries
    in the batch then are not kept, and a rerun redoes them. `how` is the profile's
    inference section (method, max_iterations, dfsdt_width, ...). Returns each pair's
    counters, in order; `wall_s` is from its first query's start to its last one's end."""
    batch = Batch(work, env, how, log, progress_log)
    with contextlib.ExitStack() as files:
        files.callback(batch.progress.close)
        batch.appenders = [files.enter_context(store.JsonlAppender(path)) for _, path in work]
        while batch.pending or batch.active:
            batch.fill()
            try:
                batch.generate(backend)
            except backends.EndpointUnavailable as err:
                kept = sum(c["ran"] for c in batch.counters)
                paths = ", ".join(str(path) for _, path in work)
                raise backends.EndpointUnavailable(
                    f"{err}\nStopped: the queries finished before ({kept} in this run) are kept in {paths}; "
                    "once the model answers, a rerun continues from them.") from err
            batch.stop_on_transport_errors()
    return batch.counted()


class Batch:
    """run_groups' queue: the queries waiting over all pairs, those in the batch, each pair's
    counters, the span of its queries and the file its lines are appended to."""

    def __init__(self, work: list[tuple[list[Query], object]], env, how: Inference, log, progress_log):
        self.work, self.env, self.how, self.log = work, env, how, log
        self.pending, self.counters, self.started = collections.deque(), [], []
        for k, (queries, path) in enumerate(work):
            done = {str(l["query_id"]) for l in trajectories.read(path, partial=True)}
            todo = [q for q in queries if str(q.query_id) not in done]
            self.pending.extend((k, q) for q in todo)
            self.counters.append({"skipped": len(queries) - len(todo), "ran": 0, "tokens": 0, "truncated": 0,
                                  "generate_calls": 0, "wall_s": 0.0, "transport_failed": 0,
                                  "transport_failed_calls": 0})
            self.started.append([])
        self.active: list[Running] = []
        self.appenders = []
        self.t0 = time.perf_counter()
        self.spans = [[None, None] for _ in work]
        total = sum(len(queries) for queries, _ in work)
        self.progress = Progress("03 queries", total, log=progress_log or (lambda *a, **k: None),
                                 start_at=sum(c["skipped"] for c in self.counters))

    def fill(self) -> None:
        """Start waiting queries until the batch is full."""
        how = self.how
        while self.pending and len(self.active) < how.batch_size:
            k, q = self.pending.popleft()
            q.tool_calls = []
            self.started[k].append(q)
            self.spans[k][0] = self.spans[k][0] or time.perf_counter()
            co = (react(q, self.env, how.max_iterations, how.max_observation_length) if how.method == "react"
                  else dfsdt(q, self.env, how.max_iterations, how.dfsdt_width, how.dfsdt_max_expansions,
                             how.max_observation_length))
            self.active.append(Running(q, co, next(co), work=k))

    def generate(self, backend) -> None:
        """One generate call for the batch; each turn goes back to its query's loop."""
        going, ended = backends.advance_batch(backend, self.active)
        for k in {a.work for a in self.active}:
            self.counters[k]["generate_calls"] += 1
        for entry, result in ended:
            self.finish(entry, result)
        self.active = going

    def finish(self, entry: Running, result: dict) -> None:
        """A finished query: its line appended, unless all its tool calls failed in transport."""
        mine = self.counters[entry.work]
        line = trajectory_line(entry.query, self.how.method, result, entry.tokens, entry.truncated)
        mine["tokens"] += entry.tokens
        mine["truncated"] += entry.truncated
        self.spans[entry.work][1] = time.perf_counter()
        if transport_failed(line):
            mine["transport_failed"] += 1
            mine["transport_failed_calls"] += line["tool_calls"]
            (self.log or self.progress.log)(f"{line['group']} {line['query_id']}: not kept, all "
                                            f"{line['tool_calls']} tool calls failed in transport; "
                                            "a rerun redoes it")
        else:
            self.appenders[entry.work].write(line)
            mine["ran"] += 1
            if self.log:
                self.log(f"{entry.query.group} {entry.query.query_id}: {result['finish_type']}")
        tokens = sum(c["tokens"] for c in self.counters)
        finished = sum(c["skipped"] + c["ran"] + c["transport_failed"] for c in self.counters)
        self.progress.update(finished, f"{tokens / max(time.perf_counter() - self.t0, 1e-9):,.0f} tokens/s")

    def stop_on_transport_errors(self) -> None:
        for k, (_, path) in enumerate(self.work):
            self.counters[k].update(stop_on_transport_errors(self.started[k], self.how.max_transport_error_share,
                                                             self.env, path, self.counters[k]["ran"]))

    def counted(self) -> list[dict]:
        """Each pair's counters, with its wall time."""
        for c, (first, last) in zip(self.counters, self.spans):
            c["wall_s"] = (last - first) if first and last else 0.0
        return self.counters


def summarize(lines: list[dict], counters: dict | None = None) -> dict:
    """Per-group figures from the trajectory lines (so a resumed run counts every query)."""
    counters = counters or {}
    tokens = sum(l["tokens_generated"] for l in lines)
    wall = counters.get("wall_s", 0.0)
    return {
        "queries": len(lines),
        "finished_with_answer": sum(l["finish_type"] == "give_answer" for l in lines),
        "gave_up": sum(l["finish_type"] == "give_up" for l in lines),
        "hit_limit": sum(l["finish_type"] == "max_iterations" for l in lines),
        "parse_errors": sum(l["parse_errors"] for l in lines),
        "steps": sum(l["total_steps"] for l in lines),
        "tokens_generated": tokens,
        "prompts_truncated": sum(l.get("prompts_truncated", 0) for l in lines),
        # the kept queries' calls, and those of this run's queries not kept (all failed in transport)
        "tool_calls": sum(l.get("tool_calls", 0) for l in lines) + counters.get("transport_failed_calls", 0),
        "tool_api_errors": sum(l.get("tool_api_errors", 0) for l in lines),
        "tool_transport_errors": sum(l.get("tool_transport_errors", 0) for l in lines)
                                 + counters.get("transport_failed_calls", 0),
        "transport_failed": counters.get("transport_failed", 0),
        "ran_now": counters.get("ran", 0), "skipped_done": counters.get("skipped", 0),
        "wall_time_s": round(wall, 3),
        "tokens_per_s": round(counters.get("tokens", 0) / wall, 1) if wall > 0 else None,
    }


def tool_docs(cfg: Profile) -> dict:
    """{tool: its description} from data.toolenv_dir/tools, for the system prompts of the queries."""
    return {k: d.get("tool_description", "")
            for k, d in apis.load_tool_docs(config.path(cfg, cfg.data.toolenv_dir) / "tools").items()}


def load_test_queries(cfg: Profile) -> dict[str, list[Query]]:
    """{group: its queries} for inference.groups, each test file read and checked and cut to
    inference.max_queries_per_group: the queries stage 03 runs, with the prompts it gives them."""
    test_dir = config.path(cfg, cfg.data.test_dir)
    limit = cfg.inference.max_queries_per_group or None
    # Every group's file is read and checked before any query is made: a bad one stops at once.
    records = {g: load_queries(test_dir / f"{g}.json")[:limit] for g in cfg.inference.groups}
    docs = tool_docs(cfg)
    return {g: [Query(r, g, docs) for r in rs] for g, rs in records.items()}


# Keys of the inference section no kept trajectory depends on: raising a time-out or the transport stop
# rule after a failed run resumes it, and how the server is started is in the served backend's fingerprint.
NOT_IN_RUN_KEY = ("groups", "max_queries_per_group", "tool_timeout_s", "max_transport_error_share", "openai_timeout_s",
                  "serve", "serve_args", "serve_timeout_s")


@resume.one_writer("stage 03 inference", lambda cfg, *_, **__: config.output_dir(cfg) / "trajectories")
def run(cfg: Profile, backend=None, env=None, log=print) -> dict:
    """Stage 03: every configured group's queries through the model and the tool environment.

    Writes outputs/<profile>/trajectories/<group>.jsonl (resumable) and inference_summary.json.
    One stage-03 run at a time per output folder: a second fails at once (lib.common.resume.one_writer)
    instead of writing every query twice. A backend made here (none given) is closed here, so a model
    server it started (inference.serve) stops with the stage, however the stage ends."""
    # Every group's test file is read and checked first: a bad one stops the stage before anything.
    selected = load_test_queries(cfg)
    # The tool environment next: one that does not answer stops the stage before the model loads,
    # before any query and before the trajectories folder is touched.
    env = env or environments.make_env(cfg)
    found = environments.check_env(env, probe_api(cfg))
    if log:
        log(f"[03] tool environment: {found}")
    if backend is not None:
        return run_selected(cfg, selected, backend, env, log)
    with backends.closing(backends.make_backend(cfg)) as made:
        return run_selected(cfg, selected, made, env, log)


def run_selected(cfg: Profile, selected: dict[str, list[Query]], backend, env, log=print) -> dict:
    """`run` once its queries are read and its tool environment answers."""
    inference_cfg = cfg.inference
    test_dir = config.path(cfg, cfg.data.test_dir)
    # Resume only what this model, these settings and these queries produced.
    settings = {k: v for k, v in config.as_dict(inference_cfg).items() if k not in NOT_IN_RUN_KEY}
    out = resume.resumable(config.output_dir(cfg) / "trajectories", {
        "model": getattr(backend, "fingerprint", type(backend).__name__), "inference": settings,
        "seed": cfg.seed, "queries": resume.file_digest(test_dir)}, log=log)
    groups, dropped, kept = {}, {"transport_failed": 0, "transport_failed_calls": 0}, []
    work = [(queries, out / f"{group}.jsonl") for group, queries in selected.items()]
    t0 = time.perf_counter()
    results = run_groups(work, backend, env, inference_cfg, progress_log=log)
    wall = time.perf_counter() - t0
    for (group, queries), (_, path), counters in zip(selected.items(), work, results):
        for key in dropped:
            dropped[key] += counters[key]
        # Only this run's selection counts (an earlier, larger run may have left more in the file).
        wanted = {str(q.query_id) for q in queries}
        lines = [l for l in trajectories.read(path, partial=True) if str(l["query_id"]) in wanted]
        kept += lines
        groups[group] = summarize(lines, counters)
        if log:
            g = groups[group]
            log(f"[03] {group}: {g['queries']} queries, {g['finished_with_answer']} answered, "
                f"{g['ran_now']} run now in {g['wall_time_s']} s; {g['tool_calls']} tool calls, "
                f"{g['tool_api_errors']} API errors, {g['tool_transport_errors']} transport errors"
                + (f"; {g['transport_failed']} queries not kept (all their calls failed in transport: "
                   "a rerun redoes them)" if g["transport_failed"] else ""))
    # The groups share batches, so their spans overlap: the stage's own wall time is the total's.
    total = summarize(kept, {**dropped, "tokens": sum(c["tokens"] for c in results), "wall_s": wall})
    total["ran_now"] = sum(g["ran_now"] for g in groups.values())
    total["skipped_done"] = sum(g["skipped_done"] for g in groups.values())
    summary = {"method": inference_cfg.method, "backend": inference_cfg.backend, "tool_env": inference_cfg.tool_env,
               "temperature": inference_cfg.temperature, "max_iterations": inference_cfg.max_iterations,
               "batch_size": inference_cfg.batch_size, "max_new_tokens": inference_cfg.max_new_tokens,
               "groups": groups, "total": total, "stamp": cfg.stamp}
    path = config.path(cfg, cfg.output_dir) / "inference_summary.json"
    path.write_text(json.dumps(summary, indent=2))
    return summary


# ---------------------------------------------------------------------------------------------
# For the notebook: one trajectory as text, the summary as a table.
# ---------------------------------------------------------------------------------------------

def render_trajectory(line: dict, width: int = 300) -> str:
    """A trajectory line as readable text: the query, then Thought / Action / Observation per step."""
    def cut(text):
        text = str(text)
        return text if len(text) <= width else text[:width] + f" ... [{len(text) - width} more characters]"

    out = [f"[{line['group']} / query {line['query_id']} / {line['method']}] {line['query']}",
           f"tools: {', '.join(f['name'] for f in line['available_tools'])}", ""]
    for k, step in enumerate(line["steps"], 1):
        out.append(f"step {k}  Thought: {cut(step['thought'])}")
        out.append(f"        Action: {step['action'] or '(none)'}  Action Input: {cut(step['action_input'])}")
        if step["parse_error"]:
            out.append(f"        parse error: {step['parse_error']}")
        out.append(f"        Observation: {cut(step['observation'])}")
    out.append("")
    out.append(f"finish: {line['finish_type']}; final answer: {cut(line['final_answer']) or '(none)'}; "
               f"{line['tokens_generated']} tokens generated, {line['parse_errors']} parse errors")
    return "\n".join(out)


def _stage_lines(cfg: Profile, groups) -> list[dict]:
    out = config.path(cfg, cfg.output_dir) / "trajectories"
    return [l for g in groups for l in trajectories.read(out / f"{g}.jsonl", partial=True)]


def trajectory(cfg: Profile, query: Query) -> dict | None:
    """The stage's trajectory line for this query (None when it has not run it)."""
    return next((l for l in _stage_lines(cfg, [query.group]) if str(l["query_id"]) == str(query.query_id)), None)


def pick_trajectory(cfg: Profile) -> dict | None:
    """The trajectory the notebook shows: the longest answered one, else the longest of all."""
    lines = _stage_lines(cfg, cfg.inference.groups)
    if not lines:
        return None
    return max(lines, key=lambda l: (l["finish_type"] == "give_answer", l["total_steps"]))


SUMMARY_COLUMNS = ["queries", "finished_with_answer", "gave_up", "hit_limit", "parse_errors", "steps",
                   "tokens_generated", "wall_time_s", "tokens_per_s", "prompts_truncated", "tool_calls",
                   "tool_api_errors", "tool_transport_errors", "transport_failed"]


def summary_table(summary: dict):
    """inference_summary.json as a DataFrame, one row per group and a total row."""
    import pandas as pd     # for the notebook's table only

    rows = {**summary["groups"], "total": summary["total"]}
    return pd.DataFrame([{c: rows[g].get(c) for c in SUMMARY_COLUMNS} for g in rows], index=list(rows))
