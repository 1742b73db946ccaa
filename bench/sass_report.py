"""What the compiled tensor-core attention kernels look like on sm_90, read off the library without a GPU:
registers, spills, shared memory, blocks per SM and the instruction mix of each kernel.

    python bench/sass_report.py                    # Markdown table of the installed spattn's kernels
    python bench/sass_report.py --json             # the same as JSON
    python bench/sass_report.py --check            # exit status 1 when a kernel breaks the rule below
    python bench/sass_report.py --library build/cp311-cp311-linux_x86_64/libspattn.so --filter 'flash'

Kernels are selected by a regular expression searched in the function's own name (default `mma|flash`,
not its namespaces or parameters). Counts are static (instructions in the code, not executed ones):
  HMMA      warp-level tensor-core products (mma.sync / wmma)
  LDSM      ldmatrix: MMA operands loaded from shared memory in fragment layout
  LDGSTS    cp.async: global -> shared copies that do not go through registers
  LD        generic-address loads (the opcode LD itself, not LDG/LDS/LDL/LDSM/LDC/LDGSTS): the compiler
            could not tell which memory a pointer points into, e.g. wmma::load_matrix_sync on bf16
  MOVM      movmatrix: fragment transposes (wmma col-major loads)
  BAR       block barriers (__syncthreads and friends)
  MUFU.EX2  exp2 on the special-function unit
Spill store / load bytes are the bytes of the STL / LDL instructions in the code, the numbers ptxas -v
prints as "bytes spill stores / loads" (local arrays count too: either is local-memory traffic).

--check fails (exit status 1) when a selected kernel spills or has a stack frame, has a generic LD or a
MOVM, or, for kernels whose name contains `flash`, gathers without cp.async (LDGSTS, or TMA: UTMALDG) or
loads no MMA operand with ldmatrix (LDSM); exit status 2 when nothing could be read or nothing matched.

Blocks per SM come from the registers per thread, the threads per block (--threads, 128 for these
kernels) and the shared memory per block: the static size cuobjdump reports (on sm_90 it includes the
1 KiB per block the driver reserves) plus the dynamic size, when spattn._C has
`cuda_tensor_core_shared_bytes(kernel, head_dim, value_dim, storage_bytes)` to say what it is, for head
dims 32/64/128 (only the head dim in the kernel's template arguments, when one of those is there).
Without it the table says the blocks per SM are from registers and threads only.

cuobjdump comes from triton's wheel (<site-packages>/triton/backends/nvidia/bin), else PATH, CUDA_HOME or
/usr/local/cuda; names are demangled with cu++filt or c++filt when one is found.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_FILTER = r"mma|flash"
HEAD_DIMS = (32, 64, 128)
# The opcodes of the table, by base opcode (the part before the first dot); MUFU.EX2 is matched in full.
COUNTED = ("HMMA", "LDSM", "LDGSTS", "LD", "MOVM", "BAR")
COLUMNS = COUNTED + ("MUFU.EX2",)


@dataclass(frozen=True)
class SmLimits:
    """Per-SM limits that bound how many blocks are resident (CUDA programming guide, compute capabilities)."""
    registers: int = 65536
    shared_bytes: int = 228 * 1024  # carve-out maximum; a block may have 227 KiB of it, plus the reserve
    threads: int = 2048
    blocks: int = 32
    reserved_shared_per_block: int = 1024  # the driver's per-block reserve (sm_80 and newer)
    register_granularity: int = 256  # registers are allocated per warp in units of 256


SM_LIMITS = {
    80: SmLimits(shared_bytes=164 * 1024),
    86: SmLimits(shared_bytes=100 * 1024, threads=1536, blocks=16),
    89: SmLimits(shared_bytes=100 * 1024, threads=1536, blocks=24),
    90: SmLimits(),
    100: SmLimits(),
}


@dataclass
class Kernel:
    mangled: str
    source: str = ""  # the compilation unit cuobjdump names (identifier = ...)
    registers: int = 0
    stack_bytes: int = 0
    local_bytes: int = 0
    static_shared_bytes: int = 0
    opcodes: Counter = field(default_factory=Counter)  # full opcode (with modifiers) -> static count
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    name: str = ""  # short readable name: attention_forward_flash_kernel<__nv_bfloat16, 32>
    dynamic_shared_bytes: dict = field(default_factory=dict)  # head dim -> bytes
    blocks_per_sm: dict = field(default_factory=dict)  # head dim (or "static_only") -> blocks
    problems: list = field(default_factory=list)

    def count(self, opcode: str) -> int:
        """Static count of an opcode: by base opcode (`LD` is LD.E, LD.E.64, ..., never LDG) or, with a dot
        (`MUFU.EX2`), by prefix of the full opcode."""
        if "." in opcode:
            return sum(n for op, n in self.opcodes.items() if op == opcode or op.startswith(opcode + "."))
        return sum(n for op, n in self.opcodes.items() if op.split(".")[0] == opcode)


# ---- parsing cuobjdump output --------------------------------------------------------------------------
_RESOURCE_FUNCTION = re.compile(r"^\s*Function\s+(\S+?):?\s*$")
_RESOURCE_VALUES = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")
_IDENTIFIER = re.compile(r"^\s*identifier\s*=\s*(.+?)\s*$")
_SASS_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)\s*$")
# An instruction line: /*0160*/  [@P0 | @!UP1]  OPCODE.MODIFIERS operands ;  /* encoding */
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-fA-F]+\*/\s+(?:@!?U?P\w*\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)")
_ACCESS_BYTES = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "32": 4, "64": 8, "128": 16}


def parse_resource_usage(text: str) -> list[Kernel]:
    """Kernels in `cuobjdump -res-usage` output, in order (a name may appear once per compilation unit)."""
    kernels, identifier, source, current = [], "", "", None
    for line in text.splitlines():
        if match := _IDENTIFIER.match(line):
            identifier = match.group(1)
        elif line.startswith("Resource usage:"):  # one cubin's functions follow, named by the identifier above
            source, identifier = identifier, ""
        elif match := _RESOURCE_FUNCTION.match(line):
            current = Kernel(mangled=match.group(1), source=source)
            kernels.append(current)
        elif current is not None and (values := dict(_RESOURCE_VALUES.findall(line))):
            current.registers = int(values.get("REG", 0))
            current.stack_bytes = int(values.get("STACK", 0))
            current.local_bytes = int(values.get("LOCAL", 0))
            current.static_shared_bytes = int(values.get("SHARED", 0))
            current = None
    return kernels


def access_bytes(opcode: str) -> int:
    """Bytes one thread moves with an LDL/STL: the width modifier (LDL.LU.64 -> 8), 4 without one."""
    for modifier in opcode.split(".")[1:]:
        if modifier in _ACCESS_BYTES:
            return _ACCESS_BYTES[modifier]
    return 4


def parse_sass(text: str) -> list[tuple[str, Counter]]:
    """(mangled name, opcode counts) per function in `cuobjdump -sass` output, in order; lines that are not
    instructions (headers, encodings, labels, warnings) are skipped."""
    functions: list[tuple[str, Counter]] = []
    for line in text.splitlines():
        if match := _SASS_FUNCTION.match(line):
            functions.append((match.group(1), Counter()))
        elif functions and (match := _INSTRUCTION.match(line)):
            functions[-1][1][match.group(1)] += 1
    return functions


def attach_sass(kernels: list[Kernel], functions: list[tuple[str, Counter]]) -> None:
    """Gives each kernel its instruction counts: the k-th occurrence of a name in the SASS listing belongs to
    the k-th occurrence in the resource listing (both walk the library's cubins in the same order)."""
    by_name: dict[str, list[Counter]] = {}
    for name, counts in functions:
        by_name.setdefault(name, []).append(counts)
    for kernel in kernels:
        listed = by_name.get(kernel.mangled)
        if listed:
            kernel.opcodes = listed.pop(0)
        kernel.spill_store_bytes = sum(access_bytes(op) * n for op, n in kernel.opcodes.items()
                                       if op.split(".")[0] == "STL")
        kernel.spill_load_bytes = sum(access_bytes(op) * n for op, n in kernel.opcodes.items()
                                      if op.split(".")[0] == "LDL")


# ---- names -----------------------------------------------------------------------------------------------
def function_name(mangled: str) -> str:
    """The function's own identifier from an Itanium-mangled name, without demangling: the last source name
    of `_ZN<len><id>...` (`_ZN6spattn4cuda...28attention_forward_mma_kernelI...` -> attention_forward_mma_kernel);
    the name itself when it is not mangled."""
    if not mangled.startswith("_Z"):
        return mangled
    position = 3 if mangled.startswith("_ZN") else 2
    last = mangled
    while position < len(mangled) and mangled[position].isdigit():
        digits = re.match(r"\d+", mangled[position:]).group(0)
        start = position + len(digits)
        last = mangled[start:start + int(digits)]
        position = start + int(digits)
    return last


def _top_level_split(text: str, separator: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, character in enumerate(text):
        if character in "<(":
            depth += 1
        elif character in ">)":
            depth -= 1
        elif character == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def short_name(demangled: str) -> str:
    """`void spattn::cuda::detail::f<spattn::X<32>, 4>(args...)` -> `f<X<32>, 4>`: no return type, namespaces or
    parameters."""
    name = demangled.strip()
    name = re.sub(r"^void\s+", "", name)
    depth = 0
    for i, character in enumerate(name):  # the parameter list: the first '(' outside template arguments
        if character == "<":
            depth += 1
        elif character == ">":
            depth -= 1
        elif character == "(" and depth == 0 and not name.startswith("(anonymous namespace)", i):
            name = name[:i]
            break
    name = name.replace("(anonymous namespace)::", "")
    return re.sub(r"\b[A-Za-z_]\w*::", "", name).strip()


def template_arguments(name: str) -> list[str]:
    """Top-level template arguments of a short name: `f<__nv_bfloat16, 32>` -> ['__nv_bfloat16', '32']."""
    if "<" not in name or not name.endswith(">"):
        return []
    return [part.strip() for part in _top_level_split(name[name.index("<") + 1:-1], ",")]


def demangle(names: list[str], demangler: str | None) -> dict[str, str]:
    """Mangled -> demangled, with one run of cu++filt / c++filt; names it cannot demangle stay as they are."""
    if demangler and names:
        try:
            result = subprocess.run([demangler], input="\n".join(names) + "\n", capture_output=True, text=True,
                                    timeout=60, check=True)
            lines = result.stdout.splitlines()
            if len(lines) == len(names):
                return dict(zip(names, lines))
        except (OSError, subprocess.SubprocessError):
            pass
    return {name: name for name in names}


# ---- tools and library -----------------------------------------------------------------------------------
def tool_directories() -> list[Path]:
    """Where cuobjdump / cu++filt may be: triton's wheel of the running interpreter first, then CUDA's."""
    directories = []
    spec = importlib.util.find_spec("triton")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        directories += [Path(p) / "backends" / "nvidia" / "bin" for p in spec.submodule_search_locations]
    site_packages = [sysconfig.get_paths().get("purelib", ""), sysconfig.get_paths().get("platlib", "")]
    site_packages += list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()]
    directories += [Path(p) / "triton" / "backends" / "nvidia" / "bin" for p in site_packages if p]
    return list(dict.fromkeys(directories))


def find_tool(name: str, directories: list[Path]) -> str | None:
    for directory in directories:
        if (directory / name).is_file() and os.access(directory / name, os.X_OK):
            return str(directory / name)
    found = shutil.which(name)
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / name).is_file():
            return str(Path(home) / "bin" / name)
    return None


