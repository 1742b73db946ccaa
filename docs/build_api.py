"""Builds spattn's API reference (HTML) from its docstrings with pdoc.

    python docs/build_api.py [OUTPUT_DIR]        # default: docs/api/ (not committed); open index.html

The installed spattn is imported, so the reference describes the build in use. Any warning pdoc gives (a
module that fails to import, an annotation or docstring it cannot read) is an error: a reference with pages
silently missing is not built. tests/test_docs.py runs this.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

# The public modules: `spattn` and the submodules its __all__ names (patterns, layouts, timm, torchvision,
# transformers), which pdoc follows, plus those whose names it re-exports (Pattern, the functional API, the
# nn modules) or that are imported on their own, each listed once.
MODULES = [
    "spattn",
    "spattn.pattern",
    "spattn.functional",
    "spattn.ops",
    "spattn.modules",
    "spattn.neighborhood_attention",
    "spattn.plot",
    "spattn.compat.xformers",
    "spattn.compat.natten",
    "spattn.compat.flex",
]

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "api"


def build(output: Path = DEFAULT_OUTPUT) -> Path:
    """Writes the reference into ``output`` (created if needed) and returns it."""
    import pdoc
    import pdoc.render

    # The docstrings are reStructuredText (``code``, :class:`Pattern`).
    pdoc.render.configure(docformat="restructuredtext", search=True, show_source=False)
    output = Path(output)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc(*MODULES, output_directory=output)
    return output


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    print(build(Path(sys.argv[1]) if len(sys.argv) == 2 else DEFAULT_OUTPUT) / "index.html")
