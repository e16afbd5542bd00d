"""Autoencoder: a linear autoencoder reaches PCA's reconstruction error (Eckart-Young), error
falls with latent size on held-out digits, conv and MLP shapes, tensors in/out, save/load,
scikit-learn's estimator checks, and bad input."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from fastlearn.nn import Autoencoder


def test_linear_autoencoder_reaches_pca_error():
    rng = np.random.default_rng(0)
    # 10-D data with 3 strong directions
    X = (rng.standard_normal((300, 3)) @ rng.standard_normal((3, 10)) * 2
         + 0.3 * rng.standard_normal((300, 10))).astype(np.float32)
    ae = Autoencoder(3, hidden_layer_sizes=(), epochs=400, batch_size=300, learning_rate=2e-2,
                     validation_fraction=0.0, random_state=0).fit(X)
    pca = PCA(3).fit(X.astype(np.float64))
    pca_err = np.mean((pca.inverse_transform(pca.transform(X.astype(np.float64))) - X) ** 2)
    ae_err = float(np.mean(ae.reconstruction_error(X)))
    # PCA is the optimum of any rank-3 linear map; a trained linear AE gets within 5% of it
    assert pca_err * (1 - 1e-3) <= ae_err <= 1.05 * pca_err


def test_error_falls_with_latent_size(digits):
    X_tr, X_te, _, _ = digits
    errs = [float(Autoencoder(k, epochs=25, random_state=0).fit(X_tr).reconstruction_error(X_te).mean())
            for k in (2, 16)]
    assert errs[1] < 0.6 * errs[0]
    # and both beat predicting the mean image
    assert errs[0] < np.mean((X_te - X_tr.mean(0)) ** 2)


def test_shapes_types_and_conv(digits):
    X_tr, X_te, _, _ = digits
    ae = Autoencoder(4, architecture="conv", epochs=2, random_state=0).fit(X_tr[:200])
    Z = ae.transform(X_te[:7])
    assert Z.shape == (7, 4) and Z.dtype == np.float32
    R = ae.inverse_transform(Z)
    assert R.shape == (7, 64)
    # float64 in -> float64 out; tensors in -> tensors out with the same values
    Z64 = ae.transform(X_te[:7].astype(np.float64))
    assert Z64.dtype == np.float64
    Zt = ae.transform(torch.from_numpy(X_te[:7]))
    assert isinstance(Zt, torch.Tensor)
    np.testing.assert_allclose(Zt.numpy(), Z, rtol=1e-6, atol=1e-6)
    # reconstruction_error is the per-row mean squared error of decode(encode(x))
    np.testing.assert_allclose(ae.reconstruction_error(X_te[:7]),
                               np.mean((R.astype(np.float64) - X_te[:7]) ** 2, axis=1), rtol=1e-5, atol=1e-7)
    assert ae.score(X_te[:7]) == pytest.approx(-np.mean(ae.reconstruction_error(X_te[:7])))


def test_conv_non_square_images():
    X = np.random.default_rng(0).uniform(size=(40, 6 * 10)).astype(np.float32)
    ae = Autoencoder(3, architecture="conv", image_shape=(6, 10), epochs=2, random_state=0).fit(X)
    assert ae.inverse_transform(ae.transform(X)).shape == (40, 60)
    with pytest.raises(ValueError, match="not a square"):
        Autoencoder(3, architecture="conv", epochs=1).fit(X)
    with pytest.raises(ValueError, match="image_shape"):
        Autoencoder(3, architecture="conv", image_shape=(5, 10), epochs=1).fit(X)


def test_save_load_exact(tmp_path, digits):
    X_tr, X_te, _, _ = digits
    ae = Autoencoder(5, architecture="conv", epochs=3, random_state=0).fit(X_tr[:300])
    ae.save(tmp_path / "ae.safetensors")
    ae2 = Autoencoder.load(tmp_path / "ae.safetensors", device="cpu")
    assert ae2.get_params()["conv_channels"] == ae.get_params()["conv_channels"]
    assert np.array_equal(ae.transform(X_te), ae2.transform(X_te))
    assert np.array_equal(ae.reconstruction_error(X_te), ae2.reconstruction_error(X_te))
    assert ae2.n_iter_ == ae.n_iter_ and ae2.loss_curve_ == ae.loss_curve_
    from fastlearn.nn import VAE

    with pytest.raises(ValueError, match="holds a 'Autoencoder'"):
        VAE.load(tmp_path / "ae.safetensors")


def test_module_works_in_a_plain_loop(digits):
    X_tr = torch.from_numpy(digits[0][:256])
    ae = Autoencoder(4, epochs=1, random_state=0).fit(X_tr.numpy())
    module = ae.module_
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    before = module.loss(X_tr).item()
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(module(X_tr), X_tr)
        loss.backward()
        opt.step()
    assert module.loss(X_tr).item() < before


def test_bad_input(digits):
    X_tr = digits[0][:50]
    with pytest.raises(NotFittedError):
        Autoencoder().transform(X_tr)
    bad = X_tr.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Autoencoder(epochs=1).fit(bad)
    with pytest.raises(ValueError, match="latent_dim"):
        Autoencoder(0).fit(X_tr)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        Autoencoder(2, hidden_layer_sizes=(4, 0), epochs=1).fit(X_tr)
    ae = Autoencoder(2, epochs=1, random_state=0).fit(X_tr)
    with pytest.raises(ValueError, match="features"):
        ae.transform(X_tr[:, :10])
    with pytest.raises(ValueError, match=r"shape \(n_samples, 2\)"):
        ae.inverse_transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="empty|0 sample"):
        Autoencoder(epochs=1).fit(np.zeros((0, 4)))


def test_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(Autoencoder(2, hidden_layer_sizes=(8,), epochs=2, random_state=0), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []
