"""Pictures of neighborhood-attention patterns for the README gallery: the pattern matrix and every query's
attention map on a 12 x 12 grid with a 5 x 5 kernel, plain, dilated and causal. Writes docs/gallery/*.png.

    python bench/gallery.py [--out docs/gallery]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import spattn
from spattn.plot import plot_pattern

GRID = (12, 12)
KERNEL = 5

# (file name, title, neighborhood arguments)
PICTURES = [
    ("neighborhood_k5.png", f"neighborhood attention, kernel {KERNEL}", dict(dilation=1)),
    ("neighborhood_k5_dilation2.png", f"neighborhood attention, kernel {KERNEL}, dilation 2", dict(dilation=2)),
    ("neighborhood_k5_causal.png", f"causal neighborhood attention, kernel {KERNEL}", dict(causal=True)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "gallery")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, title, options in PICTURES:
        pattern = spattn.patterns.neighborhood(GRID, KERNEL, **options)
        path = args.out / name
        # Every query of the grid, so the borders (where the window stops centring) show.
        plot_pattern(pattern, grid=GRID, path=path, title=title, max_queries=GRID[0] * GRID[1])
        print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
