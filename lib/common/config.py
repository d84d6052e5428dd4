"""Profiles: configs/<profile>.yaml holds every knob of a run.

`load("smoke", {"train.max_steps": 5})` reads the profile, applies overrides (dotted keys or nested
dicts) and checks every key against the schema below, so a typo fails loudly instead of being
ignored. The `train` section is TRL's `SFTConfig` and `lora` is peft's `LoraConfig`, field for field:
their keys are checked against those classes, not against a list of ours, and both are built once
at load (on CPU, without a model) so what their own checks reject fails before stage 01 too.

A profile may start with `extends: <profile>` (a name in configs/, or a .yaml path relative to the
file): the base is loaded first (it may extend another), and the file's keys are merged over it:
mappings key by key, anything else (lists, scalars, null) replaced whole. So a profile holds only
what differs from its base. `--set KEY=VALUE` arguments become overrides through `parse_overrides`.

Heavy libraries are imported inside the functions that use them (lib/__init__.py says why).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

from lib.common import gguf_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"

ANY = None          # a leaf: any value
MAPPING = dict      # a free-form mapping (e.g. OPTConfig keyword arguments)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """What one key's value may be: of `types` (a float key takes an int too), one of `choices`,
    at least `low`; null (None) allowed unless `null=False`."""
    types: tuple = ()
    choices: tuple = ()
    low: float | None = None
    null: bool = True

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.null else "must be set"
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(map(str, self.choices))}"
        kinds = tuple(int if t is float else t for t in self.types) + self.types
        if self.types and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in self.types)):
            names = " or ".join(t.__name__ for t in self.types)
            hint = ""
            if isinstance(value, str) and float in self.types and _is_number(value):
                hint = " (YAML reads 1e-4 as text: write 1.0e-4)"
            return f"must be {names}, got {type(value).__name__} {value!r}{hint}"
        if self.low is not None and value < self.low:
            return f"must be at least {self.low}, got {value!r}"
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def one_of(*choices, null: bool = False) -> Leaf:
    return Leaf(choices=choices + ((None,) if null else ()), null=null)


STR, BOOL, LIST = Leaf((str,)), Leaf((bool,)), Leaf((list,))
INT = Leaf((int,))
COUNT, POSITIVE = Leaf((int,), low=0), Leaf((int,), low=1)
SHARE = Leaf((float,), low=0)

SCHEMA: dict[str, Any] = {
    "extends": STR,         # the profile this one is merged over (read by load, not in its result)
    "profile": STR,
    "seed": Leaf((int,), null=False),
    "output_dir": Leaf((str,), null=False),
    "stamp": STR,
    "data": {
        "sample_dir": STR, "generate_sample": BOOL, "train_path": STR, "test_dir": STR,
        "toolenv_dir": STR, "example_per": one_of("record", "assistant_turn", "conversation"),
        "on_bad_record": one_of("raise", "skip"), "num_proc": POSITIVE,
        "max_records": COUNT, "histogram_bins": POSITIVE, "sample_train_queries": COUNT,
        "sample_queries_per_group": COUNT, "sample_invented_values": SHARE, "sample_retry_share": SHARE,
        "answer_methods": LIST, "retried_calls_in_loss": BOOL,
    },
    "model": {
        "name_or_path": STR, "tiny": MAPPING, "tokenizer_train_texts": POSITIVE, "chat_template": STR,
        "over_max_positions": one_of("truncate", "drop", null=True), "dtype": STR,
        "tokenizer_pretokenize": STR,
        # A GGUF file an installed package ships (lib/common/gguf_model.py): converted once, then loaded
        # through name_or_path like any local folder.
        "gguf": {"package": Leaf((str,), null=False), "file": Leaf((str,), null=False)},
    },
    "format_check": {"heldout": COUNT, "max_new_tokens": POSITIVE, "curve_points": COUNT},
    "train": "SFTConfig",
    "lora": "LoraConfig",
    "inference": {
        "groups": LIST, "max_queries_per_group": POSITIVE, "method": one_of("react", "dfsdt"),
        "backend": one_of("hf", "openai"), "tool_env": one_of("offline", "virtual", "rapidapi"),
        "temperature": SHARE, "max_iterations": POSITIVE, "batch_size": POSITIVE,
        "max_new_tokens": POSITIVE, "dfsdt_width": POSITIVE, "dfsdt_max_expansions": POSITIVE,
        "openai_base_url": STR, "openai_model": STR, "openai_api_key_env": STR,
        "openai_function_role": one_of("user", "function", null=True),
        "virtual_server_url": STR, "toolbench_key_env": STR, "rapidapi_key_env": STR,
        "model_dir": STR, "max_observation_length": POSITIVE, "dtype": STR, "untrained_run": BOOL,
        "tool_timeout_s": Leaf((float,), low=1), "max_transport_error_share": SHARE,
        "reuse_kv_cache": BOOL, "decode_chunk": POSITIVE,
    },
    "judge": {
        "kind": one_of("offline", "llm"), "evaluate_times": POSITIVE, "base_url": STR, "model": STR,
        "api_key_env": STR, "temperature": SHARE, "max_retries": COUNT, "timeout_s": SHARE,
        "seed": INT, "win_rate_reference": STR, "max_tokens": POSITIVE, "retry_backoff_s": SHARE,
        "malformed_retries": COUNT, "max_workers": POSITIVE, "max_calls": COUNT, "evaluator_dir": STR,
        "released": LIST,
    },
    "report": {
        "paper_results": STR, "toolbench_results": STR, "paper_claims": STR, "runs": LIST,
        "contamination_ngram": POSITIVE, "contamination_threshold": SHARE,
    },
}

GROUPS = ["G1_instruction", "G1_category", "G1_tool", "G2_instruction", "G2_category", "G3_instruction"]


class ConfigError(ValueError):
    """A profile or override that does not fit the schema."""


def _library_class(name: str):
    # Imported lazily: trl and peft take seconds to import and most callers never need them.
    if name == "SFTConfig":
        from trl import SFTConfig
        return SFTConfig
    if name == "LoraConfig":
        from peft import LoraConfig
        return LoraConfig
    raise KeyError(name)


def _leaf_from_hint(hint) -> Leaf:
    """The Leaf a dataclass field's type annotation implies (ANY where it is not a plain one)."""
    import enum
    import types
    import typing
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    null = type(None) in args
    args = tuple(a for a in args if a is not type(None))
    enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums:       # e.g. lr_scheduler_type: Union[SchedulerType, str] takes the enum's values
        return one_of(*(e.value for e in enums[0]), null=null)
    literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
    if literals and len(literals) == len(args):
        return one_of(*literals, null=null)
    if args and all(a in (int, float, str, bool) for a in args):
        return Leaf(args, null=null)
    return ANY


