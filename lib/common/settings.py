"""What a profile may hold: one frozen dataclass per section, with each knob's type, default and
allowed values, checked when the profile loads (lib/common/config.py reads the YAML into them).

`train:` is TRL's SFTConfig and `lora:` peft's LoraConfig, field for field: they stay mappings here,
checked against those classes at load, and lib/train builds the classes from them.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
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
            names = " or ".join("a mapping" if t is dict else t.__name__ for t in self.types)
            hint = ""
            if isinstance(value, str) and float in self.types and _is_number(value):
                hint = " (YAML reads 1e-4 as text: write 1.0e-4)"
            return f"must be {names}, got {type(value).__name__} {value!r}{hint}"
        if self.low is not None and value < self.low:
            return f"must be at least {self.low}, got {value!r}"
        return None


ANY = Leaf()


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def knob(default: Any = None, *, low: float | None = None, null: bool | None = None):
    """A dataclass field with a lower bound, or that a profile may leave out but not set to null
    (checked on load); list and dict defaults are copied."""
    metadata = {"low": low, "null": null}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def leaf_of(f: dataclasses.Field, hint) -> Leaf:
    """The Leaf of one of our dataclass fields: its annotation, with knob()'s bound and null rule."""
    leaf = leaf_from_hint(hint, f.metadata.get("low"))
    return leaf if f.metadata.get("null") is None else dataclasses.replace(leaf, null=f.metadata["null"])


def leaf_from_hint(hint, low: float | None = None, containers: bool = True) -> Leaf:
    """The Leaf a type annotation implies: Literal -> its values, an Enum -> its values, plain
    int/float/str/bool (and list/dict with `containers`) -> those types; `| None` allows null. ANY
    where it is none of these. TRL's and peft's list fields are left to their own checks
    (containers=False): some take a string for a list."""
    import enum
    import types
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    null = type(None) in args
    args = tuple(a for a in args if a is not type(None))
    enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums:       # e.g. lr_scheduler_type: Union[SchedulerType, str] takes the enum's values
        return Leaf(choices=tuple(e.value for e in enums[0]) + ((None,) if null else ()), null=null)
    literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
    if literals and all(typing.get_origin(a) is typing.Literal for a in args):
        return Leaf(choices=tuple(literals) + ((None,) if null else ()), null=null)
    args = tuple(typing.get_origin(a) or a for a in args)      # list[dict] -> list
    if args and all(a in (int, float, str, bool) + ((list, dict) if containers else ()) for a in args):
        return Leaf(args, low=low, null=null)
    return ANY


class Section:
    """A profile section: each field checked against its annotation and knob() when built, so a
    section made in code (`Inference(method="bfs")`) fails as a profile holding it does."""
    name: typing.ClassVar[str] = ""

    def __post_init__(self):
        for f, leaf in _leaves(type(self)):
            if isinstance(leaf, Leaf):
                problem = leaf.problem(getattr(self, f.name))
                if problem:
                    raise ValueError(f"{self.name}.{f.name} {problem}")


@functools.cache
def _leaves(cls) -> tuple:
    hints = typing.get_type_hints(cls)
    return tuple((f, leaf_of(f, hints[f.name]) if not _nested(hints[f.name]) else None)
                 for f in dataclasses.fields(cls))


def _nested(hint):
    """The dataclass a field holds (model.gguf), else None."""
    found = [a for a in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(a)]
    return found[0] if found else None


@dataclass(frozen=True)
class Data(Section):
    """Stage 01: where ToolBench's files are and how records become SFT examples."""
    name: typing.ClassVar[str] = "data"
    sample_dir: str | None = None       # the project's generated corpus (lib/toolbench/sample.py)
    generate_sample: bool = False       # generate sample_dir when it is missing
    train_path: str | None = None       # toolllama_G123_dfs_train.json, a JSONL of its records, or a raw answer folder
    test_dir: str | None = None
    toolenv_dir: str | None = None
    example_per: Literal["record", "assistant_turn", "conversation"] = "record"
    on_bad_record: Literal["raise", "skip"] = "raise"
    num_proc: int | None = knob(None, low=1)
    max_records: int | None = knob(None, low=0)
    histogram_bins: int | None = knob(40, low=1)
    # The generated sample's size and make-up: training queries, test queries per group, the share
    # of queries whose values no test query has, the share with a failed call made again.
    sample_train_queries: int = knob(240, low=0, null=False)
    sample_queries_per_group: int = knob(8, low=0, null=False)
    sample_invented_values: float = knob(0.0, low=0, null=False)
    sample_retry_share: float = knob(0.0, low=0, null=False)
    answer_methods: list | None = None  # raw answer folders: read only these methods' files
    retried_calls_in_loss: bool = True  # a call that failed and was retried is a training target too


