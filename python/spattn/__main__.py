"""`python -m spattn ...`: the command line (see spattn.cli); `--cmake-dir` prints spattn_DIR."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