@functools.cache
def _library_fields(name: str) -> dict[str, Any]:
    """{field: Leaf} of SFTConfig or LoraConfig, from their type annotations."""
    import typing
    cls = _library_class(name)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:       # an annotation that does not resolve: check the names only
        hints = {}
    return {f.name: _leaf_from_hint(hints.get(f.name, f.type)) for f in dataclasses.fields(cls)}


def _check(value: Any, schema: Any, where: str, source: str) -> None:
    if isinstance(schema, Leaf):
        problem = schema.problem(value)
        if problem:
            raise ConfigError(f"{source}: '{where}' {problem}")
        return
    if schema is ANY or schema is MAPPING:
        if schema is MAPPING and value is not None and not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(value).__name__}")
        return
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(value).__name__}")
    fields = _library_fields(schema) if isinstance(schema, str) else schema
    for key in value:
        path = f"{where}.{key}" if where else key
        if key not in fields:
            owner = f"{schema} has no field" if isinstance(schema, str) else "unknown key"
            raise ConfigError(f"{source}: {owner} '{path}'")
        _check(value[key], fields[key], path, source)


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
    if path.suffix in (".yaml", ".yml"):      # a file's path, taken as written
        return path.resolve()
    return CONFIG_DIR / f"{profile}.yaml"


def _known() -> str:
    """The profiles in configs/ (files with a top-level `profile:`; configs/base.yaml is none)."""
    return ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")
                            if re.search(r"^profile:", p.read_text(encoding="utf-8"), re.M)))


def _read(path: Path) -> dict:
    """One profile file as written, checked alone, so a bad key or value names the file it is in."""
    with open(path, encoding="utf-8") as fh:
        try:
            cfg = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a profile is a mapping of sections (data:, train:, ...), "
                          f"got {type(cfg).__name__}")
    _check(cfg, SCHEMA, "", str(path))
    return cfg


def _merge(base: dict, over: dict) -> dict:
    """`over` over `base`: mappings merge key by key; lists, scalars and null replace whole."""
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _read_extended(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, tuple[Path, ...]]:
    """(the profile at `path` merged over the profiles it extends, those files: itself first)."""
    chain = (*chain, path)
    cfg = _read(path)
    base = cfg.pop("extends", None)
    if base is None:
        return cfg, (path,)
    base_path = Path(base)
    # A name is a profile of configs/; a .yaml path is taken relative to the file that names it.
    base_path = (path.parent / base_path).resolve() if base_path.suffix in (".yaml", ".yml") \
        else CONFIG_DIR / f"{base}.yaml"
    if base_path in chain:
        raise ConfigError(f"{path}: 'extends: {base}' makes a cycle: "
                          f"{' -> '.join(map(str, (*chain, base_path)))}")
    if not base_path.exists():
        raise ConfigError(f"{path}: 'extends: {base}': {base_path} does not exist (known: {_known()})")
    merged, files = _read_extended(base_path, chain)
    merged = _merge(merged, cfg)
    # Sections in the schema's order, as a profile writes them (a base may hold only a later one).
    order = {key: n for n, key in enumerate(SCHEMA)}
    return dict(sorted(merged.items(), key=lambda kv: order.get(kv[0], len(order)))), (path, *files)


