"""What every stage's figures share: the profile's stamp on a figure, and saving it as PNG and SVG.

A leaf: stages 01, 02 and 05 draw their own figures and stamp them here, so a smoke figure can never
pass for the paper's. It imports nothing from lib; matplotlib comes with the figure it is given.
"""
from __future__ import annotations

from pathlib import Path

SVG_SALT = "toolsft-repro"


def stamp_figure(fig, stamp: str | None, size: float = 26) -> None:
    """The profile's stamp across a figure and in a red banner at its top right (nothing if None).
    Every stage's plots use it, so a smoke figure can never pass for the paper's."""
    if stamp:
        fig.text(0.5, 0.55, stamp, fontsize=size, color="red", alpha=0.15, rotation=25,
                 ha="center", va="center", weight="bold")
        fig.text(0.99, 0.985, stamp, fontsize=10, color="white", ha="right", va="top", weight="bold",
                 bbox={"facecolor": "red", "edgecolor": "none", "pad": 3})


def save_png_svg(fig, folder: Path, stem: str) -> tuple[Path, Path]:
    """<stem>.png and <stem>.svg in `folder`. Text stays text in the SVG (searchable stamp and
    captions), and the salt fixes its ids, so the same figure writes the same file."""
    import matplotlib

    png, svg = Path(folder) / f"{stem}.png", Path(folder) / f"{stem}.svg"
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "none"}):
        fig.savefig(png, dpi=110)
        fig.savefig(svg, metadata={"Date": None})
    return png, svg
