"""Profiles: configs/<profile>.yaml holds every knob of a run.

`load("smoke", {"train.max_steps": 5})` reads the profile (and the bases it `extends`), applies
overrides, checks every key against lib/common/settings.py's dataclasses, so a typo fails before
stage 01, and returns the profile as those dataclasses (`cfg.inference.method`). `train` is TRL's
`SFTConfig` and `lora` peft's `LoraConfig`, checked against and built from those classes. `derive`
makes a checked copy with named changes (the untrained run's profile). How files merge:
docs/profiles.md.
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

from lib.common import global_batch, gguf_model, settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"

ANY = settings.ANY
MAPPING = dict      # a free-form mapping (e.g. OPTConfig keyword arguments)
Leaf = settings.Leaf

# {section: {key: Leaf}} (or "SFTConfig"/"LoraConfig": checked against those classes), made from the
# dataclasses of lib/common/settings.py: the one place a knob's type, default and values are written.
SCHEMA: dict[str, Any] = {"extends": Leaf((str,))}     # the profile this one is merged over (read by load)
for _field in dataclasses.fields(settings.Profile):
    _name = _field.name
    _cls = settings.section_class(_name)
    if _cls is not None:
        SCHEMA[_name] = settings.schema_of(_cls)
    elif _name in ("train", "lora"):
        SCHEMA[_name] = {"train": "SFTConfig", "lora": "LoraConfig"}[_name]
    elif _name not in ("config_path", "root", "overrides"):
        SCHEMA[_name] = settings.leaf_of(_field, settings.HINTS[_name])

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


@functools.cache
def _library_fields(name: str) -> dict[str, Any]:
    """{field: Leaf} of SFTConfig or LoraConfig, from their type annotations."""
    import typing
    cls = _library_class(name)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:       # an annotation that does not resolve: check the names only
        hints = {}
    return {f.name: settings.leaf_from_hint(hints.get(f.name, f.type), containers=False) for f in dataclasses.fields(cls)}


def _check(value: Any, schema: Any, where: str, source: str) -> None:
    if isinstance(schema, Leaf):
        problem = schema.problem(value)
        if problem:
            raise ConfigError(f"{source}: '{where}' {problem}")
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
    """Build TRL's SFTConfig from `train:` and peft's LoraConfig from `lora:` as lib.train.recipe does, so
    what their own __post_init__ rejects (logging_steps: 0, fp16 and bf16 both true, warmup_steps
    below 0, an unknown task_type) fails on load, not in stage 02."""
    if "train" in sections:
        train = dict(cfg.get("train") or {})
        # use_cpu: the check must not depend on this machine's devices (bf16 without use_cpu asks for
        # a bf16 GPU). fp16 and bf16 are kept as written, so both true fails here; transformers checks
        # no device for fp16 when building, so the paper's fp16 loads on a CPU-only machine (on one,
        # lib.train.recipe.precision_kwargs trains it in fp32). output_dir: a name only, nothing is created
        # there (lib.train.recipe passes outputs/<profile>/checkpoints).
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


def add_arguments(parser, example: str = "train.max_steps=5") -> None:
    """--profile and --set, as every command line of the project takes them."""
    parser.add_argument("--profile", default="smoke", help="configs/<profile>.yaml or a .yaml path (default: smoke)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key, value parsed as YAML (e.g. {example})")


def overrides_of(parser, args) -> dict:
    """The --set arguments as overrides; a malformed one ends the command with argparse's usage error."""
    try:
        return parse_overrides(args.set)
    except ConfigError as err:
        parser.error(str(err))


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


def load(profile: str = "smoke", overrides: dict | None = None) -> settings.Profile:
    """Read configs/<profile>.yaml (or a YAML path) over the profiles it extends, apply overrides,
    validate, and return it typed (lib/common/settings.py's Profile)."""
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
    if inference.get("serve") and inference.get("backend") != "openai":
        raise ConfigError(f"{source}: inference.serve starts an OpenAI-compatible server for the openai "
                          "backend: set inference.backend: openai, or serve: null")
    unknown = [c for c in (cfg.get("bfcl") or {}).get("categories") or []
               if c not in settings.BFCL_CATEGORIES]
    if unknown:
        raise ConfigError(f"{source}: bfcl.categories: unknown {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(settings.BFCL_CATEGORIES)})")
    _check_processes(cfg, source)
    _check_judge_server(cfg, source)
    cfg["config_path"] = str(path)
    cfg["root"] = str(ROOT)
    cfg["overrides"] = flat
    _resolve_gguf(cfg, source)
    return _typed(cfg, source)


def _typed(cfg: dict, source: str) -> settings.Profile:
    """The checked mapping as lib/common/settings.py's dataclasses (a missing section: its defaults)."""
    kwargs = {}
    for name in settings.SECTIONS:
        if name in cfg:
            cls = settings.section_class(name)
            kwargs[name] = settings.build(cls, cfg[name] or {}) if cls else cfg[name]
    kwargs["train"] = dict(cfg.get("train") or {})
    return settings.Profile(**kwargs)