def find_library() -> Path | None:
    """libspattn.so of the installed spattn package (next to the package or its _C module, in lib*/; an
    editable install has both), else of a build folder of this repository."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("spattn")
    if spec is not None:
        for location in spec.submodule_search_locations or []:
            for pattern in ("lib*/libspattn.so", "libspattn.so", "lib*/libspattn.so.*", "libspattn.so.*"):
                candidates += sorted(Path(location).glob(pattern))
    for pattern in ("build/*/libspattn.so", "build/libspattn.so", "/tmp/sass_build/libspattn.so"):
        candidates += sorted(Path(p) for p in glob.glob(str(REPOSITORY / pattern)))
    return next((c.resolve() for c in candidates if c.is_file()), None)


def run_cuobjdump(cuobjdump: str, arguments: list[str]) -> str:
    result = subprocess.run([cuobjdump, *arguments], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{cuobjdump} {' '.join(arguments[:3])} ...: exit status {result.returncode}: "
                           f"{result.stderr.strip()[:500]}")
    return result.stdout


# ---- occupancy -------------------------------------------------------------------------------------------
def architecture_number(arch: str) -> int:
    match = re.search(r"(\d+)", arch)
    return int(match.group(1)) if match else 90


def blocks_per_sm(registers: int, threads: int, shared_bytes: int | None, arch: int) -> tuple[int, str]:
    """Resident blocks per SM and what limits them. shared_bytes: static (as cuobjdump reports it) + dynamic,
    or None when the dynamic size is unknown (then shared memory is not a limit)."""
    limits = SM_LIMITS.get(arch, SM_LIMITS[90])
    warps = math.ceil(threads / 32)
    bounds = {"blocks": limits.blocks, "threads": limits.threads // (32 * warps)}
    if registers:
        per_warp = math.ceil(registers * 32 / limits.register_granularity) * limits.register_granularity
        bounds["registers"] = (limits.registers // per_warp) // warps
    if shared_bytes is not None:
        # sm_90's cubins count the per-block reserve in SHARED once a kernel uses shared memory at all.
        includes_reserve = arch >= 90 and shared_bytes >= limits.reserved_shared_per_block
        per_block = shared_bytes + (0 if includes_reserve else limits.reserved_shared_per_block)
        bounds["shared memory"] = limits.shared_bytes // per_block
    limit = min(bounds, key=lambda k: bounds[k])
    return bounds[limit], limit


def storage_bytes(arguments: list[str]) -> int:
    for argument in arguments:
        if argument in ("__half", "half", "__nv_bfloat16", "nv_bfloat16", "c10::Half", "c10::BFloat16"):
            return 2
        if argument == "float":
            return 4
        if argument == "double":
            return 8
    return 2  # the tensor-core kernels are float16 / bfloat16 ones


def shared_bytes_function():
    """spattn._C.cuda_tensor_core_shared_bytes when this build has it, else None."""
    try:
        from spattn import _C
    except Exception:  # no torch, no build: the report still works from registers alone
        return None
    return getattr(_C, "cuda_tensor_core_shared_bytes", None)


def head_dim_arguments(kernel: Kernel) -> list[int]:
    """Integer template arguments of the kernel: from its demangled name, else (no demangler) from the
    literals `Li32E` of its mangled one."""
    if "<" in kernel.name:
        return [int(a) for a in template_arguments(kernel.name) if a.isdigit()]
    return [int(n) for n in re.findall(r"L[ijlmsty](\d+)E", kernel.mangled)]


def add_occupancy(kernel: Kernel, threads: int, arch: int, shared_bytes_of) -> None:
    """Blocks per SM for head dims 32/64/128, or for the one the kernel's template arguments name (the
    first of them among those sizes)."""
    arguments = template_arguments(kernel.name) or re.findall(r"__nv_bfloat16|__half", kernel.mangled)
    head_dims = [d for d in head_dim_arguments(kernel) if d in HEAD_DIMS][:1] or list(HEAD_DIMS)
    if shared_bytes_of is not None:
        kind = "backward" if "backward" in function_name(kernel.mangled) else "forward"
        for head_dim in head_dims:
            try:
                dynamic = int(shared_bytes_of(kind, head_dim, head_dim, storage_bytes(arguments)))
            except Exception:  # a head dim this kernel does not take
                continue
            if dynamic <= 0:  # these kernels stage their tiles in dynamic shared memory: 0 is "not known yet"
                continue
            kernel.dynamic_shared_bytes[head_dim] = dynamic
            kernel.blocks_per_sm[head_dim] = blocks_per_sm(kernel.registers, threads,
                                                           kernel.static_shared_bytes + dynamic, arch)
    if not kernel.blocks_per_sm:  # the dynamic size unknown: static shared memory is all that can limit
        kernel.blocks_per_sm["static_only"] = blocks_per_sm(kernel.registers, threads, kernel.static_shared_bytes,
                                                            arch)


# ---- the rule and the report -----------------------------------------------------------------------------
def judge(kernel: Kernel) -> list[str]:
    """What breaks the issue's rule for tensor-core kernels (empty: the kernel passes)."""
    problems = []
    if kernel.spill_store_bytes or kernel.spill_load_bytes or kernel.stack_bytes or kernel.local_bytes:
        problems.append(f"spills (st/ld {kernel.spill_store_bytes}/{kernel.spill_load_bytes} B, "
                        f"stack {kernel.stack_bytes} B)")
    if kernel.count("LD"):
        problems.append("generic LD")
    if kernel.count("MOVM"):
        problems.append("MOVM")
    if "flash" in function_name(kernel.mangled):
        if not kernel.count("LDGSTS") and not kernel.count("UTMALDG"):
            problems.append("no cp.async (LDGSTS)")
        if not kernel.count("LDSM"):
            problems.append("no LDSM")
    return problems


