"""Efficiency table of MoLT, Mettle, LAVisH, DG-SCT and AVMoE (training steps, one process per method).

    python benchmarks/efficiency.py ave --backbone paper --out benchmarks/results/efficiency_ave_paper

A thin wrapper around :func:`molt.app.bench.run_efficiency` (same as ``molt bench efficiency ...``). Random
weights; nothing is downloaded. At paper scale (Swin-V2-L + HTS-AT, one clip, 2 warm-up + 5 timed steps per
method) on a 2-core CPU it takes 11-16 minutes per task and up to 13 GB of RAM (AVMoE on AVQA).
"""
from __future__ import annotations

import sys

from molt.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "efficiency", *sys.argv[1:]]))
