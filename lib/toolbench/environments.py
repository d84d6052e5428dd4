"""The tool environment a profile names (`inference.tool_env`): offline recordings
(lib/toolbench/offline_env.py), StableToolBench's virtual server (virtual_env.py) or RapidAPI
(rapidapi_env.py). The HTTP ones give observations byte for byte as ToolBench's and StableToolBench's
own inference client writes them, so trajectories read as upstream ones. Stage 03 checks the
environment (`check_env`) before its first query.
"""
from __future__ import annotations

from lib.common import config, keys
from lib.common.settings import Profile
from lib.toolbench.tool_env import ToolEnv
from lib.toolbench.offline_env import OfflineToolEnv
from lib.toolbench.virtual_env import VirtualToolEnv
from lib.toolbench.rapidapi_env import RapidApiToolEnv


class EnvUnavailable(RuntimeError):
    """The configured tool environment does not answer: stage 03 stops rather than record a run
    whose observations are transport errors."""


def check_env(env, api: tuple = ()) -> str:
    """What `env.probe(*api)` found, or raise EnvUnavailable when nothing answers. Stage 03 calls it
    before its first query: notebook 03 also runs alone, and the pre-flight can be skipped."""
    status, detail = env.probe(*api) if hasattr(env, "probe") else ("ok", f"{type(env).__name__}: not probed")
    if status == "missing":
        raise EnvUnavailable(f"tool environment: {detail}")
    return detail


def make_env(cfg: Profile) -> ToolEnv:
    """The environment the profile's inference.tool_env names."""
    inference_cfg = cfg.inference
    toolenv = config.path(cfg, cfg.data.toolenv_dir)
    kind, timeout = inference_cfg.tool_env, inference_cfg.tool_timeout_s or 60
    if kind == "offline":
        return OfflineToolEnv(toolenv / "responses.jsonl", toolenv / "tools")
    if kind == "virtual":
        return VirtualToolEnv(inference_cfg.virtual_server_url, keys.secret(inference_cfg.toolbench_key_env, required=False),
                              timeout=timeout)
    if kind == "rapidapi":
        return RapidApiToolEnv(toolenv / "tools", keys.secret(inference_cfg.rapidapi_key_env), timeout=timeout)
    raise ValueError(f"inference.tool_env must be offline, virtual or rapidapi, got '{kind}'")
