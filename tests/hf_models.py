"""Tiny ``transformers`` audio models saved to folders, for the tests of the ``hf:`` audio backbones.

Each ``save_tiny_*(folder)`` builds a model with random weights (seeded) from a small config, saves it and its
feature extractor with ``save_pretrained`` into ``folder`` (created if needed) and returns ``folder``; a
``HFAudioBackbone(str(folder))`` reads it back without network. Sizes (for 1-s segments at 32 kHz):

* AST (saved as ``ASTForAudioClassification``, like the MIT checkpoints): 16 kHz, 128 frames x 32 mel bins, a
  1-s segment tiled to 20,720 samples; 2 layers, 26 tokens (2 prefix tokens + 2 x 12 patches) of width 32;
* Whisper (saved as ``WhisperForConditionalGeneration``): 16 kHz, 2-s chunks (32,000 samples, 200 frames x
  16 mel bins); 2 encoder layers, 100 tokens of width 32;
* wav2vec2 (``Wav2Vec2Model``): 16 kHz, the segment as is; 2 layers, 200 tokens of width 32;
* CLAP (``ClapModel``, the audio tower is tapped): 48 kHz, 2-s window (96,000 samples), 16 mel bins, a 64x64
  image; 2 Swin stages of 1 block each: 256 tokens of width 8, then 64 tokens of width 16.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["save_tiny_ast", "save_tiny_whisper", "save_tiny_wav2vec2", "save_tiny_clap", "save_tiny_bert",
           "tiny_ast_objects"]


def _save(model, feature_extractor, folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if feature_extractor is not None:
        feature_extractor.save_pretrained(folder)
    return folder


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_ast_objects():
    """``(ASTConfig, ASTFeatureExtractor)`` of the tiny AST."""
    from transformers import ASTConfig, ASTFeatureExtractor

    config = ASTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                       max_length=128, num_mel_bins=32, num_labels=3)
    return config, ASTFeatureExtractor(max_length=128, num_mel_bins=32)


def save_tiny_ast(folder: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import ASTForAudioClassification

    config, feature_extractor = tiny_ast_objects()
    model = _seeded(lambda: ASTForAudioClassification(config), seed)
    with torch.no_grad():            # AST initialises its prefix tokens and positions to zero: make them count
        embeddings = model.audio_spectrogram_transformer.embeddings
        for parameter in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
            parameter.normal_(generator=torch.Generator().manual_seed(seed + 1), std=0.5)
    return _save(model, feature_extractor, folder)


def save_tiny_whisper(folder: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                           max_source_positions=100, max_target_positions=16, vocab_size=64, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=3, suppress_tokens=None,
                           begin_suppress_tokens=None)
    model = _seeded(lambda: WhisperForConditionalGeneration(config), seed)
    return _save(model, WhisperFeatureExtractor(feature_size=16, chunk_length=2), folder)


def save_tiny_wav2vec2(folder: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, vocab_size=16)
    model = _seeded(lambda: Wav2Vec2Model(config), seed)
    return _save(model, Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000), folder)


def save_tiny_clap(folder: str | os.PathLike, seed: int = 0) -> Path:
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    audio = ClapAudioConfig(num_mel_bins=16, spec_size=64, patch_embeds_hidden_size=8, depths=[1, 1],
                            num_attention_heads=[1, 2], window_size=4, hidden_size=16, projection_dim=8,
                            num_hidden_layers=2, num_classes=5)
    text = ClapTextConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=40, projection_dim=8)
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)
    model = _seeded(lambda: ClapModel(config), seed)
    return _save(model, ClapFeatureExtractor(feature_size=16, max_length_s=2, truncation="rand_trunc"), folder)


def save_tiny_bert(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A text model (no feature extractor): what the ``hf:`` audio backbones must refuse."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return _save(_seeded(lambda: BertModel(config), seed), None, folder)
