"""`spattn show`: draw a pattern (and per-query attention maps for 2-D grids) to a PNG."""

from __future__ import annotations


def add_parser(commands) -> None:
    parser = commands.add_parser("show", help="draw a sparsity pattern to a PNG")
    parser.set_defaults(run=run)


def run(args) -> int:
    raise NotImplementedError
