"""Builds a separate CMake project against the installed package (find_package(spattn)) and runs it.

The C++ unit tests run in test_sanitizers.py, in the one CPU build that also serves the sanitized Python
tests: under AddressSanitizer and UndefinedBehaviorSanitizer they check strictly more than a plain build
would, and building the core and its tests a second time without sanitizers cost CI a minute for nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import spattn
from cmake_build import REPO, configure_and_build

pytestmark = pytest.mark.slow


def test_cmake_consumer_finds_installed_package(tmp_path: Path):
    configure_and_build(REPO / "tests" / "cmake_consumer", tmp_path / "build", f"-Dspattn_DIR={spattn.cmake_dir()}")
    result = subprocess.run([str(tmp_path / "build" / "swin_nnz")], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert int(lines[0]) == spattn.patterns.swin(56, 56, 7, 3).nnz
    assert lines[1].startswith("error: shift_size")


def test_cmake_dir_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "spattn", "--cmake-dir"], capture_output=True, text=True, check=True)
    assert (Path(result.stdout.strip()) / "spattnConfig.cmake").exists()
