"""Hugging Face ``transformers`` audio encoders as frozen tap backbones: ``hf:<hub id>`` or ``hf:/path/to/folder``.

:class:`HFAudioBackbone` wraps the audio encoder of any ``transformers`` model whose feature extractor takes
waveforms: AST, Whisper (its encoder), wav2vec2 / HuBERT / WavLM, CLAP (its audio tower), and others of the same
shape. Its taps are the outputs of the encoder's transformer layers, read with forward hooks on the model's own
forward, so they are exactly ``output_hidden_states=True``'s ``hidden_states[i + 1]`` (except that where a model's
last hidden state has the encoder's final norm applied, as Whisper's, the last tap is the last layer's own output);
the forward stops after the last layer asked for. A Swin-style encoder (CLAP's HTS-AT) is tapped per Swin block, like
:class:`~molt.backbones.htsat.HTSATBackbone`: the output of each block, before the stage's patch merging.

Front end. The model's own feature extractor computes its input (mel bins, normalisation, everything), on the CPU.
The backbone is given float waveforms ``(B, S)`` at :attr:`~HFAudioBackbone.sample_rate` (the data's rate, 32 kHz
for the prepared data sets), one 1-s segment per row. :meth:`~HFAudioBackbone.preprocess`:

1. resamples each row to the extractor's ``sampling_rate`` with :func:`resample_fft` (band-limited: the spectrum
   of the row is cut or zero-padded, as ``scipy.signal.resample``). The FFT treats the row as one period of a
   periodic signal, which is what step 2 makes of it: resampling one segment then tiling it equals band-limited
   resampling of the tiled signal;
2. applies the window policy: an encoder with a fixed input window (AST: ``max_length`` frames; Whisper:
   ``n_samples`` = 30 s; CLAP: ``max_length_s``) gets the segment tiled by repetition to exactly that many samples
   (as HTS-AT tiles its segments), so that the extractor never pads nor truncates; an encoder with no fixed window
   (wav2vec2, HuBERT, WavLM) gets the segment as it is. Nothing is padded, so no attention mask is needed;
3. runs the feature extractor and returns the model's main input (``input_values`` or ``input_features``).

In-block methods (LAVisH, DG-SCT, AVMoE) need the split of each layer into its residual sub-layers; it is written
for the pre-norm layers of AST and of Whisper's encoder. Other families set ``has_sublayers = False`` (tap-reading
methods only).

``transformers`` is an optional dependency (``pip install 'molt-av[hf]'``), imported when a backbone is built.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .base import TapBackbone, default_device_is_meta, error_gist, hooked_taps
from .swin_v2 import file_sha256
from .taps import BlockSelection

__all__ = ["HFAudioBackbone", "resample_fft", "INSTALL_HINT", "folder_weights_sha256", "looks_like_path"]

_logger = logging.getLogger(__name__)

INSTALL_HINT = "the hf: audio backbones need transformers: pip install 'molt-av[hf]'"
#: main input names of audio encoders (waveform samples, or features computed from them)
_AUDIO_INPUTS = ("input_values", "input_features")
#: attributes holding the audio tower of a multi-tower model (CLAP: ``audio_model``)
_AUDIO_TOWERS = ("audio_model", "audio_tower", "audio_encoder", "speech_encoder")
#: attribute names of the ModuleList of an encoder's layers, preferred in this order
_LAYER_LIST_NAMES = ("layers", "layer", "blocks")
_EXPECTED = ("a transformers audio encoder whose feature extractor takes waveforms (AST, Whisper, wav2vec2 / HuBERT / "
             "WavLM, CLAP)")
_FIX_MISSING = "download it once online, or pass a local folder: hf:/path/to/folder"


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return transformers


def resample_fft(waveform: torch.Tensor, orig_rate: int, target_rate: int) -> torch.Tensor:
    """Band-limited resampling of each row of ``waveform`` ``(..., S)`` from ``orig_rate`` to ``target_rate``.

    Returns ``(..., round(S * target_rate / orig_rate))`` float samples. The row's real spectrum is truncated
    (downsampling: everything above the new Nyquist frequency is removed) or zero-padded (upsampling), as
    ``scipy.signal.resample`` does, including its treatment of the unpaired Nyquist bin. The row is treated as
    one period of a periodic signal.
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {target_rate}")
    n_in = waveform.shape[-1]
    n_out = int(round(n_in * target_rate / orig_rate))
    if n_out == n_in:
        return waveform
    if n_in == 0 or n_out == 0:
        raise ValueError(f"cannot resample {n_in} samples from {orig_rate} Hz to {target_rate} Hz")
    if not waveform.is_floating_point() or waveform.dtype in (torch.float16, torch.bfloat16):
        waveform = waveform.float()
    spectrum = torch.fft.rfft(waveform, dim=-1)
    kept = min(n_in, n_out)
    spectrum = spectrum[..., : kept // 2 + 1].clone()
    if kept % 2 == 0:          # the unpaired bin at kept // 2 (scipy.signal.resample)
        spectrum[..., kept // 2] *= 2.0 if n_out < n_in else 0.5
    return torch.fft.irfft(spectrum, n=n_out, dim=-1) * (n_out / n_in)


def looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else with a separator is a path."""
    return source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1


def _first(output: Any) -> torch.Tensor:
    """A module's output tensor: the first element of a tuple (attention weights, caches), the tensor itself
    otherwise (transformers versions differ)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _main_input(module: nn.Module) -> str | None:
    return getattr(module, "main_input_name", None)


def _float32_kwargs(transformers: Any) -> dict[str, Any]:
    """``dtype=torch.float32`` under the argument name this ``transformers`` understands (checkpoints saved in
    float16 are read as float32; :meth:`TapBackbone.set_compute_dtype` lowers the precision when asked)."""
    try:
        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    except ValueError:
        major, minor = 5, 0
    return {"dtype": torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": torch.float32}


def _weight_files(folder: str) -> list[str]:
    """The weights files of a ``save_pretrained`` folder, in the order they are hashed (sorted)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if os.path.isfile(os.path.join(folder, single)):
            return [os.path.join(folder, single)]
        if os.path.isfile(os.path.join(folder, index)):
            with open(os.path.join(folder, index), encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
            return [os.path.join(folder, shard) for shard in shards]
    return []


def folder_weights_sha256(folder: str | os.PathLike) -> str | None:
    """SHA-256 of the weights of a ``save_pretrained`` folder: of its one weights file, or of its shards hashed
    together in sorted order; ``None`` when it holds none (what :meth:`HFAudioBackbone.weights_hash` records)."""
    files = _weight_files(os.fspath(folder))
    if len(files) <= 1:
        return file_sha256(files[0]) if files else None
    hasher = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
    return hasher.hexdigest()


def _commit_of(config: Any, snapshot: str | None) -> str:
    """Hub commit a config was read at: ``config._commit_hash`` (transformers 4), else the name of the cache
    snapshot folder (``.../snapshots/<commit>``)."""
    commit = getattr(config, "_commit_hash", None)
    if not commit and snapshot is not None and re.fullmatch(r"[0-9a-f]{40}", os.path.basename(snapshot)):
        commit = os.path.basename(snapshot)
    return str(commit or "")


def _find_encoder(model: nn.Module, label: str) -> nn.Module:
    """The audio encoder inside ``model``: the model itself (AST, wav2vec2), the encoder of an encoder-decoder
    (Whisper), or the audio tower of a multi-tower model (CLAP)."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and callable(getattr(model, "get_encoder", None)):
        encoder = model.get_encoder()
        if _main_input(encoder) in _AUDIO_INPUTS:
            return encoder
    elif _main_input(model) in _AUDIO_INPUTS:
        return model
    for attribute in _AUDIO_TOWERS:
        tower = getattr(model, attribute, None)
        if isinstance(tower, nn.Module) and _main_input(tower) in _AUDIO_INPUTS:
            return tower
    raise ValueError(f"{label}: {type(model).__name__} is not an audio encoder (main input "
                     f"{_main_input(model)!r}, no audio tower); expected {_EXPECTED}")


def _find_layers(encoder: nn.Module, label: str) -> list[str]:
    """Names (in ``encoder``) of the modules whose outputs are the taps: the ModuleList of the encoder's layers
    (``config.num_hidden_layers`` / ``encoder_layers`` / ``len(depths)`` long), or, when its items are Swin stages
    holding ``blocks``, every block of every stage."""
    config = encoder.config
    counts = {count for count in (getattr(config, "encoder_layers", None), getattr(config, "num_hidden_layers", None),
                                  len(getattr(config, "depths", ()) or ()) or None)
              if isinstance(count, int) and count > 0}
    candidates = [(name, module) for name, module in encoder.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) in counts
                  and name.rsplit(".", 1)[-1] in _LAYER_LIST_NAMES]
    if not candidates:
        raise ValueError(f"{label}: no ModuleList of {' or '.join(map(str, sorted(counts))) or '?'} layers "
                         f"(named {' / '.join(_LAYER_LIST_NAMES)}) in {type(encoder).__name__}; expected {_EXPECTED}")
    name, layers = min(candidates, key=lambda item: (item[0].count("."),
                                                     _LAYER_LIST_NAMES.index(item[0].rsplit(".", 1)[-1])))
    if all(isinstance(getattr(stage, "blocks", None), nn.ModuleList) for stage in layers):
        return [f"{name}.{index}.blocks.{block}" for index, stage in enumerate(layers)
                for block in range(len(stage.blocks))]
    return [f"{name}.{index}" for index in range(len(layers))]


def _sublayer_family(layer: nn.Module) -> str | None:
    """Which residual split :class:`HFAudioBackbone` knows for ``layer``'s class, if any."""
    kind = type(layer).__name__
    has = lambda *names: all(isinstance(getattr(layer, n, None), nn.Module) for n in names)  # noqa: E731
    if kind == "ASTLayer" and has("layernorm_before", "attention", "layernorm_after"):
        if has("mlp"):
            return "ast"            # transformers >= 5: attention -> o_proj; mlp = fc1, act, fc2
        if has("intermediate", "output"):
            return "ast_v4"         # transformers 4: the MLP residual is added inside ``output``
    if kind == "WhisperEncoderLayer" and has("self_attn_layer_norm", "self_attn", "final_layer_norm", "fc1", "fc2"):
        return "whisper"
    return None


class HFAudioBackbone(TapBackbone):
    """A frozen ``transformers`` audio encoder exposing each layer's output as ``(B, N, D)`` tokens.

    Args:
        source: hub id (``MIT/ast-finetuned-audioset-10-10-0.4593``, read from the local cache when offline:
            ``HF_HUB_OFFLINE=1``) or a folder written by ``save_pretrained`` (model and feature extractor).
        sample_rate: rate of the waveforms the backbone is given (the data's rate); it resamples them to its
            feature extractor's ``sampling_rate`` itself.
        random_init: build the model from its config only, with parameters drawn from ``init_seed`` (tests,
            benchmarks at real size without weights).
        init_seed: seed of a random initialisation (the global RNG is left as it was).
        revision: hub revision (branch, tag or commit) of a hub id.
        name: the backbone's name in manifests and messages (default ``hf:<source>``).

    Built under ``with torch.device("meta"):`` it reads no weights (the model is built from its config on the
    meta device) but keeps the same shapes, :attr:`weights_path` and :attr:`tag`.

    Attributes:
        source, name, sample_rate: as given.
        feature_sampling_rate: the feature extractor's rate (Hz).
        window_samples: samples (at ``feature_sampling_rate``) a segment is tiled to, ``None`` when the encoder
            takes its input as it is.
        window_policy: ``"tile to 10.255 s"`` or ``"segment as is"``.
        input_name: the model's main input (``input_values`` or ``input_features``).
        encoder: the ``transformers`` module that is run.
        layer_names: names of the tapped modules in :attr:`encoder`.
        family: ``"ast"``, ``"whisper"`` (sub-layers implemented) or the encoder's class name.
        block_dims, block_tokens: width and tokens of each layer's output for one tiled 1-s segment.
        weights_path: the folder (or hub cache snapshot) the weights come from; ``None`` for random weights.
        config, feature_extractor: the ``transformers`` objects.
    """

    def __init__(self, source: str | os.PathLike, *, sample_rate: int = 32000, random_init: bool = False,
                 init_seed: int = 0, revision: str | None = None, name: str | None = None) -> None:
        transformers = _require_transformers()
        super().__init__()
        source = os.fspath(source)
        source = source[3:] if source.startswith("hf:") else source
        folder = os.path.expanduser(source)
        if os.path.isdir(folder):
            folder = os.path.abspath(folder)
        elif os.path.exists(folder):
            raise ValueError(f"hf:{source}: a file; expected a folder written by save_pretrained or a hub id")
        elif looks_like_path(source):
            raise FileNotFoundError(f"hf:{source}: no such folder (expected a folder written by save_pretrained, "
                                    f"or a hub id such as MIT/ast-finetuned-audioset-10-10-0.4593)")
        else:
            folder = None
        where = folder if folder is not None else source

        def load(what: str, loader: Callable[[], Any]) -> Any:
            try:
                return loader()
            except OSError as error:
                if folder is not None:
                    raise ValueError(f"hf:{source}: {folder} holds no readable {what} ({error_gist(error)}); "
                                     f"expected a folder written by save_pretrained") from None
                raise FileNotFoundError(f"hf:{source}: not in the local Hugging Face cache ({what} missing) and not "
                                        f"downloadable here (offline, or not on the hub); {_FIX_MISSING}") from None
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"hf:{source}: transformers cannot read its {what} ({error_gist(error)}); "
                                 f"expected {_EXPECTED}") from None
            except RuntimeError as error:      # tensors of other shapes than the config's (ignore_mismatched_sizes)
                raise ValueError(f"hf:{source}: the {what} in {where} do not fit its config.json (tensors of "
                                 f"other shapes; another architecture's?): {error_gist(error)}") from None

        config = load("config", lambda: transformers.AutoConfig.from_pretrained(
            where, revision=revision, trust_remote_code=False))
        meta_encoder = self._meta_encoder(transformers, config, f"hf:{source}")   # refuses non-audio models
        feature_extractor = load("feature extractor", lambda: transformers.AutoFeatureExtractor.from_pretrained(
            where, revision=revision, trust_remote_code=False))

        loader = None
        if not random_init:
            def loader() -> nn.Module:
                return load("weights", lambda: transformers.AutoModel.from_pretrained(
                    where, revision=revision, output_loading_info=True, trust_remote_code=False,
                    **_float32_kwargs(transformers)))

        snapshot = None
        if folder is None and not random_init:
            snapshot = self._cache_snapshot(source, revision)
        self._build(transformers, config, feature_extractor, meta_encoder, source=source,
                    name=name or f"hf:{source}", sample_rate=sample_rate, init_seed=init_seed, loader=loader,
                    weights_path=None if random_init else (folder or snapshot),
                    tag="" if random_init or folder is not None else _commit_of(config, snapshot))

    @classmethod
    def from_objects(cls, config: Any, feature_extractor: Any, *, name: str, sample_rate: int = 32000,
                     init_seed: int = 0) -> "HFAudioBackbone":
        """A backbone with random weights (from ``init_seed``) built from a ``transformers`` config and feature
        extractor in memory."""
        transformers = _require_transformers()
        backbone = cls.__new__(cls)
        TapBackbone.__init__(backbone)
        meta_encoder = backbone._meta_encoder(transformers, config, name)
        backbone._build(transformers, config, feature_extractor, meta_encoder, source=name, name=name,
                        sample_rate=sample_rate, init_seed=init_seed, loader=None, weights_path=None, tag="")
        return backbone

    # ----------------------------------------------------------------------------------------------- building

    @staticmethod
    def _meta_encoder(transformers: Any, config: Any, label: str) -> nn.Module:
        """The audio encoder built from ``config`` on the meta device: no memory, no weights; it tells which
        module to keep and gives the shapes."""
        try:
            with torch.device("meta"):
                model = transformers.AutoModel.from_config(config, **_float32_kwargs(transformers))
        except (ValueError, KeyError) as error:
            raise ValueError(f"{label}: transformers has no model for this config ({type(config).__name__}: "
                             f"{error_gist(error)}); expected {_EXPECTED}") from None
        return _find_encoder(model, label).eval()

    @staticmethod
    def _cache_snapshot(source: str, revision: str | None) -> str | None:
        """Folder of the hub cache snapshot ``source`` was read from (where its weights files are)."""
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        path = try_to_load_from_cache(source, "config.json", revision=revision)
        return os.path.dirname(path) if isinstance(path, str) else None

    def _build(self, transformers: Any, config: Any, feature_extractor: Any, meta_encoder: nn.Module, *,
               source: str, name: str, sample_rate: int, init_seed: int,
               loader: Callable[[], tuple[nn.Module, dict]] | None, weights_path: str | None, tag: str) -> None:
        self.source, self.name, self.config = source, name, config
        if int(sample_rate) <= 0:
            raise ValueError(f"{name}: sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        rate = getattr(feature_extractor, "sampling_rate", None)
        input_names = list(getattr(feature_extractor, "model_input_names", None) or [])
        if not rate or not input_names or input_names[0] not in _AUDIO_INPUTS:
            raise ValueError(f"{name}: its preprocessor ({type(feature_extractor).__name__}) takes no waveforms "
                             f"(sampling_rate {rate!r}, inputs {input_names}); expected {_EXPECTED}")
        if input_names[0] != _main_input(meta_encoder):
            raise ValueError(f"{name}: the feature extractor gives {input_names[0]!r} but "
                             f"{type(meta_encoder).__name__} takes {_main_input(meta_encoder)!r}")
        self.feature_extractor = feature_extractor
        self.feature_sampling_rate = int(rate)
        self.input_name = input_names[0]
        self.window_samples = self._window(feature_extractor)
        if self.window_samples is None:
            self.window_policy = "segment as is"
        else:
            self.window_policy = f"tile to {round(self.window_samples / self.feature_sampling_rate, 3):g} s"
        self.layer_names = _find_layers(meta_encoder, name)
        self._fusion = bool(getattr(meta_encoder.config, "enable_fusion", False))

        if default_device_is_meta():
            encoder = meta_encoder
        elif loader is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                encoder = type(meta_encoder)._from_config(meta_encoder.config, **_float32_kwargs(transformers))
        else:
            model, info = loader()
            encoder = _find_encoder(model, name)
            self._check_loaded(model, encoder, info, weights_path or source)
            if any(p.dtype != torch.float32 for p in encoder.parameters() if p.is_floating_point()):
                encoder = encoder.float()
        self.encoder = encoder.eval()
        self._layers = [self.encoder.get_submodule(layer) for layer in self.layer_names]
        layout = _sublayer_family(self._layers[0])
        if layout is None or any(_sublayer_family(layer) != layout for layer in self._layers):
            self.has_sublayers = False
            layout = None
        self._ast_v4 = layout == "ast_v4"
        self.family = {"ast_v4": "ast"}.get(layout, layout) or type(self.encoder).__name__
        self.weights_path = weights_path
        self._tag = tag
        self._hash_memo: tuple[Any, str] | None = None

        shapes = self._probe_shapes(meta_encoder)
        self.block_tokens = [tokens for tokens, _ in shapes]
        self.block_dims = [dims for _, dims in shapes]
        self.freeze()

    @staticmethod
    def _window(feature_extractor: Any) -> int | None:
        """Samples the extractor's input must have to fill the encoder's fixed window without padding (``None``:
        no fixed window)."""
        rate = int(feature_extractor.sampling_rate)
        if isinstance(getattr(feature_extractor, "n_samples", None), int):             # Whisper
            return int(feature_extractor.n_samples)
        if isinstance(getattr(feature_extractor, "nb_max_samples", None), int):        # CLAP
            return int(feature_extractor.nb_max_samples)
        if type(feature_extractor).__name__ == "ASTFeatureExtractor":
            # Kaldi fbank frames of 25 ms every 10 ms, snip_edges: 1 + (S - 400) // 160 frames at 16 kHz;
            # the smallest S giving max_length frames
            frame, shift = int(rate * 0.025), int(rate * 0.010)
            return frame + (int(feature_extractor.max_length) - 1) * shift
        return None

    def _check_loaded(self, model: nn.Module, encoder: nn.Module, info: dict, where: str) -> None:
        """Refuse weights that leave the tapped layers uninitialised or of other shapes (another architecture)."""
        prefix = next(name for name, module in model.named_modules() if module is encoder)
        prefix = f"{prefix}." if prefix else ""
        layer_prefixes = tuple(f"{prefix}{layer}." for layer in self.layer_names)
        missing = [key for key in info.get("missing_keys", ()) if str(key).startswith(prefix)]
        in_layers = [key for key in missing if str(key).startswith(layer_prefixes)]
        mismatched = [str(item[0] if isinstance(item, (tuple, list)) else item)
                      for item in info.get("mismatched_keys", ())]
        mismatched = [key for key in mismatched if key.startswith(prefix)]
        if in_layers or mismatched:
            shown = ", ".join(sorted(in_layers or mismatched)[:3])
            raise ValueError(f"{self.name}: the weights in {where} do not fit its config "
                             f"({type(encoder).__name__}): {len(in_layers)} layer tensors missing, "
                             f"{len(mismatched)} of other shapes (e.g. {shown}); they are another architecture's")
        if missing:
            _logger.warning("%s: %d encoder tensors not in %s, left as initialised: %s", self.name, len(missing),
                            where, ", ".join(sorted(missing)[:5]))

    def _probe_shapes(self, meta_encoder: nn.Module) -> list[tuple[int, int]]:
        """``(tokens, width)`` of each tapped module's output for one 1-s segment, from a forward of the meta
        encoder on a meta input of the feature extractor's output shape (nothing is computed nor read)."""
        with torch.device("cpu"):
            shape = tuple(self.preprocess(torch.zeros(1, self.sample_rate)).shape)
        layers = [meta_encoder.get_submodule(layer) for layer in self.layer_names]
        shapes: dict[int, tuple[int, ...]] = {}

        def record(index: int) -> Callable:
            def hook(module: nn.Module, args: tuple, output: Any) -> None:
                shapes[index] = tuple(_first(output).shape)
            return hook

        handles = [layer.register_forward_hook(record(index)) for index, layer in enumerate(layers)]
        context = contextlib.nullcontext()
        if self._fusion:
            # CLAP with fusion finds its longer clips with torch.nonzero, which meta tensors only do by assuming every
            # clip is longer: the fused path gives tokens of the same shapes
            from torch.fx.experimental import _config as fx_config
            if hasattr(fx_config, "meta_nonzero_assume_all_nonzero"):
                context = fx_config.patch(meta_nonzero_assume_all_nonzero=True)
        try:
            with torch.no_grad(), context:
                meta_encoder(**self._model_inputs(torch.zeros(shape, device="meta")))
        finally:
            for handle in handles:
                handle.remove()
        result = []
        for index, layer in enumerate(self.layer_names):
            out = shapes.get(index)
            if out is None or len(out) != 3:
                raise ValueError(f"{self.name}: layer {layer} gives {'no output' if out is None else out}; expected "
                                 f"tokens (B, N, D)")
            result.append((int(out[1]), int(out[2])))
        return result

    # -------------------------------------------------------------------------------------------- front end

    @property
    def tag(self) -> str:
        """Hub commit the weights were read at (from the hub cache), else ``""`` (a folder, random weights)."""
        return self._tag

    def weights_hash(self) -> str | None:
        """SHA-256 of the weights file (``model.safetensors``), or of the sharded files hashed together in sorted
        order, in :attr:`weights_path` (:func:`folder_weights_sha256`); ``None`` for random weights."""
        path = self.weights_path
        if path is None:
            return None
        path = os.fspath(path)
        if os.path.isfile(path):
            return file_sha256(path)
        files = _weight_files(path)
        if not files:
            raise FileNotFoundError(f"{self.name}: no weights file (model.safetensors, pytorch_model.bin or their "
                                    f"shards) in {path}")
        stamp = tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
        if self._hash_memo is not None and self._hash_memo[0] == stamp:
            return self._hash_memo[1]
        digest = folder_weights_sha256(path)
        self._hash_memo = (stamp, digest)
        return digest

    def prepare_waveform(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` (or ``(B, 1, S)``) float waveforms at :attr:`sample_rate` -> ``(B, S')`` at
        :attr:`feature_sampling_rate`, tiled to :attr:`window_samples` when the encoder has a fixed window."""
        if waveform.ndim == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        if waveform.ndim != 2 or not torch.is_floating_point(waveform):
            raise ValueError(f"{self.name} expects float waveforms (B, S), got {tuple(waveform.shape)} "
                             f"{waveform.dtype}")
        waveform = resample_fft(waveform.float(), self.sample_rate, self.feature_sampling_rate)
        window = self.window_samples
        if window is None:
            return waveform
        samples = waveform.shape[-1]
        if samples > window:
            raise ValueError(f"{self.name}: {samples} samples at {self.feature_sampling_rate} Hz are more than its "
                             f"{window}-sample window; give it 1-s segments at {self.sample_rate} Hz")
        return waveform.repeat(1, math.ceil(window / samples))[:, :window]

    def block_modules(self) -> list[nn.Module]:
        """The tapped layer modules, in order (what the layer analysis hooks)."""
        return list(self._layers)

    def preprocess(self, waveform: torch.Tensor) -> torch.Tensor:
        """Float waveforms ``(B, S)`` at :attr:`sample_rate`, one segment per row -> the model's main input
        (``input_values`` or ``input_features``), float32, on the waveform's device."""
        rows = self.prepare_waveform(waveform).detach().cpu().numpy().astype(np.float32, copy=False)
        with torch.device("cpu"):
            features = self.feature_extractor(list(rows), sampling_rate=self.feature_sampling_rate,
                                              return_tensors="pt")
        return features[self.input_name].to(device=waveform.device, dtype=torch.float32)

    def _model_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = {self.input_name: x}
        if self._fusion:     # CLAP with fusion: no segment is longer than the window
            inputs["is_longer"] = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
        return inputs

    # ------------------------------------------------------------------------------------------------- taps

    def forward_taps(self, x: torch.Tensor, blocks: BlockSelection | Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the selected layers ``[(B, N_l, D_l)]`` (float32, every token, AST's two prefix tokens
        included) from the encoder's own forward on ``x`` (the output of :meth:`preprocess`), stopped after the
        last selected layer, without autograd graph."""
        return hooked_taps(self.name, self._layers, self.resolve_blocks(blocks),
                           lambda: self.encoder(**self._model_inputs(x)), lambda index, output: _first(output).float())

    # ------------------------------------------------------------------------------------------- sub-layers

    def _sublayers(self) -> None:
        if not self.has_sublayers:
            raise self._no_sublayers()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input (output of :meth:`preprocess`) -> tokens entering layer 0 ``(B, N, D)``."""
        self._sublayers()
        if self.family == "whisper":
            encoder = self.encoder
            expected = encoder.config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0]
            if x.shape[-1] != expected:
                raise ValueError(f"{self.name}: Whisper expects {expected} mel frames, got {x.shape[-1]}")
            tokens = nn.functional.gelu(encoder.conv1(x))
            tokens = nn.functional.gelu(encoder.conv2(tokens)).permute(0, 2, 1)
            positions = encoder.embed_positions(torch.arange(encoder.embed_positions.num_embeddings,
                                                             device=tokens.device))
            return tokens + positions
        return self.encoder.embeddings(x)

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp_sublayer(index, self.attention_sublayer(index, self.enter_block(index, tokens)))

    def to_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def enter_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        self._sublayers()
        return tokens

    def attention_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` plus layer ``index``'s attention branch (pre-norm)."""
        self._sublayers()
        layer = self._layers[index]
        if self.family == "whisper":
            attended = _first(layer.self_attn(hidden_states=layer.self_attn_layer_norm(tokens), attention_mask=None))
            return tokens + nn.functional.dropout(attended, p=layer.dropout, training=layer.training)
        attended = _first(layer.attention(layer.layernorm_before(tokens)))
        if not self._ast_v4:
            attended = layer.dropout(attended)
        return attended + tokens

    def mlp_sublayer(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` plus layer ``index``'s MLP branch (pre-norm)."""
        self._sublayers()
        layer = self._layers[index]
        if self.family == "whisper":
            hidden = layer.activation_fn(layer.fc1(layer.final_layer_norm(tokens)))
            hidden = nn.functional.dropout(hidden, p=layer.activation_dropout, training=layer.training)
            hidden = nn.functional.dropout(layer.fc2(hidden), p=layer.dropout, training=layer.training)
            out = tokens + hidden
            if out.dtype == torch.float16:           # as WhisperEncoderLayer
                bound = torch.finfo(out.dtype).max - 1000
                out = torch.clamp(out, min=-bound, max=bound)
            return out
        if self._ast_v4:                             # transformers 4: ASTOutput adds the residual itself
            return layer.output(layer.intermediate(layer.layernorm_after(tokens)), tokens)
        return layer.dropout(layer.mlp(layer.layernorm_after(tokens))) + tokens
