"""Packaging: one version everywhere; shared libraries that need nothing but system libraries and find each
other through $ORIGIN only (so that a wheel imports wherever it is installed); and the wheel itself.

The installed package (the editable install's libraries are the ones a wheel holds) is checked on every run.
The wheel tests need SPATTN_TEST_WHEEL: `build` builds the wheel from this checkout with `pip wheel
--no-build-isolation`, reusing the editable install's build folder (build/{wheel_tag}, so only CMake's
configure and install run), or a path names a wheel built elsewhere. They check what the wheel holds, then
install it into a fresh virtual environment beside another torch (2.13.0, the CPU-only build, no NVIDIA
library) and run a CPU subset of the tests there: 1 to 3 minutes on 2 cores (torch.compile's first run).
CI sets SPATTN_TEST_WHEEL=build; a plain `python -m pytest` skips them."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import spattn
from cmake_build import REPO, run

# Another torch than the development environment's (2.14.1): the CPU-only build, which has no nvidia wheels.
OTHER_TORCH = "torch==2.13.0"
# The CPU tests run there: ops forward and backward against the float64 reference (opcheck and torch.compile
# included), the Pattern class, the generators (Swin among them) and bad input.
CPU_TESTS = ["test_ops.py", "test_pattern.py", "test_swin_3d.py", "test_bad_input_ops.py"]
# What a shared library in the wheel may need besides the wheel's own: what every Linux has. libgomp.so.1 is
# GCC's OpenMP runtime (Debian's libgomp1, on nearly every system); it is not in the manylinux policy, so
# auditwheel tags the wheel linux_x86_64 (`auditwheel repair` would bundle it).
SYSTEM_LIBRARIES = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libgomp.so.1", "libdl.so.2",
                    "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2"}


# Where the wheel holds the CMake package.
CMAKE_DIR = "spattn/lib/cmake/spattn"


def cmake_project_version() -> str:
    """The one place the version is written."""
    return re.search(r"project\(spattn VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text()).group(1)


def cmake_package_version(config_version_file: str) -> str:
    return re.search(r'set\(PACKAGE_VERSION "([^"]+)"\)', config_version_file).group(1)


def test_one_version_everywhere():
    version = cmake_project_version()
    assert spattn.__version__ == version
    assert spattn.build_info()["version"] == version
    assert importlib.metadata.version("spattn") == version
    config_version = Path(spattn.cmake_dir()) / "spattnConfigVersion.cmake"
    assert cmake_package_version(config_version.read_text()) == version


def test_build_info_says_whether_cusparse_loads_now():
    info = spattn.build_info()
    assert info["cusparse_loadable"] == (info["cusparse_load_error"] == "")
    assert (info["cusparse_version"] > 0) == info["cusparse_loadable"]
    if not info["cusparse"]:
        assert "built without" in info["cusparse_load_error"]
    # Where torch's CUDA build installed cuSPARSE (site-packages/nvidia/cu*/lib), spattn must find it.
    site_packages = Path(spattn._C.__file__).resolve().parent.parent
    if info["cusparse"] and list(site_packages.glob("nvidia/*/lib/libcusparse.so.*")):
        assert info["cusparse_loadable"], info["cusparse_load_error"]


def dynamic_section(library: Path) -> tuple[list[str], list[str]]:
    """(NEEDED, RUNPATH and RPATH entries) from `readelf -d`."""
    output = run(["readelf", "-d", str(library)])
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", output)
    paths = [entry for found in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]", output)
             for entry in found.split(":")]
    return needed, paths


def assert_need_only_system_libraries(libraries: list[Path]) -> None:
    own = {library.name for library in libraries}
    for library in libraries:
        needed, paths = dynamic_section(library)
        assert set(needed) <= SYSTEM_LIBRARIES | own, f"{library} needs {sorted(set(needed) - SYSTEM_LIBRARIES - own)}"
        assert all(path.startswith("$ORIGIN") for path in paths), f"{library} has run paths {paths}"


def test_installed_libraries_need_only_system_libraries_and_origin_paths():
    package = Path(spattn._C.__file__).parent
    libraries = [Path(spattn._C.__file__), *package.glob("lib*/libspattn.so*")]
    assert len(libraries) == 2, libraries
    assert_need_only_system_libraries(libraries)


def test_installed_package_is_typed():
    assert (Path(spattn.__file__).parent / "py.typed").exists()
    stubs = (Path(spattn._C.__file__).parent / "_C.pyi").read_text()
    assert "def build_info() -> dict: ..." in stubs and "def patterns_swin(" in stubs


# ---- the built wheel (opt-in: SPATTN_TEST_WHEEL) ---------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("SPATTN_TEST_WHEEL")
    if not given:
        pytest.skip("set SPATTN_TEST_WHEEL=build (or =path/to/spattn.whl) to test the wheel")
    if given != "build":
        return Path(given)
    folder = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(folder),
         str(REPO)])
    (built,) = folder.glob("spattn-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_stubs_headers_and_cmake_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    cmake_package = [f"{CMAKE_DIR}/{name}" for name in ("spattnConfig.cmake", "spattnConfigVersion.cmake",
                                                        "spattnTargets.cmake")]
    for expected in ("spattn/__init__.py", "spattn/py.typed", "spattn/_C.pyi", "spattn/lib/libspattn.so",
                     "spattn/include/spattn/spattn.hpp", *cmake_package):
        assert expected in names
    assert any(re.fullmatch(r"spattn/_C\..*\.so", name) for name in names)
    # One copy of the library: a wheel cannot hold the symlinks libspattn.so.0 -> libspattn.so.0.1.0.
    assert [name for name in names if "libspattn" in name] == ["spattn/lib/libspattn.so"]
    stubs = zipfile.ZipFile(wheel).read("spattn/_C.pyi").decode()
    assert "def build_info() -> dict: ..." in stubs and "def patterns_swin(" in stubs


@pytest.mark.slow
def test_wheel_version_matches(wheel):
    version = cmake_project_version()
    assert wheel.name.startswith(f"spattn-{version}-")
    archive = zipfile.ZipFile(wheel)
    metadata = archive.read(f"spattn-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    assert cmake_package_version(archive.read(f"{CMAKE_DIR}/spattnConfigVersion.cmake").decode()) == version


@pytest.mark.slow
def test_wheel_libraries_need_only_system_libraries_and_origin_paths(wheel, tmp_path):
    archive = zipfile.ZipFile(wheel)
    libraries = [Path(archive.extract(name, tmp_path)) for name in archive.namelist() if name.endswith(".so")]
    assert len(libraries) == 2, libraries
    assert_need_only_system_libraries(libraries)


@pytest.fixture(scope="session")
def other_torch_python(wheel, tmp_path_factory) -> Path:
    """The python of a fresh virtual environment with OTHER_TORCH and the wheel (without its dependencies,
    or pip would replace that torch)."""
    venv = tmp_path_factory.mktemp("other-torch") / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    # --no-compile: byte-compiling torch's thousands of files is most of an install's time.
    run([str(python), "-m", "pip", "install", "-q", "--no-compile", OTHER_TORCH, "numpy", "pytest"])
    run([str(python), "-m", "pip", "install", "-q", "--no-compile", "--no-deps", str(wheel)])
    return python


@pytest.mark.slow
def test_wheel_imports_and_runs_beside_a_cpu_only_torch(other_torch_python):
    site_packages = Path(run([str(other_torch_python), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    assert not (site_packages / "nvidia").exists(), "the other torch should be the CPU-only build"
    report = json.loads(run([str(other_torch_python), str(REPO / "tests" / "wheel_smoke.py")], cwd=site_packages))
    print(json.dumps(report, indent=2))
    assert report["torch"] == OTHER_TORCH.split("==")[1] + "+cpu" and report["torch_cuda"] is None
    assert Path(report["spattn_file"]).is_relative_to(site_packages)
    assert report["version"] == report["metadata_version"] == report["build_info"]["version"] == cmake_project_version()
    # Nothing of CUDA is loaded by importing spattn and running CPU attention forward and backward.
    assert report["nvidia_libraries_after_cpu_work"] == []
    info = report["build_info"]
    if not report["driver_loadable"]:
        assert info["cuda_devices"] == 0
    assert not info["cusparse_loadable"] and info["cusparse_version"] == 0
    if info["cusparse"]:
        # The message a cuSPARSE op raises there (as ValueError): what is missing and where it was looked for.
        assert "libcusparse.so." in info["cusparse_load_error"]
        assert str(site_packages / "nvidia") in info["cusparse_load_error"]
    assert report["cusparse_on_cpu"].startswith("ValueError") and "CUDA" in report["cusparse_on_cpu"]
    assert Path(report["cmake_dir"], "spattnConfig.cmake").exists()
    assert Path(report["cmake_dir"]).is_relative_to(site_packages)


@pytest.mark.slow
def test_cpu_tests_pass_beside_a_cpu_only_torch(other_torch_python, tmp_path):
    # From a folder outside the checkout, so that `import spattn` finds the wheel, not python/spattn.
    result = subprocess.run([str(other_torch_python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"--rootdir={REPO}", *(str(REPO / "tests" / name) for name in CPU_TESTS)],
                            cwd=tmp_path, capture_output=True, text=True)
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0
