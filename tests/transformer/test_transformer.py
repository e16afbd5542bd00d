"""fastlearn.transformer against PyTorch's modules (same state_dict, same outputs), the
position encodings against closed forms, and the language model: learns below the unigram
baseline, checkpoints round-trip without pickle, sampling is reproducible."""

import math

import pytest
import torch
from torch import nn

from fastlearn.transformer import (GPT, CharTokenizer, GPTConfig, LearnedPositionalEmbedding, MultiheadAttention,
                                   RotaryEmbedding, SinusoidalPositionalEncoding, TransformerDecoderLayer,
                                   TransformerEncoderLayer, load_checkpoint, save_checkpoint, train_lm)
from fastlearn.transformer.demo import stdlib_text, unigram_loss


def _pair(ours, theirs):
    theirs.load_state_dict(ours.state_dict())
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_matches_torch(batch_first):
    torch.manual_seed(0)
    ours, ref = _pair(MultiheadAttention(16, 4, batch_first=batch_first),
                      nn.MultiheadAttention(16, 4, batch_first=batch_first))
    N, L, S = 3, 5, 7
    shape = (lambda n: (N, n, 16)) if batch_first else (lambda n: (n, N, 16))
    q, k, v = torch.randn(shape(L)), torch.randn(shape(S)), torch.randn(shape(S))
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[0, -2:] = True
    am = torch.randn(L, S)
    for kwargs in ({}, {"key_padding_mask": kpm}, {"attn_mask": am}, {"attn_mask": am > 1.5, "key_padding_mask": kpm}):
        for need in (False, True):
            a, wa = ours(q, k, v, need_weights=need, **kwargs)
            b, wb = ref(q, k, v, need_weights=need, **kwargs)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            if need:
                torch.testing.assert_close(wa, wb, rtol=1e-5, atol=1e-6)
    # unbatched input and kdim/vdim != embed_dim
    ours, ref = _pair(MultiheadAttention(16, 2, kdim=6, vdim=10), nn.MultiheadAttention(16, 2, kdim=6, vdim=10))
    x, kk, vv = torch.randn(5, 16), torch.randn(7, 6), torch.randn(7, 10)
    torch.testing.assert_close(ours(x, kk, vv)[0], ref(x, kk, vv)[0], rtol=1e-5, atol=1e-5)


def test_multihead_attention_refusals():
    with pytest.raises(ValueError, match="multiple"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiheadAttention(8, 2, add_bias_kv=True)
    m = MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match="attn_mask"):
        m(torch.randn(4, 1, 8), torch.randn(4, 1, 8), torch.randn(4, 1, 8), attn_mask=torch.zeros(3, 4))


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_and_decoder_layers_match_torch(norm_first):
    torch.manual_seed(1)
    kw = dict(dim_feedforward=32, dropout=0.1, batch_first=True, norm_first=norm_first)
    enc, enc_ref = _pair(TransformerEncoderLayer(16, 4, **kw), nn.TransformerEncoderLayer(16, 4, **kw))
    dec, dec_ref = _pair(TransformerDecoderLayer(16, 4, activation="gelu", **kw),
                         nn.TransformerDecoderLayer(16, 4, activation="gelu", **kw))
    src, tgt = torch.randn(2, 9, 16), torch.randn(2, 6, 16)
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, -3:] = True
    torch.testing.assert_close(enc(src, src_key_padding_mask=pad), enc_ref(src, src_key_padding_mask=pad),
                               rtol=1e-5, atol=1e-5)
    mem = enc(src)
    torch.testing.assert_close(dec(tgt, mem, tgt_mask=causal, memory_key_padding_mask=pad),
                               dec_ref(tgt, mem, tgt_mask=causal, memory_key_padding_mask=pad), rtol=1e-5, atol=1e-5)
    # is_causal without a mask applies the causal mask
    torch.testing.assert_close(enc(src[:, :6], is_causal=True), enc_ref(src[:, :6], src_mask=causal), rtol=1e-5,
                               atol=1e-5)


def test_position_encodings_closed_forms():
    pe = SinusoidalPositionalEncoding(8, max_len=50)
    x = torch.zeros(1, 50, 8)
    y = pe(x)[0]
    pos, i = 37, 2
    assert abs(y[pos, 2 * i].item() - math.sin(pos / 10000 ** (2 * i / 8))) < 1e-6
    assert abs(y[pos, 2 * i + 1].item() - math.cos(pos / 10000 ** (2 * i / 8))) < 1e-6
    learned = LearnedPositionalEmbedding(8, 10)
    torch.testing.assert_close(learned(x[:, :10]), learned.weight[None].detach() + 0, check_dtype=False)
    # Rotary: norms are kept and q_m . k_n depends only on m - n.
    rot = RotaryEmbedding(8, 64)
    q, k = torch.randn(8), torch.randn(8)
    qs = rot(q.expand(1, 1, 64, 8).contiguous())[0, 0]
    ks = rot(k.expand(1, 1, 64, 8).contiguous())[0, 0]
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(64), rtol=1e-5, atol=1e-5)
    assert abs((qs[10] @ ks[3]).item() - (qs[30] @ ks[23]).item()) < 1e-4
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="max_len"):
        pe(torch.zeros(1, 51, 8))


@pytest.fixture
def one_thread():
    # Tiny problems: one thread avoids OpenMP contention on a shared CI machine.
    import fastlearn

    before = fastlearn.get_num_threads()
    fastlearn.set_num_threads(1)
    yield
    fastlearn.set_num_threads(before)


def test_gpt_learns_below_unigram_and_checkpoints(tmp_path, one_thread):
    torch.manual_seed(0)
    text = stdlib_text(60_000)
    tok = CharTokenizer.fit(text)
    data = tok.encode(text)
    train, val = data[:54_000], data[54_000:]
    base = unigram_loss(train, val, len(tok))
    model = GPT(GPTConfig(vocab_size=len(tok), block_size=32, n_layer=1, n_head=2, n_embd=48, position="rotary"))
    path = tmp_path / "lm.safetensors"
    hist = train_lm(model, train, val, steps=120, batch_size=16, lr=1e-2, eval_every=120, checkpoint=str(path),
                    tokenizer=tok, progress=False)
    assert hist["val_loss"][-1] < base - 0.3, (hist["val_loss"], base)
    loaded, tok2, extra = load_checkpoint(path)
    assert tok2.chars == tok.chars and extra["step"] == 120
    x = val[:32][None]
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    a = model.generate(x[:, :4], 10, generator=torch.Generator().manual_seed(3))
    b = loaded.generate(x[:, :4], 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (1, 14)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_gpt_positions_and_errors(position):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, position=position))
    logits, loss = model(torch.randint(0, 11, (2, 8)), torch.randint(0, 11, (2, 8)))
    assert logits.shape == (2, 8, 11) and abs(loss.item() - math.log(11)) < 0.5
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="position"):
        GPTConfig(vocab_size=11, position="alibi").validate()
    with pytest.raises(ValueError, match="longer"):
        train_lm(model, torch.zeros(5, dtype=torch.long), torch.zeros(50, dtype=torch.long), progress=False)
