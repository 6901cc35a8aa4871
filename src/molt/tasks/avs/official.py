"""The peers' own AVS heads (``head: official`` of an in-block method's config), beside our common :class:`AVSHead`.

Part of molt-av (Apache-2.0). Re-implemented from the facts of the public repositories, no code copied:

* :class:`DGSCTAVSHead`: ``haoyi-duan/DG-SCT`` @211fc57, ``DG-SCT/AVS/avs_scripts/avs_s4/model/PVT_AVSModel.py``
  (``Pred_endecoder`` l.584-965, ``TemporalAttention`` l.447-582, ``FeatureFusionBlock`` / ``ResidualConvUnit``
  l.349-412), ``model/TPAVI.py`` (``TPAVIModule``), ``train.py`` / ``train.sh`` and ``loss.py`` of ``avs_s4`` and
  ``avs_ms3`` (the MS3 model differs only in ``TemporalAttention.gamma = opt.gamma``, default 0.1,
  ``avs_ms3/base_options.py`` l.77).
* :class:`AVMoEAVSHead`: ``yingchengy/AVMOE`` @edd2383, ``AVMOE/AVS/avs_scripts/avs_s4|avs_ms3/model/
  PVT_AVSModel_v2.py`` (the same decoder and temporal attention; its audio feature is the *mean* of the final
  HTS-AT tokens, l.888) and ``train_v2.py`` / ``train_v2.sh``.
* :class:`LAVisHAVSHead`: ``GenjiB/LAVISH`` @97722b0, ``AVS/avs_scripts/avs_s4/model/PVT_AVSModel.py``
  (``Pred_endecoder`` l.285-563; S4 only, one Swin reading frames and spectrograms).

What the official models do after the adapted backbones (input 192 px, Swin-V2-L, ``B*T`` frames, ``T = 5``):

1. **stage features**: the adapted visual tokens at the end of each Swin stage (before patch merging), the last
   one through the Swin's final LayerNorm (``multi_scale``, DG-SCT l.850-853): ``(B*T, 48², 192)``,
   ``(B*T, 24², 384)``, ``(B*T, 12², 768)``, ``(B*T, 6², 1536)`` (here ``batch["visual_stages"]``, the model
   applying the backbone's final norm to the last, :attr:`normed_last_stage`);
2. **projection**: DG-SCT / AVMoE: a per-token ``Linear(C_s, 256)`` (``x{s}_linear_``, l.621-624, 908-911);
   LAVisH: a per-token ``Linear(C_s, P_s)`` to the PVT-v2-b5 widths ``P = 64, 128, 320, 512`` (``x{s}_linear``);
   then bicubic resizing (``align_corners=False``) to the grids AVSBench's PVT encoder gives at 224 px,
   ``56, 28, 14, 7`` (here ``M / 4 / 2^s`` for masks of size ``M``); LAVisH then applies AVSBench's
   ``Classifier_Module`` (sum of 3x3 convolutions with dilations 3, 6, 12, 18, ``P_s -> 256``);
3. **audio guidance** ``(B, T, 128)``: ``Linear(D_a, 128)`` (``audio_linear``) of the pooled final audio tokens:
   DG-SCT weights HTS-AT's tokens with its last audio adapter's spatial attention (l.866), AVMoE and LAVisH take
   their mean (LAVisH after the Swin's final norm, width 1536) -- the in-block method's
   :meth:`~molt.methods.inblock.InBlockMethod.pool_final`;
4. **temporal attention** (DG-SCT / AVMoE only, :class:`StageTemporalGates`): per scale ``s``, the map's spatial
   mean ``(B, T, 256)`` -> ``dropout_0.2(relu(Linear(256, 256)))`` -> bidirectional LSTM (hidden 256,
   ``(B, T, 512)``) -> linear to 256 + two post-norm self-attention layers (4 heads, FFN 1024); the audio guidance
   -> bidirectional LSTM (hidden 128, ``(B, T, 256)``) -> linear + two such layers; gates
   ``g_a = sigmoid(Linear(256, 1))`` of the audio memory and ``g_v`` of the visual memory ``(B, T, 1)``;
   ``map_s <- map_s (1 + gamma g_a)``; after all scales ``audio <- audio (1 + gamma mean_s g_v)``;
   ``gamma = 0.05`` in S4 (l.450), ``0.1`` in MS3;
5. **TPAVI** at every scale (``--tpavi_stages 0 1 2 3``), ``dot`` mode, ``Linear(128, 256)`` aligning the
   guidance (:class:`~molt.tasks.avs.head.TPAVI`, ``guidance_dim=128``);
6. **FPN decoder** (``path4 .. path1``) as AVSBench's: residual conv units whose in-place ReLU makes the residual
   ``relu(x)``, x2 bilinear upsampling (``align_corners=True``) per step: ``7 -> 14 -> 28 -> 56 -> 112``;
7. **output**: ``Conv3x3(256, 128)``, x2 bilinear (``align_corners=False``), ``Conv3x3(128, 32)``, ReLU,
   ``Conv1x1(32, 1)``: ``mask_logits (B, T, 224, 224)`` (resized to ``M`` when the grids do not reach it).

Loss: BCE of ``sigmoid(mask_logits)`` against the masks (``nn.BCELoss``, mean over pixels), on frame 0 in S4
(``avs_s4/loss.py``, ``F1_IoU_BCELoss``) and on all five frames in MS3 (``F5_IoU_BCELoss``), as
:meth:`AVSHead.loss`. DG-SCT's and AVMoE's MS3 scripts add ``0.5 x`` the audio-visual matching term
(``--masked_av_flag --masked_av_stages 0 1 2 3 --lambda_1 0.5 --kl_flag``, ``avs_ms3/loss.py``
``A_MaskedV_SimmLoss``): per TPAVI scale, the post-TPAVI map (ReLU'd in place by the decoder before the loss reads
it) weighted by ``sigmoid`` of the mask logits average-pooled to its grid, averaged over the grid ``(B*T, 256)``,
against the aligned guidance ``(B*T, 256)`` of that TPAVI block: ``KL(softmax(audio) || softmax(visual))`` summed
over frames and channels (no feature normalisation: ``--norm_fea_flag`` is off), averaged over the scales.
:meth:`DGSCTAVSHead.loss_terms` returns both terms. Metrics, prediction and figures: as :class:`AVSHead`.

Parts the repositories build and count but never use are not built here (:meth:`DGSCTAVSHead.script_only_parameters`,
listed by ``molt params avs --heads``): AVSBench's PVT-v2-b5 encoder (``encoder_backbone``, never called), DG-SCT's
and AVMoE's ``conv1 .. conv4`` (``Classifier_Module``) and ``x{s}_linear`` (the forward uses ``x{s}_linear_``),
the cross-modal decoders of the temporal attention (computed, outputs discarded) and the template layer each
``Encoder`` keeps beside its clones, and ``path4.resConfUnit1`` (the coarsest step has no skip input); with
DG-SCT's, the ``temporal_gated`` linear each of its AVS adapters builds (l.115-118) and never uses (l.240). Its S4
script also trains and counts HTS-AT (:meth:`DGSCTAVSHead.script_trainable_frozen`; with two backbones LAVisH, which
has no two-backbone script, is counted the same way).

Departures: the stage grids follow the mask size (``M / 4 / 2^s``; 56 ... 7 at ``M = 224`` as in the scripts);
the decoder width is the head config's ``channels`` (256 in the paper presets), the temporal attention's width
stays 256; LAVisH has no MS3 script, so its MS3 loss is the BCE over the five frames. LAVisH's forward re-views
the stage tokens as 64², 32², 16², 8² grids (l.513-516, overriding the 48² ... 6² views of l.507-510), which only
fits a 256-px Swin input, not the 192-px one it builds (l.326, l.435); here each stage keeps its own grid.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...methods.inblock import shares_weights
from ..peer_layers import (TEMPORAL_FEEDFORWARD, TEMPORAL_HEADS, TEMPORAL_WIDTH, MemoryDecoderLayer,
                           TemporalEncoder, parameter_count)
from .head import TPAVI, AVSHead, AVSHeadConfig, _DilatedProjection, _FusionBlock

__all__ = ["StageTemporalGates", "DGSCTAVSHead", "AVMoEAVSHead", "LAVisHAVSHead", "OFFICIAL_AVS_HEADS",
           "PVT_V2_B5_PARAMETERS"]

#: parameters of AVSBench's PVT-v2-b5 encoder as the peers' AVS models build it (``pvt_v2_b5()``, ImageNet
#: classifier head included), never called by their forward passes
PVT_V2_B5_PARAMETERS = 81_443_008
#: the widths of the PVT-v2-b5 stages (what LAVisH projects the Swin stages to)
_PVT_WIDTHS = (64, 128, 320, 512)
#: the Swin-V2-L stage widths the scripts' linear layers are built for
_SWIN_L_WIDTHS = (192, 384, 768, 1536)
#: the widths of the blocks that hold adapters in the scripts (the Swin and HTS-AT blocks paired stage by stage,
#: ``zip`` stopping at the shorter stage: 2, 2, 6, 2 positions)
_SWIN_L_POSITIONS = (192,) * 2 + (384,) * 2 + (768,) * 6 + (1536,) * 2
_HTSAT_POSITIONS = (96,) * 2 + (192,) * 2 + (384,) * 6 + (768,) * 2
_GUIDANCE = 128
_DILATIONS = (3, 6, 12, 18)
#: ``TemporalAttention.gamma`` per setting (DG-SCT / AVMoE ``avs_s4`` l.450, ``avs_ms3`` ``--gamma`` default)
_GAMMA = {"s4": 0.05, "ms3": 0.1}
#: weight of the audio-visual matching term per setting (``--lambda_1 0.5`` in the MS3 train scripts)
_MATCH_WEIGHT = {"s4": 0.0, "ms3": 0.5}


class StageTemporalGates(nn.Module):
    """DG-SCT's AVS ``TemporalAttention`` (step 4 of the module docstring), for ``stages`` scales.

    ``forward(maps [(B*T, C, h_s, w_s)], audio (B, T, 128), gamma)`` -> the gated maps (same shapes) and the gated
    audio ``(B, T, 128)``.
    """

    def __init__(self, channels: int, stages: int = 4) -> None:
        super().__init__()
        self.visual_in = nn.ModuleList(nn.Linear(channels, TEMPORAL_WIDTH) for _ in range(stages))
        self.visual_rnn = nn.ModuleList(nn.LSTM(TEMPORAL_WIDTH, TEMPORAL_WIDTH, batch_first=True, bidirectional=True)
                                        for _ in range(stages))
        self.audio_rnn = nn.ModuleList(nn.LSTM(_GUIDANCE, _GUIDANCE, batch_first=True, bidirectional=True)
                                       for _ in range(stages))
        self.visual_encoder = nn.ModuleList(TemporalEncoder(2 * TEMPORAL_WIDTH) for _ in range(stages))
        self.audio_encoder = nn.ModuleList(TemporalEncoder(2 * _GUIDANCE) for _ in range(stages))
        self.visual_gate = nn.ModuleList(nn.Linear(TEMPORAL_WIDTH, 1) for _ in range(stages))
        self.audio_gate = nn.ModuleList(nn.Linear(TEMPORAL_WIDTH, 1) for _ in range(stages))
        self.dropout = nn.Dropout(0.2)

    def forward(self, maps: Sequence[torch.Tensor], audio: torch.Tensor,
                gamma: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        clips, segments = audio.shape[:2]
        gated, visual_gates = [], []
        for stage, feature_map in enumerate(maps):
            pooled = feature_map.mean(dim=(2, 3)).reshape(clips, segments, -1)               # (B, T, C)
            visual = self.dropout(F.relu(self.visual_in[stage](pooled)))
            visual, _ = self.visual_rnn[stage](visual)                                         # (B, T, 512)
            audio_sequence, _ = self.audio_rnn[stage](audio)                                   # (B, T, 256)
            visual_memory = self.visual_encoder[stage](visual)
            audio_memory = self.audio_encoder[stage](audio_sequence)
            audio_gate = torch.sigmoid(self.audio_gate[stage](audio_memory))                  # (B, T, 1)
            visual_gates.append(torch.sigmoid(self.visual_gate[stage](visual_memory)))
            gated.append(feature_map * (1 + gamma * audio_gate.reshape(clips * segments, 1, 1, 1)))
        return gated, audio * (1 + gamma * torch.stack(visual_gates).mean(dim=0))


class _OfficialAVSHead(AVSHead):
    """Shared parts of the official AVS heads: stage projection, TPAVI, FPN decoder, output convolutions and the
    MS3 matching term; the loss, metrics, prediction and figures are :class:`AVSHead`'s."""

    #: the modalities whose final tokens the in-block method pools for this head (the audio guidance)
    pooled_modalities = ("audio",)
    #: the last stage reaches the head through the visual backbone's final norm (``multi_scale[3]``)
    normed_last_stage = True
    #: with the DG-SCT / AVMoE temporal attention
    temporal_attention = True

    def __init__(self, config: AVSHeadConfig | None = None, *, visual_dim: int, audio_dim: int, mask_size: int,
                 stage_dims: Sequence[int], setting: str = "s4") -> None:
        nn.Module.__init__(self)      # AVSHead's own modules are not built; its loss and metrics are reused
        config = config or AVSHeadConfig()
        stage_dims = [int(c) for c in stage_dims]
        if len(stage_dims) != 4 or min(stage_dims) <= 0:
            raise ValueError(f"the {type(self).__name__} reads the four stages of a hierarchical visual backbone "
                             f"(Swin), got stage widths {stage_dims}")
        if mask_size <= 0 or audio_dim <= 0:
            raise ValueError(f"mask_size and audio_dim must be positive, got {mask_size}, {audio_dim}")
        if setting not in _GAMMA:
            raise ValueError(f"setting must be one of {', '.join(_GAMMA)}, got {setting!r}")
        if max(config.tpavi_stages, default=0) >= 4:
            raise ValueError(f"tpavi_stages must be stage indices in [0, 3], got {config.tpavi_stages}")
        self._keep_settings(config, dim=visual_dim, mask_size=mask_size, stage_dims=stage_dims, setting=setting,
                            modalities="both")
        self.audio_dim = audio_dim
        channels = self.channels
        self.gamma = _GAMMA[setting]
        self.match_weight = _MATCH_WEIGHT[setting] if self.temporal_attention else 0.0
        self.audio_in = nn.Linear(audio_dim, _GUIDANCE)
        self._build_projection(stage_dims, channels)
        self.temporal = StageTemporalGates(channels) if self.temporal_attention else None
        self.tpavi = nn.ModuleDict({str(s): TPAVI(channels, _GUIDANCE) for s in self.tpavi_stages})
        self.fusion = nn.ModuleList(_FusionBlock(channels, skip=index < 3, relu_residual=True) for index in range(4))
        hidden, last = max(channels // 2, 1), max(channels // 8, 1)
        self.output_conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(hidden, last, 3, padding=1), nn.ReLU(), nn.Conv2d(last, 1, 1))
        self.reset_metrics()

    def _build_projection(self, stage_dims: Sequence[int], channels: int) -> None:
        self.project = nn.ModuleList(nn.Linear(c, channels) for c in stage_dims)

    def _project(self, index: int, tokens: torch.Tensor, grid: int) -> torch.Tensor:
        """``(B*T, N_s, C_s)`` -> ``(B*T, channels, grid, grid)``: per-token linear, then bicubic resizing."""
        side = int(round(tokens.shape[1] ** 0.5))
        x = self.project[index](tokens)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        return F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)

    def _grids(self) -> list[int]:
        return [max(1, self.mask_size // 2 ** (stage + 2)) for stage in range(4)]

    def forward(self, visual: torch.Tensor | None, audio: torch.Tensor | None,
                batch: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Pooled audio tokens ``(B*T, K, D_a)`` (``K = 1``) and ``batch["visual_stages"]`` -> ``mask_logits
        (B, T, M, M)``, with ``masked_visual`` and ``stage_audio`` ``(B, T, S, channels)`` for the matching term
        (``S`` TPAVI scales). ``visual`` is not read."""
        if audio is None or audio.ndim != 3 or audio.shape[-1] != self.audio_dim:
            shape = None if audio is None else tuple(audio.shape)
            raise ValueError(f"the {type(self).__name__} needs pooled audio tokens (B*T, K, {self.audio_dim}), "
                             f"got {shape}")
        rows = audio.shape[0]
        clips, segments = self._clip_shape(rows, batch)
        guidance = self.audio_in(audio.mean(dim=1)).reshape(clips, segments, _GUIDANCE)          # (B, T, 128)
        stages = self._check_stages(None if batch is None else batch.get("visual_stages"), rows)
        maps = [self._project(i, stage.to(guidance.dtype), grid)
                for i, (stage, grid) in enumerate(zip(stages, self._grids()))]
        if self.temporal is not None:
            maps, guidance = self.temporal(maps, guidance, self.gamma)
        aligned = []
        for stage in self.tpavi_stages:
            feature_map = maps[stage]
            clip_map = feature_map.reshape(clips, segments, *feature_map.shape[1:]).transpose(1, 2)
            clip_map = self.tpavi[str(stage)](clip_map, guidance)
            maps[stage] = clip_map.transpose(1, 2).reshape(feature_map.shape)
            aligned.append(self.tpavi[str(stage)].align(guidance))                               # (B, T, C)
        x = None
        for index in reversed(range(4)):
            target = maps[index - 1].shape[-2:] if index > 0 else tuple(2 * s for s in maps[0].shape[-2:])
            x = self.fusion[index](maps[index] if x is None else x, None if x is None else maps[index], target)
        x = F.interpolate(self.output_conv1(x), scale_factor=2, mode="bilinear", align_corners=False)
        logits = self.output_conv2(x)                                                             # (B*T, 1, H, W)
        masked = []
        for stage in self.tpavi_stages:     # the decoder's in-place ReLU has overwritten the maps the loss reads
            feature_map = F.relu(maps[stage])
            weights = torch.sigmoid(F.adaptive_avg_pool2d(logits, feature_map.shape[-2:]))
            masked.append((feature_map * weights).mean(dim=(2, 3)))                               # (B*T, C)
        if logits.shape[-1] != self.mask_size or logits.shape[-2] != self.mask_size:
            logits = F.interpolate(logits, size=(self.mask_size, self.mask_size), mode="bilinear",
                                   align_corners=False)
        return {"mask_logits": logits.reshape(clips, segments, self.mask_size, self.mask_size),
                "masked_visual": torch.stack(masked, dim=1).reshape(clips, segments, len(masked), -1),
                "stage_audio": torch.stack(aligned, dim=2)}

    def loss_terms(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Unweighted ``mask`` (BCE, :meth:`AVSHead.loss`) and, with a matching weight (MS3), ``match`` terms."""
        terms = {"mask": AVSHead.loss(self, outputs, batch)}
        if self.match_weight:
            _, _, valid = self._targets(outputs, batch)
            keep = valid.reshape(-1) > 0
            visual = outputs["masked_visual"].flatten(0, 1)[keep]                   # (frames, S, C)
            audio = outputs["stage_audio"].flatten(0, 1)[keep]
            per_stage = [F.kl_div(F.log_softmax(visual[:, s], dim=-1), F.softmax(audio[:, s], dim=-1),
                                  reduction="sum") for s in range(visual.shape[1])]
            terms["match"] = torch.stack(per_stage).mean()
        return terms

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """``mask + match_weight * match`` (:meth:`loss_terms`; the matching weight is 0.5 in MS3, 0 in S4)."""
        terms = self.loss_terms(outputs, batch)
        return terms["mask"] + self.match_weight * terms["match"] if "match" in terms else terms["mask"]

    def script_trainable_frozen(self, visual: nn.Module, audio: nn.Module | None = None) -> dict[str, int]:
        """Frozen backbone parameters the script counts as trainable: in S4 every parameter not named ``swin`` is
        trained and counted (HTS-AT included; DG-SCT ``avs_s4/train.py`` l.145-165, AVMoE ``avs_s4/train_v2.py``
        l.146-166); the MS3 scripts freeze HTS-AT (``elif 'htsat' in name``)."""
        if self.setting != "s4" or audio is None or shares_weights(visual, audio):
            return {}
        return {"HTS-AT, trained by the S4 script": parameter_count(audio)}

    def extra_repr(self) -> str:
        return (f"setting={self.setting!r}, mask_size={self.mask_size}, stage_dims={self.stage_dims}, "
                f"channels={self.channels}, tpavi_stages={self.tpavi_stages}, gamma={self.gamma}")


def _uncalled_decoder_parts() -> dict[str, int]:
    """``path4.resConfUnit1`` and the PVT-v2-b5 encoder: built, never called (all three repositories)."""
    with torch.device("meta"):
        unit = _FusionBlock(256).skip_unit
        return {"PVT-v2-b5 encoder (encoder_backbone, never called)": PVT_V2_B5_PARAMETERS,
                "path4.resConfUnit1 (never called)": parameter_count(unit)}


class DGSCTAVSHead(_OfficialAVSHead):
    """DG-SCT's AVS decoder (per-token linear projections, temporal attention, TPAVI, FPN) and loss; see the module
    docstring.

    Args:
        config: the AVS head's options (``channels``, ``tpavi_stages``, ``num_segments`` and the metric options
            are read; ``projection_dilations`` and ``visual_injection`` are not).
        visual_dim: width of the final visual tokens (not read: the head reads the stages).
        audio_dim: width of the pooled final audio tokens (768 for HTS-AT).
        mask_size: size ``M`` of the ground-truth masks.
        stage_dims: channels of the four visual stages, finest first (Swin-V2-L: 192, 384, 768, 1536).
        setting: ``"s4"`` or ``"ms3"`` (the temporal gate's ``gamma`` and the matching term).

    Outputs of :meth:`forward`: ``mask_logits (B, T, M, M)``, ``masked_visual`` and ``stage_audio``
    ``(B, T, S, channels)``.
    """

    #: DG-SCT's AVS adapters each build a ``temporal_gated`` linear (``Linear(D, 1)`` + sigmoid, ``avs_s4/model/
    #: PVT_AVSModel.py`` l.115-118) whose output is never used (l.240), counted with the head's unused parts
    adapter_temporal_gates = True

    @classmethod
    def script_only_parameters(cls) -> dict[str, int]:
        """What the repository's script counts as trainable but never calls, by part (module docstring), at the
        script's widths (Swin-V2-L stages, decoder width 256)."""
        parts = _uncalled_decoder_parts()
        with torch.device("meta"):
            parts["conv1 .. conv4 (Classifier_Module, never called)"] = sum(
                parameter_count(_DilatedProjection(width, 256, _DILATIONS)) for width in _PVT_WIDTHS)
            parts["x1_linear .. x4_linear (never called)"] = sum(
                parameter_count(nn.Linear(swin, pvt)) for swin, pvt in zip(_SWIN_L_WIDTHS, _PVT_WIDTHS))
            decoder_layer = parameter_count(MemoryDecoderLayer()) + \
                parameter_count(nn.MultiheadAttention(TEMPORAL_WIDTH, TEMPORAL_HEADS))
            decoders = sum(parameter_count(nn.Linear(width, TEMPORAL_WIDTH)) + 2 * decoder_layer
                           for width in (2 * TEMPORAL_WIDTH, 2 * _GUIDANCE))
            parts["temporal attention: cross-modal decoders (outputs discarded)"] = 4 * decoders
            template = parameter_count(nn.TransformerEncoderLayer(TEMPORAL_WIDTH, TEMPORAL_HEADS,
                                                         dim_feedforward=TEMPORAL_FEEDFORWARD))
            parts["temporal attention: template encoder layers kept beside their clones"] = 8 * template
        if cls.adapter_temporal_gates:
            widths = [width for pair in zip(_SWIN_L_POSITIONS, _HTSAT_POSITIONS) for width in pair]
            parts["adapters' temporal_gated (output unused)"] = 2 * sum(width + 1 for width in widths)
        return parts


class AVMoEAVSHead(DGSCTAVSHead):
    """AVMoE's AVS decoder: DG-SCT's (``PVT_AVSModel_v2.py``), on the mean of the final audio tokens (the method's
    pooling); the same loss (its load-balancing term is the method's auxiliary loss)."""

    adapter_temporal_gates = False


class LAVisHAVSHead(_OfficialAVSHead):
    """LAVisH's AVS decoder (``GenjiB/LAVISH`` ``AVS/avs_scripts/avs_s4/model/PVT_AVSModel.py``): per-token linears
    to the PVT-v2-b5 widths, AVSBench's dilated projections, TPAVI and the FPN decoder; no temporal attention; BCE
    loss. Arguments and outputs as :class:`DGSCTAVSHead`."""

    temporal_attention = False

    def _build_projection(self, stage_dims: Sequence[int], channels: int) -> None:
        self.project = nn.ModuleList(nn.Linear(c, width) for c, width in zip(stage_dims, _PVT_WIDTHS))
        self.dilated = nn.ModuleList(_DilatedProjection(width, channels, _DILATIONS) for width in _PVT_WIDTHS)

    def _project(self, index: int, tokens: torch.Tensor, grid: int) -> torch.Tensor:
        return self.dilated[index](super()._project(index, tokens, grid))

    @classmethod
    def script_only_parameters(cls) -> dict[str, int]:
        """The PVT-v2-b5 encoder and ``path4.resConfUnit1`` (built, never called)."""
        return _uncalled_decoder_parts()


#: method name -> its own AVS head, per setting (registered with :func:`molt.tasks.spec.register_official_heads`):
#: ``"shared"`` when one backbone reads both modalities, ``"separate"`` for two backbones. LAVisH's repository
#: ships only the shared setting (S4); with two backbones LAVisH gets its own decoder on the HTS-AT guidance.
OFFICIAL_AVS_HEADS = {"lavish": {"shared": LAVisHAVSHead, "separate": LAVisHAVSHead},
                      "dgsct": {"shared": DGSCTAVSHead, "separate": DGSCTAVSHead},
                      "avmoe": {"shared": AVMoEAVSHead, "separate": AVMoEAVSHead}}
