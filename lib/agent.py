"""The inference stage: a model answers ToolBench test queries by calling tools.

ToolBench's conventions, checked against the public OpenBMB/ToolBench code (rapidapi.py,
utils.py, preprocess_toolllama_data.py) and the real sample files in toolbench-sample/:
- a query's `api_list` becomes function dicts named `<api>_for_<tool>` (`functions_for_query`),
  plus ToolBench's `Finish`;
- the system prompt is ToolBench's AutoGPT prompt with the tool list in the task description and
  the functions appended as a Python repr (`system_prompt`), the same text the training records hold;
- each assistant turn reads `\\nThought: ...\\nAction: <fn>\\nAction Input: <json>` (`parse_step`).
"""
from __future__ import annotations

import json
import os
import re

# ToolBench's name rules (toolbench/utils.py::standardize, change_name), re-implemented.
_NOT_NAME_CHAR = re.compile("[^\u4e00-\u9fa5a-zA-Z0-9_^]")   # '^' is kept: a quirk of the original
_RESERVED = {"from", "class", "return", "false", "true", "id", "and"}
MAX_NAME = 64
DESCRIPTION_MAX = 256
TOOL_DESCRIPTION_MAX = 512
_TYPES = {"NUMBER": "integer", "STRING": "string", "BOOLEAN": "boolean"}

def _finish(description: str) -> dict:
    return {
        "name": "Finish",
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {
                "return_type": {"type": "string", "enum": ["give_answer", "give_up_and_restart"]},
                "final_answer": {
                    "type": "string",
                    "description": "The final answer you want to give the user. You should have this "
                                   "field if \"return_type\"==\"give_answer\"",
                },
            },
            "required": ["return_type"],
        },
    }


# ToolBench's Finish function, as its inference code (rapidapi.py) and StableToolBench write it; the
# released training answers hold this wording and the older FINISH_V1 wording about equally often.
FINISH = _finish(
    "If you believe that you have obtained a result that can answer the task, please call this function "
    "to provide the final answer. Alternatively, if you recognize that you are unable to proceed with the "
    "task in the current state, call this function to restart. Remember: you must ALWAYS call this "
    "function at the end of your attempt, and the only part that will be shown to the user is the final "
    "answer, so it should contain sufficient information.")
FINISH_V1 = _finish(
    "If you think you get the result which can answer the task, call this function to give the final "
    "answer. Or, if you think you can't handle the task from this status, call this function to restart. "
    "Remember: you should ALWAYS call this function at the end of your try, and the final answer is the "
    "ONLY part that will be showed to user, so final answer should contain enough information.")

SYSTEM_PROMPT = (
    "You are AutoGPT, you can use many tools(functions) to do the following task.\n"
    "First I will give you the task description, and your task start.\n"
    "At each step, you need to give your thought to analyze the status now and what to do next, with a "
    "function call to actually excute your step. Your output should follow this format:\nThought:\nAction\n"
    "Action Input:\n\n"
    "After the call, you will get the call result, and you are now in a new state.\n"
    "Then you will analyze your status now, then decide what to do next...\n"
    "After many (Thought-call) pairs, you finally perform the task, then you can give your finial answer.\n"
    "Remember: \n"
    "1.the state change is irreversible, you can't go back to one of the former state, if you want to "
    "restart the task, say \"I give up and restart\".\n"
    "2.All the thought is short, at most in 5 sentence.\n"
    "3.You can do more then one trys, so if your plan is to continusly try some conditions, you can do one "
    "of the conditions per try.\n"
    "Let's Begin!\n"
    "Task description: {task_description}"
)

TASK_DESCRIPTION = (
    "You should use functions to help handle the real time user querys. Remember:\n"
    "1.ALWAYS call \"Finish\" function at the end of the task. And the final answer should contain enough "
    "information to show to the user,If you can't handle the task, or you find that function calls always "
    "fail(the function is not valid now), use function Finish->give_up_and_restart.\n"
    "2.Do not use origin tool names, use only subfunctions' names.\n"
    "You have access of the following tools:\n"
)


class QueryError(ValueError):
    """A test query record that does not fit ToolBench's format."""