@dataclass(frozen=True)
class GGUF(Section):
    """A GGUF file an installed package ships (lib/common/gguf_model.py)."""
    name: typing.ClassVar[str] = "model.gguf"
    package: str
    file: str


@dataclass(frozen=True)
class Model(Section):
    """The model trained in stage 02: a hub name or local folder, a GGUF, or the tiny OPT."""
    name: typing.ClassVar[str] = "model"
    name_or_path: str | None = None     # null: the tiny OPT below (or model.gguf's converted folder)
    tiny: dict | None = None            # OPTConfig keyword arguments of the tiny model
    tokenizer_train_texts: int | None = knob(None, low=1)
    chat_template: str | None = None
    over_max_positions: Literal["truncate", "drop"] | None = "truncate"
    dtype: str | None = None
    tokenizer_pretokenize: str | None = None
    gguf: GGUF | None = None


@dataclass(frozen=True)
class FormatCheck(Section):
    """Stage 02's held-out check that the model writes a ToolBench step, and its learning curve."""
    name: typing.ClassVar[str] = "format_check"
    heldout: int | None = knob(0, low=0)
    max_new_tokens: int | None = knob(128, low=1)
    curve_points: int | None = knob(0, low=0)


@dataclass(frozen=True)
class Accelerate(Section):
    """How many processes stage 02 trains in, as `accelerate launch` names its options. More than
    one: `lib.train.train.run` starts `accelerate launch` of `python -m lib.train.train` itself
    (lib/train/launch.py), and the profile's batch stays the global batch (lib/common/global_batch.py)."""
    name: typing.ClassVar[str] = "accelerate"
    num_processes: int = knob(1, low=1, null=False)
    config_file: str = knob("configs/accelerate/multi_gpu.yaml", null=False)     # relative to the repository


@dataclass(frozen=True)
class Inference(Section):
    """Stage 03: how test queries are run (method, backend, tool environment, generation)."""
    name: typing.ClassVar[str] = "inference"
    groups: list | None = None
    max_queries_per_group: int | None = knob(None, low=1)
    method: Literal["react", "dfsdt"] = "react"
    backend: Literal["hf", "openai"] = "hf"
    tool_env: Literal["offline", "virtual", "rapidapi"] = "offline"
    temperature: float | None = knob(0.1, low=0)
    max_iterations: int | None = knob(10, low=1)
    batch_size: int | None = knob(8, low=1)
    max_new_tokens: int | None = knob(512, low=1)
    dfsdt_width: int | None = knob(2, low=1)
    dfsdt_max_expansions: int | None = knob(20, low=1)
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_api_key_env: str | None = "OPENAI_API_KEY"
    openai_function_role: Literal["user", "function"] | None = "user"
    openai_timeout_s: float | None = knob(600, low=1)      # per request; the client then retries twice
    # Stage 03 starts the server itself on the model folder (lib/models/served.py): transformers serve
    # (a CPU) or vLLM (a GPU); null: the user runs it at openai_base_url.
    serve: Literal["transformers", "vllm"] | None = None
    serve_args: list | None = knob([])                      # more of the server's command-line arguments
    serve_timeout_s: float | None = knob(600, low=1)       # to load the model and answer /health
    virtual_server_url: str | None = None
    toolbench_key_env: str | None = "TOOLBENCH_KEY"
    rapidapi_key_env: str | None = "RAPIDAPI_KEY"
    model_dir: str | None = None        # null: outputs/<profile>/model (stage 02)
    max_observation_length: int | None = knob(1024, low=1)
    dtype: str | None = None
    untrained_run: bool | None = False
    tool_timeout_s: float | None = knob(60, low=1)
    max_transport_error_share: float | None = knob(None, low=0)
    reuse_kv_cache: bool | None = False
    decode_chunk: int | None = knob(None, low=1)


# BFCL v4's single-turn categories whose answers are Python-typed calls (lib/checks/bfcl_questions.py).
BFCL_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple",
                   "live_simple", "live_multiple", "irrelevance", "live_irrelevance")