@functools.cache
def _check_only_sft_config():
    """TRL's SFTConfig, but setting up no device: TrainingArguments.__post_init__ asks for
    self.device, which builds accelerate's process-wide state (under `accelerate launch`, a process
    group); a check at load leaves that to the training."""
    import torch
    from trl import SFTConfig

    class CheckOnly(SFTConfig):
        @functools.cached_property
        def _setup_devices(self):
            self._n_gpu = 0
            return torch.device("cpu")

    return CheckOnly


def _check_library(cfg: dict, source: str, sections=("train", "lora")) -> None:
    """Build TRL's SFTConfig from `train:` and peft's LoraConfig from `lora:` as lib.train.train does, so
    what their own __post_init__ rejects (logging_steps: 0, fp16 and bf16 both true, warmup_steps
    below 0, an unknown task_type) fails on load, not in stage 02."""
    if "train" in sections:
        train = dict(cfg.get("train") or {})
        # use_cpu: the check must not depend on this machine's devices (bf16 without use_cpu asks for
        # a bf16 GPU). fp16 and bf16 are kept as written, so both true fails here; transformers checks
        # no device for fp16 when building, so the paper's fp16 loads on a CPU-only machine (on one,
        # lib.train.train.precision_kwargs trains it in fp32). output_dir: a name only, nothing is created
        # there (lib.train.train passes outputs/<profile>/checkpoints).
        train["use_cpu"] = True
        environ = dict(os.environ)      # torch_compile: true sets ACCELERATE_DYNAMO_* variables
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # deprecations: training prints them once
                _check_only_sft_config()(output_dir=os.path.join(tempfile.gettempdir(), "sft-config-check"),
                                         **train)
        except Exception as err:
            raise ConfigError(f"{source}: 'train' is refused by TRL's SFTConfig: {err}") from None
        finally:
            os.environ.clear()
            os.environ.update(environ)
    if "lora" in sections and cfg.get("lora"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _library_class("LoraConfig")(**cfg["lora"])
        except Exception as err:
            raise ConfigError(f"{source}: 'lora' is refused by peft's LoraConfig: {err}") from None


def parse_overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` arguments as overrides for `load`: {KEY: VALUE read as YAML}."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (e.g. train.max_steps=5), got '{item}'")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: the value is not valid YAML "
                              f"({getattr(err, 'problem', None) or err})") from None
    return overrides


def load(profile: str = "smoke", overrides: dict | None = None) -> dict:
    """Read configs/<profile>.yaml (or a YAML path) over the profiles it extends, apply overrides,
    validate, resolve paths."""
    path = profile_path(profile)
    if not path.exists():
        raise ConfigError(f"no profile '{profile}': {path} does not exist (known: {_known()})")
    cfg, files = _read_extended(path)
    source = str(path) if len(files) == 1 else f"{path} (extends {', '.join(map(str, files[1:]))})"
    _check(cfg, SCHEMA, "", source)
    _check_library(cfg, source)
    cfg = copy.deepcopy(cfg)
    flat = _flatten(overrides or {})
    for dotted, value in flat.items():
        # Checked one at a time (the file alone passed), so the error names the override at fault.
        source = f"{path} with the override {dotted}={value!r}"
        _set_dotted(cfg, dotted, value, source)
        _check(cfg, SCHEMA, "", source)
    for section in ("train", "lora"):
        mine = [f"{k}={v!r}" for k, v in flat.items() if k.split(".")[0] == section]
        if mine:
            _check_library(cfg, f"{path} with the override{'s' * (len(mine) > 1)} {', '.join(mine)}", (section,))
    inference = cfg.get("inference") or {}
    if inference.get("decode_chunk") and not inference.get("reuse_kv_cache"):
        raise ConfigError(f"{source}: inference.decode_chunk continues each turn from its cached keys "
                          "and values: set inference.reuse_kv_cache: true, or decode_chunk: null")
    cfg["config_path"] = str(path)
    cfg["root"] = str(ROOT)
    _resolve_gguf(cfg, source)
    return cfg


def _resolve_gguf(cfg: dict, source: str) -> None:
    """model.gguf: point model.name_or_path at the converted folder (converting it on first use)."""
    gguf = (cfg.get("model") or {}).get("gguf")
    if not gguf:
        return
    if cfg["model"].get("name_or_path"):
        raise ConfigError(f"{source}: set model.gguf or model.name_or_path, not both (model.gguf: null "
                          f"loads model.name_or_path {cfg['model']['name_or_path']!r})")
    try:
        cfg["model"]["name_or_path"] = str(gguf_model.converted(gguf["package"], gguf["file"]))
    except gguf_model.GGUFSourceError as err:
        raise ConfigError(f"{source}: {err}") from None


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
