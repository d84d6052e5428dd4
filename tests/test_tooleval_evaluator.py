"""lib/toolbench/tooleval_evaluator.py: reading and checking a ToolEval evaluator folder (config.yaml +
template.txt, in the layout of ToolBench's toolbench/tooleval/evaluators/<evaluator>/), and the
request built from it. The folder is written here, in that layout, with our own short texts."""
from __future__ import annotations

import copy
import hashlib

import pytest
import yaml

from lib.common import config
from lib.toolbench import tooleval_evaluator as te

DESCRIPTIONS = {   # our own words; ToolEval's layout: the text between the tags, newlines kept
    "check_answer_status": "\nIs the request settled by this answer?\nRequest: {query}\nAnswer: {answer}\n",
    "parse_answer_status": "\nRead the whole run.\nRequest: {query}\nRun: {answer}\n",
    "check_task_solvable": "\nCould the tools settle this task?\n{task}\n",
    "select_better_answer": "\nRequest: {query}\nAnswer_0: {answer_0}\nAnswer_1: {answer_1}\n"
                            "Pick the better run; reply with its index (0 or 1).\n",
}
ANSWER = {"type": "string", "enum": ["Unsure", "Unsolved", "Solved"]}
SCHEMAS = [
    {"name": "check_answer_status", "description": "Label the final answer.",
     "parameters": {"type": "object", "properties": {"answer_status": ANSWER},
                    "required": ["answer_status"]}},
    {"name": "parse_answer_status", "description": "Label the run.",
     "parameters": {"type": "object", "properties": {"answer_status": ANSWER},
                    "required": ["answer_status"]}},
    {"name": "check_task_solvable", "description": "Label the task.",
     "parameters": {"type": "object",
                    "properties": {"task_status": {"type": "string",
                                                   "enum": ["Unsure", "Unsolvable", "Solvable"]}},
                    "required": ["task_status"]}},
    {"name": "select_better_answer", "description": "Pick the better answer.",
     "parameters": {"type": "object",
                    "properties": {"index": {"type": "number", "description": "0 or 1"}},
                    "required": ["index"]}},
]


def evaluator_config(**completions):
    return {"evaluator_name": "test_evaluator", "registered_cls_name": "ReinforceToolLearningEvaluator",
            "prompt_template": "template.txt", "fn_completions": "normalized_openai_completions",
            "apis_json": "unused.json",
            "completions_kwargs": {"model": "config-model", "max_tokens": 321, "temperature": 0.7,
                                   "timeout": 10, "functions": copy.deepcopy(SCHEMAS), **completions},
            "fn_completion_parser": "index_parser", "batch_size": 1}


def template_text(descriptions=DESCRIPTIONS):
    return "\n\n".join(f"<function>\n<name>{name}</name>\n<description>{text}</description>\n</function>"
                       for name, text in descriptions.items())