def standardize_name(name: str) -> str:
    """ToolBench's `standardize`: non-name characters to '_', runs of '_' collapsed, lowercase,
    '_' stripped at both ends, and a leading digit prefixed with 'get_'."""
    name = _NOT_NAME_CHAR.sub("_", str(name))
    name = re.sub(r"_+", "_", name).lower().strip("_")
    if name and name[0].isdigit():
        name = "get_" + name
    return name


def change_name(name: str) -> str:
    """ToolBench's `change_name`: Python keywords and 'id' get an 'is_' prefix."""
    return "is_" + name if name in _RESERVED else name


def api_function_name(api_name: str, tool_name: str) -> str:
    """`<api>_for_<tool>`, both standardized; ToolBench keeps the LAST 64 characters."""
    return f"{change_name(standardize_name(api_name))}_for_{standardize_name(tool_name)}"[-MAX_NAME:]


def _parameter(param: dict) -> dict:
    prop = {"type": _TYPES.get(param.get("type"), "string"),
            "description": str(param.get("description") or "")[:DESCRIPTION_MAX]}
    default = param.get("default", "")
    if len(str(default if default is not None else "")) != 0:
        prop["example_value"] = default
    return prop


def api_to_function(api: dict) -> dict:
    """One api_list entry -> ToolBench's function dict (rapidapi.py::api_json_to_openai_json)."""
    tool = standardize_name(api["tool_name"])
    name = api_function_name(api["api_name"], api["tool_name"])
    description = f"This is the subfunction for tool \"{tool}\", you can use this tool."
    api_description = str(api.get("api_description") or "").strip()
    if api_description:
        api_description = api_description.replace(api["api_name"], name)[:DESCRIPTION_MAX]
        description += f"The description of this function is: \"{api_description}\""
    parameters = {"type": "object", "properties": {}, "required": [], "optional": []}
    # As in ToolBench, optional parameters are listed only when the API has required ones.
    if api.get("required_parameters"):
        for kind, params in (("required", api["required_parameters"]),
                             ("optional", api.get("optional_parameters") or [])):
            for param in params:
                pname = change_name(standardize_name(param["name"]))
                parameters["properties"][pname] = _parameter(param)
                parameters[kind].append(pname)
    return {"name": name, "description": description, "parameters": parameters}


API_FIELDS = ("category_name", "tool_name", "api_name")


def check_query(query: dict, where: str = "query", index: int | None = None) -> None:
    """Raise QueryError naming the file, record index / query_id and field of a malformed query."""
    qid = query.get("query_id") if isinstance(query, dict) else None
    at = f"{where}: record {index}" + (f" (query_id {qid})" if qid is not None else "")
    if not isinstance(query, dict):
        raise QueryError(f"{at}: a query must be a JSON object, got {type(query).__name__}")
    for field in ("query", "query_id", "api_list"):
        if field not in query:
            raise QueryError(f"{at}: missing field '{field}'")
    if not isinstance(query["query"], str) or not query["query"].strip():
        raise QueryError(f"{at}: field 'query' must be a non-empty string")
    if not isinstance(query["api_list"], list) or not query["api_list"]:
        raise QueryError(f"{at}: field 'api_list' must be a non-empty list")
    for i, api in enumerate(query["api_list"]):
        if not isinstance(api, dict):
            raise QueryError(f"{at}: field 'api_list[{i}]' must be an object")
        for field in API_FIELDS:
            if not isinstance(api.get(field), str) or not api[field]:
                raise QueryError(f"{at}: field 'api_list[{i}].{field}' missing or not a string")
        for field in ("required_parameters", "optional_parameters"):
            params = api.get(field, [])
            if not isinstance(params, list) or any(not isinstance(p, dict) or "name" not in p
                                                   for p in params):
                raise QueryError(f"{at}: field 'api_list[{i}].{field}' must be a list of "
                                 "{name, type, description, default}")


def functions_for_query(query: dict, finish: dict = FINISH) -> list[dict]:
    """The query's api_list as ToolBench function dicts, then Finish (the prompt's function list)."""
    check_query(query)
    return [api_to_function(api) for api in query["api_list"]] + [finish]


