"""Configures and builds CMake projects from pytest, with the cmake and ninja of this environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    # Prefer the tools installed next to this interpreter (pip's cmake/ninja) over the system ones.
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is needed to build the C++ tests; install it with pip install {name}")
    return found


def run(command: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def configure_and_build(source: Path, build: Path, *definitions: str) -> None:
    build.mkdir(parents=True, exist_ok=True)
    run([_tool("cmake"), "-S", str(source), "-B", str(build), "-G", "Ninja",
         f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}", f"-DPython_EXECUTABLE={sys.executable}",
         *definitions])
    run([_tool("cmake"), "--build", str(build), "--parallel", str(os.cpu_count() or 2)])


def ctest(build: Path) -> str:
    # The test binaries are single-threaded and independent: run as many at once as there are cores.
    return run([str(Path(_tool("cmake")).with_name("ctest")), "--output-on-failure", "--parallel",
                str(os.cpu_count() or 2)], cwd=build)
