"""Efficiency table of MoLT, Mettle and LAVisH (one training step each, one process per method).

    python benchmarks/efficiency.py --backbone paper --out benchmarks/results/efficiency_paper

A thin wrapper around :func:`molt.bench.run_efficiency` (same as ``python -m molt.bench efficiency``). Random
weights; nothing is downloaded. At paper scale (Swin-V2-L + HTS-AT, one AVE clip) on a 2-core CPU it takes a few
minutes and about 7 GB of RAM (LAVisH).
"""
from __future__ import annotations

import sys

from molt.bench import main

if __name__ == "__main__":
    sys.exit(main(["efficiency", *sys.argv[1:]]))
