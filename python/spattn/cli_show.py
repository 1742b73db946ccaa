"""`spattn show`: build a pattern from the command line, print its summary and draw it to a PNG (with the
per-query attention maps when the pattern lives on a 2-D grid).

    spattn show swin --grid 8 8 --window 4 --shift 2 --out swin.png
    spattn show local_2d --grid 16 16 --distance 3
    spattn show causal_1d --n 64
"""

from __future__ import annotations

import argparse
import sys

# name -> (help, the generator's own arguments: (flags, argparse options)); every generator also takes
# --out, --max-queries and --no-maps, and the 1-D ones an optional --grid to draw maps on.
_GRID = (("--grid",), dict(type=int, nargs=2, metavar=("H", "W"), required=True, help="grid height and width"))
_N = (("--n",), dict(type=int, help="number of tokens (default: H * W of --grid)"))
_GENERATORS = {
    "swin": ("Swin (shifted) window attention", [
        _GRID,
        (("--window",), dict(type=int, nargs="+", required=True, metavar="SIZE",
                             help="window size: one int, or height and width")),
        (("--shift",), dict(type=int, nargs="+", default=[0], metavar="SIZE",
                            help="shift: one int, or height and width (default 0)")),
    ]),
    "local_1d": ("1-D local attention, |i - j| <= window // 2", [
        _N, (("--window",), dict(type=int, required=True, help="window size (the token and both wings)")),
    ]),
    "causal_1d": ("causal attention, j <= i", [_N]),
    "local_2d": ("2-D local attention, p-norm distance < distance", [
        _GRID,
        (("--distance",), dict(type=float, required=True, help="exclusive p-norm radius")),
        (("--p",), dict(type=float, default=2.0, help="the norm: 0, 1, 2 (default), ..., inf")),
    ]),
    "axial_2d": ("axial attention: same grid row or column", [_GRID]),
    "dilated_2d": ("dilated attention: coordinate differences multiples of k", [
        _GRID, (("--k",), dict(type=int, default=2, help="dilation (default 2)")),
    ]),
    "global_tokens": ("global tokens attend to and are attended by everything", [
        _N, (("--globals",), dict(type=int, nargs="+", required=True, metavar="INDEX",
                                  help="indices of the global tokens")),
    ]),
    "random": ("each entry independently with probability density", [
        _N, (("--density",), dict(type=float, required=True, help="probability of each entry, in [0, 1]")),
        (("--seed",), dict(type=int, default=0, help="random seed (default 0)")),
    ]),
    "block": ("a 0/1 block layout expanded into blocks (BigBird-style)", [
        (("--layout",), dict(required=True, metavar="ROWS",
                             help="block rows of 0/1 separated by commas, e.g. 110,111,011")),
        (("--block-size",), dict(type=int, required=True, help="tokens per block")),
    ]),
}
_EXAMPLES = """examples:
  spattn show swin --grid 8 8 --window 4 --shift 2 --out swin.png
  spattn show local_2d --grid 16 16 --distance 3
  spattn show random --n 256 --density 0.05 --seed 1 --no-maps
  spattn show GENERATOR --help     (that generator's arguments)"""
_ONE_D = {"local_1d", "causal_1d", "global_tokens", "random", "block"}


