"""The CUDA batched working-set solver against the CPU solver (needs a GPU and a CUDA build;
skipped otherwise): same accuracy, objective within 1e-3 relative, support vectors within 2%."""

import numpy as np
import pytest
from sklearn import datasets

from fastlearn.svm import SVC

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("n,classes", [(3000, 2), (2000, 3)])
def test_gpu_matches_cpu(n, classes):
    X, y = datasets.make_classification(n_samples=n, n_features=32, n_informative=8, n_classes=classes,
                                        random_state=0)
    cpu = SVC(device="cpu").fit(X, y)
    gpu = SVC(device="cuda").fit(X, y)
    assert gpu.fit_status_ == 0
    assert np.mean(cpu.predict(X) == gpu.predict(X)) >= 0.995
    np.testing.assert_allclose(gpu.dual_objective_, cpu.dual_objective_, rtol=1e-3)
    assert abs(gpu.n_support_.sum() - cpu.n_support_.sum()) <= 0.02 * cpu.n_support_.sum()


def test_gpu_torch_input_and_linear_kernel():
    import torch

    X, y = datasets.make_classification(n_samples=1500, n_features=16, random_state=1)
    cpu = SVC(kernel="linear", device="cpu").fit(X, y)
    gpu = SVC(kernel="linear", device="cuda").fit(torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda())
    pred = gpu.predict(torch.from_numpy(X).cuda())
    assert pred.is_cuda
    assert np.mean(pred.cpu().numpy() == cpu.predict(X)) >= 0.995
