"""The Transformer on fastlearn's fused attention: a drop-in ``MultiheadAttention``, encoder and
decoder layers (pre- and post-norm), sinusoidal / learned / rotary positions, and a small
GPT-style causal language model with a training loop and sampling."""

from fastlearn.transformer.attention import MultiheadAttention
from fastlearn.transformer.gpt import GPT, GPTConfig
from fastlearn.transformer.layers import TransformerDecoderLayer, TransformerEncoderLayer
from fastlearn.transformer.positional import (LearnedPositionalEmbedding, RotaryEmbedding,
                                              SinusoidalPositionalEncoding)
from fastlearn.transformer.train import CharTokenizer, load_checkpoint, save_checkpoint, train_lm

__all__ = [
    "MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer", "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding", "RotaryEmbedding", "GPT", "GPTConfig", "CharTokenizer", "train_lm",
    "save_checkpoint", "load_checkpoint",
]
