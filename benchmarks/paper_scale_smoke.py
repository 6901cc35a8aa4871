"""Paper-scale smoke check: build Swin-V2-L and the full HTS-AT on the CPU, print their parameter counts and
run one AVE clip (10 frames, 10 one-second audio segments) through the late-block taps.

    python benchmarks/paper_scale_smoke.py [--visual-weights PATH] [--audio-weights PATH]

Random weights unless files are given; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from molt.backbones import build_backbones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", choices=["paper", "shared"])
    parser.add_argument("--visual-weights")
    parser.add_argument("--audio-weights")
    parser.add_argument("--blocks", default="late")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.time()
    visual, audio = build_backbones(args.preset, visual_weights=args.visual_weights,
                                    audio_weights=args.audio_weights)
    print(f"built in {time.time() - start:.1f} s")
    for role, backbone in (("visual", visual), ("audio", audio)):
        params = sum(p.numel() for p in backbone.parameters())
        print(f"{role:6s} {backbone.name:32s} blocks={backbone.num_blocks:2d} params={params / 1e6:7.1f} M "
              f"late dims={backbone.block_dims[-2:]}")
    frames = torch.rand(10, 3, *visual.input_size)
    waveform = torch.randn(10, 32000) * 0.1
    for role, backbone, x in (("visual", visual, frames), ("audio", audio, waveform)):
        start = time.time()
        taps = backbone.forward_taps(x, args.blocks)
        print(f"{role:6s} one clip ({x.shape[0]} segments) -> taps {[tuple(t.shape) for t in taps]} "
              f"in {time.time() - start:.2f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
