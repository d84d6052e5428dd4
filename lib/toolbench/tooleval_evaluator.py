"""ToolEval's own judge prompts, read at run time from a ToolBench checkout (`judge.evaluator_dir`).

`load` reads and checks the evaluator folder's config.yaml and template, `Evaluator.request` builds
the chat request ToolEval sends for one judge function, and lib/judge/llm_judge.py sends it; nothing
of it is copied into this project. What ToolEval does and which of its keys are sent:
docs/judging.md, "ToolEval's own evaluator".
"""
from __future__ import annotations

import copy
import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lib.common import config
from lib.toolbench import tooleval

# The four functions rtl.py calls and the fields each description is formatted with
# (lib/toolbench/tooleval.py's llm_assessment and lib/judge/win_rate.py pass the same; so does rtl.py).
FIELDS = {"check_answer_status": ("query", "answer"),
          "parse_answer_status": ("query", "answer"),
          "check_task_solvable": ("task",),
          "select_better_answer": ("query", "answer_0", "answer_1")}
assert set(FIELDS) == set(tooleval.REPLY_FIELDS)

# Sent as ToolEval adds it with return_reason (the request's exact wording is what must match).
REASON_PROPERTY = {"type": "string", "description": "explain your answer."}
SAMPLING = ("temperature", "max_tokens", "top_p", "presence_penalty", "frequency_penalty", "stop",
            "n", "logit_bias", "seed")
NOT_SENT = ("model", "timeout", "function_call")