def collect(resource_text: str, sass_text: str, name_filter: str, threads: int, arch: str,
            demangler: str | None, shared_bytes_of) -> list[Kernel]:
    """Kernels of the resource listing whose own name matches name_filter, with their SASS counts,
    occupancy and problems."""
    selector = re.compile(name_filter)
    kernels = [k for k in parse_resource_usage(resource_text) if selector.search(function_name(k.mangled))]
    attach_sass(kernels, parse_sass(sass_text))
    names = demangle(list(dict.fromkeys(k.mangled for k in kernels)), demangler)
    for kernel in kernels:
        kernel.name = short_name(names[kernel.mangled])
        add_occupancy(kernel, threads, architecture_number(arch), shared_bytes_of)
        kernel.problems = judge(kernel)
    return kernels


def _blocks_cell(kernel: Kernel) -> str:
    if "static_only" in kernel.blocks_per_sm:
        return f"{kernel.blocks_per_sm['static_only'][0]}*"
    return ", ".join(f"d{d}: {blocks}" for d, (blocks, _) in kernel.blocks_per_sm.items())


def markdown(kernels: list[Kernel], threads: int, shared_bytes_known: bool = False) -> str:
    """The table; shared_bytes_known: spattn._C has cuda_tensor_core_shared_bytes (for the footnote)."""
    header = ["kernel", "regs", "spill st/ld (B)", "static smem (B)", "dyn. smem (B)", "blocks/SM"]
    header += list(COLUMNS) + ["check"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in kernels:
        dynamic = ", ".join(f"d{d}: {b}" for d, b in k.dynamic_shared_bytes.items()) or "–"
        cells = [f"`{k.name}`", str(k.registers), f"{k.spill_store_bytes} / {k.spill_load_bytes}",
                 str(k.static_shared_bytes), dynamic, _blocks_cell(k)]
        cells += [str(k.count(c)) for c in COLUMNS]
        cells.append("ok" if not k.problems else "**" + "; ".join(k.problems) + "**")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"\nStatic counts per kernel; {threads} threads per block."]
    if any("static_only" in k.blocks_per_sm for k in kernels):
        why = ("`spattn._C.cuda_tensor_core_shared_bytes` gives no size (or 0) for this kernel" if shared_bytes_known
               else "this build's spattn._C has no `cuda_tensor_core_shared_bytes`")
        notes.append(f"\\* blocks per SM from registers, threads and static shared memory only: {why}, so the "
                     "dynamic shared memory per block is not known.")
    return "\n".join(lines + notes)


