"""Pre-flight check: is every input the profile needs there, before hours are spent?

`check(cfg)` returns one `Row` per input (lib.pipeline.checklist: `table(rows)` prints them aligned,
`failed(rows)` says whether any is "missing"). Statuses: ok | missing (the run would fail: the row
names the config key to set) | warn (the run may go wrong or slow) | skip (a network probe left out,
probe=False). The rows, top to bottom (the last three are lib.pipeline.service_checks'):

  training file       data.train_path: a JSON list (read as a stream, as stage 01 reads it), a JSONL
                      or a folder of raw answer files; its record count against the paper's 187,542.
                      On the smoke profile stage 01 generates it (data.generate_sample).
  test <group>        data.test_dir/<group>.json for each inference.groups entry: its query count
                      against ToolBench's 200/200/200/200/200/100 and StableToolBench's solvable
                      subset 163/153/158/106/124/61.
  tool documents      data.toolenv_dir/tools/<category>/<tool>.json: categories and tools.
  model               model.name_or_path (a local folder with config.json, or a hub id looked up in
                      the HF cache, then on the hub: lib.models.hub), its stored dtype, load dtype and
                      positions; the tiny OPT's sizes when it is null.
  model source        model.gguf: the package and GGUF file the weights were converted from, and
                      that they are de-quantized (lib.common.gguf_model; converted when the profile loads).
  tokenizer           the hub/local tokenizer loads; model.chat_template is set (and has
                      {% generation %} when train.assistant_only_loss is on).
  CUDA GPU            the device and its free memory against lib.models.memory's estimate.
  disk                free space under output_dir against checkpoints x train.save_total_limit.
  tool environment    inference.tool_env: recorded responses (offline), a probe call to the virtual
                      server (virtual), the key's environment variable (rapidapi).
  inference backend   the stage-02 model (hf) or an OpenAI-compatible endpoint (openai).
  judge               judge.kind llm: the endpoint answers GET /models and lists judge.model.

The check is read-only: it creates and modifies nothing (loading a model.gguf profile converts its
file once into lib.common.gguf_model's cache, outside the project) (a hub model not in the cache is looked up
over HTTP, not downloaded), and each network probe times out after checklist.PROBE_TIMEOUT seconds.

Heavy libraries are imported inside the functions that use them (lib/__init__.py says why).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from lib.common import config, gguf_model, paper
from lib.toolbench import formats, records
from lib.models import backends, hub, memory, model as model_lib
from lib.data import data
from lib.pipeline import checklist, service_checks
from lib.pipeline.checklist import Row

# ToolBench's test groups, and StableToolBench's solvable subset of them (DESIGN.md section 3).
TOOLBENCH_QUERIES = {"G1_instruction": 200, "G1_category": 200, "G1_tool": 200,
                     "G2_instruction": 200, "G2_category": 200, "G3_instruction": 100}
STABLE_QUERIES = {"G1_instruction": 163, "G1_category": 153, "G1_tool": 158,
                  "G2_instruction": 106, "G2_category": 124, "G3_instruction": 61}


# ---------------------------------------------------------------------------------------------
# Small helpers


def _gib(n: float) -> str:
    return f"{n / memory.GIB:.2f} GiB"


def _size(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:,.0f} KiB"


def _train(cfg: dict, key: str):
    """A train.* value, or SFTConfig's default where the profile leaves it out (what TRL will use)."""
    train = cfg.train or {}
    if key in train:
        return train[key]
    from trl import SFTConfig
    return next(f.default for f in dataclasses.fields(SFTConfig) if f.name == key)


# ---------------------------------------------------------------------------------------------
# Data rows


def count_records(path: Path, answer_methods=None) -> tuple[int, int]:
    """(records, entries skipped or broken) of a training input, read as stage 01 reads it: a JSON
    list as a stream (187,542 records in 763 MiB never held whole), JSONL by line, a folder of raw
    answer files through ToolBench's preprocessing."""
    if path.is_file() and path.suffix == ".jsonl":
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip()), 0
    found = skipped = 0
    for _, _, record, bad in records.iter_records(path, answer_methods):
        if bad is None:
            found += 1
        else:
            skipped += 1
    return found, skipped


