"""Encoder and decoder networks shared by the Autoencoder, the VAE and the GAN: MLPs, and small
convolutional stacks for images given as flat rows (n, height*width)."""

from __future__ import annotations

import math

import torch
from torch import nn


def infer_image_shape(n_features: int, image_shape) -> tuple[int, int]:
    """(height, width) of flat rows of ``n_features`` pixels; square when not given."""
    if image_shape is not None:
        h, w = (int(s) for s in image_shape)
        if h * w != n_features:
            raise ValueError(f"image_shape={tuple(image_shape)} holds {h * w} pixels but X has {n_features} "
                             "features; pass image_shape=(height, width) with height*width == n_features.")
        return h, w
    side = math.isqrt(n_features)
    if side * side != n_features:
        raise ValueError(f"architecture='conv' needs images: {n_features} features is not a square; pass "
                         "image_shape=(height, width) or use architecture='mlp'.")
    return side, side


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.2), "tanh": nn.Tanh(), "silu": nn.SiLU()}[name]


def mlp(sizes: list[int], activation: str = "relu", norm: bool = False) -> nn.Sequential:
    """Linear layers sizes[0] -> ... -> sizes[-1], activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if norm:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(_act(activation))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """(n, h*w) -> stride-2 3x3 convolutions -> flatten -> Linear -> (n, out_dim)."""

    def __init__(self, image_shape, channels, out_dim, activation="relu", norm=False):
        super().__init__()
        self.image_shape = tuple(image_shape)
        h, w = self.image_shape
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(c_in, c, 3, stride=2, padding=1))
            if norm and i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(_act(activation))
            c_in = c
            h, w = (h + 1) // 2, (w + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * h * w, out_dim)

    def forward(self, x):  # x: n x (h*w)
        x = x.reshape(x.shape[0], 1, *self.image_shape)  # n x 1 x h x w
        return self.head(self.convs(x).flatten(1))       # n x out_dim


class ConvDecoder(nn.Module):
    """(n, latent) -> Linear -> stride-2 4x4 transposed convolutions -> crop -> (n, h*w)."""

    def __init__(self, image_shape, channels, in_dim, activation="relu", norm=False):
        super().__init__()
        self.image_shape = tuple(image_shape)
        h, w = self.image_shape
        for _ in channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        self.start = (channels[-1], h, w)
        self.head = nn.Linear(in_dim, channels[-1] * h * w)
        self.head_act = nn.Sequential(*([nn.BatchNorm1d(channels[-1] * h * w)] if norm else []), _act(activation))
        layers: list[nn.Module] = []
        rev = list(channels[::-1]) + [1]
        for i in range(len(channels)):
            layers.append(nn.ConvTranspose2d(rev[i], rev[i + 1], 4, stride=2, padding=1))
            if i < len(channels) - 1:
                if norm:
                    layers.append(nn.BatchNorm2d(rev[i + 1]))
                layers.append(_act(activation))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z):  # z: n x in_dim
        x = self.head_act(self.head(z)).reshape(z.shape[0], *self.start)  # n x C x h0 x w0
        x = self.deconvs(x)                                               # n x 1 x >=h x >=w
        h, w = self.image_shape
        return x[:, 0, :h, :w].reshape(z.shape[0], h * w)                # n x (h*w)


def build_encoder(architecture, n_features, out_dim, hidden_layer_sizes, conv_channels, image_shape,
                  activation="relu", norm=False) -> nn.Module:
    if architecture == "mlp":
        return mlp([n_features, *hidden_layer_sizes, out_dim], activation, norm)
    return ConvEncoder(image_shape, conv_channels, out_dim, activation, norm)


def build_decoder(architecture, in_dim, n_features, hidden_layer_sizes, conv_channels, image_shape,
                  activation="relu", norm=False) -> nn.Module:
    if architecture == "mlp":
        return mlp([in_dim, *reversed(hidden_layer_sizes), n_features], activation, norm)
    return ConvDecoder(image_shape, conv_channels, in_dim, activation, norm)


def check_layer_sizes(name, sizes):
    sizes = tuple(sizes)
    if any(isinstance(s, bool) or not isinstance(s, (int,)) and not hasattr(s, "__index__") or int(s) < 1
           for s in sizes):
        raise ValueError(f"{name} must be a sequence of positive ints, got {sizes!r}.")
    return tuple(int(s) for s in sizes)