def tool_descriptions_for_query(query: dict, tool_docs: dict | None = None) -> list[tuple[str, str]]:
    """(standardized tool name, tool description) per distinct tool of the query, in order.

    `tool_docs` maps standardized tool names to their documentation's `tool_description`
    (toolenv/tools/<category>/<tool>.json); a tool without one is described as "None", as ToolBench
    does for empty descriptions.
    """
    tool_docs = tool_docs or {}
    seen: dict[str, str] = {}
    for api in query["api_list"]:
        tool = standardize_name(api["tool_name"])
        if tool not in seen:
            seen[tool] = str(tool_docs.get(tool) or "")
    return list(seen.items())


def system_prompt(functions: list[dict], tools: list[tuple[str, str]] | None = None) -> str:
    """ToolBench's system prompt (as in its training records) with the functions appended.

    `tools` are (standardized tool name, description) pairs for the task description's tool list;
    when None they are derived from the function names with description "None".
    """
    if tools is None:
        tools = []
        for fn in functions:
            if fn["name"] != "Finish" and "_for_" in fn["name"]:
                tool = fn["name"].rsplit("_for_", 1)[1]
                if tool not in [t for t, _ in tools]:
                    tools.append((tool, ""))
    task = TASK_DESCRIPTION
    for k, (tool, description) in enumerate(dict(tools).items()):
        description = str(description)[:TOOL_DESCRIPTION_MAX].replace("\n", "").strip() or "None"
        task += f"{k + 1}.{tool}: {description}\n"
    return (SYSTEM_PROMPT.replace("{task_description}", task)
            + "\nSpecifically, you have access to the following APIs: " + str(functions))


def user_message(query: str) -> str:
    """ToolBench's user turn."""
    return f"\n{query}\nBegin!\n"


def format_step(thought: str, action: str, action_input: str) -> str:
    """An assistant turn as in ToolBench's training records."""
    return f"\nThought: {thought}\nAction: {action}\nAction Input: {action_input}"


def parse_step(text: str, function_names=None):
    """THE parser of one assistant turn -> (thought, action, action_input, error).

    Accepts `Thought: ...\\nAction: <fn>\\nAction Input: <json>` (leading whitespace and an eos
    already stripped by the caller are fine). `error` is None when the step is usable, else a short
    reason: missing Action, missing Action Input, unknown function (when `function_names` is given),
    or Action Input that is not a JSON object. Whatever parsed is returned even with an error.
    """
    text = text or ""
    a = text.find("\nAction:")
    if a < 0 and text.lstrip().startswith("Action:"):
        a = text.find("Action:") - 1
    thought_part = text if a < 0 else text[:a + 1]
    t = thought_part.find("Thought:")
    thought = (thought_part[t + len("Thought:"):] if t >= 0 else thought_part).strip()
    if a < 0:
        return thought, "", "", "missing 'Action:'"
    rest = text[a + 1 + len("Action:"):]
    i = rest.find("\nAction Input:")
    if i < 0:
        return thought, rest.strip(), "", "missing 'Action Input:'"
    action = rest[:i].strip()
    action_input = rest[i + len("\nAction Input:"):].strip()
    if not action:
        return thought, action, action_input, "empty Action"
    if function_names is not None and action not in function_names:
        return thought, action, action_input, f"unknown function '{action}'"
    try:
        args = json.loads(action_input, strict=False) if action_input else {}
    except json.JSONDecodeError as err:
        return thought, action, action_input, f"Action Input is not valid JSON ({err.msg})"
    if not isinstance(args, dict):
        return thought, action, action_input, "Action Input must be a JSON object"
    return thought, action, action_input, None


# ---------------------------------------------------------------------------------------------
# One query: taking a step, ReAct and DFSDT as coroutines (they yield a conversation that needs
# the next assistant turn and receive the generated text), so a driver can batch many queries.
# ---------------------------------------------------------------------------------------------

FINISH_OK = json.dumps({"response": "successfully giving the final answer."})
GIVE_UP = json.dumps({"response": "chose to give up and restart"})


class Query:
    """A test query made ready for the loop: its functions, prompt and function -> API map."""

    def __init__(self, record: dict, group: str, tool_docs: dict | None = None):
        self.record, self.group = record, group
        self.tool_calls: list[tuple[str, str]] = []     # (outcome, observation) of each call made
        self.query_id, self.text = record["query_id"], record["query"]
        self.functions = functions_for_query(record)
        self.apis = {api_function_name(a["api_name"], a["tool_name"]): a for a in record["api_list"]}
        self.system = system_prompt(self.functions, tool_descriptions_for_query(record, tool_docs))

    def start(self) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user_message(self.text)}]


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
    # lib.tools' environments say whether the call failed in transport; other envs: by the error field.
    step["tool_outcome"] = getattr(env, "last_outcome", None) or ("api_error" if observation_error(step) else "ok")
    query.tool_calls.append((step["tool_outcome"], text))
    return step