def add_parser(commands) -> None:
    """Registers `spattn show GENERATOR ...` on the top-level subcommands."""
    parser = commands.add_parser("show", help="draw a sparsity pattern to a PNG",
                                 description="Build a pattern, print its shape, nnz and density, and draw it.",
                                 epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    generators = parser.add_subparsers(dest="generator", metavar="GENERATOR", required=True)
    for name, (summary, arguments) in _GENERATORS.items():
        sub = generators.add_parser(name, help=summary, description=f"{name}: {summary}.")
        for flags, options in arguments:
            sub.add_argument(*flags, **options)
        if name in _ONE_D:
            sub.add_argument("--grid", type=int, nargs=2, metavar=("H", "W"),
                             help="also draw each query's attention map on this H x W grid of keys")
        sub.add_argument("--out", default=None, help=f"PNG to write (default: {name}.png)")
        sub.add_argument("--max-queries", type=int, default=64, help="most query maps to draw (default 64)")
        sub.add_argument("--no-maps", action="store_true", help="draw only the pattern matrix")
    parser.set_defaults(run=run)


def _pair(values: list, name: str):
    if len(values) not in (1, 2):
        raise ValueError(f"--{name} takes one or two integers, got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)


def _token_count(args) -> int:
    """--n, or H * W of --grid; each must agree with the other when both are given."""
    grid_tokens = None if args.grid is None else args.grid[0] * args.grid[1]
    if args.n is None and grid_tokens is None:
        raise ValueError(f"{args.generator} needs --n (number of tokens) or --grid H W")
    if args.n is not None and grid_tokens is not None and args.n != grid_tokens:
        raise ValueError(f"--n = {args.n} does not match --grid {args.grid[0]} x {args.grid[1]} = {grid_tokens}")
    return args.n if args.n is not None else grid_tokens


def _layout(text: str):
    import torch

    rows = text.split(",")
    if any(len(row) != len(rows[0]) or set(row) - {"0", "1"} for row in rows) or not rows[0]:
        raise ValueError(f"--layout must be rows of 0/1 of equal length separated by commas, got {text!r}")
    return torch.tensor([[c == "1" for c in row] for row in rows], dtype=torch.bool)


def build(args):
    """The pattern that the parsed arguments of `spattn show` describe (ValueError/TypeError when bad)."""
    import torch

    from . import patterns

    name = args.generator
    if name == "swin":
        return patterns.swin(*args.grid, _pair(args.window, "window"), _pair(args.shift, "shift"))
    if name == "local_2d":
        return patterns.local_2d(*args.grid, args.distance, p=args.p)
    if name == "axial_2d":
        return patterns.axial_2d(*args.grid)
    if name == "dilated_2d":
        return patterns.dilated_2d(*args.grid, k=args.k)
    if name == "block":
        return patterns.from_block_layout(_layout(args.layout), args.block_size)
    n = _token_count(args)
    if name == "local_1d":
        return patterns.local_1d(n, args.window)
    if name == "causal_1d":
        return patterns.causal_1d(n)
    if name == "random":
        return patterns.random(n, n, args.density, seed=args.seed)
    if name == "global_tokens":
        if n < 0:
            raise ValueError(f"--n must be >= 0, got {n}")
        flags = torch.zeros(n, dtype=torch.bool)
        bad = [index for index in args.globals if not 0 <= index < n]
        if bad:
            raise ValueError(f"--globals: indices must be in [0, {n}), got {bad}")
        flags[args.globals] = True
        return patterns.global_tokens(flags)
    raise ValueError(f"unknown generator {name!r}")


def run(args) -> int:
    """Builds the pattern, prints its summary and writes the PNG; bad arguments print an error (no
    traceback) and return 2."""
    try:
        pattern = build(args)
    except (ValueError, TypeError) as error:
        print(f"spattn show {args.generator}: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.generator}: shape {pattern.shape[0]} x {pattern.shape[1]}, nnz {pattern.nnz:,}, "
          f"density {pattern.density:.4%}")
    grid = None if args.no_maps or args.grid is None else tuple(args.grid)
    out = args.out if args.out is not None else f"{args.generator}.png"
    try:
        from .plot import plot_pattern

        plot_pattern(pattern, grid=grid, path=out, title=_title(args), max_queries=args.max_queries)
    except (ValueError, TypeError, ImportError) as error:
        print(f"spattn show {args.generator}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _title(args) -> str:
    """The generator's own arguments, so a picture says what it shows."""
    _, arguments = _GENERATORS[args.generator]
    names = [flags[0].lstrip("-").replace("-", "_") for flags, _ in arguments]
    if args.generator in _ONE_D:
        names.append("grid")
    shown = [f"{name}={_plain(getattr(args, name))}" for name in names if getattr(args, name) is not None]
    if args.grid is not None:
        shown = [f"grid={args.grid[0]} x {args.grid[1]}" if item.startswith("grid=") else item for item in shown]
    return f"{args.generator}({', '.join(shown)})"


def _plain(value) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)
