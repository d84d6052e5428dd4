"""Progress of the long stages (training: hours of steps; inference and judging: 1,100 queries).

Printed (`log=print`), progress is one tqdm line updated in place, redrawn at most every `every_s`
seconds and left standing with the wall time, so an executed notebook keeps a few states of one
line, not thousands. Any other `log` gets the same text as whole lines, throttled the same way.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

BAR_FORMAT = "[{desc}] {n:,}/{total:,} ({percentage:.1f}%){postfix} | elapsed {elapsed}, ETA {remaining}, {rate_fmt}"


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`update(done, extra)`: '[tag] done/total (pct) extra | elapsed h:mm:ss, ETA h:mm:ss'."""

    def __init__(self, tag: str, total: int, every_s: float = 30.0, log=print, start_at: int = 0,
                 unit: str = "it"):
        self.tag, self.total, self.every_s, self.log = tag, total, every_s, log
        # Work done before a resume does not count towards the rate.
        self.t0, self.start_at, self.last = time.time(), start_at, 0.0
        self.bar = None
        if log is print:
            self.bar = tqdm(total=total, initial=start_at, desc=tag, file=sys.stdout, mininterval=every_s,
                            maxinterval=max(every_s, 10.0),
                            ascii=True, dynamic_ncols=False, bar_format=BAR_FORMAT, unit=unit)
            if start_at >= total:      # nothing left (a resumed, finished group): say so and end the line
                self.bar.close()

    def line(self, done: int, extra: str = "") -> str:
        elapsed = time.time() - self.t0
        rate = (done - self.start_at) / elapsed if elapsed > 0 else 0.0
        eta = clock((self.total - done) / rate) if rate > 0 else "?"
        pct = f" ({100 * done / self.total:.1f}%)" if self.total else ""
        extra = f" {extra}" if extra else ""
        return f"[{self.tag}] {done:,}/{self.total:,}{pct}{extra} | elapsed {clock(elapsed)}, ETA {eta}"

    def update(self, done: int, extra: str = "") -> None:
        if self.bar is not None:
            if extra:
                self.bar.set_postfix_str(extra, refresh=False)
            self.bar.update(done - self.bar.n)
            if done >= self.total:
                self.bar.close()        # the final state stays, with the stage's wall time
            return
        now = time.time()
        if done >= self.total or now - self.last >= self.every_s:
            self.last = now
            self.log(self.line(done, extra), flush=True)

    def close(self) -> None:
        """End the line where it stands (a stage stopped by an error): the next output starts below
        it, and the next progress line is not drawn one row down."""
        if self.bar is not None:
            self.bar.close()


def say(*parts, **_) -> None:
    """print() for a stage's own lines while a progress line may be open: tqdm clears the line,
    prints the text on its own line and redraws the progress under it."""
    tqdm.write(" ".join(map(str, parts)), file=sys.stdout)
