"""Analysis tools of the MoLT paper: where to adapt (:mod:`.layers`, Fig. 4) and what the layer-wise tokens do
(:mod:`.tokens`, Fig. 5).

Part of molt-av (Apache-2.0). ``molt analyze layers`` runs :func:`analyze_layers`, ``molt analyze tokens``
:func:`analyze_tokens`.
"""
from .layers import (LayerAnalysis, LayerSimilarity, LayerSplit, analyze_layers, block_modules, layer_similarity,
                     plot_layer_similarity, sample_clips, suggest_split, write_layer_csv)
from .tokens import analyze_tokens, plot_token_diagnostics, token_diagnostics

__all__ = ["LayerAnalysis", "LayerSimilarity", "LayerSplit", "analyze_layers", "analyze_tokens", "block_modules",
           "layer_similarity", "plot_layer_similarity", "plot_token_diagnostics", "sample_clips", "suggest_split",
           "token_diagnostics", "write_layer_csv"]
