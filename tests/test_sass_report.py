"""bench/sass_report.py: the parser and the rule on a captured sample of cuobjdump output (the wmma kernels'
sm_90 code, trimmed, and toy kernels with cp.async / ldmatrix / mma.sync and with spills:
tests/data/sass_report_toy.cu), then end to end on the installed library when cuobjdump and a CUDA build
are there."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
RESOURCE_USAGE = DATA / "sass_report_sample.res-usage.txt"
SASS = DATA / "sass_report_sample.sass.txt"

_spec = importlib.util.spec_from_file_location("sass_report", ROOT / "bench" / "sass_report.py")
sass_report = importlib.util.module_from_spec(_spec)
sys.modules["sass_report"] = sass_report  # dataclasses look their module up by name
_spec.loader.exec_module(sass_report)

FORWARD_BF16 = ("_ZN6spattn4cuda6detail28attention_forward_mma_kernelI13__nv_bfloat16EEvNS1_16GroupedArgumentsIT_EE"
                "NS1_11VectorLoadsE")
BACKWARD_BF16 = ("_ZN6spattn4cuda6detail29attention_backward_mma_kernelI13__nv_bfloat16EEvNS1_17BackwardArgumentsIT_EE"
                 "NS1_11VectorLoadsE")
FLASH = "_ZN3toy30attention_forward_flash_kernelI13__nv_bfloat16Li32EEEvPKT_S4_Pfi"
SPILLING = "_ZN3toy19spilling_mma_kernelEPKfPfii"


def sample_kernels(name_filter=sass_report.DEFAULT_FILTER, shared_bytes_of=None, threads=128):
    return sass_report.collect(RESOURCE_USAGE.read_text(), SASS.read_text(), name_filter, threads, "sm_90",
                               None, shared_bytes_of)


def by_mangled(kernels):
    return {k.mangled: k for k in kernels}


def test_resource_usage_parsed_per_kernel():
    kernels = sass_report.parse_resource_usage(RESOURCE_USAGE.read_text())
    assert len(kernels) == 8  # 2 forward, fill_group_of_row + 2 backward, 3 toy
    found = by_mangled(kernels)
    assert (found[FORWARD_BF16].registers, found[FORWARD_BF16].static_shared_bytes) == (128, 1024)
    assert found[FORWARD_BF16].source.endswith("cuda/attention_forward_mma.cu")
    assert found[FLASH].source == ""  # a bare cubin names no compilation unit
    assert found[BACKWARD_BF16].registers == 168
    assert (found[SPILLING].registers, found[SPILLING].stack_bytes) == (32, 504)
    assert found[FLASH].static_shared_bytes == 9216


def test_selection_by_the_kernels_own_name():
    names = [sass_report.function_name(k.mangled) for k in sample_kernels()]
    # fill_group_of_row_kernel lives in attention_backward_mma.cu (its anonymous namespace says so) and is
    # not selected; neither is the toy fill_kernel.
    assert names == ["attention_forward_mma_kernel"] * 2 + ["attention_backward_mma_kernel"] * 2 + [
        "spilling_mma_kernel", "attention_forward_flash_kernel"]
    assert [sass_report.function_name(k.mangled) for k in sample_kernels("flash")] == ["attention_forward_flash_kernel"]
    assert sass_report.function_name("_ZN6spattn4cuda6detail63_GLOBAL__N__709c1478_25_attention_backward_mma_cu_"
                                     "16cccd92_678124fill_group_of_row_kernelElPKlS4_Pl") == "fill_group_of_row_kernel"
    assert sass_report.function_name("_Z5plainPf") == "plain"


def test_instruction_counts():
    kernels = by_mangled(sample_kernels())
    forward, backward = kernels[FORWARD_BF16], kernels[BACKWARD_BF16]
    assert {c: forward.count(c) for c in sass_report.COLUMNS} == {
        "HMMA": 28, "LDSM": 0, "LDGSTS": 0, "LD": 112, "MOVM": 28, "BAR": 3, "MUFU.EX2": 33}
    assert {c: backward.count(c) for c in sass_report.COLUMNS} == {
        "HMMA": 70, "LDSM": 0, "LDGSTS": 0, "LD": 280, "MOVM": 140, "BAR": 4, "MUFU.EX2": 32}
    # LD is the generic load alone: the toy's LDG, LDL and LDC are not in it.
    spilling = kernels[SPILLING]
    assert spilling.count("LD") == 1 and spilling.count("LDG") > 0 and spilling.count("LDL") > 0
    assert spilling.count("LDC") > 0 and spilling.count("STS") == 1
    flash = kernels[FLASH]
    assert {c: flash.count(c) for c in sass_report.COLUMNS} == {
        "HMMA": 2, "LDSM": 4, "LDGSTS": 2, "LD": 0, "MOVM": 0, "BAR": 1, "MUFU.EX2": 4}
    # Predicated instructions count (the toy's guarded EXIT) and encoding lines do not.
    assert flash.count("EXIT") >= 1 and sum(flash.opcodes.values()) < 200


def test_spill_bytes_are_those_ptxas_reports():
    spilling = by_mangled(sample_kernels())[SPILLING]
    # ptxas -v on the toy: "504 bytes stack frame, 828 bytes spill stores, 836 bytes spill loads"
    assert (spilling.spill_store_bytes, spilling.spill_load_bytes) == (828, 836)
    assert sass_report.access_bytes("STL.128") == 16 and sass_report.access_bytes("LDL.LU.64") == 8
    assert sass_report.access_bytes("STL") == 4 and sass_report.access_bytes("LDL.U8") == 1


def test_the_rule():
    kernels = by_mangled(sample_kernels())
    assert kernels[FORWARD_BF16].problems == ["generic LD", "MOVM"]
    assert kernels[BACKWARD_BF16].problems == ["generic LD", "MOVM"]
    assert kernels[FLASH].problems == []
    problems = kernels[SPILLING].problems
    assert problems[0].startswith("spills (st/ld 828/836 B") and problems[1:] == ["generic LD", "MOVM"]
    # A flash kernel without cp.async or ldmatrix fails even when it is otherwise clean.
    flash = kernels[FLASH]
    flash.opcodes = type(flash.opcodes)({op: n for op, n in flash.opcodes.items()
                                         if not op.startswith(("LDGSTS", "LDSM"))})
    assert sass_report.judge(flash) == ["no cp.async (LDGSTS)", "no LDSM"]
    flash.opcodes["UTMALDG.2D"] = 1  # TMA counts as an asynchronous gather
    assert sass_report.judge(flash) == ["no LDSM"]


def test_names_shortened():
    assert sass_report.short_name(
        "void spattn::cuda::detail::attention_forward_mma_kernel<__nv_bfloat16>("
        "spattn::cuda::detail::GroupedArguments<__nv_bfloat16>, spattn::cuda::detail::VectorLoads)"
    ) == "attention_forward_mma_kernel<__nv_bfloat16>"
    assert sass_report.short_name(
        "void spattn::cuda::detail::(anonymous namespace)::attention_forward_kernel<"
        "spattn::cuda::detail::FragmentShape<32, 4, false>, float>(spattn::cuda::detail::ForwardArguments<float>)"
    ) == "attention_forward_kernel<FragmentShape<32, 4, false>, float>"
    assert sass_report.template_arguments("f<FragmentShape<32, 4>, __half, 64>") == ["FragmentShape<32, 4>",
                                                                                      "__half", "64"]


@pytest.mark.skipif(shutil.which("c++filt") is None, reason="no c++filt")
def test_demangled_with_cxxfilt():
    names = sass_report.demangle([FLASH], shutil.which("c++filt"))
    assert sass_report.short_name(names[FLASH]) == "attention_forward_flash_kernel<__nv_bfloat16, 32>"


def test_blocks_per_sm_on_sm90():
    blocks = sass_report.blocks_per_sm
    assert blocks(128, 128, None, 90) == (4, "registers")  # 4 warps x 4096 registers
    assert blocks(168, 128, None, 90) == (3, "registers")  # 168 -> 5376 a warp: 12 warps
    assert blocks(32, 128, None, 90) == (16, "threads")
    # Shared memory: 228 KiB an SM; sm_90's SHARED already holds the 1 KiB reserve of each block.
    assert blocks(64, 128, 1024 + 45 * 1024, 90) == (4, "shared memory")  # 233472 // 47104
    assert blocks(64, 128, 1024 + 226 * 1024, 90) == (1, "shared memory")
    assert blocks(64, 128, 0, 90) == (8, "registers")  # 2048 registers a warp: 32 warps
    assert blocks(64, 128, 40 * 1024 + 1, 80)[0] == 3  # sm_80: 164 KiB, SHARED without the reserve


def test_dynamic_shared_memory_by_head_dim():
    calls = []

    def shared_bytes(kernel, head_dim, value_dim, storage_bytes):
        calls.append((kernel, head_dim, value_dim, storage_bytes))
        if head_dim == 128 and kernel == "backward":
            raise ValueError("no such configuration")
        return head_dim * 512

    kernels = by_mangled(sample_kernels(shared_bytes_of=shared_bytes))
    forward = kernels[FORWARD_BF16]
    assert forward.dynamic_shared_bytes == {32: 16384, 64: 32768, 128: 65536}
    assert {d: b for d, (b, _) in forward.blocks_per_sm.items()} == {32: 4, 64: 4, 128: 3}
    assert kernels[BACKWARD_BF16].dynamic_shared_bytes == {32: 16384, 64: 32768}
    # The flash kernel's template names its head dim: only that one is asked for.
    assert kernels[FLASH].dynamic_shared_bytes == {32: 16384}
    assert ("forward", 32, 32, 2) in calls and ("backward", 64, 64, 2) in calls
    assert [c for c in calls if c[0] == "forward" and c[1] == 128]  # the wmma forward takes every head dim
    table = sass_report.markdown(list(kernels.values()), 128, True)
    assert "d32: 4, d64: 4, d128: 3" in table and "d32: 16384" in table
    assert "gives no size (or 0)" not in table
    # An answer of 0 is no answer: blocks per SM from registers, threads and static shared memory.
    kernels = sample_kernels(shared_bytes_of=lambda kernel, head_dim, value_dim, storage_bytes: 0)
    assert all(k.dynamic_shared_bytes == {} and "static_only" in k.blocks_per_sm for k in kernels)
    assert "gives no size (or 0)" in sass_report.markdown(kernels, 128, True)


def test_markdown_table():
    kernels = sample_kernels()
    table = sass_report.markdown(kernels, 128)
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["kernel", "regs", "spill st/ld (B)", "static smem (B)", "dyn. smem (B)", "blocks/SM",
                      "HMMA", "LDSM", "LDGSTS", "LD", "MOVM", "BAR", "MUFU.EX2", "check"]
    rows = [line for line in lines[2:] if line.startswith("| `")]
    assert len(rows) == len(kernels) == 6
    forward = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert forward[1:] == ["128", "0 / 0", "1024", "–", "4*", "28", "0", "0", "112", "28", "3", "33",
                           "**generic LD; MOVM**"]
    assert "no `cuda_tensor_core_shared_bytes`" in table


def test_command_line_on_the_sample(capsys):
    files = ["--resource-usage-file", str(RESOURCE_USAGE), "--sass-file", str(SASS)]
    assert sass_report.main(files + ["--check", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and len(report["kernels"]) == 6
    forward = next(k for k in report["kernels"] if k["mangled"] == FORWARD_BF16)
    assert forward["instructions"]["LD"] == 112 and forward["problems"] == ["generic LD", "MOVM"]
    assert forward["opcodes"]["HMMA"] == 28
    assert sass_report.main(files + ["--check", "--filter", "flash"]) == 0
    assert "attention_forward_flash_kernel" in capsys.readouterr().out
    assert sass_report.main(files + ["--filter", "no_such_kernel"]) == 2


def _installed_library_with_sm90():
    cuobjdump = sass_report.find_tool("cuobjdump", sass_report.tool_directories())
    library = sass_report.find_library()
    if cuobjdump is None or library is None:
        return None
    try:
        listing = subprocess.run([cuobjdump, "-lelf", str(library)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return library if "sm_90" in listing.stdout else None


@pytest.mark.skipif(_installed_library_with_sm90() is None, reason="no cuobjdump, or no CUDA build with sm_90 code")
def test_end_to_end_on_the_installed_library():
    """The issue's rule on the built library: every tensor-core kernel (forward and backward, both storage
    types, every head-dim bound) without spills, generic loads or MOVM, gathering with cp.async and feeding
    its products through ldmatrix."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "sass_report.py"), "--json", "--check"],
                            capture_output=True, text=True, timeout=120)
    report = json.loads(result.stdout)
    assert report["kernels"], "no tensor-core kernel in the library"
    names = [kernel["name"] for kernel in report["kernels"]]
    for direction in ("forward", "backward"):
        assert sum(f"attention_{direction}_flash_kernel" in name for name in names) == 6, names
    for kernel in report["kernels"]:
        assert kernel["registers"] > 0 and kernel["instructions"]["HMMA"] > 0, kernel["name"]
    failed = [(kernel["name"], kernel["problems"]) for kernel in report["kernels"] if kernel["problems"]]
    assert result.returncode == 0 and report["passed"] and not failed, failed
