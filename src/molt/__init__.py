"""molt-av: Mixture of Layer-Wise Tokens (MoLT) for memory-efficient audio-visual learning.

The package keeps pre-trained audio and visual transformers frozen and trains small side modules that read
the token sequences ("taps") of selected transformer blocks. See ``molt.backbones`` for the frozen
backbones, ``molt.methods`` for MoLT and its peers, and ``molt.tasks`` for task heads and metrics.
"""

__version__ = "0.1.0"