def as_dict(cfg) -> dict:
    """A loaded profile, or one of its sections, as plain mappings (for JSON, fingerprints, overrides)."""
    return dataclasses.asdict(cfg)


def derive(cfg: settings.Profile, changes: dict) -> settings.Profile:
    """A typed copy of a loaded profile with named changes ({"output_dir": ..., "judge.released": []},
    dotted keys or nested mappings), each checked as an override of load is."""
    raw = as_dict(cfg)
    meta = {key: raw.pop(key) for key in ("config_path", "root", "overrides")}
    source = f"{meta['config_path']} derived"
    flat = _flatten(changes)
    for dotted, value in flat.items():
        _set_dotted(raw, dotted, value, f"{source} with {dotted}={value!r}")
        _check(raw, SCHEMA, "", f"{source} with {dotted}={value!r}")
    sections = tuple({k.split(".")[0] for k in flat} & {"train", "lora"})
    if sections:
        _check_library(raw, source, sections)
    _check_processes(raw, source)
    _check_judge_server(raw, source)
    meta["overrides"] = {**(meta["overrides"] or {}), **flat}
    return _typed({**raw, **meta}, source)


def _check_processes(cfg: dict, source: str) -> None:
    """accelerate.num_processes > 1: the global batch divides among the processes, and the accelerate
    config file the launch reads is there."""
    launch = cfg.get("accelerate") or {}
    processes = launch.get("num_processes") or 1
    if processes == 1:
        return
    train = cfg.get("train") or {}
    try:
        global_batch.per_process(train.get("per_device_train_batch_size", 8),
                                 train.get("gradient_accumulation_steps", 1), processes)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    file = launch.get("config_file") or settings.Accelerate.config_file
    if not (ROOT / os.path.expanduser(file)).is_file():
        raise ConfigError(f"{source}: 'accelerate.config_file' {file} does not exist (configs/accelerate/ "
                          "holds one_gpu.yaml, multi_gpu.yaml and fsdp.yaml)")


def launch_arguments(cfg: settings.Profile) -> list[str]:
    """`--profile ... --set ...` that rebuild `cfg` in another process (stage 02's launched ones).
    Each value is written as YAML, which --set reads back to the same value (1e-05 too)."""
    path = Path(cfg.config_path)
    profile = path.stem if path.parent == CONFIG_DIR else str(path)
    out = ["--profile", profile]
    for dotted, value in (cfg.overrides or {}).items():
        out += ["--set", f"{dotted}={_as_yaml(value)}"]
    return out


def _as_yaml(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n...\n").strip()        # a scalar's end-of-document marker


# A GGUF key and the folder key it fills: the model trained, and the model the judge's server serves.
GGUF_KEYS = (("model", "gguf", "name_or_path"), ("judge", "serve_gguf", "serve_model"))


def _resolve_gguf(cfg: dict, source: str) -> None:
    """model.gguf (judge.serve_gguf): point model.name_or_path (judge.serve_model) at the converted
    folder, converting it on first use."""
    for section, gguf_key, folder_key in GGUF_KEYS:
        gguf = (cfg.get(section) or {}).get(gguf_key)
        if not gguf:
            continue
        if cfg[section].get(folder_key):
            raise ConfigError(f"{source}: set {section}.{gguf_key} or {section}.{folder_key}, not both "
                              f"({section}.{gguf_key}: null loads {section}.{folder_key} "
                              f"{cfg[section][folder_key]!r})")
        try:
            cfg[section][folder_key] = str(gguf_model.converted(gguf["package"], gguf["file"]))
        except gguf_model.GGUFSourceError as err:
            raise ConfigError(f"{source}: {err}") from None


def _check_judge_server(cfg: dict, source: str) -> None:
    """judge.serve: an LLM judge, a model to serve, and no other endpoint named."""
    judge = cfg.get("judge") or {}
    if not judge.get("serve"):
        return
    if judge.get("kind") != "llm":
        raise ConfigError(f"{source}: judge.serve starts a server for the LLM judge: set judge.kind: llm, "
                          "or serve: null")
    if not (judge.get("serve_model") or judge.get("serve_gguf")):
        raise ConfigError(f"{source}: judge.serve needs the model to serve: judge.serve_model (a model "
                          "folder) or judge.serve_gguf ({package, file})")
    if judge.get("base_url"):
        raise ConfigError(f"{source}: judge.serve starts the judge's own server, so judge.base_url "
                          f"({judge['base_url']!r}) would not be asked: set one of them to null")


def path(cfg: settings.Profile, relative: str | os.PathLike | None) -> Path | None:
    """A path from the config, resolved against the repository root (absolute paths kept)."""
    if relative is None:
        return None
    p = Path(os.path.expanduser(str(relative)))
    return p if p.is_absolute() else Path(cfg.root) / p


def output_dir(cfg: settings.Profile, *folders: str) -> Path:
    """The folder outputs/<profile>/<folders...>, created if missing. Stages write only under it."""
    target = path(cfg, cfg.output_dir).joinpath(*folders)
    target.mkdir(parents=True, exist_ok=True)
    return target
