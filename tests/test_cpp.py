"""Builds the C++ core with its unit tests and runs them with ctest; builds a separate CMake project
against the installed package (find_package(spattn)) and runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import spattn
from cmake_build import REPO, configure_and_build, ctest

pytestmark = pytest.mark.slow


def test_cpp_unit_tests_pass():
    # CPU-only: the wheel build already compiled the CUDA sources; the unit tests exercise the core.
    build = REPO / "build" / "cpp-tests"
    configure_and_build(REPO, build, "-DSPATTN_CUDA=OFF", "-DSPATTN_BUILD_TESTS=ON")
    output = ctest(build)
    print(output)
    assert "100% tests passed" in output


def test_cmake_consumer_finds_installed_package(tmp_path: Path):
    configure_and_build(REPO / "tests" / "cmake_consumer", tmp_path / "build", f"-Dspattn_DIR={spattn.cmake_dir()}")
    result = subprocess.run([str(tmp_path / "build" / "swin_nnz")], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert int(lines[0]) == spattn.patterns.swin(56, 56, 7, 3).nnz
    assert lines[1].startswith("error: shift_size")


def test_cmake_dir_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "spattn", "--cmake-dir"], capture_output=True, text=True, check=True)
    assert (Path(result.stdout.strip()) / "spattnConfig.cmake").exists()
