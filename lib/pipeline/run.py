"""Run the numbered notebooks in order with papermill: `python -m lib.pipeline.run --profile smoke`.

The pre-flight check (lib/pipeline/preflight.py) comes first (`--check`: it alone). Each executed
copy is saved as outputs/<profile>/notebooks/NN_*.ipynb. A stage is skipped when stages/NN.done
holds the digest of the settings it read and its outputs are newer than its inputs, unless --force;
a failing stage stops the run, naming the notebook and the cell.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lib.common import config, resume
from lib.common.settings import Profile
from lib.pipeline import checklist, preflight

NOTEBOOK_DIR = config.ROOT / "notebooks"
LIB_DIR = config.ROOT / "lib"


@dataclass(frozen=True)
class Stage:
    number: str
    notebook: str
    outputs: tuple[str, ...]       # relative to outputs/<profile>/
    # The profile's sections the stage and the stages before it read (None: all of them), so a
    # --set of judge.* reruns stages 04 and 05, not the training.
    settings: tuple[str, ...] | None = None


EVERY_STAGE = ("profile", "output_dir", "stamp", "seed")
STAGES = (
    Stage("01", "01_data_prep.ipynb", ("sft", "data_stats.json"), ("data", "model")),
    Stage("02", "02_train.ipynb", ("model", "train_summary.json"),
          ("data", "model", "format_check", "train", "lora")),
    Stage("03", "03_inference.ipynb", ("trajectories", "inference_summary.json", "first_step.json"),
          ("data", "model", "format_check", "train", "lora", "inference", "bfcl")),
    Stage("04", "04_judge.ipynb", ("judgments", "pass_rate.csv"),
          ("data", "model", "format_check", "train", "lora", "inference", "bfcl", "judge")),
    # figures/ also holds stage 02's curves; index.json is what stage 05 writes last.
    Stage("05", "05_figures.ipynb", ("figures/index.json",), None),
)


class StageFailed(RuntimeError):
    pass


def _newest_mtime(paths) -> float:
    newest = 0.0
    for p in paths:
        p = Path(p)
        if p.is_dir():
            newest = max([newest] + [f.stat().st_mtime for f in p.rglob("*") if f.is_file()])
        elif p.exists():
            newest = max(newest, p.stat().st_mtime)
    return newest


def _oldest_mtime(paths) -> float | None:
    """Oldest file among the outputs, or None when any output is missing."""
    oldest = None
    for p in paths:
        p = Path(p)
        files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
        if not files or not all(f.exists() for f in files):
            return None
        t = min(f.stat().st_mtime for f in files)
        oldest = t if oldest is None else min(oldest, t)
    return oldest


def done_marker(cfg: Profile, stage: Stage) -> Path:
    return config.path(cfg, cfg.output_dir) / "stages" / f"{stage.number}.done"


def settings_digest(cfg: Profile, stage: Stage | None = None) -> str:
    """What a stage ran with: the profile's sections it reads, as resolved (--set overrides
    included: they are in no file)."""
    keys = None if stage is None or stage.settings is None else set(EVERY_STAGE + stage.settings)
    return resume.fingerprint({k: v for k, v in config.as_dict(cfg).items() if keys is None or k in keys})


def mark_done(cfg: Profile, stage: Stage) -> None:
    resume.mark(done_marker(cfg, stage), settings_digest(cfg, stage))


def is_up_to_date(cfg: Profile, stage: Stage, previous: list[Stage]) -> bool:
    out = config.path(cfg, cfg.output_dir)
    if not resume.is_marked(done_marker(cfg, stage), settings_digest(cfg, stage)):
        return False
    outputs = [out / o for o in stage.outputs]
    oldest_output = _oldest_mtime(outputs)
    if oldest_output is None:
        return False
    # The code counts (lib's modules, the judge's prompt templates beside them), and so do the
    # shipped reference tables (data/*.csv): editing one must refresh the figures.
    inputs = [Path(cfg.config_path), NOTEBOOK_DIR / stage.notebook, *LIB_DIR.rglob("*.py"),
              *LIB_DIR.rglob("*.txt"),
              *(config.ROOT / "data").glob("*.csv")]
    inputs += [out / o for s in previous for o in s.outputs]
    return _newest_mtime(inputs) < oldest_output


def select(only: str | None = None, start: str | None = None) -> list[Stage]:
    known = {s.number for s in STAGES}
    for arg in (only, start):
        if arg is not None and arg not in known:
            raise SystemExit(f"unknown stage '{arg}' (stages: {', '.join(sorted(known))})")
    if only:
        return [s for s in STAGES if s.number == only]
    return [s for s in STAGES if start is None or s.number >= start]


def _shown(path: Path) -> Path:
    return path.relative_to(config.ROOT) if path.is_relative_to(config.ROOT) else path


def run_stage(cfg: Profile, stage: Stage, profile: str, overrides: dict, stdout=None) -> Path:
    """Execute the stage's notebook; `stdout` (e.g. sys.stdout) receives what its cells print."""
    import papermill

    source = NOTEBOOK_DIR / stage.notebook
    executed = config.output_dir(cfg, "notebooks") / stage.notebook
    resume.unmark(done_marker(cfg, stage))      # a status flag, not an output: the stage is running again
    try:
        papermill.execute_notebook(
            str(source), str(executed),
            parameters={"profile": profile, "overrides": overrides},
            kernel_name="python3", cwd=str(config.ROOT), progress_bar=False, stdout_file=stdout,
            # The kernel's own start-up warnings (ipykernel's note on local TCP) are not the stage's.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except papermill.PapermillExecutionError as err:
        raise StageFailed(
            f"stage {stage.number} failed: {_shown(source)}, cell {err.exec_count} "
            f"(executed copy: {executed}):\n{err.ename}: {err.evalue}") from None
    mark_done(cfg, stage)
    return executed


def run(profile: str = "smoke", overrides: dict | None = None, stages: list[Stage] | None = None,
        force: bool = False, log=print, stdout=None) -> list[Path]:
    """Run `stages` (select(...); default: all) in order, skipping those up to date unless `force`;
    returns the executed copies."""
    overrides = overrides or {}
    cfg = config.load(profile, overrides)
    stages = select() if stages is None else stages
    executed = []
    # One runner per output folder: a second `lib.pipeline.run` stops here, before any notebook starts or
    # any stage's done marker is touched (the stages lock their own folders too, for Jupyter).
    with resume.exclusive(config.path(cfg, cfg.output_dir) / "stages", f"lib.pipeline.run --profile {profile}"):
        for stage in stages:
            previous = [s for s in STAGES if s.number < stage.number]
            if not force and is_up_to_date(cfg, stage, previous):
                log(f"[{stage.number}] {stage.notebook}: up to date, skipped (--force reruns it)")
                continue
            if not (NOTEBOOK_DIR / stage.notebook).exists():
                log(f"[{stage.number}] {stage.notebook}: no such notebook yet, stopping here")
                break
            log(f"[{stage.number}] {stage.notebook}: running on profile '{profile}' ...", flush=True)
            t0 = time.time()
            executed.append(run_stage(cfg, stage, profile, overrides, stdout))
            log(f"[{stage.number}] {stage.notebook}: done in {time.time() - t0:.1f} s -> {executed[-1]}",
                flush=True)
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.pipeline.run", description=__doc__.splitlines()[0])
    config.add_arguments(parser)
    parser.add_argument("--from", dest="start", help="first stage to run, e.g. 02")
    parser.add_argument("--only", help="run this stage alone, e.g. 01")
    parser.add_argument("--force", action="store_true", help="rerun stages that are up to date")
    parser.add_argument("--check", action="store_true",
                        help="only the pre-flight check: is every input of the profile there?")
    parser.add_argument("--skip-check", action="store_true",
                        help="run the stages even when the pre-flight check finds something missing")
    args = parser.parse_args(argv)
    overrides = config.overrides_of(parser, args)
    t0 = time.time()
    try:
        # Before hours are spent: is every input there? (lib/pipeline/preflight.py; read-only, seconds)
        rows = preflight.check(config.load(args.profile, overrides))
        print(f"pre-flight check, profile '{args.profile}':\n{checklist.table(rows)}", flush=True)
        if args.check:
            return 1 if checklist.failed(rows) else 0
        if checklist.failed(rows) and not args.skip_check:
            print("error: the pre-flight check found missing inputs (above); set the keys it names, "
                  "or pass --skip-check to run anyway", file=sys.stderr)
            return 1
        run(args.profile, overrides, select(args.only, args.start), args.force,
            log=lambda *a, **k: print(*a, **k), stdout=sys.stdout)
    except (StageFailed, config.ConfigError, resume.FolderBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"finished in {time.time() - t0:.1f} s")
    cfg = config.load(args.profile, overrides)
    index = config.path(cfg, cfg.output_dir) / "figures" / "index.json"
    if index.exists():
        print("tables and figures:")
        for name, where in json.loads(index.read_text()).items():
            print(f"  {name}: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
