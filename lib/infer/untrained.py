"""The model before fine-tuning, through stages 03 and 04 unchanged: the row that says what training did.

With `inference.untrained_run: true` (and the hf backend), stage 03 also runs every test query
through the model as stage 02 started from (the hub/local base model, or the tiny OPT initialised
from the same seed), with the same prompts, tool environment and settings, into
outputs/<profile>/untrained/trajectories/; stage 04 judges them with the same judge into
outputs/<profile>/untrained/pass_rate.csv; stage 05 puts that beside the fine-tuned row in Tables 1
and 2 and the figures. Both folders resume like the fine-tuned run's.
"""
from __future__ import annotations

import copy
from pathlib import Path

from lib.common import config
from lib.models import backends
from lib.checks import first_step
from lib.infer import inference

FOLDER = "untrained"


def enabled(cfg: dict) -> bool:
    return bool(cfg["inference"].get("untrained_run")) and cfg["inference"]["backend"] == "hf"


def settings(cfg: dict) -> dict:
    """The profile as the untrained run sees it: outputs under outputs/<profile>/untrained/."""
    ucfg = copy.deepcopy(cfg)
    ucfg["output_dir"] = str(Path(cfg["output_dir"]) / FOLDER)
    ucfg["judge"]["released"] = []     # released baselines are judged once, beside the fine-tuned run
    return ucfg


def output_dir(cfg: dict) -> Path:
    return config.path(cfg, cfg["output_dir"]) / FOLDER


def infer(cfg: dict, log=print) -> dict | None:
    """Stage 03 for the untrained model; returns its inference summary (None when not enabled)."""
    if not enabled(cfg):
        return None
    return inference.run(settings(cfg), backend=backends.untrained_backend(cfg), log=log)


def pass_rate_path(cfg: dict) -> Path:
    return output_dir(cfg) / "pass_rate.csv"


def first_turns(cfg: dict) -> dict:
    """{(group, query_id): first turn} from the untrained model's full run, when stage 03 made one:
    the same first turns its pass rate comes from (lib.infer.first_step_report.run compares them)."""
    folder = output_dir(cfg) / "trajectories"
    paths = [folder / f"{g}.jsonl" for g in cfg["inference"]["groups"]]
    if not enabled(cfg) or not all(p.exists() for p in paths):
        return {}
    return {(l["group"], str(l["query_id"])): first_step.first_turn(l)
            for p in paths for l in inference.read_trajectories(p)}
