"""Builds the C++ core, its unit tests and the Python extension with AddressSanitizer and
UndefinedBehaviorSanitizer (-DSPATTN_SANITIZE=ON, CPU only) into build/cpp-sanitize, then

1. runs the C++ unit tests with ctest (their one run in the suite; test_cpp.py says why): the sanitizers
   abort a test binary on the first error (-fno-sanitize-recover, halt_on_error), so "all tests passed"
   means the run was clean: no out-of-bounds access, use after free or leak, no signed overflow or
   misaligned load;
2. runs the Python tests that exercise the CPU kernels, bindings and generators against the sanitized
   extension, with libasan preloaded into python (torch and CPython are not built with ASan, so the
   interpreter must load the runtime first). Leak detection is off there: CPython and torch keep memory
   alive until exit by design, which would drown any real report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmake_build import REPO, configure_and_build, ctest

pytestmark = pytest.mark.slow

BUILD = REPO / "build" / "cpp-sanitize"
# The Python tests that reach the CPU kernels, the bindings' checks and the pattern generators.
PYTHON_TESTS = ["test_ops.py", "test_properties.py", "test_nan_inf.py", "test_bad_input_ops.py",
                "test_bad_input_patterns.py", "test_bad_input_more.py", "test_pattern.py", "test_patterns.py",
                "test_neighborhood.py", "test_layouts.py", "test_strided_and_grouped.py", "test_determinism.py",
                "test_gqa_lse_bias.py"]
SANITIZER_OPTIONS = {"UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}


@pytest.fixture(scope="module")
def sanitized_build() -> Path:
    # -g1: line tables only, which is all a sanitizer's stack trace needs (file:line), and 30% less compile
    # time than RelWithDebInfo's full -g (this build is the longest step of CI).
    configure_and_build(REPO, BUILD, "-DSPATTN_CUDA=OFF", "-DSPATTN_BUILD_TESTS=ON", "-DSPATTN_BUILD_PYTHON=ON",
                        "-DSPATTN_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                        "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG")
    # A cached configuration without the option would run unsanitized code and pass for nothing.
    assert "-fsanitize=address,undefined" in (BUILD / "build.ninja").read_text()
    return BUILD


def test_cpp_unit_tests_pass_under_address_and_undefined_behavior_sanitizers(sanitized_build, monkeypatch):
    monkeypatch.setenv("ASAN_OPTIONS", "halt_on_error=1:detect_leaks=1")
    for name, value in SANITIZER_OPTIONS.items():
        monkeypatch.setenv(name, value)
    output = ctest(sanitized_build)
    print(output)
    assert "100% tests passed" in output
    assert "runtime error" not in output and "AddressSanitizer" not in output


def sanitizer_runtimes(build: Path) -> list[str]:
    """The compiler's libasan and libubsan, to preload into python."""
    cache = (build / "CMakeCache.txt").read_text()
    compiler = next(line.split("=", 1)[1] for line in cache.splitlines() if line.startswith("CMAKE_CXX_COMPILER:"))
    libraries = []
    for name in ("libasan.so", "libubsan.so"):
        path = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            pytest.skip(f"{compiler} does not say where {name} is")
        libraries.append(path)
    return libraries


# Imports the sanitized copy of the package (the editable install's finder on sys.meta_path would otherwise
# load the regular extension), checks that it did, then runs pytest.
RUNNER = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
sys.path.insert(0, sys.argv[1])
import spattn._core
assert spattn._core._C.__file__.startswith(sys.argv[1]), spattn._core._C.__file__
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def test_python_cpu_tests_pass_with_the_sanitized_extension(sanitized_build, tmp_path):
    extension = next((sanitized_build / "python" / "src").glob("_C*.so"))
    package = tmp_path / "spattn"
    shutil.copytree(REPO / "python" / "spattn", package, ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    shutil.copy2(extension, package)  # its build RPATH finds the sanitized libspattn.so in the build folder
    environment = dict(os.environ, LD_PRELOAD=" ".join(sanitizer_runtimes(sanitized_build)),
                       ASAN_OPTIONS="halt_on_error=1:detect_leaks=0", **SANITIZER_OPTIONS)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path), *(f"tests/{name}" for name in PYTHON_TESTS),
                             "-q", "-p", "no:cacheprovider"], cwd=REPO, env=environment, capture_output=True,
                            text=True, timeout=900)
    output = result.stdout + result.stderr
    print(output[-3000:])
    assert result.returncode == 0, output[-6000:]
    assert "runtime error" not in output and "AddressSanitizer" not in output
    assert " passed" in output
