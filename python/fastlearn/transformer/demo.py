"""``fastlearn demo transformer``: a character-level GPT trained on the Python standard
library's own source files (present on every machine), reporting validation loss against the
unigram baseline and printing samples."""

from __future__ import annotations

import argparse
import math
import os

import torch


def stdlib_text(max_chars: int = 2_000_000) -> str:
    """Concatenated top-level .py files of the standard library (sorted, so runs agree)."""
    root = os.path.dirname(os.__file__)
    parts, total = [], 0
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        try:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                t = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        t = "".join(c if (32 <= ord(c) < 127 or c == "\n") else "?" for c in t.replace("\t", "    "))
        parts.append(t)
        total += len(t)
        if total >= max_chars:
            break
    return "\n".join(parts)[:max_chars]


def unigram_loss(train: torch.Tensor, val: torch.Tensor, vocab: int) -> float:
    """Cross-entropy (nats/char) on val of the character frequencies of train (add-one smoothed)."""
    counts = torch.bincount(train, minlength=vocab).double() + 1
    logp = torch.log(counts / counts.sum())
    return float(-logp[val].mean())


def transformer(argv: list[str]) -> int:
    """Train a character-level GPT on the stdlib's .py sources; print val loss and samples."""
    from fastlearn.transformer import GPT, GPTConfig, CharTokenizer, train_lm

    ap = argparse.ArgumentParser(prog="fastlearn demo transformer")
    ap.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--chars", type=int, default=1_000_000, help="characters of source text to use")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--embd", type=int, default=96)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--position", default="rotary", choices=["rotary", "learned", "sinusoidal"])
    ap.add_argument("--checkpoint", default=None, help="safetensors file to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (fastlearn.set_num_threads); 1 is fastest for this small model on a busy machine")
    args = ap.parse_args(argv)
    if args.threads:
        import fastlearn

        fastlearn.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    text = stdlib_text(args.chars)
    tok = CharTokenizer.fit(text)
    data = tok.encode(text)
    cut = int(0.9 * len(data))
    train, val = data[:cut], data[cut:]
    base = unigram_loss(train, val, len(tok))
    print(f"text: {len(text):,} chars of {os.path.dirname(os.__file__)}/*.py, vocabulary {len(tok)}")
    print(f"unigram baseline: {base:.3f} nats/char (uniform: {math.log(len(tok)):.3f})")
    cfg = GPTConfig(vocab_size=len(tok), block_size=args.block, n_layer=args.layers, n_head=4, n_embd=args.embd,
                    position=args.position)
    model = GPT(cfg)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, {args.position} positions")
    hist = train_lm(model, train, val, steps=args.steps, batch_size=32, lr=3e-3, eval_every=100,
                    time_limit=args.minutes * 60, checkpoint=args.checkpoint, tokenizer=tok, seed=args.seed)
    val_loss = hist["val_loss"][-1] if hist["val_loss"] else float("nan")
    print(f"trained {hist['step'][-1] if hist['step'] else 0} steps in {hist['seconds']:.0f} s"
          f"{' (interrupted)' if hist['interrupted'] else ''}")
    print(f"validation loss {val_loss:.3f} nats/char vs unigram {base:.3f} ({val_loss / base:.0%} of it)")
    model.eval()
    gen = torch.Generator().manual_seed(args.seed)
    for prompt in ("def ", "class ", "import "):
        out = model.generate(tok.encode(prompt)[None], 200, temperature=0.8, top_k=20, generator=gen)
        print("-" * 60)
        print(tok.decode(out[0]))
    return 0


DEMOS = {"transformer": transformer}