def training_file_row(cfg: dict) -> Row:
    item, key = "training file", "data.train_path"
    path = config.path(cfg, cfg.data.train_path)
    if path is None:
        return Row(item, "missing", "data.train_path is not set", key)
    if data.will_generate(cfg, path):
        return Row(item, "ok", f"{path}: generated by stage 01 (data.generate_sample)", key)
    if not path.exists():
        return Row(item, "missing", f"{path} not found", key)
    try:
        found, skipped = count_records(path, cfg.data.answer_methods)
    except (records.DataError, FileNotFoundError, UnicodeDecodeError) as err:
        return Row(item, "missing", f"{path}: unreadable: {err}", key)
    size = sum(f.stat().st_size for f in path.rglob("*.json")) if path.is_dir() else path.stat().st_size
    detail = f"{path}: {found:,} records, {_size(size)} (the paper: {paper.number('train_examples'):,})"
    if skipped:
        detail += f"; {skipped:,} entries skipped or broken"
    if cfg.data.max_records:
        detail += f"; stage 01 reads the first {cfg.data.max_records:,} (data.max_records)"
    return Row(item, "ok" if found else "missing", detail if found else f"{path}: no records", key)


def _known_counts(group: str, n: int) -> str:
    full, stable = TOOLBENCH_QUERIES.get(group), STABLE_QUERIES.get(group)
    if full is None:
        return ""
    which = (" = ToolBench's full set" if n == full else
             " = StableToolBench's solvable subset" if n == stable else "")
    return f"{which} (ToolBench {full}, StableToolBench solvable {stable})"


def query_group_rows(cfg: dict) -> list[Row]:
    test_dir = config.path(cfg, cfg.data.test_dir)
    cap = cfg.inference.max_queries_per_group
    rows = []
    for group in cfg.inference.groups or []:
        item, path = f"test {group}", test_dir / f"{group}.json"
        if data.will_generate(cfg, path):
            rows.append(Row(item, "ok", f"{path}: generated by stage 01", "data.test_dir"))
            continue
        if not path.exists():
            rows.append(Row(item, "missing", f"{path} not found", "data.test_dir (or inference.groups)"))
            continue
        try:
            n = len(formats.load_queries(path))
        except (ValueError, UnicodeDecodeError) as err:
            rows.append(Row(item, "missing", f"unreadable: {err}", "data.test_dir"))
            continue
        detail = f"{path}: {n} queries{_known_counts(group, n)}"
        if cap:
            detail += f"; stage 03 runs the first {cap} (inference.max_queries_per_group)"
        rows.append(Row(item, "ok" if n else "missing", detail, "data.test_dir"))
    return rows


def toolenv_row(cfg: dict) -> Row:
    item, key = "tool documents", "data.toolenv_dir"
    tools_dir = config.path(cfg, cfg.data.toolenv_dir) / "tools"
    if data.will_generate(cfg, tools_dir):
        return Row(item, "ok", f"{tools_dir}: generated by stage 01", key)
    if not tools_dir.is_dir():
        # Without them the prompts describe every tool as "None" and RapidAPI has no urls.
        return Row(item, "missing", f"{tools_dir} not found (<category>/<tool>.json)", key)
    categories = sum(1 for p in tools_dir.iterdir() if p.is_dir())
    documents = sum(1 for _ in tools_dir.glob("*/*.json"))
    status = "ok" if documents else "missing"
    return Row(item, status, f"{tools_dir}: {categories:,} categories, {documents:,} tools", key)


# ---------------------------------------------------------------------------------------------
# Model and tokenizer rows


def _positions_row(cfg: dict, shape: memory.ModelShape, base: str) -> Row:
    """The model row: its sizes, warned when train.max_length is beyond its positions."""
    max_length = _train(cfg, "max_length")
    try:
        load = model_lib.load_dtype(cfg) if cfg.model.name_or_path else "float32"
    except ValueError as err:
        return Row("model", "missing", str(err).split(": ", 1)[-1], "model.dtype")
    detail = (f"{base}: {shape.layers} layers, hidden {shape.hidden}, ffn {shape.ffn}, vocab "
              f"{shape.vocab:,}, {shape.positions:,} positions, {shape.params / 1e6:,.1f}M parameters; "
              f"loaded as {load}")
    if max_length and max_length > shape.positions:
        return Row("model", "warn", f"{detail}; train.max_length {max_length} exceeds its "
                   f"{shape.positions} positions: stage 02 caps it there", "train.max_length")
    return Row("model", "ok", detail, "model.name_or_path")


def template_problem(cfg: dict) -> str | None:
    """Why model.chat_template cannot serve training, or None."""
    import re

    template = cfg.model.chat_template
    if not template:
        return "model.chat_template is not set (OPT has no chat template of its own)"
    if _train(cfg, "assistant_only_loss") and not re.search(r"{%-?\s*generation\s*-?%}", template):
        return "train.assistant_only_loss needs {% generation %} ... {% endgeneration %} in model.chat_template"
    # transformers' own renderer, generation tags included, on a three-turn conversation: a typo
    # fails here, not at hour 2.
    from transformers.utils.chat_template_utils import render_jinja_template
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"}]
    try:
        render_jinja_template([conversation], chat_template=template, eos_token="</s>", bos_token="<s>")
    except Exception as err:     # noqa: BLE001 - jinja2's TemplateSyntaxError and kin
        return f"model.chat_template does not compile: {err}"
    return None


