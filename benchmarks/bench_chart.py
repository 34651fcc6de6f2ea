"""The PNG bar chart of a results JSON: drawn in the peer venv, which has matplotlib."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path


def draw_chart(results_json: Path, png: Path, ours: str) -> None:
    """Bar chart (run with the peer venv's python, which has matplotlib): per case, each
    contender's median wall time relative to `ours`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(results_json.read_text())
    cases = report["cases"]
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 2.2 * len(cases) + 0.5), squeeze=False)
    for ax, (case, cells) in zip(axes[:, 0], cases.items()):
        ours_seconds = [s for s in cells[ours]["seconds"] if s]
        names, ratios = [], []
        for name, cell in cells.items():
            seconds = [s for s in cell["seconds"] if s]
            if seconds and ours_seconds:
                names.append(name)
                ratios.append(statistics.median(seconds) / statistics.median(ours_seconds))
        ax.barh(
            names, ratios, color=["tab:blue" if n.startswith("ours") else "tab:gray" for n in names]
        )
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(f"{case} ({report['size']}^3)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel(f"median wall time / {ours}   (> 1: ours is faster)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def chart(peer_python: str, script: Path, results_json: Path) -> None:
    """The PNG bar chart next to `results_json`, drawn by `script --chart` in the peer venv."""
    png = results_json.with_suffix(".png")
    drawn = subprocess.run([peer_python, str(script), "--chart", str(results_json), str(png)])
    print(f"chart:   {png}" if drawn.returncode == 0 else "chart: failed (see above)")