def write_evaluator(folder, cfg=None, template=None):
    """An evaluator folder in ToolEval's layout; `cfg` / `template` replace the good ones."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(evaluator_config() if cfg is None else cfg,
                                                       sort_keys=False), encoding="utf-8")
    (folder / "template.txt").write_text(template_text() if template is None else template,
                                         encoding="utf-8")
    return folder


def test_a_folder_is_read_as_toolevals_function_call_request(tmp_path):
    ev = te.load(write_evaluator(tmp_path / "ev"))
    assert ev.descriptions == DESCRIPTIONS                  # exactly, newlines kept
    assert ev.model == "config-model" and ev.sampling == {"max_tokens": 321, "temperature": 0.7}
    messages, params = ev.request("check_answer_status", {"query": "Q?", "answer": "A."})
    assert messages == [{"role": "user",
                         "content": "\nIs the request settled by this answer?\nRequest: Q?\nAnswer: A.\n"}]
    schema = params["functions"][0]
    assert params["function_call"] == {"name": "check_answer_status"} and len(params["functions"]) == 1
    assert schema["parameters"]["required"] == ["answer_status", "reason"]
    assert schema["parameters"]["properties"]["reason"] == {"type": "string",
                                                            "description": "explain your answer."}
    assert schema["parameters"]["properties"]["answer_status"] == ANSWER
    # no model (judge.model is asked), no timeout (judge.timeout_s), no seed (ToolEval sends none)
    assert set(params) == {"functions", "function_call", "max_tokens", "temperature"}
    # building a request leaves the evaluator as read: `reason` is added once, each time
    assert ev.request("check_answer_status", {"query": "Q?", "answer": "A."})[1] == params
    assert "reason" not in ev.functions["check_answer_status"]["parameters"]["properties"]
    sha = hashlib.sha256((tmp_path / "ev" / "template.txt").read_bytes()).hexdigest()
    assert ev.describe().startswith(f"ToolEval evaluator {(tmp_path / 'ev').resolve()} "
                                    f"(template.txt sha256 {sha}, config.yaml sha256 ")


def test_the_template_file_is_the_one_config_yaml_names(tmp_path):
    cfg = evaluator_config()
    cfg["prompt_template"] = "mine.txt"
    folder = write_evaluator(tmp_path / "ev", cfg)
    (folder / "template.txt").rename(folder / "mine.txt")
    ev = te.load(folder)
    assert ev.template_file.name == "mine.txt" and "(mine.txt sha256 " in ev.describe()


def without(name, items):
    return [s for s in items if s["name"] != name]


def bad_schema(drop):
    cfg = evaluator_config()
    schema = next(s for s in cfg["completions_kwargs"]["functions"] if s["name"] == "check_task_solvable")
    parameters = schema["parameters"]
    del (parameters if drop in ("required", "properties") else parameters["properties"])[drop]
    return cfg


def with_cfg(**changes):
    cfg = evaluator_config()
    for key, value in changes.items():
        if value is None:
            del cfg[key]
        else:
            cfg[key] = value
    return cfg


def descriptions_with(**changed):
    return template_text({**DESCRIPTIONS, **changed})


BAD = {  # name: (config, template, file named, what the error must say)
    "no prompt_template": (with_cfg(prompt_template=None), None, "config.yaml", "`prompt_template`"),
    "no completions_kwargs": (with_cfg(completions_kwargs=None), None, "config.yaml", "`completions_kwargs`"),
    "a function missing in config": (
        with_cfg(completions_kwargs={**evaluator_config()["completions_kwargs"],
                                     "functions": without("parse_answer_status", SCHEMAS)}),
        None, "config.yaml", "completions_kwargs.functions lacks parse_answer_status"),
    "another evaluator's functions": (   # like ToolBench's _normalized evaluator: other functions
        with_cfg(completions_kwargs={"model": "m", "functions": [
            {"name": "check_solve_query", "parameters": {"type": "object", "properties": {},
                                                         "required": []}}]}),
        None, "config.yaml", "lacks check_answer_status, parse_answer_status, check_task_solvable, "
                             "select_better_answer"),
    "no required list": (bad_schema("required"), None, "config.yaml",
                         "entry check_task_solvable has no `parameters.required`"),
    "no label property": (bad_schema("task_status"), None, "config.yaml",
                          "entry check_task_solvable has no `task_status` property"),
    "an unknown request key": (
        with_cfg(completions_kwargs={**evaluator_config()["completions_kwargs"], "stream": True}),
        None, "config.yaml", "completions_kwargs has stream"),
    "a function missing in the template": (
        None, template_text({k: v for k, v in DESCRIPTIONS.items() if k != "select_better_answer"}),
        "template.txt", "no <function> block for select_better_answer"),
    "a block without description": (None, template_text() + "\n<function><name>x</name></function>",
                                    "template.txt", "has no <description>"),
    "a function defined twice": (None, template_text() + "\n" + template_text(),
                                 "template.txt", "function check_answer_status is defined twice"),
    "an unknown placeholder": (None, descriptions_with(check_task_solvable="\n{task} {query}\n"),
                               "template.txt", "check_task_solvable uses {query}; it is given only task"),
    "a literal brace not doubled": (
        None, descriptions_with(check_answer_status="\nReply {\"a\": 1} {query} {answer}\n"),
        "template.txt", "check_answer_status uses {\"a\"}; it is given only query, answer (a literal"),
    "a stray brace": (None, descriptions_with(check_answer_status="\nReply { {query} {answer}\n"),
                      "template.txt", "check_answer_status does not format"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_folder_is_refused_naming_the_file_and_what_is_wrong(tmp_path, case):
    cfg, template, named, says = BAD[case]
    folder = write_evaluator(tmp_path / "ev", cfg, template)
    with pytest.raises(te.EvaluatorError) as err:
        te.load(folder)
    assert str(folder / named) in str(err.value) and says in str(err.value), str(err.value)
    assert isinstance(err.value, config.ConfigError)        # the runner shows it as a config error


def test_a_missing_folder_or_file_is_named(tmp_path):
    with pytest.raises(te.EvaluatorError, match="not a folder"):
        te.load(tmp_path / "nowhere")
    folder = write_evaluator(tmp_path / "ev")
    (folder / "template.txt").unlink()
    with pytest.raises(te.EvaluatorError, match=r"template.txt: missing \(named by config.yaml"):
        te.load(folder)
    (folder / "config.yaml").unlink()
    with pytest.raises(te.EvaluatorError, match="config.yaml: missing"):
        te.load(folder)
    (folder / "config.yaml").write_text("- a list\n", encoding="utf-8")
    with pytest.raises(te.EvaluatorError, match="config.yaml: not a YAML mapping"):
        te.load(folder)
