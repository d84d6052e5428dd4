"""Hand-made queries and trajectories, and a scripted OpenAI-compatible judge server, shared by the
stage-04 tests (test_judge, test_judgments, test_llm_judge, test_offline_judge, test_tooleval,
test_trajectory_checks, test_win_rate)."""
from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path

from lib.common import config

from conftest import LoopbackServer, chat_completion


SECRET = "sk-test-DO-NOT-STORE-4f2a9c"


# ------------------------------------------------------------------------------------------------
# Hand-made queries and trajectories
# ------------------------------------------------------------------------------------------------
def api(tool, name, required=()):
    return {"category_name": "Data", "tool_name": tool, "api_name": name, "api_description": "",
            "required_parameters": [{"name": r, "type": "STRING", "description": "", "default": ""}
                                    for r in required],
            "optional_parameters": [], "method": "GET"}


def query(qid, text="What is the weather in Paris?"):
    return {"query": text, "query_id": qid,
            "api_list": [api("Weather Hub", "Get Weather", ["city"]), api("Weather Hub", "Get Time")],
            "relevant APIs": [["Weather Hub", "Get Weather"], ["Weather Hub", "Get Time"]]}


WEATHER = json.dumps({"error": "", "response": json.dumps({"city": "Paris", "temp_c": 20, "sky": "clear"})})


def step(action, action_input="{}", observation=WEATHER, parse_error=None):
    return {"thought": "t", "action": action, "action_input": action_input,
            "observation": observation, "parse_error": parse_error}


def finish(answer="It is 20 C in Paris."):
    return step("Finish", json.dumps({"return_type": "give_answer", "final_answer": answer}), "")


def traj(qid, steps, text="What is the weather in Paris?", finish_type="give_answer", answer=None,
         parse_errors=0, method="react"):
    steps = copy.deepcopy(steps)
    if answer is None:
        answer = (json.loads(steps[-1]["action_input"]).get("final_answer", "")
                  if steps and steps[-1]["action"] == "Finish" else "")
    return {"query_id": qid, "group": "G1_instruction", "query": text, "method": method,
            "available_tools": [], "finish_type": finish_type, "final_answer": answer,
            "total_steps": len(steps), "parse_errors": parse_errors, "steps": steps,
            "answer": {"method": "CoT@1", "total_steps": len(steps) + 2,
                       "final_answer": steps[-1]["action_input"] if finish_type == "give_answer" else "",
                       "answer_details": []}}


GOOD = [step("get_weather_for_weather_hub", '{"city": "Paris"}'), finish()]


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_cfg(tmp_path, trajs_by_group, queries_by_group=None, **judge_overrides):
    out = tmp_path / "out"
    for group, rows in trajs_by_group.items():
        write_jsonl(out / "trajectories" / f"{group}.jsonl", rows)
    test_dir = tmp_path / "test"
    test_dir.mkdir(exist_ok=True)
    for group, rows in (queries_by_group or {}).items():
        (test_dir / f"{group}.json").write_text(json.dumps(rows), encoding="utf-8")
    overrides = {"output_dir": str(out), "data": {"test_dir": str(test_dir)},
                 "inference": {"groups": list(trajs_by_group)},
                 "judge": {"retry_backoff_s": 0.001, "timeout_s": 2, "max_workers": 1,
                           **judge_overrides}}
    return config.load("smoke", overrides)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------
# A scripted OpenAI-compatible judge server
# ------------------------------------------------------------------------------------------------
class FakeServer(LoopbackServer):
    """POST /v1/chat/completions; `script` (a list, consumed first) then `respond(body)`.
    Script items: ("status", code) | ("sleep", seconds) | ("content", text) |
    ("raw", code, headers, payload): the reply as given (bytes sent as is), e.g. a proxy's page."""

    def __init__(self, respond):
        self.judge_respond, self.script, self.auth = respond, [], set()
        super().__init__(self._reply)
        self.url += "/v1"

    @property
    def bodies(self):
        return [body for _, _, body in self.requests]

    def _reply(self, path, headers, body):
        self.auth.add(headers.get("Authorization"))
        action = self.script.pop(0) if self.script else ("content", self.judge_respond(body))
        if action[0] == "sleep":
            time.sleep(action[1])
            action = ("content", self.judge_respond(body))
        if action[0] == "status":
            return action[1], {"error": {"message": "scripted", "type": "x"}}
        if action[0] == "raw":
            return action[1], action[3], action[2]
        return 200, chat_completion(body["model"], action[1])


def function_of(body) -> str:
    text = body["messages"][-1]["content"]
    for marker, name in (("Answer_0:", "select_better_answer"), ("Run:\n", "parse_answer_status"),
                         ("task_status", "check_task_solvable"), ("Final answer:", "check_answer_status")):
        if marker in text:
            return name
    raise AssertionError(text[:200])


def scripted_judge(body) -> str:
    """Replies by the marker in the query: SOLVED, UNSOLVED (solvable), UNSURE (all unsure),
    NOPE (unsolved, task unsolvable -> pass), JUNK (never valid JSON)."""
    text, fn = body["messages"][-1]["content"], function_of(body)
    if "JUNK" in text:
        return "I think it is solved, probably."
    if fn == "select_better_answer":
        a0 = text.split("Answer_0:")[1].split("Answer_1:")[0]
        return json.dumps({"reason": "r", "index": 0 if "BETTER" in a0 else 1})
    if fn == "check_task_solvable":
        status = "Unsure" if "UNSURE" in text else "Unsolvable" if "NOPE" in text else "Solvable"
        return f'```json\n{{"reason": "r", "task_status": "{status}"}}\n```'
    for marker, status in (("UNSOLVED", "Unsolved"), ("SOLVED", "Solved"), ("UNSURE", "Unsure"),
                           ("NOPE", "Unsolved")):
        if marker in text:
            return json.dumps({"reason": "because", "answer_status": status.lower()})
    raise AssertionError(text[:200])


def llm_cfg(tmp_path, server, trajs, monkeypatch, **extra):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    return make_cfg(tmp_path, {"G1_instruction": trajs}, {"G1_instruction": [query(t["query_id"]) for t in trajs]},
                    kind="llm", base_url=server.url, model="fake-judge", api_key_env="JUDGE_TEST_KEY",
                    **extra)
