"""Progress lines for the long stages (training: hours of steps; inference: 1,100 queries).

The notebooks run inside papermill's kernel, whose stdout `python -m lib.run` copies to the
terminal, so a plain print here is what a user watching a long run sees. Lines are throttled to
one every `every_s` seconds (and the last one), so a 5,860-step run prints a few hundred lines.
"""
from __future__ import annotations

import time


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`update(done, extra)` prints '[tag] done/total (pct) extra | elapsed h:mm:ss, ETA h:mm:ss'."""

    def __init__(self, tag: str, total: int, every_s: float = 30.0, log=print, start_at: int = 0):
        self.tag, self.total, self.every_s, self.log = tag, total, every_s, log
        # Work done before a resume does not count towards the rate.
        self.t0, self.start_at, self.last = time.time(), start_at, 0.0

    def line(self, done: int, extra: str = "") -> str:
        elapsed = time.time() - self.t0
        rate = (done - self.start_at) / elapsed if elapsed > 0 else 0.0
        eta = clock((self.total - done) / rate) if rate > 0 else "?"
        pct = f" ({100 * done / self.total:.1f}%)" if self.total else ""
        extra = f" {extra}" if extra else ""
        return f"[{self.tag}] {done:,}/{self.total:,}{pct}{extra} | elapsed {clock(elapsed)}, ETA {eta}"

    def update(self, done: int, extra: str = "") -> None:
        now = time.time()
        if done >= self.total or now - self.last >= self.every_s:
            self.last = now
            self.log(self.line(done, extra), flush=True)
