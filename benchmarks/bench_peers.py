"""The separate venv for peers whose pins clash with ours (bioimage-py, matplotlib, ...)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PEER_PACKAGES = {
    "bioimage_py": ["bioimage-py==0.2.2", "zarr>=3.1,<3.2"],
    "matplotlib": ["matplotlib"],
}


def peer_venv(
    path: Path, packages: dict[str, list[str]] = PEER_PACKAGES
) -> tuple[str | None, set[str]]:
    """The separate venv for peers that must not touch our pinned environment: created on first
    use, and `packages` ({module: pip requirements}) whose module does not import there are
    installed; returns its python (None if it cannot be made) and which modules import there."""
    python = path / "bin" / "python"

    def importable(module: str) -> bool:
        return (
            subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode
            == 0
        )

    if not python.exists():
        print(f"creating the peer venv {path} ...", flush=True)
        if (
            subprocess.run(
                [shutil.which("python3") or sys.executable, "-m", "venv", "--clear", str(path)]
            ).returncode
            != 0
        ):
            print(
                f"!! could not create the peer venv {path}: the peers and the chart are skipped",
                flush=True,
            )
            return None, set()
    for module, requirements in packages.items():
        if importable(module):
            continue
        print(f"installing {' '.join(requirements)} into {path} ...", flush=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *requirements],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            print(
                f"!! pip install {' '.join(requirements)} failed in {path}:\n"
                f"{install.stderr.strip()[-2000:]}",
                flush=True,
            )
    available = {module for module in packages if importable(module)}
    for module, requirements in packages.items():
        if module not in available:
            print(
                f"!! {requirements[0]} is not available in {path}; its part of the benchmark is "
                f"skipped (the install is retried on the next run)",
                flush=True,
            )
    return str(python), available