@dataclass(frozen=True)
class Bfcl(Section):
    """Beside stages 03 and 04: the Berkeley Function Calling Leaderboard's questions asked in
    ToolBench's format and scored by BFCL's rules, the fine-tuned model and the untrained one alike."""
    name: typing.ClassVar[str] = "bfcl"
    categories: list | None = knob(list(BFCL_CATEGORIES))
    # Questions asked per category: a fixed seeded sample, each larger one holding the smaller;
    # null: all of them (4,435 questions); 0: BFCL is not run.
    questions_per_category: int | None = knob(10, low=0)
    # The parallel categories' answer is every call before Finish: at most this many steps
    # (BFCL's longest answer has 8 calls).
    max_steps: int = knob(10, low=1, null=False)

    def __post_init__(self):
        super().__post_init__()
        unknown = [c for c in self.categories or [] if c not in BFCL_CATEGORIES]
        if unknown:
            raise ValueError(f"bfcl.categories: unknown {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(BFCL_CATEGORIES)}")

    @property
    def enabled(self) -> bool:
        return self.questions_per_category != 0 and bool(self.categories)


@dataclass(frozen=True)
class Judge(Section):
    """Stage 04: the judge (offline rule or an LLM endpoint), its votes, and what else it judges."""
    name: typing.ClassVar[str] = "judge"
    kind: Literal["offline", "llm"] = "offline"
    evaluate_times: int = knob(4, low=1, null=False)
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float | None = knob(0.2, low=0)
    max_retries: int | None = knob(5, low=0)
    timeout_s: float | None = knob(60, low=0)
    seed: int = knob(0, null=False)     # the LLM judge sends seed + the assessment's index
    win_rate_reference: str | None = None
    max_tokens: int | None = knob(1000, low=1)
    retry_backoff_s: float | None = knob(1.0, low=0)
    malformed_retries: int | None = knob(2, low=0)
    max_workers: int | None = knob(8, low=1)
    max_calls: int | None = knob(None, low=0)
    evaluator_dir: str | None = None
    released: list | None = knob([])
    # Stage 04 starts the judge's server itself (lib/models/served.py) on serve_model, a model folder,
    # or on serve_gguf's converted one; judge.model is then only the judge's name. null: the user runs it.
    serve: Literal["transformers", "vllm"] | None = None
    serve_model: str | None = None
    serve_gguf: GGUF | None = None
    serve_dtype: str | None = None                          # null: as the folder stores it
    serve_args: list | None = knob([])                      # more of the server's command-line arguments
    serve_timeout_s: float | None = knob(600, low=1)       # to load the model and answer /health


@dataclass(frozen=True)
class Report(Section):
    """Stage 05: the published figures compared against, and extra rows."""
    name: typing.ClassVar[str] = "report"
    paper_results: str | None = None
    toolbench_results: str | None = None
    paper_claims: str | None = None
    runs: list | None = knob([])
    contamination_ngram: int | None = knob(8, low=1)
    contamination_threshold: float | None = knob(0.5, low=0)


@dataclass(frozen=True)
class Profile:
    """A whole profile, as loaded: top-level knobs, one typed section each, and where it came from."""
    # Every profile sets these (configs/base.yaml, a shared fragment, is no profile and sets neither).
    seed: int | None = knob(None, null=False)
    output_dir: str | None = knob(None, null=False)
    profile: str | None = None
    stamp: str | None = None            # printed on every table and figure that is not the paper's
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    format_check: FormatCheck = field(default_factory=FormatCheck)
    train: dict = field(default_factory=dict)       # TRL SFTConfig fields, verbatim
    lora: dict | None = None                        # peft LoraConfig fields, verbatim; null: full model
    accelerate: Accelerate = field(default_factory=Accelerate)
    inference: Inference = field(default_factory=Inference)
    bfcl: Bfcl = field(default_factory=Bfcl)
    judge: Judge = field(default_factory=Judge)
    report: Report = field(default_factory=Report)
    config_path: str | None = None      # the profile file it was read from
    root: str | None = None             # the repository root its relative paths are taken from
    # The overrides applied over config_path ({dotted key: value}, load's and derive's): with the
    # file they rebuild this profile in another process (stage 02's launched ones).
    overrides: dict | None = None


SECTIONS = tuple(f.name for f in dataclasses.fields(Profile))      # in the order a profile writes them
HINTS = typing.get_type_hints(Profile)


def section_class(name: str):
    """The dataclass of a typed section (data, model, ...), None for train/lora and top-level knobs."""
    return _nested(HINTS[name])


def schema_of(cls) -> dict[str, Any]:
    """{field: Leaf, or a nested schema for a dataclass field} of a section's dataclass."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if _nested(hints[f.name]):
            out[f.name] = schema_of(_nested(hints[f.name]))
            continue
        out[f.name] = leaf_of(f, hints[f.name])
    return out


def build(cls, values: dict | None):
    """A section's dataclass from its (checked) mapping; nested dataclass fields built too."""
    if values is None:
        return None
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        nested = _nested(hints[f.name])
        kwargs[f.name] = build(nested, values[f.name]) if nested else values[f.name]
    return cls(**kwargs)
