"""Efficiency of the five methods on a modern encoder pair beside the paper's, in one run on one machine.

    python benchmarks/own_encoders.py --out benchmarks/results/efficiency_ave_own_encoders [--steps 3 --warmup 1]

The modern pair is DINOv2-L/14 (timm ``vit_large_patch14_dinov2.lvd142m`` at 224 px, 256 patch tokens) and AST
(the ``ASTConfig()`` defaults of ``MIT/ast-finetuned-audioset-10-10-0.4593``: 12 layers of 768, 1024 frames), both
at their real size with random weights (``random``: nothing is downloaded; weights do not change time or memory).
The paper pair is Swin-V2-L + HTS-AT (``--backbone paper``). Each method runs in its own process
(:func:`molt.app.bench.run_efficiency`); the tables land in ``OUT/modern`` and ``OUT/paper``, the AST configuration in
``OUT/ast-defaults``, and ``OUT/README.md`` puts them side by side.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from molt.app.bench import BENCH_METHODS, run_efficiency


def save_ast_defaults(folder: Path) -> Path:
    """A folder with the AST defaults' config and feature extractor (no weights): what ``hf:FOLDER`` with
    ``random`` weights builds at real size."""
    from transformers import ASTConfig, ASTFeatureExtractor

    ASTConfig().save_pretrained(folder)
    ASTFeatureExtractor().save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--task", default="ave")
    parser.add_argument("--methods", default=",".join(BENCH_METHODS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device")
    parser.add_argument("--skip-paper", action="store_true", help="only the modern pair")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    out = Path(args.out)
    options = dict(steps=args.steps, warmup=args.warmup, device=args.device)
    sections = []
    ast = save_ast_defaults(out / "ast-defaults")   # kept beside the tables: the AST configuration measured
    modern = {"visual": "timm:vit_large_patch14_dinov2.lvd142m", "audio": f"hf:{ast}",
              "visual_options": {"img_size": 224}}
    table = run_efficiency(args.task, modern, methods, out_dir=out / "modern", visual_weights="random",
                           audio_weights="random", **options)
    sections.append(("DINOv2-L/14 (224 px) + AST, random weights", table.markdown()))
    if not args.skip_paper:
        table = run_efficiency(args.task, "paper", methods, out_dir=out / "paper", **options)
        sections.append(("Swin-V2-L + HTS-AT (the paper's pair), random weights", table.markdown()))
    text = "\n\n".join(f"## {title}\n\n{body}" for title, body in sections)
    (out / "README.md").write_text(f"# Efficiency on {args.task.upper()}: a modern encoder pair and the paper's\n\n"
                                   f"{text}\n")
    print(text)


if __name__ == "__main__":
    main()
