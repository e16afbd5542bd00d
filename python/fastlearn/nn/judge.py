"""An offline judge for generated 8x8 digits (scikit-learn's digits, pixels scaled to [0, 1]).

A small MLP classifier, trained on the fly in seconds with a fixed seed (no downloads) on the ten
digits plus an eleventh class "not a digit" (uniform noise and pixel-shuffled digits, so that
noise is not confidently called a digit), scores a set of generated images by its confidence, its accuracy when the intended labels are known, the
class histogram (mode collapse shows as low entropy) and the Fréchet distance between its
penultimate features of the generated set and of real digits. Every score comes with two bounds
computed the same way on the same number of images: real held-out digits (what a perfect
generator would get) and uniform noise (what a useless one would get).

    from fastlearn.nn.judge import default_judge
    report = default_judge().evaluate(images)        # images: n x 64 in [0, 1]
    print(report)                                    # a table of generated / real / noise
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fastlearn.nn.training import Trainer

NOT_A_DIGIT = 10

__all__ = ["NOT_A_DIGIT", "DigitJudge", "JudgeReport", "default_judge", "frechet_distance", "load_digit_images"]


def load_digit_images(random_state: int = 0, test_size: float = 0.3):
    """scikit-learn's digits as (X_train, X_test, y_train, y_test), pixels scaled to [0, 1]
    (divided by 16), float32, split by a fixed seed (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    return train_test_split(X, d.target.astype(np.int64), test_size=test_size, random_state=random_state,
                            stratify=d.target)


def frechet_distance(features_a, features_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) between Gaussians fitted to two
    feature sets (rows are samples), in float64. The trace of the matrix square root is
    computed as sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2})), a symmetric PSD matrix with the same
    eigenvalues as S_a S_b, which avoids the complex round-off of a general sqrtm."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be 2-D with the same number of columns, got {a.shape} and {b.shape}.")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples in each set (for a covariance).")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt_a @ s_b @ sqrt_a
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_sqrt)


