"""An API as the tool environments know it: its standardized names, its tool document
(toolenv/tools/<category>/<tool>.json), and its arguments in canonical and forgiving forms."""
from __future__ import annotations

import json
from pathlib import Path

from lib.toolbench.formats import change_name, standardize_name


def api_names(category: str, tool_name: str, api_name: str) -> tuple[str, str, str]:
    """How environments identify an API: category, tool and API names standardized as ToolBench
    names files and functions (so 'Weather API!' and 'weather_api' are the same tool)."""
    return (standardize_name(category), standardize_name(tool_name),
            change_name(standardize_name(api_name)))


def canonical_arguments(arguments: dict) -> str:
    """Exact canonical form: JSON with sorted keys."""
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False)


def _loose(value) -> str:
    return str(value).strip().lower() if not isinstance(value, (dict, list)) else \
        json.dumps(value, sort_keys=True, ensure_ascii=False).lower()


def loose_arguments(arguments: dict, keep=None) -> tuple:
    """Forgiving form: parameter names standardized, values compared as lowercase stripped text,
    empty / null values dropped; `keep` limits it to those (standardized) parameter names."""
    out = {}
    for name, value in arguments.items():
        key = change_name(standardize_name(name))
        if value is None or _loose(value) == "" or (keep is not None and key not in keep):
            continue
        out[key] = _loose(value)
    return tuple(sorted(out.items()))


def load_tool_docs(tools_dir) -> dict:
    """toolenv/tools/<category>/<tool>.json -> {standardized tool name: doc with 'category' added}."""
    docs = {}
    tools_dir = Path(tools_dir)
    if not tools_dir.exists():
        return docs
    for path in sorted(tools_dir.glob("*/*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(doc, dict) or "api_list" not in doc:
            raise ValueError(f"{path}: a tool document needs 'tool_name' and 'api_list'")
        doc = dict(doc, category=path.parent.name)
        docs[standardize_name(doc.get("tool_name") or path.stem)] = doc
    return docs


def find_api_doc(docs: dict, tool_name: str, api_name: str) -> dict | None:
    doc = docs.get(standardize_name(tool_name))
    if doc is None:
        return None
    want = change_name(standardize_name(api_name))
    for api in doc["api_list"]:
        if change_name(standardize_name(api["name"])) == want:
            return api
    return None