def _turns(step: dict) -> list[dict]:
    return [{"role": "assistant", "content": step["assistant"]},
            {"role": "function", "content": step["observation"]}]


def _public(step: dict) -> dict:
    return {**{k: step[k] for k in ("thought", "action", "action_input", "observation", "parse_error")},
            "tool_outcome": step.get("tool_outcome")}


def observation_error(step: dict) -> bool:
    """A step whose observation reports an error (parse error, unknown API, failed call)."""
    if step["parse_error"]:
        return True
    try:
        data = json.loads(step["observation"])
    except (json.JSONDecodeError, TypeError):
        return False
    return isinstance(data, dict) and bool(data.get("error"))


def react(query: Query, env, max_iterations: int, max_observation_length=None):
    """ReAct ("CoT@1"): one chain, ending at Finish or after max_iterations turns."""
    messages, steps = query.start(), []
    for _ in range(max_iterations):
        text = yield messages
        step = take_step(query, text, env, max_observation_length)
        steps.append(step)
        messages = messages + _turns(step)
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
            child = {"step": step, "children": [], "messages": node["messages"] + _turns(step),
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
# ToolEval's converted answer (ToolBench tooleval/convert_to_answer_format.py, checked against the
# real converted files in toolbench-sample/).
# ---------------------------------------------------------------------------------------------

def tooleval_answer(query_text: str, method: str, steps: list[dict], finish_type: str,
                    truncate: bool = False) -> dict:
    """{method, total_steps, final_answer, answer_details} as ToolEval's converter writes it.

    answer_details is a one-path tree of {role, message, next}: system (message ""), user (the
    query), then per step a 'tool' node {name, arguments, response} (Finish's response is ""). As
    the converter does, a finished run (give_answer: ToolBench's valid_data) lists only the calls;
    an unfinished one also has an 'assistant' node with each Thought before its call.
    final_answer is Finish's raw Action Input (a JSON string), "" without a give_answer.
    With `truncate`, messages are str()-ed and cut to 100 characters, like ToolBench's original
    converter (StableToolBench's keeps them whole, which is the default here).
    """
    nodes = [("system", ""), ("user", query_text)]
    for step in steps:
        if finish_type != "give_answer" and step["thought"]:
            nodes.append(("assistant", step["thought"]))
        if step["action"]:
            nodes.append(("tool", {"name": step["action"], "arguments": step["action_input"],
                                   "response": "" if step["action"] == "Finish" else step["observation"]}))
    details = []
    for role, message in reversed(nodes):
        if truncate:
            message = str(message)[:100] if role != "system" else ""
        details = [{"role": role, "message": message, "next": details}]
    final = steps[-1]["action_input"] if finish_type == "give_answer" else ""
    return {"method": method, "total_steps": len(nodes), "final_answer": final, "answer_details": details}


TOOLEVAL_METHOD = {"react": "CoT@1", "dfsdt": "DFS_woFilter_w2"}


def to_tooleval(lines: list[dict]) -> dict:
    """Trajectory lines -> ToolEval's converted file: {query_id: {query, available_tools, answer}}."""
    return {str(l["query_id"]): {"query": l["query"], "available_tools": l["available_tools"], "answer": l["answer"]}
            for l in lines}


# ---------------------------------------------------------------------------------------------
# Backends: generate(conversations) -> [Generation] for a batch of conversations.
# ---------------------------------------------------------------------------------------------

class Generation:
    __slots__ = ("text", "tokens", "truncated")

    def __init__(self, text: str, tokens: int = 0, truncated: bool = False):
        self.text, self.tokens, self.truncated = text, tokens, truncated


# The chat template renders every turn as "Role: value\n"; a model that runs past its eos into the
# next turn is cut there.
_TURN_STARTS = ("\nFunction: ", "\nUser: ", "\nSystem: ", "\nAssistant: ")


def cut_at_next_turn(text: str) -> str:
    ends = [text.find(t) for t in _TURN_STARTS if text.find(t) >= 0]
    return text[:min(ends)] if ends else text


class HFBackend:
    """A local causal LM: batched generation with KV cache and left padding.

    Prompts are the conversation rendered with the tokenizer's chat template (the training one,
    add_generation_prompt=True) and tokenized without extra special tokens, as training did. A prompt
    longer than the model's positions minus max_new_tokens loses its oldest tokens (left truncation)
    and is counted. temperature > 0 samples (do_sample) with torch seeded from the config seed and a
    call counter before each batch, so a run is reproducible for the same batches; temperature 0 is
    greedy. Generation stops at eos or after max_new_tokens.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int, temperature: float, seed: int,
                 max_positions: int | None = None):
        import torch

        self.torch, self.model, self.tokenizer = torch, model.eval(), tokenizer
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.max_positions = max_positions or model.config.max_position_embeddings
        self.max_prompt = self.max_positions - max_new_tokens
        if self.max_prompt <= 0:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room in {self.max_positions} positions")
        self.calls = 0
        tokenizer.padding_side = "left"

    def encode(self, conversation: list[dict]) -> tuple[list[int], bool]:
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_prompt:
            return ids[-self.max_prompt:], True
        return ids, False

    def generate(self, conversations: list[list[dict]]) -> list[Generation]:
        torch = self.torch
        encoded = [self.encode(c) for c in conversations]
        width = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id
        # Inputs go where the model is (the GPU when load_hf_backend found one).
        device = self.model.device
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in encoded], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in encoded],
                                 device=device)
        sample = self.temperature and self.temperature > 0
        kwargs = dict(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0) if sample \
            else dict(do_sample=False)
        torch.manual_seed(self.seed + self.calls)
        self.calls += 1
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, use_cache=True,
                                      max_new_tokens=self.max_new_tokens, pad_token_id=pad,
                                      eos_token_id=self.tokenizer.eos_token_id, **kwargs)
        results = []
        for row, (_, truncated) in zip(out[:, width:].cpu().tolist(), encoded):
            eos = self.tokenizer.eos_token_id
            n = row.index(eos) + 1 if eos in row else len(row)
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            results.append(Generation(cut_at_next_turn(text), n, truncated))
        return results


def inference_device(dtype: str | None) -> tuple[str, str]:
    """(device, dtype) for generation: the GPU when there is one, in inference.dtype (null: the
    saved dtype); half precision on a CPU is slow or unsupported, so there it is float32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", dtype or "auto"
    return "cpu", "float32" if dtype in ("float16", "bfloat16") else dtype or "auto"


def load_hf_backend(cfg: dict, model_dir=None) -> HFBackend:
    """The model trained in stage 02 (outputs/<profile>/model/ unless inference.model_dir is set)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lib import config, model as model_lib

    inf = cfg["inference"]
    folder = config.path(cfg, model_dir or inf.get("model_dir") or f"{cfg['output_dir']}/model")
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no model at {folder}: run the training stage (02) first or set inference.model_dir")
    device, dtype = inference_device(inf.get("dtype"))
    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True, dtype=dtype).to(device)
    if (folder / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        tokenizer.chat_template = cfg["model"]["chat_template"]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer = model_lib.load_tokenizer(cfg)
    backend = HFBackend(model, tokenizer, inf["max_new_tokens"], inf["temperature"], cfg["seed"])
    backend.fingerprint = config.file_digest(folder)
    return backend


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint through the `openai` client.

    The conversation goes as chat messages; function turns (observations) go as user messages
    prefixed "Observation: ", since plain chat endpoints have no function role without native
    function calling. The key comes from the env var the config names and is never stored.
    """

    def __init__(self, base_url: str, model: str, api_key: str, max_new_tokens: int, temperature: float,
                 seed: int | None = None, client=None):
        import openai

        self.client = client or openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2)
        self.model, self.max_new_tokens, self.temperature, self.seed = model, max_new_tokens, temperature, seed

    @staticmethod
    def chat_messages(conversation: list[dict]) -> list[dict]:
        return [{"role": "user", "content": "Observation: " + m["content"]} if m["role"] == "function"
                else {"role": m["role"], "content": m["content"]} for m in conversation]

    def generate(self, conversations: list[list[dict]]) -> list[Generation]:
        results = []
        for conversation in conversations:
            reply = self.client.chat.completions.create(
                model=self.model, messages=self.chat_messages(conversation), temperature=self.temperature,
                max_tokens=self.max_new_tokens, seed=self.seed)
            usage = getattr(reply, "usage", None)
            results.append(Generation(reply.choices[0].message.content or "",
                                      getattr(usage, "completion_tokens", 0) or 0))
        return results


