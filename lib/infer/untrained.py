"""The model before fine-tuning, through stages 03 and 04 unchanged: the row that says what training did.

With `inference.untrained_run: true` (and the hf backend), stages 03 and 04 also run the model stage
02 started from, with the same prompts, tools, settings and judge, under outputs/<profile>/untrained/;
stage 05 sets it beside the fine-tuned row (docs/formats.md).
"""
from __future__ import annotations

from pathlib import Path

from lib.common import config
from lib.common.settings import Profile
from lib.toolbench import trajectories
from lib.models import backends
from lib.checks import first_step
from lib.infer import inference

FOLDER = "untrained"


def enabled(cfg: Profile) -> bool:
    return bool(cfg.inference.untrained_run) and cfg.inference.backend == "hf"


def settings(cfg: Profile):
    """The profile as the untrained run sees it: outputs under outputs/<profile>/untrained/."""
    # Released baselines are judged once, beside the fine-tuned run.
    return config.derive(cfg, {"output_dir": str(Path(cfg.output_dir) / FOLDER), "judge.released": []})


def output_dir(cfg: Profile) -> Path:
    return config.path(cfg, cfg.output_dir) / FOLDER


def infer(cfg: Profile, log=print) -> dict | None:
    """Stage 03 for the untrained model; returns its inference summary (None when not enabled)."""
    if not enabled(cfg):
        return None
    return inference.run(settings(cfg), backend=backends.untrained_backend(cfg), log=log)


def pass_rate_path(cfg: Profile) -> Path:
    return output_dir(cfg) / "pass_rate.csv"


def first_turns(cfg: Profile) -> dict:
    """{(group, query_id): first turn} from the untrained model's full run, when stage 03 made one:
    the same first turns its pass rate comes from (lib.infer.first_step_report.run compares them)."""
    folder = output_dir(cfg) / "trajectories"
    paths = [folder / f"{g}.jsonl" for g in cfg.inference.groups]
    if not enabled(cfg) or not all(p.exists() for p in paths):
        return {}
    return {(l["group"], str(l["query_id"])): first_step.first_turn(l)
            for p in paths for l in trajectories.read(p, partial=True)}