class EvaluatorError(config.ConfigError):
    """judge.evaluator_dir names a folder that is not a usable ToolEval evaluator."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Evaluator:
    folder: Path
    template_file: Path
    config_file: Path
    descriptions: dict[str, str]        # function -> description template (str.format)
    functions: dict[str, dict]          # function -> its schema in config.yaml, as written
    sampling: dict[str, Any]            # what is sent of completions_kwargs
    model: str | None                   # completions_kwargs.model (not sent: judge.model is)
    template_sha256: str
    config_sha256: str

    def schema(self, function: str) -> dict:
        """The function's schema as ToolEval sends it: `reason` added (once) to its properties and
        to `required`."""
        schema = copy.deepcopy(self.functions[function])
        parameters = schema["parameters"]
        parameters["properties"]["reason"] = dict(REASON_PROPERTY)
        if "reason" not in parameters["required"]:
            parameters["required"].append("reason")
        return schema

    def request(self, function: str, fields: dict) -> tuple[list[dict], dict]:
        """(messages, parameters) of ToolEval's call of `function`: the description formatted with
        `fields` as the one user message; the schema in the legacy `functions`, the call forced by
        `function_call`, and the sampling settings of completions_kwargs."""
        messages = [{"role": "user", "content": self.descriptions[function].format(**fields)}]
        params = {**self.sampling, "functions": [self.schema(function)],
                  "function_call": {"name": function}}
        return messages, params

    def describe(self) -> str:
        return (f"ToolEval evaluator {self.folder} ({self.template_file.name} sha256 "
                f"{self.template_sha256}, config.yaml sha256 {self.config_sha256})")


def _fail(where: Path, what: str) -> EvaluatorError:
    return EvaluatorError(f"judge.evaluator_dir: {where}: {what}")


def parse_template(text: str, where: Path) -> dict[str, str]:
    """{name: description} of the template's <function> blocks; a description keeps its text
    exactly, newlines included (ToolEval sends it so). Like ToolEval, the first <name> and
    <description> of each block are read, by regular expression, not as XML."""
    found: dict[str, str] = {}
    for n, block in enumerate(re.findall(r"<function>(.*?)</function>", text, re.DOTALL), 1):
        name = re.search(r"<name>(.*?)</name>", block, re.DOTALL)
        description = re.search(r"<description>(.*?)</description>", block, re.DOTALL)
        if name is None or description is None:
            raise _fail(where, f"<function> block {n} has no "
                               f"{'<name>' if name is None else '<description>'}")
        key = name.group(1).strip()
        if key in found:
            raise _fail(where, f"function {key} is defined twice")
        found[key] = description.group(1)
    return found


def _check_description(function: str, text: str, where: Path) -> None:
    """Every {placeholder} is one of the fields the function is given, and the text formats."""
    allowed = FIELDS[function]
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        unknown = sorted(n for n in names if n not in allowed)
        if not unknown:
            text.format(**{f: "" for f in allowed})
    except (ValueError, IndexError, KeyError) as err:
        raise _fail(where, f"the description of {function} does not format with str.format "
                           f"({err}); a literal brace is doubled") from None
    if unknown:
        raise _fail(where, f"the description of {function} uses {{{'}, {'.join(unknown)}}}; it is "
                           f"given only {', '.join(allowed)} (a literal brace is doubled)")


def _check_schema(function: str, schema: Any, where: Path) -> None:
    at = f"completions_kwargs.functions entry {function}"
    parameters = schema.get("parameters")
    if not isinstance(parameters, dict):
        raise _fail(where, f"{at} has no `parameters` mapping")
    if not isinstance(parameters.get("properties"), dict):
        raise _fail(where, f"{at} has no `parameters.properties` mapping")
    if not isinstance(parameters.get("required"), list):
        raise _fail(where, f"{at} has no `parameters.required` list (ToolEval appends `reason` to it)")
    field = tooleval.REPLY_FIELDS[function][0]
    if field not in parameters["properties"]:
        raise _fail(where, f"{at} has no `{field}` property (the reply's label is read from it)")


def load(folder: str | Path) -> Evaluator:
    """Read and check an evaluator folder (config.yaml and the template file it names). Every
    problem is an EvaluatorError naming the file and the missing or wrong field or function."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _fail(folder, "not a folder (expected a ToolBench checkout's "
                            "toolbench/tooleval/evaluators/<evaluator>/)")
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        raise _fail(config_file, "missing")
    try:
        cfg = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise _fail(config_file, f"not YAML ({err})") from None
    if not isinstance(cfg, dict):
        raise _fail(config_file, "not a YAML mapping")
    if not isinstance(cfg.get("prompt_template"), str):
        raise _fail(config_file, "no `prompt_template` (the template file's name)")
    template_file = folder / cfg["prompt_template"]
    if not template_file.is_file():
        raise _fail(template_file, "missing (named by config.yaml's prompt_template)")

    kwargs = cfg.get("completions_kwargs")
    if not isinstance(kwargs, dict):
        raise _fail(config_file, "no `completions_kwargs` mapping")
    unknown = sorted(k for k in kwargs if k not in SAMPLING + NOT_SENT + ("functions",))
    if unknown:
        raise _fail(config_file, f"completions_kwargs has {', '.join(unknown)}, which this judge "
                                 f"does not send (known: {', '.join(SAMPLING + NOT_SENT)}, functions)")
    listed = kwargs.get("functions")
    if not isinstance(listed, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str)
                                               for f in listed):
        raise _fail(config_file, "completions_kwargs.functions is not a list of schemas with a `name`")
    functions = {f["name"]: f for f in listed}
    missing = [f for f in FIELDS if f not in functions]
    if missing:
        raise _fail(config_file, f"completions_kwargs.functions lacks {', '.join(missing)} (all of "
                                 f"{', '.join(FIELDS)} are needed: the answer, whole-run, task and "
                                 f"preference checks of ToolEval's default evaluator)")
    for function in FIELDS:
        _check_schema(function, functions[function], config_file)

    descriptions = parse_template(template_file.read_text(encoding="utf-8"), template_file)
    missing = [f for f in FIELDS if f not in descriptions]
    if missing:
        raise _fail(template_file, f"no <function> block for {', '.join(missing)}")
    for function in FIELDS:
        _check_description(function, descriptions[function], template_file)

    model = kwargs.get("model")
    return Evaluator(folder=folder.resolve(), template_file=template_file, config_file=config_file,
                     descriptions={f: descriptions[f] for f in FIELDS},
                     functions={f: copy.deepcopy(functions[f]) for f in FIELDS},
                     sampling={k: kwargs[k] for k in SAMPLING if k in kwargs},
                     model=None if model is None else str(model),
                     template_sha256=sha256(template_file), config_sha256=sha256(config_file))