def model_rows(cfg: dict, probe: bool) -> tuple[list[Row], memory.ModelShape | None]:
    """The model and tokenizer rows, and the model's shape for the GPU and disk rows."""
    problem = template_problem(cfg)
    name = cfg.model.name_or_path
    if not name:
        return _tiny_rows(cfg, problem)
    try:
        hf_config, where, load_tokenizer = hub.resolve_model(cfg, probe, checklist.PROBE_TIMEOUT)
    except hub.Unresolved as err:
        return _unresolved_rows(name, Row("model", "skip" if err.skipped else "missing", str(err),
                                          "model.name_or_path"))
    shape = memory.shape_of(hf_config)
    model_row = _positions_row(cfg, shape, f"{where}, {type(hf_config).__name__} stored in "
                                           f"{hub.stored_dtype(hf_config)}")
    source = gguf_model.source_of(name) if cfg.model.gguf else None
    source_rows = [Row("model source", "ok", gguf_model.describe(source), "model.gguf")] if source else []
    try:
        tokenizer = load_tokenizer()
        tok = Row("tokenizer", "ok", f"loads ({len(tokenizer):,} tokens)" if tokenizer is not None
                  else "on the hub with the model", "model.name_or_path")
    except Exception as err:     # noqa: BLE001 - missing files, bad json, absent library alike
        tok = Row("tokenizer", "missing", f"does not load: {type(err).__name__}: {err}",
                  "model.name_or_path")
    if problem:
        tok = Row("tokenizer", "missing", problem, "model.chat_template")
    elif tok.status == "ok":
        tok.detail += "; chat template compiles"
    return [*source_rows, model_row, tok], shape


def _unresolved_rows(name: str, row: Row) -> tuple[list[Row], memory.ModelShape | None]:
    """A model not found (or not looked for): the estimates can still use opt-350m's known shape
    when that is the model named."""
    from transformers import OPTConfig

    shape = memory.shape_of(OPTConfig(**model_lib.OPT_350M)) if name.rstrip("/").endswith("opt-350m") else None
    if shape is not None:
        row.detail += "; the GPU and disk rows assume opt-350m's known shape"
    tok = Row("tokenizer", row.status if row.status == "skip" else "missing",
              "comes with the model (see the model row)", "model.name_or_path")
    return [row, tok], shape


def _tiny_rows(cfg: dict, problem: str | None) -> tuple[list[Row], memory.ModelShape | None]:
    from transformers import OPTConfig

    tiny = cfg.model.tiny
    if not tiny:
        return [Row("model", "missing", "model.name_or_path is null and model.tiny holds no sizes",
                    "model.name_or_path or model.tiny"),
                Row("tokenizer", "missing", "no model", "model.name_or_path")], None
    shape = memory.shape_of(OPTConfig(**tiny))
    model_row = _positions_row(cfg, shape, "tiny OPT (OPTConfig from model.tiny, random init by stage 02)")
    trained = model_lib.tokenizer_dir(cfg) / "tokenizer.json"
    detail = (f"byte-level BPE trained by stage 01 ({tiny.get('vocab_size')} tokens)" if not trained.exists()
              else f"trained by stage 01, found at {trained.parent}")
    tok = Row("tokenizer", "missing", problem, "model.chat_template") if problem else \
        Row("tokenizer", "ok", detail + "; chat template compiles", "model.tokenizer_train_texts")
    return [model_row, tok], shape


# ---------------------------------------------------------------------------------------------
# Machine rows


def _estimate(cfg: dict, shape: memory.ModelShape, mixed: bool) -> dict:
    seq = min(_train(cfg, "max_length") or shape.positions, shape.positions)
    return memory.training_memory(shape, _train(cfg, "per_device_train_batch_size"), seq, mixed_precision=mixed,
                           gradient_checkpointing=bool(_train(cfg, "gradient_checkpointing")),
                           lora=bool(cfg.lora))


def _estimate_text(cfg: dict, est: dict) -> str:
    return (f"training needs ~{_gib(est['total'])} (estimate at batch "
            f"{_train(cfg, 'per_device_train_batch_size')} x {_train(cfg, 'max_length')} tokens, "
            f"gradient checkpointing {'on' if _train(cfg, 'gradient_checkpointing') else 'off'})")


