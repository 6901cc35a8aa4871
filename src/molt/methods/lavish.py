"""LAVisH: latent-token adapters beside both sub-layers of the frozen blocks (the memory-heavy baseline).

Vision Transformers are Parameter-Efficient Audio-Visual Learners, Lin et al., CVPR 2023 (LAVisH). Re-implemented
from the facts of its public repository ``GenjiB/LAVISH`` (``AVE/nets/net_trans.py``, ``AVE/run_v2.sh``) and of
DG-SCT's two-backbone LAVisH baseline (``haoyi-duan/DG-SCT``, ``AVE/nets/net_trans.py``), as gathered in the
project's PEERS.md; no code copied. The placement, the walk and the pieces are in :mod:`molt.methods.inblock`.

What it builds, as the repositories do:

* **Two adapters per position and modality**: p1 beside the attention sub-layer, reading that sub-layer's input,
  p2 beside the MLP, reading its input; each added to the residual stream.
* **Adapter** (:class:`~molt.methods.inblock.LatentTokenAdapter`): ``num_latents`` latent tokens at the block's
  full width absorb the other modality's tokens by a weight-free softmax attention, the block's tokens read them
  back (added with a gate at zero); LayerNorm, grouped 1x1-convolution bottleneck (``groups``, no bias) with
  BatchNorm (``batch_norm``) and ReLU, LayerNorm; times an output gate at zero (the audio adapters only with
  ``audio_gate``).
* **Shared setting** (``--backbone shared``, as ``GenjiB/LAVISH``): one Swin reads frames and spectrogram, an
  adapter pair at every one of the 24 blocks for each modality, no bridges (both streams have the same shapes).
* **Separate backbones** (``--backbone paper``, as DG-SCT builds its LAVisH baseline): adapters at the 12 paired
  blocks (stage 3: HTS-AT block ``j`` with Swin block ``3j + 2``), each with a bridge from the other modality
  (1x1 convolution over tokens + linear over width); the audio p1 update is added after the whole HTS-AT block.
* **Per task** (:data:`LAVISH_TASK_SETTINGS`, applied by ``--method lavish``, each entry citing its script): AVE
  reduction 8 and 2 latent tokens, AVS reduction 2 and 32, AVQA reduction 16, 4 groups and 32; 2 groups otherwise.
  The AVQA and AVS scripts build the adapters without BatchNorm and the audio adapters without the output gate
  (``batch_norm=False``, ``audio_gate=False``), the AVE script with both.

Where it still departs:

* The output: a LayerNorm + uni-modal distillation read-out of the final tokens to ``(B', K, D)`` instead of the
  repositories' mean pooling and classifier, so every method feeds the same task head (the head is ours, not
  LAVisH's or DG-SCT's).
* DG-SCT's baseline uses 32 latent tokens for AVE; the AVE setting here follows ``GenjiB/LAVISH`` (2) in both
  backbone settings (a difference of 0.9 M parameters at paper scale).
* The shared setting's audio image is the HTS-AT log-mel front end (:mod:`molt.backbones.shared`), not LAVisH's
  Kaldi fbank; the repositories' per-task backbone quirks (HTS-AT left in training mode) are not reproduced.

The adapters change what the blocks compute, so LAVisH cannot train from a feature cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .inblock import BridgedAdapter, InBlockConfig, InBlockMethod, InBlockModel, build_in_block
from .registry import MethodSpec, register_method

__all__ = ["LavishConfig", "LavishAdapter", "Lavish", "LAVISH_TASK_SETTINGS"]

#: ``method_config`` defaults per task (``task`` or ``task:setting``) from the run scripts of ``GenjiB/LAVISH``
#: (@97722b0) and the argparse defaults they leave in place
LAVISH_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    # AVE/run_v2.sh l.1, 3, 5: --Adapter_downsample=8, --is_bn=1, --is_gate=1, --num_conv_group=2, --num_tokens=2
    "ave": {"num_latents": 2, "reduction": 8, "groups": 2, "batch_norm": True, "audio_gate": True},
    # AVS/avs_scripts/avs_s4/train.sh l.16 passes none of them: avs_s4/base_options.py l.54 (Adapter_downsample 2),
    # l.55 (num_conv_group 2), l.58 (is_bn 0), l.59 (is_gate 0), l.68 (num_tokens 32)
    "avs": {"num_latents": 32, "reduction": 2, "groups": 2, "batch_norm": False, "audio_gate": False},
    # AVQA/train.sh l.1 passes none of them: AVQA/net_grd_avst/base_options.py l.67 (Adapter_downsample 16),
    # l.70 (num_conv_group 4), l.77 (is_bn 0), l.78 (is_gate 0), l.87 (num_tokens 32)
    "avqa": {"num_latents": 32, "reduction": 16, "groups": 4, "batch_norm": False, "audio_gate": False},
}


@dataclass
class LavishConfig(InBlockConfig):
    """Hyper-parameters of LAVisH: those of :class:`~molt.methods.inblock.InBlockConfig`, whose defaults are
    LAVisH's AVE setting (2 latent tokens, reduction 8, 2 groups)."""


class LavishAdapter(BridgedAdapter):
    """LAVisH's adapter for one sub-layer: bridge (where the shapes differ) + latent-token exchange + gated
    bottleneck (:class:`~molt.methods.inblock.BridgedAdapter`)."""


class Lavish(InBlockMethod):
    """LAVisH's trainable parts: a ``(p1, p2)`` :class:`LavishAdapter` pair per position and modality, and the
    read-out; ``extras`` holds ``{"gates": {m: (2 * positions,)}}``."""

    display_name = "LAVisH"
    adapter_class = LavishAdapter


register_method(MethodSpec("lavish", LavishConfig, build_in_block(Lavish), InBlockModel, reads_taps=False,
                           heads_option="out_heads", task_settings=LAVISH_TASK_SETTINGS,
                           description="LAVisH: latent-token adapters beside both sub-layers of the frozen blocks "
                                       "(not cacheable)"))