def _not_digits(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Examples of the "not a digit" class: uniform noise, and real digits with their pixels
    shuffled (same intensities, no strokes)."""
    noise = rng.uniform(0.0, 1.0, size=(n - n // 2, X.shape[1]))
    rows = X[rng.integers(0, len(X), size=n // 2)]
    shuffled = np.take_along_axis(rows, rng.permuted(np.tile(np.arange(X.shape[1]), (n // 2, 1)), axis=1), axis=1)
    return np.concatenate([noise, shuffled]).astype(np.float32)


class _JudgeNet(nn.Module):
    """64 -> 128 -> 64 (features) -> 11 logits (digits 0..9 and "not a digit")."""

    def __init__(self, n_features=64, hidden=128, n_features_out=64, n_classes=11):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_features_out), nn.ReLU())
        self.head = nn.Linear(n_features_out, n_classes)

    def forward(self, x):
        return self.head(self.body(x))

    def loss(self, x, y):
        return nn.functional.cross_entropy(self(x), y)


@dataclass
class JudgeReport:
    """Scores of one generated set with their real / noise bounds (same n, same computation)."""

    n_samples: int
    scores: dict = field(default_factory=dict)  # name -> {"generated": v, "real": v, "noise": v}
    class_histogram: list = field(default_factory=list)

    def __getitem__(self, name):
        return self.scores[name]

    def to_dict(self) -> dict:
        return {"n_samples": self.n_samples, "scores": self.scores, "class_histogram": self.class_histogram}

    def __str__(self) -> str:
        lines = [f"digit judge on {self.n_samples} images     generated       real      noise"]
        for name, v in self.scores.items():
            lines.append(f"  {name:28s} {v['generated']:10.4g} {v['real']:10.4g} {v['noise']:10.4g}")
        lines.append(f"  predicted classes 0..9, not-a-digit: {self.class_histogram}")
        return "\n".join(lines)


class DigitJudge:
    """A digit classifier and its feature space, with bounded scores for generated digits.

    Build with ``DigitJudge(random_state=0).fit()`` or take the cached ``default_judge()``.
    Inputs are n x 64 arrays or tensors of 8x8 images with pixels in [0, 1] (values outside are
    clipped, so slightly out-of-range generator outputs are judged as the nearest valid image).
    """

    confident_threshold = 0.9

    def __init__(self, random_state: int = 0, epochs: int = 40):
        self.random_state = random_state
        self.epochs = epochs

    def fit(self):
        """Train the classifier on the training split of the digits (a few seconds on one core)."""
        X_tr, X_te, y_tr, y_te = load_digit_images(self.random_state)
        rng = np.random.default_rng(self.random_state)
        n_other = len(X_tr) // 10  # as many "not a digit" examples as a digit class has
        X_fit = np.concatenate([X_tr, _not_digits(X_tr, n_other, rng)])
        y_fit = np.concatenate([y_tr, np.full(n_other, NOT_A_DIGIT, dtype=np.int64)])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.net_ = _JudgeNet()
        Trainer(epochs=self.epochs, batch_size=128, learning_rate=3e-3, weight_decay=1e-4, validation_fraction=0.0,
                seed=self.random_state, device="cpu").fit(self.net_, torch.from_numpy(X_fit), torch.from_numpy(y_fit))
        self.net_.eval()
        self.X_train_, self.X_test_, self.y_test_ = X_tr, X_te, y_te
        self.accuracy_ = float((self.predict(X_te) == y_te).mean())
        self._ref_features = self.features(X_tr)
        return self

    # -- the classifier -----------------------------------------------------------------------
    def _input(self, X) -> torch.Tensor:
        if not hasattr(self, "net_"):
            raise RuntimeError("this DigitJudge is not trained yet; call fit() or use default_judge().")
        t = X.detach().cpu().float() if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X, dtype=np.float32))
        if t.ndim == 3 and t.shape[1:] == (8, 8):
            t = t.reshape(t.shape[0], 64)
        if t.ndim != 2 or t.shape[1] != 64:
            raise ValueError(f"the digit judge takes 8x8 images as rows of 64 pixels (n x 64 or n x 8 x 8), got shape "
                             f"{tuple(t.shape)}.")
        if t.shape[0] == 0:
            raise ValueError("the digit judge got 0 images.")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("the images contain NaN or infinity; a generator producing these has diverged.")
        return t.clamp(0.0, 1.0)

    @torch.no_grad()
    def features(self, X) -> np.ndarray:
        """Penultimate-layer features (n x 64), the space of the Fréchet distance."""
        x = self._input(X)
        return self.net_.body(x).double().numpy()

    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        """n x 11 probabilities: digits 0..9, then "not a digit" (column ``NOT_A_DIGIT``)."""
        x = self._input(X)
        return torch.softmax(self.net_(x), dim=-1).double().numpy()

    def predict(self, X) -> np.ndarray:
        """0..9, or NOT_A_DIGIT (10)."""
        return self.predict_proba(X).argmax(1)

    # -- scores -------------------------------------------------------------------------------
    def frechet_distance(self, X, reference=None) -> float:
        """Fréchet distance between the judge's features of X and of ``reference`` images
        (default: the judge's training digits)."""
        ref = self._ref_features if reference is None else self.features(reference)
        return frechet_distance(self.features(X), ref)

    def _scores(self, X, labels):
        p = self.predict_proba(X)
        pred, conf = p.argmax(1), p.max(1)
        is_digit = pred != NOT_A_DIGIT
        hist = np.bincount(pred, minlength=11)
        freq = hist[:10] / max(1, hist[:10].sum())
        out = {
            "digit confidence": float(p[:, :10].max(1).mean()),
            "not-a-digit fraction": float((~is_digit).mean()),
            f"recognised (p>={self.confident_threshold})": float((is_digit & (conf >= self.confident_threshold)).mean()),
            "class entropy (nats)": float(-np.sum(freq[freq > 0] * np.log(freq[freq > 0]))) + 0.0,
            "frechet distance": self.frechet_distance(X),
        }
        if labels is not None:
            out["accuracy"] = float((p.argmax(1) == labels).mean())
        return out, hist

    def evaluate(self, X, labels=None, random_state: int = 0) -> JudgeReport:
        """Score generated images X (n x 64 in [0, 1]) beside real held-out digits and uniform
        noise of the same number n (the real set is the held-out split, drawn with replacement
        when n exceeds it). ``labels``: the classes the images were meant to show, if known."""
        x = self._input(X)
        n = x.shape[0]
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if labels.shape[0] != n:
                raise ValueError(f"labels has {labels.shape[0]} entries for {n} images.")
        rng = np.random.default_rng(random_state)
        idx = rng.choice(len(self.X_test_), size=n, replace=n > len(self.X_test_))
        noise = rng.uniform(0.0, 1.0, size=(n, 64)).astype(np.float32)
        noise_labels = rng.integers(0, 10, size=n) if labels is not None else None
        gen, hist = self._scores(x, labels)
        real, _ = self._scores(self.X_test_[idx], self.y_test_[idx] if labels is not None else None)
        rand, _ = self._scores(noise, noise_labels)
        scores = {k: {"generated": gen[k], "real": real[k], "noise": rand[k]} for k in gen}
        return JudgeReport(n_samples=n, scores=scores, class_histogram=hist.tolist())


@functools.lru_cache(maxsize=4)
def default_judge(random_state: int = 0) -> DigitJudge:
    """The judge trained with a fixed seed, built once per process (a few seconds)."""
    return DigitJudge(random_state=random_state).fit()
