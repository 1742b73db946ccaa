"""The command line: `spattn demo`, `spattn show`, `spattn info`, `python -m spattn --cmake-dir`."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    import spattn
    print(json.dumps(spattn.build_info(), indent=2))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cmake-dir"]:
        import spattn
        print(spattn.cmake_dir())
        return 0
    parser = argparse.ArgumentParser(prog="spattn", description="Attention over any sparsity pattern (CSR).")
    parser.add_argument("--cmake-dir", action="store_true", help="print the folder to pass as spattn_DIR")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("info", help="print build information").set_defaults(run=_info)
    from . import cli_demo, cli_show
    cli_demo.add_parser(commands)
    cli_show.add_parser(commands)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return args.run(args)
