"""The small, local training loop of the language model (the general trainer lives in
fastlearn.nn): random windows of a token stream, AdamW, periodic validation loss, a tqdm bar,
Ctrl-C stops cleanly, and checkpoints in safetensors with the config and vocabulary as JSON
metadata (no pickle)."""

from __future__ import annotations

import json
import math
import time

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from fastlearn.transformer.gpt import GPT, GPTConfig


class CharTokenizer:
    """Characters <-> ids over a fixed vocabulary; unknown characters map to the first id."""

    def __init__(self, chars):
        self.chars = list(chars)
        if len(self.chars) < 2 or len(set(self.chars)) != len(self.chars):
            raise ValueError("CharTokenizer: the vocabulary needs at least 2 distinct characters.")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, text: str):
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def save_checkpoint(path, model: GPT, tokenizer: CharTokenizer | None = None, extra: dict | None = None):
    meta = {"config": json.dumps(model.config.to_dict())}
    if tokenizer is not None:
        meta["vocab"] = json.dumps(tokenizer.chars)
    if extra:
        meta["extra"] = json.dumps(extra)
    save_model(model, str(path), metadata=meta)


def load_checkpoint(path):
    """(model, tokenizer or None, extra dict) from a file written by save_checkpoint."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"load_checkpoint: {path} has no fastlearn GPT config in its metadata.")
    model = GPT(GPTConfig(**json.loads(meta["config"])))
    load_model(model, str(path))
    tok = CharTokenizer(json.loads(meta["vocab"])) if "vocab" in meta else None
    return model, tok, json.loads(meta.get("extra", "{}"))


def _batch(data, block, batch, gen):
    ix = torch.randint(0, len(data) - block - 1, (batch,), generator=gen)
    x = torch.stack([data[i:i + block] for i in ix.tolist()])
    y = torch.stack([data[i + 1:i + 1 + block] for i in ix.tolist()])
    return x, y


@torch.no_grad()
def evaluate(model: GPT, data: torch.Tensor, batch_size: int = 16, batches: int = 8, seed: int = 1234) -> float:
    """Mean cross-entropy (nats per token) on fixed random windows of ``data``."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    block = model.config.block_size
    losses = [model(*_batch(data, block, batch_size, gen))[1].item() for _ in range(batches)]
    model.train(was)
    return sum(losses) / len(losses)


def train_lm(model: GPT, train_data: torch.Tensor, val_data: torch.Tensor, steps: int = 1000, batch_size: int = 32,
             lr: float = 3e-3, weight_decay: float = 0.01, eval_every: int = 100, time_limit: float | None = None,
             checkpoint: str | None = None, tokenizer: CharTokenizer | None = None, progress: bool = True,
             seed: int = 0) -> dict:
    """Train ``model`` on next-token prediction; returns {"step": [...], "val_loss": [...], ...}.

    Stops after ``steps`` steps, ``time_limit`` seconds, or Ctrl-C (the run so far is kept and
    checkpointed). Learning rate: linear warm-up then cosine decay to lr/10.
    """
    from tqdm.auto import tqdm

    block = model.config.block_size
    for name, d in (("train_data", train_data), ("val_data", val_data)):
        if d.dim() != 1 or len(d) <= block + 1:
            raise ValueError(f"train_lm: {name} must be a 1-d token tensor longer than block_size + 1 ({block + 1}).")
    if steps <= 0 or batch_size <= 0 or not (lr > 0 and math.isfinite(lr)):
        raise ValueError("train_lm: steps, batch_size and lr must be positive.")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    warm = max(1, steps // 20)
    hist = {"step": [], "val_loss": [], "train_loss": [], "interrupted": False, "seconds": 0.0}
    start = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="train", unit="step")
    running = None
    model.train()
    try:
        for step in bar:
            f = (step + 1) / warm if step < warm else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
            for g in opt.param_groups:
                g["lr"] = lr * f
            x, y = _batch(train_data, block, batch_size, gen)
            _, loss = model(x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train_lm: the loss became {loss.item()} at step {step}; lower lr.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            last = step == steps - 1 or (time_limit is not None and time.perf_counter() - start > time_limit)
            if (step + 1) % eval_every == 0 or last:
                val = evaluate(model, val_data)
                hist["step"].append(step + 1)
                hist["val_loss"].append(val)
                hist["train_loss"].append(running)
                bar.set_postfix(train=f"{running:.3f}", val=f"{val:.3f}")
                if checkpoint:
                    save_checkpoint(checkpoint, model, tokenizer, {"step": step + 1, "val_loss": val})
            if last:
                break
    except KeyboardInterrupt:
        hist["interrupted"] = True
        if checkpoint:
            save_checkpoint(checkpoint, model, tokenizer, {"interrupted": True})
    finally:
        bar.close()
    hist["seconds"] = time.perf_counter() - start
    return hist
