"""What stage 02 records while it trains: train_log.jsonl, the progress lines, the loss curve.

train_log.jsonl: one line per logging step:
  step, epoch, loss, learning_rate, grad_norm, tokens_per_s (non-padding tokens since the previous
  line), num_tokens, mean_token_accuracy.
`describe(summary)` is train_summary.json in two lines, for the notebook and the terminal.
"""
from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from lib.common import plots, store
from lib.common.progress import Progress


class JsonlLogger(TrainerCallback):
    """Appends one line per Trainer log to train_log.jsonl, with the tokens/s since the last one."""

    def __init__(self, path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        # TRL's num_tokens counter restarts at 0 in every process, resumed or not.
        self.last_time, self.last_tokens = time.time(), 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        now, tokens = time.time(), logs.get("num_tokens", 0)
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                  "loss": logs["loss"], "learning_rate": logs.get("learning_rate"),
                  "grad_norm": logs.get("grad_norm"),
                  "tokens_per_s": round((tokens - self.last_tokens) / max(now - self.last_time, 1e-9), 1),
                  "num_tokens": tokens, "mean_token_accuracy": logs.get("mean_token_accuracy")}
        self.last_time, self.last_tokens = now, tokens
        store.append_jsonl(self.path, record)


def describe(summary: dict) -> str:
    """The training summary in two lines, for the notebook and the terminal."""
    final = summary["final_loss"]
    final = f"{final:.3f}" if final is not None else "none logged (fewer steps than logging_steps)"
    return (f"{summary['examples']:,} examples, {summary['optimizer_steps']:,} optimizer steps, "
            f"{summary['tokens_per_s']:,.0f} tokens/s, {summary['wall_time_s']:.0f} s, "
            f"final loss {final}, mean loss of the run {summary['train_loss']:.3f}\n"
            f"longer than {summary['max_length']} tokens: {summary['over_max_length']} "
            f"(truncated {summary['truncated']}, dropped {summary['dropped_too_long']})")


class StepProgress(TrainerCallback):
    """A line every 30 s on the terminal: step, loss, tokens/s and the time left (lib.common.progress)."""

    def __init__(self, log=print, every_s: float = 30.0):
        self.log, self.every_s, self.progress, self.loss = log, every_s, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:     # one line, not one per process
            self.progress = Progress("02 train step", state.max_steps, self.every_s, self.log,
                                     start_at=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = (logs["loss"], state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress and state.is_world_process_zero:
            loss = f"loss {self.loss[0]:.4f} (logged at step {self.loss[1]})" if self.loss else ""
            self.progress.update(state.global_step, loss)


def plot_curves(records: list[dict], png, stamp: str | None = None) -> Path:
    """Loss and learning rate against optimizer step, one panel each; `stamp` across it if set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.5))
    if not records:         # the run ended before train.logging_steps was reached
        for ax in (ax_loss, ax_lr):
            ax.text(0.5, 0.5, "no logging step reached\n(fewer steps than train.logging_steps)",
                    ha="center", va="center", transform=ax.transAxes)
    ax_loss.plot(steps, [r["loss"] for r in records], marker=".")
    ax_loss.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    ax_lr.plot(steps, [r["learning_rate"] for r in records], color="tab:orange")
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="learning rate")
    fig.tight_layout(rect=(0, 0, 1, 0.92) if stamp else (0, 0, 1, 1))    # room for the stamp's banner
    plots.stamp_figure(fig, stamp, size=18)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)