def make_backend(cfg: dict):
    inf = cfg["inference"]
    if inf["backend"] == "hf":
        return load_hf_backend(cfg)
    if inf["backend"] == "openai":
        from lib.tools import secret

        if not inf["openai_base_url"] or not inf["openai_model"]:
            raise ValueError("inference.backend openai needs inference.openai_base_url and inference.openai_model")
        backend = OpenAIBackend(inf["openai_base_url"], inf["openai_model"],
                                secret(inf["openai_api_key_env"], required=False), inf["max_new_tokens"],
                                inf["temperature"], cfg["seed"])
        backend.fingerprint = f"{inf['openai_base_url']} {inf['openai_model']}"
        return backend
    raise ValueError(f"inference.backend must be hf or openai, got '{inf['backend']}'")


# ---------------------------------------------------------------------------------------------
# Trajectory files: append-only JSONL, resumable.
# ---------------------------------------------------------------------------------------------

def read_trajectories(path) -> list[dict]:
    """The complete lines of a trajectory file (lib.store: a torn last line, a crash mid-write, is
    not a line; a bad line elsewhere is an error naming the file and line)."""
    from lib import store
    return store.read_jsonl(path)


def load_queries(path) -> list[dict]:
    """test_instruction/<group>.json, every record checked (errors name file, index, query_id, field)."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no test queries at {path}")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise QueryError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(records, list):
        raise QueryError(f"{path}: expected a JSON list of queries")
    first_seen = {}
    for i, record in enumerate(records):
        check_query(record, str(path), i)
        # A repeated id would be run twice and judged against one of the two queries' APIs.
        qid = str(record["query_id"])
        if qid in first_seen:
            raise QueryError(f"{path}: records {first_seen[qid]} and {i} share query_id {record['query_id']!r}; "
                             "each query needs its own id")
        first_seen[qid] = i
    return records


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
    """This run's tool counts over `queries` (those started); raise lib.tools.EnvUnavailable when
    more than `share` of at least MIN_TOOL_CALLS calls failed in transport (None: never)."""
    calls = [c for q in queries for c in q.tool_calls]
    counts = tool_counts({"tool_outcome": outcome} for outcome, _ in calls)
    failed = counts["tool_transport_errors"]
    if share is None or len(calls) < MIN_TOOL_CALLS or failed <= share * len(calls):
        return counts
    from lib import tools

    last = next(json.loads(t).get("error") for o, t in reversed(calls) if o == "transport_error")
    where = getattr(env, "url", None) or getattr(env, "name", "the tool environment")
    raise tools.EnvUnavailable(
        f"{queries[0].group}: {failed} of {len(calls)} tool calls failed in transport at {where} "
        f"(more than inference.max_transport_error_share {share:g}; last: {last}). Stopped: the queries "
        f"finished before ({kept} in this run) are kept in {path}; once the tool environment answers, "
        "a rerun redoes the rest.")


def probe_api(cfg: dict) -> tuple[str, str, str]:
    """The API a tool-environment probe calls: the first test query's first API (a call the virtual
    server has cached), else a placeholder."""
    from lib import config

    try:
        group = (cfg["inference"]["groups"] or [])[0]
        api = load_queries(config.path(cfg, cfg["data"]["test_dir"]) / f"{group}.json")[0]["api_list"][0]
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


def run_group(queries: list[Query], backend, env, path, method: str = "react", max_iterations: int = 10,
              batch_size: int = 8, dfsdt_width: int = 2, dfsdt_max_expansions: int = 20,
              max_observation_length: int | None = None, log=None, progress_log=None,
              max_transport_error_share: float | None = None) -> dict:
    """Run the queries not yet in `path`, batch_size conversations per generate call; each query's
    line is appended (flushed, fsynced) as soon as it finishes, unless all its tool calls failed in
    transport (`transport_failed`). Stops (lib.tools.EnvUnavailable) when more than
    `max_transport_error_share` of the calls fail in transport. Returns this call's counters."""
    import collections
    import time

    done = {str(l["query_id"]) for l in read_trajectories(path)}
    pending = collections.deque(q for q in queries if str(q.query_id) not in done)
    counters = {"skipped": len(queries) - len(pending), "ran": 0, "tokens": 0, "truncated": 0,
                "generate_calls": 0, "wall_s": 0.0, "transport_failed": 0, "transport_failed_calls": 0}
    active, started = [], []     # active: [query, coroutine, prompt, tokens, truncated]
    t0 = time.perf_counter()
    from lib.progress import Progress
    group = queries[0].group if queries else ""
    progress = Progress(f"03 {group} queries", len(queries), log=progress_log or (lambda *a, **k: None),
                        start_at=counters["skipped"])
    from lib import store
    with store.JsonlAppender(path) as fh:
        while pending or active:
            while pending and len(active) < batch_size:
                q = pending.popleft()
                q.tool_calls = []
                started.append(q)
                if method == "react":
                    co = react(q, env, max_iterations, max_observation_length)
                elif method == "dfsdt":
                    co = dfsdt(q, env, max_iterations, dfsdt_width, dfsdt_max_expansions, max_observation_length)
                else:
                    raise ValueError(f"inference.method must be react or dfsdt, got '{method}'")
                active.append([q, co, next(co), 0, 0])
            generations = backend.generate([a[2] for a in active])
            counters["generate_calls"] += 1
            still = []
            for entry, gen in zip(active, generations):
                entry[3] += gen.tokens
                entry[4] += int(gen.truncated)
                try:
                    entry[2] = entry[1].send(gen.text)
                    still.append(entry)
                except StopIteration as stop:
                    line = trajectory_line(entry[0], method, stop.value, entry[3], entry[4])
                    counters["tokens"] += entry[3]
                    counters["truncated"] += entry[4]
                    if transport_failed(line):
                        counters["transport_failed"] += 1
                        counters["transport_failed_calls"] += line["tool_calls"]
                        (log or progress.log)(f"{line['group']} {line['query_id']}: not kept, all "
                                              f"{line['tool_calls']} tool calls failed in transport; "
                                              "a rerun redoes it")
                    else:
                        fh.write(line)
                        counters["ran"] += 1
                        if log:
                            log(f"{entry[0].group} {entry[0].query_id}: {stop.value['finish_type']}")
                    progress.update(counters["skipped"] + counters["ran"] + counters["transport_failed"],
                                    f"{counters['tokens'] / max(time.perf_counter() - t0, 1e-9):,.0f} tokens/s")
            active = still
            counters.update(stop_on_transport_errors(started, max_transport_error_share, env, path,
                                                     counters["ran"]))
    counters["wall_s"] = time.perf_counter() - t0
    return counters


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


