"""The API reference (docs/build_api.py, pdoc) builds, in a fresh interpreter, from the installed spattn: a
module that fails to import or a docstring pdoc cannot read fails here. Every public name has its section,
and every name a module exports in __all__ its docstring."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("pdoc")

import spattn  # noqa: E402
import spattn.compat.flex  # noqa: E402
import spattn.compat.natten  # noqa: E402
import spattn.compat.xformers  # noqa: E402
import spattn.functional  # noqa: E402
import spattn.layouts  # noqa: E402
import spattn.patterns  # noqa: E402
import spattn.plot  # noqa: E402

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "build_api.py"

# Page (relative to the output folder) -> names (Class.member for members) that must be documented there,
# beyond its module's __all__.
PAGES = {
    "spattn.html": ["Pattern.from_csr", "Pattern.from_dense", "Pattern.transposed", "Pattern.plan",
                    "Pattern.to_dense", "SparseAttention.forward", "NeighborhoodAttention2D.forward"],
    "spattn/pattern.html": ["Pattern", "Pattern.from_csr", "Pattern.from_coo", "Pattern.plan", "Pattern.to"],
    "spattn/patterns.html": [],
    "spattn/layouts.html": [],
    "spattn/functional.html": [],
    "spattn/ops.html": ["sddmm", "sparse_softmax", "spmm", "attention_forward", "attention_backward"],
    "spattn/modules.html": ["SparseAttention", "SparseAttention.forward"],
    "spattn/neighborhood_attention.html": ["NeighborhoodAttention2D", "NeighborhoodAttention2D.forward"],
    "spattn/plot.html": [],
    "spattn/compat/xformers.html": ["SparseCS"],
    "spattn/compat/natten.html": [],
    "spattn/compat/flex.html": [],
    "spattn/timm.html": [],
    "spattn/torchvision.html": [],
    "spattn/transformers.html": [],
}

# Pages whose module's __all__ names each need a section with a docstring.
EXPORTS = {
    "spattn.html": spattn,
    "spattn/patterns.html": spattn.patterns,
    "spattn/layouts.html": spattn.layouts,
    "spattn/functional.html": spattn.functional,
    "spattn/plot.html": spattn.plot,
    "spattn/compat/xformers.html": spattn.compat.xformers,
    "spattn/compat/natten.html": spattn.compat.natten,
    "spattn/compat/flex.html": spattn.compat.flex,
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("api")
    result = subprocess.run([sys.executable, str(BUILD_SCRIPT), str(output)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"docs/build_api.py failed:\n{result.stdout}\n{result.stderr}"
    return output


def sections(page: str) -> dict[str, str]:
    """Module-level name -> the HTML of its <section> (a class's members are <div id="Class.member">)."""
    parts = re.split(r'<section id="([^"]+)">', page)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_reference_has_a_page_per_public_module(reference):
    assert (reference / "index.html").is_file()
    for page in PAGES:
        assert (reference / page).is_file(), f"no page {page}"


@pytest.mark.parametrize("page", list(PAGES))
def test_every_documented_name_has_its_section(reference, page):
    html = (reference / page).read_text(encoding="utf-8")
    ids = set(re.findall(r'id="([^"]+)"', html))
    module = EXPORTS.get(page)
    exported = [name for name in getattr(module, "__all__", [])
                if not isinstance(getattr(module, name), types.ModuleType)]
    missing = [name for name in PAGES[page] + exported if name not in ids]
    assert not missing, f"{page}: no section for {missing}"
    found = sections(html)
    undocumented = [name for name in exported if 'class="docstring"' not in found[name]]
    assert not undocumented, f"{page}: no docstring for {undocumented}"
