"""Any timm image model as a frozen backbone with per-block taps (``timm:NAME`` visual backbones).

Part of molt-av (Apache-2.0). :class:`TimmBackbone` builds ``timm.create_model(NAME, num_classes=0)`` and exposes
the output of every transformer block as patch tokens ``(B, N, D)``:

* **Blocks** are found generically through the model's ``feature_info``: each entry names a module; a module with a
  ``blocks`` child (a stage) contributes its blocks, any other module is one block itself. ViT, DeiT, DINOv2 (with
  or without registers), CLIP, SigLIP and EVA-02 give one tap per block; Swin / Swin-V2 (and other staged models)
  one per block within the stages. A model without ``feature_info`` is refused.
* **Taps** are read with forward hooks on those modules while the model's ``forward_features`` runs; the run stops
  after the last selected block. Outputs are turned into ``(B, h*w, D)`` row-major patch tokens whatever their
  layout: prefix tokens (class, register tokens) of a ``(B, P + h*w, D)`` sequence are dropped, NHWC and NCHW
  grids are flattened.
* **Sub-layers** (what in-block methods need: ``embed`` / ``run_block`` / ``to_sequence`` and the split of a block
  into its attention and MLP residuals) exist for timm ``VisionTransformer`` models built of standard pre-norm
  ``Block``s (ViT, DeiT, DINOv2, CLIP and SigLIP towers; native layout: the token sequence *with* its prefix tokens)
  and for timm ``SwinTransformerV2`` (as :class:`~molt.backbones.swin_v2.SwinV2Backbone`: a stage's patch merging
  opens its first block, NHWC tokens, post-norm residuals). Other models (EVA-02, whose blocks take a rotary
  embedding argument, ConvNeXt, ...) set ``has_sublayers = False``: tap-reading methods work, in-block ones are
  refused in one line.

Weights: random by default; ``weights=FILE`` reads a checkpoint through timm's own loader and checkpoint filter
(``pretrained_cfg_overlay=dict(file=FILE)``, so original-format checkpoints convert as timm allows), and refuses a
file that leaves model weights unset or does not fit; ``weights=FOLDER`` reads a Hugging Face snapshot /
``save_pretrained`` folder's ``model.safetensors`` (else ``pytorch_model.bin``); ``pretrained=True`` uses timm's
hub loading, through the local Hugging Face cache (``HF_HUB_OFFLINE=1`` works once the weights are cached). Built
under ``torch.device("meta")`` the backbone reads no weights and runs nothing, with the same shapes as a real one.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import threading
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import TapBackbone, default_device_is_meta, error_gist, hooked_taps
from .swin_v2 import file_sha256
from .taps import BlockSelection

__all__ = ["TimmBackbone", "WEIGHT_FILE_NAMES"]

_logger = logging.getLogger(__name__)

#: files looked for, in this order, in a weights folder (Hugging Face snapshot or ``save_pretrained`` output)
WEIGHT_FILE_NAMES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")

_EXAMPLES = ("vit_base_patch16_224, vit_large_patch14_dinov2.lvd142m, vit_base_patch16_clip_224.openai, "
             "vit_base_patch16_siglip_224, eva02_base_patch14_224.mim_in22k or swinv2_base_window12_192.ms_in22k")
_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
_LOADER_LOCK = threading.Lock()


class _LoadFailure(Exception):
    """A checkpoint did not load into the model (wraps the cause)."""


@contextlib.contextmanager
def _recorded_loading(report: dict[str, Any]) -> Iterator[None]:
    """While ``timm.create_model`` runs, record what its checkpoint loading left unset.

    timm loads a checkpoint non-strictly when the classifier is dropped (``num_classes=0``), and only logs the
    weights the file did not provide. Its loader is wrapped for the duration of the call (under a lock) so that the
    model's ``load_state_dict`` result lands in ``report`` (``missing``, ``unexpected``) and a failure inside the
    loading itself is told apart from one while building the model (:class:`_LoadFailure`)."""
    from timm.models import _builder

    original = getattr(_builder, "load_pretrained", None)
    if original is None:  # another timm layout: load as timm does, without the check
        yield
        return

    def record(module: nn.Module, keys: Any) -> None:
        report["missing"] = list(keys.missing_keys)
        report["unexpected"] = list(keys.unexpected_keys)

    def load_pretrained(model: nn.Module, *args: Any, **kwargs: Any) -> None:
        report["called"] = True
        handle = model.register_load_state_dict_post_hook(record)
        try:
            original(model, *args, **kwargs)
        except Exception as error:
            raise _LoadFailure(error) from error
        finally:
            handle.remove()

    with _LOADER_LOCK:
        _builder.load_pretrained = load_pretrained
        try:
            yield
        finally:
            _builder.load_pretrained = original


def _resolve_weights(weights: str | os.PathLike) -> str:
    """A weights file, or the first of :data:`WEIGHT_FILE_NAMES` inside a weights folder."""
    path = os.fspath(weights)
    if os.path.isdir(path):
        for name in WEIGHT_FILE_NAMES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise FileNotFoundError(f"visual weights folder {path} holds none of {', '.join(WEIGHT_FILE_NAMES)}; pass "
                                f"the checkpoint file itself or a Hugging Face snapshot folder")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"visual weights not found: {path} (pass a checkpoint file or a folder holding "
                                f"{' or '.join(WEIGHT_FILE_NAMES)})")
    return path


def _check_model_name(model_name: str) -> None:
    """One ValueError line for a name timm does not know, with up to five close names."""
    import timm

    if model_name.startswith(_HUB_PREFIXES) or timm.is_model(model_name):
        return
    arch = model_name.split(".", 1)[0]
    names = timm.list_models()
    close = difflib.get_close_matches(arch, names, n=5, cutoff=0.6)
    parts = arch.split("_")
    while not close and parts:  # a shorter and shorter prefix: "vit_large_patch14_x" -> "vit_large_patch14" ...
        close = timm.list_models(f"*{'_'.join(parts)}*")[:5]
        parts = parts[:-1]
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown timm model {model_name!r}{hint} (timm.list_models('*part*') lists names)")


def _pretrained_tags(arch: str) -> list[str]:
    import timm

    return timm.list_pretrained(f"{arch}.*")[:8]


class TimmBackbone(TapBackbone):
    """A frozen timm image model exposing every block's output as patch tokens ``(B, N, D)``.

    Args:
        model_name: a timm model name, with or without a pretrained tag (``"vit_large_patch14_dinov2.lvd142m"``);
            a leading ``timm:`` is accepted and dropped.
        pretrained: load timm's hub weights for ``model_name`` (through the local Hugging Face cache; online on
            first use). Ignored when ``weights`` is given.
        weights: a local checkpoint file (timm or original format, read through timm's checkpoint filter) or a
            folder holding ``model.safetensors`` or ``pytorch_model.bin``.
        name: what the backbone reports as :attr:`name` (default ``"timm:" + model_name``).
        **overrides: timm constructor overrides (``img_size``, ``depth``, ``embed_dim``, ...).

    Attributes:
        name, timm_name: the reported name and the timm model name.
        model: the timm model (``num_classes=0``).
        input_size: ``(H, W)`` the model runs at (:meth:`preprocess` resizes to it).
        block_dims, block_tokens, block_grids: per block, its width ``D``, its number of patch tokens ``N`` and
            their grid ``(h, w)`` (``N = h * w``, row-major) at :attr:`input_size`.
        has_sublayers: whether in-block methods can run inside this backbone (see the module docstring).
        weights_path: the weights file read (or to be read), ``None`` without one.
        pretrained: whether pretrained weights (hub or file) were asked for.

    Input of :meth:`embed` / :meth:`forward_taps`: the output of :meth:`preprocess`, i.e. float images
    ``(B, 3, *input_size)`` already normalised with the model's mean and std.
    """

    def __init__(self, model_name: str, *, pretrained: bool = False, weights: str | os.PathLike | None = None,
                 name: str | None = None, **overrides: Any) -> None:
        super().__init__()
        if model_name.startswith("timm:"):
            model_name = model_name[len("timm:"):]
        _check_model_name(model_name)
        self.timm_name = model_name
        self.name = name or f"timm:{model_name}"
        self.weights_path = _resolve_weights(weights) if weights is not None else None
        self.pretrained = bool(pretrained or self.weights_path)
        self._hub_weights = pretrained and self.weights_path is None
        on_meta = default_device_is_meta()
        self.model = self._create(overrides, load=not on_meta)
        if not self.pretrained:
            self._init_random_post_norms()

        cfg = self.model.pretrained_cfg
        img_size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        size = img_size if img_size is not None else cfg.get("input_size", (3, 224, 224))[-2:]
        size = (size, size) if isinstance(size, int) else size
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.interpolation = _INTERPOLATIONS.get(cfg.get("interpolation") or "bicubic", "bicubic")
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)),
                                                  dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)),
                                                 dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self._output_fmt = str(getattr(self.model, "output_fmt", "NCHW"))
        self._find_blocks()
        self._kind = self._sublayer_kind()
        self.has_sublayers = self._kind is not None
        self.freeze()

    # ------------------------------------------------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------------------------------------------------

    def _create(self, overrides: dict[str, Any], *, load: bool) -> nn.Module:
        """``timm.create_model`` with the weights asked for (none when ``load`` is false: meta builds)."""
        import timm

        kwargs = dict(overrides)
        report: dict[str, Any] = {}
        file = self.weights_path
        if file is not None and load:
            overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
            # a local file wins over the registry's sources; .npz (big_vision) files go through the model's own
            # loader, everything else through timm's state-dict loading and checkpoint filter
            overlay.update(file=file, source=None, custom_load=file.endswith(".npz"))
            kwargs["pretrained_cfg_overlay"] = overlay
        want_weights = load and (file is not None or self._hub_weights)
        try:
            with _recorded_loading(report) if want_weights else contextlib.nullcontext():
                model = timm.create_model(self.timm_name, pretrained=want_weights, num_classes=0, **kwargs)
        except _LoadFailure as failure:
            cause = failure.__cause__ or failure
            if file is not None:
                raise ValueError(f"visual weights {file} do not fit timm model {self.timm_name!r}: "
                                 f"{error_gist(cause)}") from cause
            if isinstance(cause, OSError):
                raise FileNotFoundError(
                    f"pretrained weights of timm model {self.timm_name!r} are not in the local Hugging Face cache "
                    f"and could not be downloaded ({type(cause).__name__}); pass --visual-weights FILE_OR_FOLDER, or "
                    f"run once online to fill the cache") from cause
            if "No pretrained weights exist" in str(cause):
                raise ValueError(f"timm model {self.timm_name!r} has no pretrained weights in timm's registry; "
                                 f"pass --visual-weights FILE_OR_FOLDER or use random weights") from cause
            raise
        except OSError as error:
            if not self.timm_name.startswith(_HUB_PREFIXES):
                raise
            raise FileNotFoundError(f"timm model {self.timm_name!r} could not be read from the Hugging Face hub or "
                                    f"its local cache ({type(error).__name__}); pass a timm name with "
                                    f"--visual-weights FILE_OR_FOLDER, or run once online") from error
        except RuntimeError as error:
            if "Invalid pretrained tag" in str(error):
                arch = self.timm_name.split(".", 1)[0]
                tags = _pretrained_tags(arch)
                raise ValueError(f"timm model {self.timm_name!r}: unknown pretrained tag"
                                 + (f"; known: {', '.join(tags)}" if tags else "")) from error
            raise
        missing = report.get("missing") or []
        if file is not None and load and missing:
            raise ValueError(f"visual weights {file} do not fit timm model {self.timm_name!r}: {len(missing)} model "
                             f"weights are not in the file (e.g. {', '.join(missing[:3])})")
        if file is not None and load and report.get("unexpected"):
            _logger.warning("visual weights %s: %d entries not used by %s (e.g. %s)", file, len(report["unexpected"]),
                            self.timm_name, ", ".join(report["unexpected"][:3]))
        return model

    def _init_random_post_norms(self) -> None:
        """timm zero-initialises Swin-V2's residual post-norm scales, which makes every block of a *random* frozen
        model return its input; random-weight Swin-V2 models get unit scales instead, as
        :meth:`~molt.backbones.swin_v2.SwinV2Backbone._init_random_post_norms` does. Loaded weights are never
        touched."""
        from timm.models.swin_transformer_v2 import SwinTransformerV2

        if not isinstance(self.model, SwinTransformerV2):
            return
        with torch.no_grad():
            for stage in self.model.layers:
                for block in stage.blocks:
                    block.norm1.weight.fill_(1.0)
                    block.norm2.weight.fill_(1.0)

    def _refuse(self, why: str) -> ValueError:
        return ValueError(f"timm model {self.timm_name!r} has no per-block intermediate outputs; use a transformer "
                          f"such as {_EXAMPLES} ({why})")

    def _find_blocks(self) -> None:
        """The flat list of blocks from ``feature_info`` (see the module docstring), with their shapes."""
        info = getattr(self.model, "feature_info", None)
        info = getattr(info, "info", info)  # a FeatureInfo object holds its list in .info
        if not isinstance(info, (list, tuple)) or not info:
            raise self._refuse("no feature_info")
        blocks: list[nn.Module] = []
        owners: list[tuple[nn.Module, int] | None] = []
        dims, grids = [], []
        for entry in info:
            module_name = entry.get("module") if isinstance(entry, dict) else None
            num_chs, reduction = (entry.get("num_chs"), entry.get("reduction")) if isinstance(entry, dict) else (0, 0)
            if not module_name or not isinstance(num_chs, int) or not isinstance(reduction, int) or reduction < 1:
                raise self._refuse(f"feature_info entry {entry!r} names no module, width and reduction")
            try:
                module = self.model.get_submodule(module_name)
            except AttributeError:
                raise self._refuse(f"feature_info module {module_name!r} is not in the model") from None
            children = getattr(module, "blocks", None)
            if isinstance(children, (nn.ModuleList, nn.Sequential)) and len(children) > 0:
                members = [(child, (module, j)) for j, child in enumerate(children)]
            else:
                members = [(module, None)]
            grid = self._grid(reduction)
            for block, owner in members:
                if any(block is seen for seen in blocks):
                    raise self._refuse(f"module {module_name!r} appears twice in feature_info")
                blocks.append(block)
                owners.append(owner)
                dims.append(num_chs)
                grids.append(grid)
        self._blocks = blocks          # a plain list: the modules stay registered under self.model only
        self._owners = owners
        self.block_dims = dims
        self.block_grids: list[tuple[int, int]] = grids
        self.block_tokens = [h * w for h, w in grids]

    def _grid(self, reduction: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` of a feature map ``reduction`` times smaller than :attr:`input_size`: the patch
        embedding's own grid (floor or padded, as it computes it) for its reduction, ceil division of that grid for
        coarser stages (patch merging pads odd grids), ceil division of the input size without a patch embedding."""
        height, width = self.input_size
        patch_embed = getattr(self.model, "patch_embed", None)
        feat_size = getattr(patch_embed, "dynamic_feat_size", None)
        if callable(feat_size):
            ratio = getattr(patch_embed, "feat_ratio", None)
            if callable(ratio):
                base = int(ratio())
            else:
                patch = getattr(patch_embed, "patch_size", None)
                base = int(max(patch)) if isinstance(patch, (tuple, list)) else int(patch or 0)
            if base > 0 and reduction % base == 0:
                grid_h, grid_w = feat_size(self.input_size)
                step = reduction // base
                return math.ceil(grid_h / step), math.ceil(grid_w / step)
        return math.ceil(height / reduction), math.ceil(width / reduction)

    def _sublayer_kind(self) -> str | None:
        """``"vit"``, ``"swinv2"`` or ``None`` (no sub-layer split; see the module docstring)."""
        from timm.models.swin_transformer_v2 import SwinTransformerV2, SwinTransformerV2Block
        from timm.models.vision_transformer import Block, VisionTransformer

        model = self.model
        if (isinstance(model, VisionTransformer) and isinstance(getattr(model, "blocks", None), nn.Sequential)
                and len(self._blocks) == len(model.blocks)
                and all(a is b and type(a) is Block for a, b in zip(self._blocks, model.blocks))):
            return "vit"
        if (isinstance(model, SwinTransformerV2) and all(type(b) is SwinTransformerV2Block for b in self._blocks)
                and all(owner is not None and hasattr(owner[0], "downsample") for owner in self._owners)
                and [b for stage in model.layers for b in stage.blocks] == self._blocks):
            return "swinv2"
        return None

    # ------------------------------------------------------------------------------------------------------------
    # Identity
    # ------------------------------------------------------------------------------------------------------------

    @property
    def tag(self) -> str:
        """timm pretrained tag (e.g. ``lvd142m``) when the hub weights were asked for, else empty."""
        return (self.model.pretrained_cfg.get("tag") or "") if self._hub_weights else ""

    def weights_hash(self) -> str | None:
        """SHA-256 of the weights file (the chosen file inside a folder), ``None`` without one."""
        return file_sha256(self.weights_path) if self.weights_path else None

    def block_modules(self) -> list[nn.Module]:
        """The block modules whose outputs are the taps, in execution order (the layer analysis hooks them)."""
        return list(self._blocks)

    # ------------------------------------------------------------------------------------------------------------
    # Input
    # ------------------------------------------------------------------------------------------------------------

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 or ``[0, 1]`` float frames ``(B, 3, H, W)`` of any size -> normalised float ``(B, 3, *input_size)``
        (resized with the model's interpolation, antialiased, clamped to ``[0, 1]``, then normalised with the
        model's mean and std)."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames of shape (B, 3, H, W), got {tuple(frames.shape)}")
        frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        if tuple(frames.shape[-2:]) != self.input_size:
            smooth = self.interpolation != "nearest"
            frames = F.interpolate(frames, size=self.input_size, mode=self.interpolation,
                                   align_corners=False if smooth else None, antialias=smooth).clamp_(0.0, 1.0)
        return (frames - self.mean) / self.std

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"{self.name} expects images of shape (B, 3, {self.input_size[0]}, "
                             f"{self.input_size[1]}), got {tuple(x.shape)}; use .preprocess(frames)")
        if not torch.is_floating_point(x):
            raise ValueError(f"{self.name} expects normalised float images, got dtype {x.dtype}; use .preprocess()")

    # ------------------------------------------------------------------------------------------------------------
    # Taps through hooks (every architecture)
    # ------------------------------------------------------------------------------------------------------------

    def _as_tokens(self, index: int, output: Any) -> torch.Tensor:
        """Block ``index``'s output -> patch tokens ``(B, h*w, D)`` (prefix tokens dropped, grids flattened)."""
        y = output[0] if isinstance(output, (tuple, list)) else output
        (h, w), dim = self.block_grids[index], self.block_dims[index]
        if torch.is_tensor(y) and y.ndim == 3 and y.shape[2] == dim and y.shape[1] >= h * w:
            return y[:, y.shape[1] - h * w:]
        if torch.is_tensor(y) and y.ndim == 4:
            nhwc, nchw = tuple(y.shape[1:]) == (h, w, dim), tuple(y.shape[1:]) == (dim, h, w)
            if nhwc and (not nchw or self._output_fmt == "NHWC"):
                return y.flatten(1, 2)
            if nchw:
                return y.flatten(2).transpose(1, 2)
        shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise RuntimeError(f"{self.name}: block {index} returned {shape}; expected (B, P + {h * w}, {dim}), "
                           f"(B, {h}, {w}, {dim}) or (B, {dim}, {h}, {w})")

    def _drive(self, x: torch.Tensor) -> None:
        forward_features = getattr(self.model, "forward_features", None)
        if callable(forward_features):
            forward_features(x)
        else:
            self.model(x)

    def forward_taps(self, x: torch.Tensor, blocks: BlockSelection | Sequence[int]) -> list[torch.Tensor]:
        """Patch tokens leaving each selected block, ``[(B, N_l, D_l) for l in blocks]`` in block order, float32.

        The model's ``forward_features`` runs with forward hooks on the selected blocks and stops after the last
        of them; no autograd graph is kept."""
        indices = self.resolve_blocks(blocks)
        self._check_input(x)

        def convert(index: int, output: Any) -> torch.Tensor:
            return self._as_tokens(index, output).to(torch.float32, copy=True, memory_format=torch.contiguous_format)

        return hooked_taps(self.name, self._blocks, indices, lambda: self._drive(x), convert)

    # ------------------------------------------------------------------------------------------------------------
    # Per-block walk and sub-layers (timm VisionTransformer with standard blocks, timm Swin-V2)
    # ------------------------------------------------------------------------------------------------------------

    def _require_sublayers(self) -> None:
        if self._kind is None:
            raise self._no_sublayers()

    def _no_sublayers(self) -> NotImplementedError:
        error = super()._no_sublayers()
        return NotImplementedError(f"{error} ({self.name}: {type(self.model).__name__} blocks are run through "
                                   f"forward hooks only)")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (the output of :meth:`preprocess`) -> tokens entering block 0: ViT ``(B, P + N, D)``
        with the prefix tokens first, Swin-V2 ``(B, h, w, C)``."""
        self._require_sublayers()
        self._check_input(x)
        model = self.model
        if self._kind == "swinv2":
            return model.patch_embed(x)
        x = model.patch_embed(x)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        return model.norm_pre(x)

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        self._require_sublayers()
        if self._kind == "swinv2":
            return self._blocks[index](self.enter_block(index, tokens))
        return self._blocks[index](tokens)

    def to_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        """Native layout -> patch tokens ``(B, N, D)`` (ViT: prefix tokens dropped; Swin-V2: grid flattened)."""
        self._require_sublayers()
        if self._kind == "swinv2":
            return tokens.flatten(1, 2)
        return tokens[:, self.num_prefix_tokens:]

    def add_to_sequence(self, tokens: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """Native tokens plus a ``(B, N, D)`` update on the patch tokens (prefix tokens unchanged)."""
        if self._kind == "swinv2" or not self.num_prefix_tokens:
            return tokens + update.reshape(tokens.shape)
        prefix = self.num_prefix_tokens
        return torch.cat([tokens[:, :prefix], tokens[:, prefix:] + update], dim=1)

    def enter_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        self._require_sublayers()
        if self._kind == "swinv2":
            stage, position = self._owners[index]
            return stage.downsample(tokens) if position == 0 else tokens
        return tokens

    def attention_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """ViT: ``x + ls1(attn(norm1(x)))`` (pre-norm); Swin-V2: ``x + norm1(attn(x))`` (post-norm, NHWC)."""
        self._require_sublayers()
        block = self._blocks[index]
        if self._kind == "swinv2":
            return tokens + block.drop_path1(block.norm1(block._attn(tokens)))
        return tokens + block.drop_path1(block.ls1(block.attn(block.norm1(tokens))))

    def mlp_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """ViT: ``x + ls2(mlp(norm2(x)))`` (pre-norm); Swin-V2: ``x + norm2(mlp(x))`` (post-norm, NHWC)."""
        self._require_sublayers()
        block = self._blocks[index]
        if self._kind == "swinv2":
            batch, height, width, channels = tokens.shape
            x = tokens.reshape(batch, -1, channels)
            x = x + block.drop_path2(block.norm2(block.mlp(x)))
            return x.reshape(batch, height, width, channels)
        return tokens + block.drop_path2(block.ls2(block.mlp(block.norm2(tokens))))
