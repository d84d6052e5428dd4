"""Released answers (other systems' runs, as ToolBench and StableToolBench publish them) read into
stage 04's trajectories, so that the same judge, cache, votes and aggregations judge them as ours.

Two forms (docs/formats.md): ToolEval's converted-answer files and raw answer folders, converted as
ToolEval's convert_to_answer_format.py does (its random choice seeded by the query id). Converted
files cut tool messages to 100 characters; the trajectory then says so (`not_available`). Pure
reading, no judge.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from lib.toolbench import formats, tooleval

# The checks that need a call's arguments or response, unavailable from cut messages.
NEEDS_FULL_MESSAGES = ("valid_inputs", "successful_calls", "answer_grounded", "off_query_calls")
ANSWER_FILE = re.compile(r"^(?P<qid>[^_]+)_(?P<method>.+)\.json$")


class ReleasedFormatError(ValueError):
    """A released answer that cannot be read; names the file, the query id and the field."""


def _bad(where, qid, field, why) -> ReleasedFormatError:
    return ReleasedFormatError(f"{where}, query_id {qid!r}: field '{field}' {why}")


# --------------------------------------------------------------------------------------------
# A converted answer -> a trajectory
# --------------------------------------------------------------------------------------------
def _tool_message(message, where, qid, depth) -> tuple[dict, bool]:
    """(the call {name, arguments, response}, whether it was cut). A cut message is the str() of
    the dict, first 100 characters: the name is read from it as ToolEval's hallucination check does."""
    if isinstance(message, dict):
        for field in ("name", "arguments", "response"):
            if field not in message:
                raise _bad(where, qid, f"answer_details[{depth}].message.{field}", "is missing")
        return message, False
    if isinstance(message, str):
        name = re.findall(r"'name':\s*'(.*?)'", message, re.DOTALL)
        if not name:
            raise _bad(where, qid, f"answer_details[{depth}].message", "names no function")
        return {"name": name[0], "arguments": "", "response": ""}, True
    raise _bad(where, qid, f"answer_details[{depth}].message", f"has type {type(message).__name__}")


def _finish(final_answer: str) -> tuple[str, str]:
    """(finish_type, answer text) from Finish's arguments as the converted answer keeps them."""
    args = tooleval.json_object(final_answer)
    if args is not None:
        return str(args.get("return_type", "")), str(args.get("final_answer", ""))
    if "give_up_and_restart" in final_answer:
        return "give_up_and_restart", ""
    return ("give_answer" if final_answer.strip() else ""), final_answer


def trajectory(qid, record, where: str, group: str, name: str) -> dict:
    """Stage 04's trajectory (lib/judge/judgments.py's fields) of one converted answer; `answer` keeps
    the converted answer itself, which is what ToolEval's prompts show the judge."""
    if not isinstance(record, dict):
        raise _bad(where, qid, "<record>", "is not an object")
    for field, kind in (("query", str), ("available_tools", list), ("answer", dict)):
        if not isinstance(record.get(field), kind):
            raise _bad(where, qid, field, "is missing" if field not in record
                       else f"has type {type(record[field]).__name__}")
    answer = record["answer"]
    for field, kind in (("final_answer", str), ("answer_details", list)):
        if not isinstance(answer.get(field), kind):
            raise _bad(where, qid, f"answer.{field}", "is missing" if field not in answer
                       else f"has type {type(answer[field]).__name__}")
    steps, cut, thought, depth = [], False, "", 0
    nodes = answer["answer_details"]
    while nodes:
        node = nodes[0]
        if not isinstance(node, dict) or "role" not in node:
            raise _bad(where, qid, f"answer_details[{depth}]", "is not a {role, message, next} node")
        if node["role"] == "tool":
            call, was_cut = _tool_message(node.get("message"), where, qid, depth)
            cut |= was_cut
            steps.append({"thought": thought, "action": call["name"],
                          "action_input": str(call["arguments"]), "observation": str(call["response"])})
            thought = ""
        elif node["role"] == "assistant":
            thought = str(node.get("message") or "")
        nodes, depth = node.get("next") or [], depth + 1
    finish_type, text = _finish(answer["final_answer"])
    return {"query_id": qid, "query": record["query"], "group": group, "method": name,
            "finish_type": finish_type, "final_answer": text, "steps": steps,
            "available_tools": record["available_tools"], "answer": answer, "parse_errors": 0,
            "released": {"name": name, "source": where, "method": answer.get("method")},
            "not_available": list(NEEDS_FULL_MESSAGES) if cut else []}


