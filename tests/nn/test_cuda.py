"""GPU paths of the nn models (skipped without a GPU): device="cuda", tensors on the GPU in and
out, bf16 autocast in the Trainer, and agreement with the CPU fit's quality."""

import numpy as np
import pytest
import torch

from fastlearn.nn import GAN, VAE, Autoencoder

pytestmark = pytest.mark.cuda


def test_autoencoder_cuda_tensors(digits):
    X_tr, X_te, _, _ = digits
    ae = Autoencoder(8, epochs=20, random_state=0, device="cuda").fit(torch.from_numpy(X_tr).cuda())
    Z = ae.transform(torch.from_numpy(X_te).cuda())
    assert Z.is_cuda and Z.shape == (len(X_te), 8)
    err_gpu = float(ae.reconstruction_error(X_te).mean())
    err_cpu = float(Autoencoder(8, epochs=20, random_state=0, device="cpu").fit(X_tr).reconstruction_error(X_te).mean())
    assert err_gpu < 1.3 * err_cpu  # mixed precision does not cost accuracy


def test_vae_and_gan_cuda(digits, tmp_path):
    X_tr, X_te, _, _ = digits
    vae = VAE(8, epochs=10, random_state=0, device="cuda").fit(X_tr)
    assert np.isfinite(vae.score(X_te))
    vae.save(tmp_path / "v.safetensors")
    v2 = VAE.load(tmp_path / "v.safetensors", device="cpu")
    np.testing.assert_allclose(v2.transform(X_te), vae.transform(X_te), rtol=1e-4, atol=1e-5)
    gan = GAN(8, epochs=3, random_state=0, device="cuda").fit(X_tr)
    S, _ = gan.sample(10, random_state=0)
    assert S.shape == (10, 64) and np.isfinite(S).all()
