"""Profiles: configs/<profile>.yaml holds every knob of a run.

`load("smoke", {"train.max_steps": 5})` reads the profile, applies overrides (dotted keys or nested
dicts) and checks every key against the schema below, so a typo fails loudly instead of being
ignored. The `train` section is TRL's `SFTConfig` and `lora` is peft's `LoraConfig`, field for field:
their keys are checked against those classes, not against a list of ours.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"

ANY = None          # a leaf: any value
MAPPING = dict      # a free-form mapping (e.g. OPTConfig keyword arguments)

SCHEMA: dict[str, Any] = {
    "profile": ANY,
    "seed": ANY,
    "output_dir": ANY,
    "stamp": ANY,
    "data": {
        "sample_dir": ANY, "generate_sample": ANY, "train_path": ANY, "test_dir": ANY,
        "toolenv_dir": ANY, "example_per": ANY, "on_bad_record": ANY, "num_proc": ANY,
        "max_records": ANY, "histogram_bins": ANY, "sample_train_queries": ANY,
        "sample_queries_per_group": ANY, "sample_invented_values": ANY, "sample_retry_share": ANY,
    },
    "model": {
        "name_or_path": ANY, "tiny": MAPPING, "tokenizer_train_texts": ANY, "chat_template": ANY,
        "over_max_positions": ANY, "dtype": ANY, "tokenizer_pretokenize": ANY,
    },
    "format_check": {"heldout": ANY, "max_new_tokens": ANY, "curve_points": ANY},
    "train": "SFTConfig",
    "lora": "LoraConfig",
    "inference": {
        "groups": ANY, "max_queries_per_group": ANY, "method": ANY, "backend": ANY, "tool_env": ANY,
        "temperature": ANY, "max_iterations": ANY, "batch_size": ANY, "max_new_tokens": ANY,
        "dfsdt_width": ANY, "dfsdt_max_expansions": ANY, "openai_base_url": ANY,
        "openai_model": ANY, "openai_api_key_env": ANY, "virtual_server_url": ANY,
        "toolbench_key_env": ANY, "rapidapi_key_env": ANY, "model_dir": ANY,
        "max_observation_length": ANY, "dtype": ANY, "untrained_run": ANY,
    },
    "judge": {
        "kind": ANY, "evaluate_times": ANY, "base_url": ANY, "model": ANY, "api_key_env": ANY,
        "temperature": ANY, "max_retries": ANY, "timeout_s": ANY, "seed": ANY,
        "win_rate_reference": ANY, "max_tokens": ANY, "retry_backoff_s": ANY,
        "malformed_retries": ANY, "max_workers": ANY,
    },
    "report": {
        "paper_results": ANY, "toolbench_results": ANY, "paper_claims": ANY, "runs": ANY,
        "contamination_ngram": ANY, "contamination_threshold": ANY,
    },
}

GROUPS = ["G1_instruction", "G1_category", "G1_tool", "G2_instruction", "G2_category", "G3_instruction"]


class ConfigError(ValueError):
    """A profile or override that does not fit the schema."""


def _library_fields(name: str) -> set[str]:
    # Imported lazily: trl and peft take seconds to import and most callers never need them.
    if name == "SFTConfig":
        from trl import SFTConfig
        return {f.name for f in dataclasses.fields(SFTConfig)}
    if name == "LoraConfig":
        from peft import LoraConfig
        return {f.name for f in dataclasses.fields(LoraConfig)}
    raise KeyError(name)


def _check(value: Any, schema: Any, where: str, source: str) -> None:
    if schema is ANY or schema is MAPPING:
        if schema is MAPPING and value is not None and not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(value).__name__}")
        return
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(value).__name__}")
    allowed = _library_fields(schema) if isinstance(schema, str) else set(schema)
    for key in value:
        path = f"{where}.{key}" if where else key
        if key not in allowed:
            owner = f"{schema} has no field" if isinstance(schema, str) else "unknown key"
            raise ConfigError(f"{source}: {owner} '{path}'")
        if isinstance(schema, dict):
            _check(value[key], schema[key], path, source)


def _set_dotted(cfg: dict, dotted: str, value: Any, source: str) -> None:
    node = cfg
    parts = dotted.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"{source}: cannot set '{dotted}': '{part}' is not a mapping")
        node = node[part]
    node[parts[-1]] = value


def _flatten(overrides: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        # Nested dicts merge key by key, so {"train": {"max_steps": 5}} keeps the other train keys.
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path.resolve()
    return CONFIG_DIR / f"{profile}.yaml"


def load(profile: str = "smoke", overrides: dict | None = None) -> dict:
    """Read configs/<profile>.yaml (or a YAML path), apply overrides, validate, resolve paths."""
    path = profile_path(profile)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"no profile '{profile}': {path} does not exist (known: {known})")
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh) or {}
    _check(cfg, SCHEMA, "", str(path))
    cfg = copy.deepcopy(cfg)
    for dotted, value in _flatten(overrides or {}).items():
        _set_dotted(cfg, dotted, value, "overrides")
    _check(cfg, SCHEMA, "", f"{path} with overrides")
    cfg["config_path"] = str(path)
    cfg["root"] = str(ROOT)
    return cfg


def path(cfg: dict, relative: str | os.PathLike | None) -> Path | None:
    """A path from the config, resolved against the repository root (absolute paths kept)."""
    if relative is None:
        return None
    p = Path(os.path.expanduser(str(relative)))
    return p if p.is_absolute() else Path(cfg["root"]) / p


def output_dir(cfg: dict, *folders: str) -> Path:
    """The folder outputs/<profile>/<folders...>, created if missing. Stages write only under it."""
    target = path(cfg, cfg["output_dir"]).joinpath(*folders)
    target.mkdir(parents=True, exist_ok=True)
    return target


def file_digest(*paths) -> str:
    """sha256 over the given files' bytes (folders: their files, sorted), to tell inputs apart."""
    digest = hashlib.sha256()
    for p in map(Path, paths):
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                digest.update(f.name.encode())
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
    return digest.hexdigest()[:16]


def resumable_dir(cfg: dict, name: str, key: dict) -> Path:
    """outputs/<profile>/<name>/ for an append-only, resumable stage.

    `key` says what the folder's contents are made from (model, settings, inputs). A rerun with the
    same key resumes; with another key the old folder is moved aside to <name>.previous/ (so nothing
    written is lost) and the stage starts afresh instead of mixing results of two different runs.
    """
    folder = output_dir(cfg) / name
    stamp, text = folder / "RUN_KEY.json", json.dumps(key, sort_keys=True, indent=1, default=str)
    if folder.exists() and any(folder.iterdir()) and (not stamp.exists() or stamp.read_text() != text):
        previous = folder.with_name(f"{name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)
    return folder