def tool_docs(cfg: dict) -> dict:
    """{tool: its description} from data.toolenv_dir/tools, for the system prompts of the queries."""
    from lib import config, tools

    return {k: d.get("tool_description", "")
            for k, d in tools.load_tool_docs(config.path(cfg, cfg["data"]["toolenv_dir"]) / "tools").items()}


def run(cfg: dict, backend=None, env=None, log=print) -> dict:
    """Stage 03: every configured group's queries through the model and the tool environment.

    Writes outputs/<profile>/trajectories/<group>.jsonl (resumable) and inference_summary.json.
    One stage-03 run at a time per output folder: a second fails at once (lib.store.exclusive)
    instead of writing every query twice."""
    from lib import config, store

    with store.exclusive(config.output_dir(cfg) / "trajectories", "stage 03 inference"):
        return _run(cfg, backend, env, log)


def _run(cfg: dict, backend, env, log) -> dict:
    from lib import config, tools

    inf = cfg["inference"]
    test_dir = config.path(cfg, cfg["data"]["test_dir"])
    # Every group's test file is read and checked first: a bad one stops the stage before anything.
    selected = {g: load_queries(test_dir / f"{g}.json")[:inf["max_queries_per_group"] or None]
                for g in inf["groups"]}
    # The tool environment next: one that does not answer stops the stage before the model loads,
    # before any query and before the trajectories folder is touched.
    env = env or tools.make_env(cfg)
    found = tools.check_env(env, probe_api(cfg))
    if log:
        log(f"[03] tool environment: {found}")
    backend = backend or make_backend(cfg)
    # Resume only what this model, these settings and these queries produced (the tool time-out and
    # the transport stop rule change no kept trajectory: raising them after a failed run resumes it).
    settings = {k: v for k, v in inf.items() if k not in ("groups", "max_queries_per_group", "tool_timeout_s",
                                                          "max_transport_error_share")}
    out = config.resumable_dir(cfg, "trajectories", {
        "model": getattr(backend, "fingerprint", type(backend).__name__), "inference": settings,
        "seed": cfg["seed"], "queries": config.file_digest(test_dir)}, log=log)
    docs = tool_docs(cfg)
    groups, dropped, kept = {}, {"transport_failed": 0, "transport_failed_calls": 0}, []
    for group, records in selected.items():
        queries = [Query(r, group, docs) for r in records]
        path = out / f"{group}.jsonl"
        counters = run_group(queries, backend, env, path, inf["method"], inf["max_iterations"],
                             inf["batch_size"], inf["dfsdt_width"], inf["dfsdt_max_expansions"],
                             inf.get("max_observation_length"), progress_log=log,
                             max_transport_error_share=inf.get("max_transport_error_share"))
        for key in dropped:
            dropped[key] += counters[key]
        # Only this run's selection counts (an earlier, larger run may have left more in the file).
        wanted = {str(q.query_id) for q in queries}
        lines = [l for l in read_trajectories(path) if str(l["query_id"]) in wanted]
        kept += lines
        groups[group] = summarize(lines, counters)
        if log:
            g = groups[group]
            log(f"[03] {group}: {g['queries']} queries, {g['finished_with_answer']} answered, "
                f"{g['ran_now']} run now in {g['wall_time_s']} s; {g['tool_calls']} tool calls, "
                f"{g['tool_api_errors']} API errors, {g['tool_transport_errors']} transport errors"
                + (f"; {g['transport_failed']} queries not kept (all their calls failed in transport: "
                   "a rerun redoes them)" if g["transport_failed"] else ""))
    total = summarize(kept, dropped)
    total["wall_time_s"] = round(sum(g["wall_time_s"] for g in groups.values()), 3)
    total["ran_now"] = sum(g["ran_now"] for g in groups.values())
    total["skipped_done"] = sum(g["skipped_done"] for g in groups.values())
    ran_tokens = sum(g["tokens_per_s"] * g["wall_time_s"] for g in groups.values() if g["tokens_per_s"])
    total["tokens_per_s"] = round(ran_tokens / total["wall_time_s"], 1) if total["wall_time_s"] else None
    summary = {"method": inf["method"], "backend": inf["backend"], "tool_env": inf["tool_env"],
               "temperature": inf["temperature"], "max_iterations": inf["max_iterations"],
               "batch_size": inf["batch_size"], "max_new_tokens": inf["max_new_tokens"],
               "groups": groups, "total": total, "stamp": cfg.get("stamp")}
    path = config.path(cfg, cfg["output_dir"]) / "inference_summary.json"
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


def pick_trajectory(cfg: dict) -> dict | None:
    """The trajectory the notebook shows: the longest answered one, else the longest of all."""
    from lib import config

    out = config.path(cfg, cfg["output_dir"]) / "trajectories"
    lines = [l for g in cfg["inference"]["groups"] for l in read_trajectories(out / f"{g}.jsonl")]
    if not lines:
        return None
    return max(lines, key=lambda l: (l["finish_type"] == "give_answer", l["total_steps"]))


SUMMARY_COLUMNS = ["queries", "finished_with_answer", "gave_up", "hit_limit", "parse_errors", "steps",
                   "tokens_generated", "wall_time_s", "tokens_per_s", "prompts_truncated", "tool_calls",
                   "tool_api_errors", "tool_transport_errors", "transport_failed"]


def summary_table(summary: dict):
    """inference_summary.json as a DataFrame, one row per group and a total row."""
    import pandas as pd

    rows = {**summary["groups"], "total": summary["total"]}
    return pd.DataFrame([{c: rows[g].get(c) for c in SUMMARY_COLUMNS} for g in rows], index=list(rows))
