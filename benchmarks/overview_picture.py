"""The overview picture of the README and the documentation's home page: what molt-av trains and what it keeps frozen.

    python benchmarks/overview_picture.py [--out docs/overview.png]

A drawing, not a measurement: two frozen encoders whose late blocks are read (the taps), MoLT's trainable tokens,
adapters, router and fusion on the taps, and a task head per task.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

FROZEN = "#d9dee8"
TRAINED = "#f6c177"
TEXT = "#1f2430"


def _box(ax, x, y, w, h, text, color, size=10, weight="normal"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=color,
                                edgecolor=TEXT, linewidth=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, color=TEXT, weight=weight)


def _arrow(ax, start, end, style="-|>", dashed=False):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=TEXT, linewidth=1.2,
                                 linestyle="--" if dashed else "-"))


def _encoder(ax, y, title, blocks=8):
    """A frozen encoder drawn as a row of blocks; the last two (the late blocks MoLT reads) are outlined."""
    ax.text(1.6, y + 0.8, title, fontsize=9, color=TEXT, ha="left", va="bottom")
    for i in range(blocks):
        x = 1.6 + i * 0.42
        late = i >= blocks - 2
        ax.add_patch(FancyBboxPatch((x, y), 0.34, 0.7, boxstyle="round,pad=0.01,rounding_size=0.04",
                                    facecolor=FROZEN, edgecolor=TEXT, linewidth=2.2 if late else 0.8))
    return 1.6 + (blocks - 1) * 0.42 + 0.34


def draw(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.set_xlim(0, 13.4)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    _box(ax, 0.1, 2.5, 1.2, 0.7, "frames", "white", 9.5)
    _box(ax, 0.1, 0.6, 1.2, 0.7, "audio", "white", 9.5)
    end = _encoder(ax, 2.5, "frozen visual encoder\n(Swin-V2-L or any timm model)")
    _encoder(ax, 0.6, "frozen audio encoder\n(HTS-AT or any Hugging Face encoder)")
    _arrow(ax, (1.3, 2.85), (1.6, 2.85))
    _arrow(ax, (1.3, 0.95), (1.6, 0.95))
    _box(ax, 6.5, 1.05, 3.3, 1.75, "MoLT (trained)\nlatent tokens per layer,\nuni- and cross-modal adapters,\n"
         "router, fusion across layers", TRAINED, 8.5)
    _arrow(ax, (end - 0.4, 2.5), (6.5, 2.4))
    _arrow(ax, (end - 0.4, 1.3), (6.5, 1.45))
    ax.text(5.65, 1.92, "taps of the\nlate blocks", fontsize=8.5, ha="center", va="center", color=TEXT)
    _box(ax, 10.3, 1.05, 3.0, 1.75, "task head (trained)\nAVE  events per second\nAVS  masks\nAVQA  answers\n"
         "AVVP  heard / seen events", TRAINED, 8.5)
    _arrow(ax, (9.8, 1.92), (10.3, 1.92))
    ax.text(6.5, 3.2, "no gradient enters the encoders:\ntheir taps can be computed once and cached", fontsize=9,
            color=TEXT, ha="left", va="center", style="italic")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "overview.png")
    print(draw(parser.parse_args().out))


if __name__ == "__main__":
    main()