def read_converted(path: Path, group: str, name: str) -> list[dict]:
    """Every answer of one converted-answer file, in file order."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReleasedFormatError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ReleasedFormatError(f"{path}: expected ToolEval's converted answers, an object "
                                  f"{{query_id: {{query, available_tools, answer}}}}, got a "
                                  f"{type(data).__name__}")
    return [trajectory(qid, record, str(path), group, name) for qid, record in data.items()]


# --------------------------------------------------------------------------------------------
# A raw answer file -> a converted answer (ToolEval's convert_to_answer_format.py)
# --------------------------------------------------------------------------------------------
def _from_messages(conversation: list, where, qid) -> list[tuple[str, object]]:
    nodes, index = [], 2
    while index < len(conversation):
        message = conversation[index]
        if not isinstance(message, dict) or "role" not in message:
            raise _bad(where, qid, f"train_messages[-1][{index}]", "is not a message")
        if message["role"] == "assistant":
            call = message.get("function_call")
            if call:
                following = conversation[index + 1] if index + 1 < len(conversation) else {}
                nodes.append(("tool", {
                    "name": call.get("name"), "arguments": call.get("arguments"),
                    "response": "" if call.get("name") == "Finish" else following.get("content", "")}))
                index += 1
            else:
                nodes.append(("assistant", message.get("content") or ""))
        index += 1
    return nodes


def _from_chain(chain: list, where, qid) -> list[tuple[str, object]]:
    nodes, index = [], 0
    while index < len(chain):
        node = chain[index]
        kind = node.get("node_type")
        if kind == "Action":
            follow = chain[index + 1] if index + 1 < len(chain) else {}
            nodes.append(("tool", {"name": node.get("description"), "arguments": follow.get("description", ""),
                                   "response": follow.get("observation", "")}))
            index += 1
        elif kind == "Thought":
            nodes.append(("assistant", node.get("description", "")))
        elif kind != "Action Input":
            raise _bad(where, qid, f"chain[{index}].node_type", f"is {kind!r}")
        index += 1
    return nodes


def _walk(tree: dict, rng: random.Random) -> list:
    """Root to a leaf of a DFS tree, each child drawn at random (seeded), as a node chain."""
    path, node = [], tree
    while node.get("children"):
        node = rng.choice(node["children"])
        path.append(node)
    return path


def converted_from_raw(data: dict, method: str, qid: str, where: str) -> dict:
    generation = data.get("answer_generation") if isinstance(data, dict) else None
    if not isinstance(generation, dict):
        raise _bad(where, qid, "answer_generation", "is missing or not an object")
    for field in ("query", "function", "final_answer"):
        if field not in generation:
            raise _bad(where, qid, f"answer_generation.{field}", "is missing")
    rng = random.Random(f"{qid}/{method}")
    if generation.get("valid_data"):
        messages = generation.get("train_messages") or []
        if not messages:
            raise _bad(where, qid, "answer_generation.train_messages", "is empty for a valid answer")
        nodes = _from_messages(messages[-1], where, qid)
    elif "cot" in method.lower():
        if not data.get("trys"):
            raise _bad(where, qid, "trys", "is missing or empty for an unfinished CoT answer")
        nodes = _from_chain(rng.choice(data["trys"]).get("chain", []), where, qid)
    elif "dfs" in method.lower():
        tree = (data.get("tree") or {}).get("tree")
        if not isinstance(tree, dict):
            raise _bad(where, qid, "tree.tree", "is missing for an unfinished DFS answer")
        nodes = _from_chain(_walk(tree, rng), where, qid)
    else:
        raise _bad(where, qid, "<file name>", f"names method {method!r}, neither CoT nor DFS")
    return {"query": generation["query"], "available_tools": generation["function"],
            "answer": {"method": method, "total_steps": len(nodes) + 2,
                       "final_answer": generation["final_answer"], "answer_details": formats.answer_details([("system", ""), ("user", ""), *nodes])}}


def read_answer_folder(folder: Path, group: str, name: str, methods: list[str] | None = None) -> list[dict]:
    """Every `<id>_<method>.json` of a raw answer folder (only `methods` when given), by query id."""
    files = sorted(Path(folder).glob("*.json"), key=lambda p: (len(p.name), p.name))
    by_query: dict[str, Path] = {}
    for path in files:
        found = ANSWER_FILE.match(path.name)
        if not found or (methods and found["method"] not in methods):
            continue
        if found["qid"] in by_query:
            raise ReleasedFormatError(
                f"{folder}: query_id {found['qid']!r} has two answers, {by_query[found['qid']].name} "
                f"and {path.name}: name the method to judge (methods: [...])")
        by_query[found["qid"]] = path
    trajs = []
    for qid, path in by_query.items():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ReleasedFormatError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
        method = ANSWER_FILE.match(path.name)["method"]
        trajs.append(trajectory(qid, converted_from_raw(data, method, qid, str(path)), str(path), group, name))
    return trajs


# --------------------------------------------------------------------------------------------
# Either form, by what the path is
# --------------------------------------------------------------------------------------------
def load(path: str | Path, group: str, name: str, methods: list[str] | None = None) -> list[dict]:
    """A released run's answers for one group: `path` is a converted-answer file, a folder of them
    (`<group>.json` inside), or a raw answer folder (`<id>_<method>.json` inside, directly or in
    `<group>/`)."""
    path = Path(path)
    if path.is_file():
        return read_converted(path, group, name)
    if not path.is_dir():
        raise ReleasedFormatError(f"{path}: no such file or folder (released answers '{name}')")
    if (path / f"{group}.json").is_file():
        return read_converted(path / f"{group}.json", group, name)
    folder = path / group if (path / group).is_dir() else path
    trajs = read_answer_folder(folder, group, name, methods)
    if not trajs:
        raise ReleasedFormatError(f"{path}: neither {group}.json (converted answers) nor "
                                  f"<id>_<method>.json answer files{' of ' + str(methods) if methods else ''}"
                                  f" in {folder}")
    return trajs