def cuda_row(cfg: dict, shape: memory.ModelShape | None) -> Row:
    import torch

    item, knobs = "CUDA GPU", "train.per_device_train_batch_size / train.max_length / train.gradient_checkpointing"
    half = bool(_train(cfg, "fp16") or _train(cfg, "bf16"))
    use_cpu = bool(_train(cfg, "use_cpu"))
    if torch.cuda.is_available() and not use_cpu:
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info(0)
        detail = f"{name}: {_gib(free)} free of {_gib(total)}"
        if shape is None:
            return Row(item, "ok", detail + "; no model shape to estimate training memory", knobs)
        est = _estimate(cfg, shape, half)
        detail += "; " + _estimate_text(cfg, est)
        # The estimate is good to ~25%: only a need beyond that margin is a certain failure.
        if est["total"] > 1.25 * total:
            return Row(item, "missing", detail, knobs)
        return Row(item, "warn" if est["total"] > free else "ok", detail, knobs)
    # fp16 falls back to fp32 on a CPU (lib.train.train.precision_kwargs); bf16 runs under CPU autocast,
    # faster than fp32 where the CPU multiplies bfloat16 natively (bench/README.md), slowly elsewhere.
    bf16 = bool(_train(cfg, "bf16"))
    est = _estimate(cfg, shape, bf16) if shape else None
    need = f"; {_estimate_text(cfg, est)}" if est else ""
    native_bf16 = bf16 and backends.cpu_has_bf16()
    if _train(cfg, "fp16") or (bf16 and not native_bf16) or not use_cpu:
        why = "train.fp16 falls back to fp32 on the CPU" if _train(cfg, "fp16") else \
            "train.bf16 is slow on a CPU without native bfloat16" if bf16 else "train.use_cpu is false"
        return Row(item, "warn", f"no CUDA GPU: {why}; the paper profile needs a GPU{need}", "train.use_cpu")
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    status = "warn" if est and est["total"] > available else "ok"
    precision = ", bf16 autocast (this CPU multiplies bfloat16 natively)" if native_bf16 else ""
    return Row(item, status, f"CPU training (train.use_cpu){precision}, {_gib(available)} RAM available{need}",
               knobs)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_row(cfg: dict, shape: memory.ModelShape | None) -> Row:
    item, key = "disk", "output_dir (or train.save_total_limit)"
    out = config.path(cfg, cfg.output_dir)
    where = _existing_ancestor(out)
    if not os.access(where, os.W_OK):
        return Row(item, "missing", f"{where} is not writable", "output_dir")
    free = shutil.disk_usage(where).free
    if shape is None:
        return Row(item, "ok", f"{_gib(free)} free under {where}; no model shape to size checkpoints", key)
    lora = bool(cfg.lora)
    limit = _train(cfg, "save_total_limit")
    kept = 0 if str(_train(cfg, "save_strategy")) == "no" else limit
    if kept is None:
        return Row(item, "warn", f"{_gib(free)} free under {where}; train.save_total_limit is null: "
                   f"every checkpoint ({_gib(memory.checkpoint_bytes(shape, lora))} each) is kept", key)
    # Stage 01's Arrow copy of the training data is about the size of the file it reads.
    train_path = config.path(cfg, cfg.data.train_path)
    data_bytes = train_path.stat().st_size if train_path and train_path.is_file() else 0
    need = memory.checkpoint_bytes(shape, lora) * kept + shape.params * 4 + data_bytes
    detail = (f"{_gib(free)} free under {where}; needs ~{_gib(need)}: {kept} checkpoints x "
              f"{_gib(memory.checkpoint_bytes(shape, lora))} (fp32 weights + AdamW moments), the final "
              f"fp32 model, the training data's Arrow copy")
    return Row(item, "missing" if need > free else "ok", detail, key)


# ---------------------------------------------------------------------------------------------
# The check and its table


def check(cfg: dict, probe: bool = True) -> list[Row]:
    """Every input the profile needs, one Row each (see the module docstring). Read-only."""
    rows = checklist.guard("training file", "data.train_path", training_file_row, cfg)
    rows += checklist.guard("test groups", "data.test_dir", query_group_rows, cfg)
    rows += checklist.guard("tool documents", "data.toolenv_dir", toolenv_row, cfg)
    try:          # the model's shape feeds the GPU and disk rows
        found, shape = model_rows(cfg, probe)
    except Exception as err:     # noqa: BLE001 - as in _guard
        found, shape = [checklist.broken("model", "model.name_or_path", err)], None
    rows += found
    rows += checklist.guard("CUDA GPU", "train.use_cpu", cuda_row, cfg, shape)
    rows += checklist.guard("disk", "output_dir", disk_row, cfg, shape)
    rows += checklist.guard("tool environment", "inference.tool_env", service_checks.tool_env_row, cfg, probe)
    rows += checklist.guard("inference backend", "inference.backend", service_checks.backend_row, cfg, probe)
    rows += checklist.guard("judge", "judge.kind", service_checks.judge_row, cfg, probe)
    return rows
