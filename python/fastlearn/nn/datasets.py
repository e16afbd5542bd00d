"""Small data for the generative models' demos and tests: digits in [0, 1], letter-like 8x8
shapes (anomalies for a digit VAE), and the two-mode 1-D target of the GAN picture."""

from __future__ import annotations

import numpy as np

from fastlearn.nn.judge import load_digit_images

__all__ = ["load_digit_images", "letter_images", "two_mode_1d", "two_mode_density"]

# 7 rows x 5 columns, letters whose shapes no digit shares
_LETTERS = {
    "A": [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "E": ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
    "F": ["#####", "#....", "#....", "####.", "#....", "#....", "#...."],
    "H": ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "K": ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
    "M": ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"],
    "N": ["#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"],
    "W": ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "##.##", "#...#"],
    "X": ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"],
    "Y": ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."],
}


def letter_images(n: int, random_state=None, letters: str = "AEFHKMNWXY") -> np.ndarray:
    """n letter-like 8x8 images as rows of 64 pixels in [0, 1]: a 7x5 glyph at a random offset,
    random stroke intensity, lightly blurred like the digits' downsampling."""
    rng = np.random.default_rng(random_state)
    glyphs = [np.array([[c == "#" for c in row] for row in _LETTERS[ch]], dtype=np.float64) for ch in letters]
    out = np.zeros((n, 8, 8))
    for i in range(n):
        g = glyphs[rng.integers(len(glyphs))]
        top, left = rng.integers(0, 2), rng.integers(0, 4)
        img = np.zeros((8, 8))
        img[top:top + 7, left:left + 5] = g * rng.uniform(0.7, 1.0)
        # 3x3 box blur with a heavy centre, as downsampled strokes look
        pad = np.pad(img, 1)
        blur = sum(pad[1 + dy:9 + dy, 1 + dx:9 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        out[i] = np.clip(0.6 * img + 0.4 * blur / 9 * 2.5, 0, 1)
    return out.reshape(n, 64).astype(np.float32)


def two_mode_1d(n: int, random_state=None, centers=(-2.0, 2.0), scale: float = 0.4) -> np.ndarray:
    """n draws from the equal mixture of N(centers[0], scale^2) and N(centers[1], scale^2), (n, 1)."""
    rng = np.random.default_rng(random_state)
    which = rng.integers(0, len(centers), size=n)
    return (np.asarray(centers)[which] + scale * rng.standard_normal(n)).reshape(n, 1).astype(np.float32)


def two_mode_density(x, centers=(-2.0, 2.0), scale: float = 0.4) -> np.ndarray:
    """The density of ``two_mode_1d`` at points x."""
    x = np.asarray(x, dtype=np.float64)[..., None]
    c = np.asarray(centers, dtype=np.float64)
    return np.mean(np.exp(-0.5 * ((x - c) / scale) ** 2) / (scale * np.sqrt(2 * np.pi)), axis=-1)