def base_opcodes(opcodes: Counter) -> Counter:
    """Counts by base opcode: LDG.E.128 and LDG.E.64 both count as LDG."""
    counts: Counter = Counter()
    for opcode, n in opcodes.items():
        counts[opcode.split(".")[0]] += n
    return counts


def as_json(kernels: list[Kernel], meta: dict) -> str:
    rows = []
    for k in kernels:
        rows.append(dict(
            name=k.name, mangled=k.mangled, source=k.source, registers=k.registers,
            spill_store_bytes=k.spill_store_bytes, spill_load_bytes=k.spill_load_bytes,
            stack_bytes=k.stack_bytes, local_bytes=k.local_bytes, static_shared_bytes=k.static_shared_bytes,
            dynamic_shared_bytes={str(d): b for d, b in k.dynamic_shared_bytes.items()},
            blocks_per_sm={str(d): {"blocks": b, "limited_by": why} for d, (b, why) in k.blocks_per_sm.items()},
            instructions={c: k.count(c) for c in COLUMNS + ("UTMALDG", "HGMMA", "STL", "LDL")},
            opcodes=dict(sorted(base_opcodes(k.opcodes).items())),
            problems=k.problems))
    return json.dumps(dict(meta, kernels=rows, passed=all(not k.problems for k in kernels)), indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--library", type=Path, help="libspattn.so to read (default: the installed spattn's)")
    parser.add_argument("--arch", default="sm_90", help="the cubins to read (default sm_90)")
    parser.add_argument("--filter", default=DEFAULT_FILTER,
                        help=f"regular expression searched in each kernel's own name (default {DEFAULT_FILTER!r})")
    parser.add_argument("--threads", type=int, default=128, help="threads per block (default 128)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--check", action="store_true", help="exit status 1 when a kernel breaks the rule")
    parser.add_argument("--cuobjdump", help="the cuobjdump to run (default: triton's, else PATH / CUDA)")
    parser.add_argument("--resource-usage-file", type=Path,
                        help="saved `cuobjdump -res-usage` output to read instead of running cuobjdump")
    parser.add_argument("--sass-file", type=Path, help="saved `cuobjdump -sass` output (with the above)")
    args = parser.parse_args(argv)

    directories = tool_directories()
    demangler = find_tool("cu++filt", directories) or find_tool("c++filt", directories)
    meta = dict(arch=args.arch, threads_per_block=args.threads, filter=args.filter)
    if args.resource_usage_file or args.sass_file:
        if not (args.resource_usage_file and args.sass_file):
            parser.error("--resource-usage-file and --sass-file go together")
        resource_text = args.resource_usage_file.read_text()
        sass_text = args.sass_file.read_text()
        meta.update(resource_usage_file=str(args.resource_usage_file), sass_file=str(args.sass_file))
    else:
        library = args.library or find_library()
        cuobjdump = args.cuobjdump or find_tool("cuobjdump", directories)
        if library is None or not Path(library).is_file():
            print(f"sass_report: no libspattn.so found ({library or 'install spattn or pass --library'})",
                  file=sys.stderr)
            return 2
        if cuobjdump is None:
            print("sass_report: no cuobjdump (pip install triton, or put CUDA's bin on PATH)", file=sys.stderr)
            return 2
        meta.update(library=str(library), cuobjdump=cuobjdump)
        try:
            resource_text = run_cuobjdump(cuobjdump, ["-res-usage", "-arch", args.arch, str(library)])
            selector = re.compile(args.filter)
            wanted = [k.mangled for k in parse_resource_usage(resource_text)
                      if selector.search(function_name(k.mangled))]
            # Only the selected kernels' SASS: the whole library's listing is ten times slower.
            sass_text = run_cuobjdump(cuobjdump, ["-sass", "-arch", args.arch, "-fun",
                                                  ",".join(dict.fromkeys(wanted)), str(library)]) if wanted else ""
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            print(f"sass_report: {error}", file=sys.stderr)
            return 2
        if "Function" not in resource_text:
            print(f"sass_report: no {args.arch} code in {library}", file=sys.stderr)
            return 2
    shared_bytes_of = shared_bytes_function()
    meta["dynamic_shared_memory"] = ("spattn._C.cuda_tensor_core_shared_bytes" if shared_bytes_of
                                     else None)
    kernels = collect(resource_text, sass_text, args.filter, args.threads, args.arch, demangler, shared_bytes_of)
    if not kernels:
        print(f"sass_report: no {args.arch} kernel matches {args.filter!r}", file=sys.stderr)
        return 2
    print(as_json(kernels, meta) if args.json else markdown(kernels, args.threads, shared_bytes_of is not None))
    if args.check:
        failing = [k for k in kernels if k.problems]
        for k in failing:
            print(f"sass_report: {k.name}: {'; '.join(k.problems)}", file=sys.stderr)
        return 1 if failing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
