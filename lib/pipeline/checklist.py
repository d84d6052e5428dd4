"""A checklist: one Row per thing checked, and how the rows print.

The pre-flight check (lib/pipeline/preflight.py, lib/pipeline/service_checks.py) builds the rows; `table(rows)` prints
them aligned, `failed(rows)` says whether any is "missing". Statuses: ok | missing (the run would
fail: the row names the config key to set) | warn (the run may go wrong or slow) | skip (a network
probe left out). A network probe times out after PROBE_TIMEOUT seconds.
"""
from __future__ import annotations

import dataclasses

PROBE_TIMEOUT = 3.0
STATUSES = ("ok", "missing", "warn", "skip")


@dataclasses.dataclass
class Row:
    item: str
    status: str            # ok | missing | warn | skip
    detail: str
    key: str = ""          # the config key(s) (or environment variable) to set when not ok


def broken(item: str, key: str, err: Exception) -> Row:
    return Row(item, "warn", f"the check itself failed: {type(err).__name__}: {err}", key)


def guard(item: str, key: str, fn, *args) -> list[Row]:
    """One row's check; a check that breaks reports itself instead of hiding the other rows."""
    try:
        out = fn(*args)
    except Exception as err:     # noqa: BLE001 - any failure of a check is a finding, not a crash
        return [broken(item, key, err)]
    return out if isinstance(out, list) else [out]


def failed(rows: list[Row]) -> bool:
    return any(r.status == "missing" for r in rows)


def table(rows: list[Row]) -> str:
    """Aligned plain text: item, status, detail (and, when not ok, which key to set)."""
    wide = max([len("item")] + [len(r.item) for r in rows])
    lines = [f"{'item':<{wide}}  {'status':<7}  detail"]
    for r in rows:
        fix = f"  -> set {r.key}" if r.status in ("missing", "warn") and r.key else ""
        lines.append(f"{r.item:<{wide}}  {r.status:<7}  {r.detail}{fix}")
    counts = ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in STATUSES)
    lines.append(f"{counts}" + ("; fix the missing rows before running" if failed(rows) else ""))
    return "\n".join(lines)
