"""Finding a model before anything loads it: a local folder, or a hub id looked up in the HF cache,
then on the hub over HTTP.

`resolve_model(cfg, probe, timeout)` returns the model's config, where it was found and a tokenizer
check, or raises `Unresolved` saying where it looked; `stored_dtype` is its weights' dtype. Read-only:
nothing is downloaded, and each request times out after `timeout` seconds.
"""
from __future__ import annotations

import os
from pathlib import Path

from lib.common import config
from lib.common.settings import Profile

TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model"}


class Unresolved(Exception):
    """The model was not found, or (`skipped`) not looked for on the hub because probes are off."""

    def __init__(self, detail: str, skipped: bool = False):
        super().__init__(detail)
        self.skipped = skipped


def _local_folder(cfg: Profile, name: str) -> Path | None:
    for candidate in (Path(name).expanduser(), config.path(cfg, name)):
        if candidate.exists():
            return candidate
    return None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, as the environment or huggingface_hub sees it."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
                                           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT          # https://huggingface.co, or HF_ENDPOINT's mirror


def _hub_config_over_http(name: str, timeout: float):
    """config.json of a hub model read over HTTP, without writing it into the HF cache."""
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers
    from transformers import AutoConfig

    url = hf_hub_url(name, "config.json", endpoint=_hub_endpoint())
    reply = get_session().get(url, headers=build_hf_headers(), timeout=timeout)
    hf_raise_for_status(reply)          # 401/403/404 as huggingface_hub's own errors
    values = reply.json()
    return AutoConfig.for_model(values.pop("model_type"), **values)


def _hub_tokenizer_listed(name: str, timeout: float) -> None:
    """Raise unless the hub repository lists tokenizer files (checked, not downloaded)."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=_hub_endpoint()).model_info(name, timeout=timeout)
    if not any(Path(s.rfilename).name in TOKENIZER_FILES for s in info.siblings or []):
        raise OSError("the hub repository has no tokenizer files")


def _download_hint(name: str) -> str:
    return (f"download it where there is hub access (`huggingface-cli download {name} --local-dir "
            f"/path/{name.split('/')[-1]}`) and set model.name_or_path to that folder")


def resolve_model(cfg: Profile, probe: bool, timeout: float):
    """(hf_config, where it was found, tokenizer loader) of model.name_or_path; raises Unresolved.
    The loader returns the tokenizer, or None for a hub model whose file list names one."""
    from transformers import AutoConfig, AutoTokenizer

    name = cfg.model.name_or_path
    folder = _local_folder(cfg, name)
    if folder is not None:
        if not (folder / "config.json").exists():
            raise Unresolved(f"{folder}: no config.json in it")
        try:
            hf_config = AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError) as err:     # bad JSON, unknown model_type
            raise Unresolved(f"{folder}: config.json does not load: {err}") from err
        return hf_config, f"local folder {folder}", lambda: AutoTokenizer.from_pretrained(str(folder))
    if _looks_like_path(name):
        raise Unresolved(f"no folder {name}")
    try:      # the HF cache only: reads, never downloads
        hf_config = AutoConfig.from_pretrained(name, local_files_only=True)
        return (hf_config, f"hub id {name}, in the HF cache",
                lambda: AutoTokenizer.from_pretrained(name, local_files_only=True))
    except OSError:
        pass
    if _offline():
        raise Unresolved(f"hub id {name}: not in the HF cache and HF_HUB_OFFLINE is set: {_download_hint(name)}")
    if not probe:
        raise Unresolved(f"hub id {name}: not in the HF cache; the hub was not asked (no probes)", skipped=True)
    try:
        hf_config = _hub_config_over_http(name, timeout)
    except Exception as err:     # noqa: BLE001 - unreachable hub, unknown repo, gated repo alike
        raise Unresolved(f"hub id {name}: not in the HF cache and the hub did not give its config "
                         f"({type(err).__name__}): {_download_hint(name)}") from err
    return hf_config, f"hub id {name}, on the hub (stage 01/02 download it)", (
        lambda: _hub_tokenizer_listed(name, timeout))


def stored_dtype(hf_config) -> str:
    dtype = getattr(hf_config, "dtype", None) or hf_config.to_dict().get("torch_dtype")
    return str(dtype).replace("torch.", "") if dtype else "not stated"
