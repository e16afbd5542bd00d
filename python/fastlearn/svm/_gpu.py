"""The GPU path of SVC: each one-vs-one pair is solved by the CUDA batched working-set SMO
(kernels/cuda/svm/smo.cu) on torch CUDA tensors; rho and the objective follow LIBSVM's
formulas, computed on the GPU from the solver's final alpha and gradient."""

from __future__ import annotations

import numpy as np
import torch

from fastlearn import _C
from fastlearn._buffer import view

WORKING_SET = 512  # variables per GPU sub-problem (a power of two, at most 1024)


def _rho(alpha, grad, y, C):
    """LIBSVM's rho: the mean of y_t G_t over free variables, else the middle of the bounds."""
    yG = y * grad
    upper, lower = alpha >= C, alpha <= 0
    free = ~(upper | lower)
    if bool(free.any()):
        return float(yG[free].mean())
    ub_mask = (upper & (y < 0)) | (lower & (y > 0))
    lb_mask = (upper & (y > 0)) | (lower & (y < 0))
    ub = float(yG[ub_mask].min()) if bool(ub_mask.any()) else float("inf")
    lb = float(yG[lb_mask].max()) if bool(lb_mask.any()) else float("-inf")
    return (ub + lb) / 2


def svc_fit_gpu(M, class_start, sample_c, *, kernel, gamma, coef0, degree, tol, shrinking, max_iter, cache_mb):
    """Same outputs as _C.svm_svc_fit: coef (pairs, m), rho, objective, iterations, unconverged."""
    del shrinking, cache_mb  # the batched solver neither shrinks nor caches columns
    if kernel == 4:
        raise RuntimeError("SVC(device='cuda'): precomputed and callable kernels run on the CPU only; "
                           "use device='cpu' or 'auto'.")
    if not hasattr(_C, "svm_svc_fit_cuda"):
        raise RuntimeError("fastlearn was built without CUDA; rebuild with FASTLEARN_CUDA=ON or use device='cpu'.")
    dev = torch.device("cuda")
    m = M.shape[0]
    k = len(class_start) - 1
    n_pairs = k * (k - 1) // 2
    X_all = torch.from_numpy(np.ascontiguousarray(M, dtype=np.float32)).to(dev)
    C_all = torch.from_numpy(sample_c).to(dev)
    coef = np.zeros((n_pairs, m))
    rho = np.zeros(n_pairs)
    objective = np.zeros(n_pairs)
    iterations = np.zeros(n_pairs, dtype=np.int64)
    unconverged = 0
    p = 0
    for a in range(k):
        for b in range(a + 1, k):
            idx = np.r_[class_start[a]:class_start[a + 1], class_start[b]:class_start[b + 1]]
            idx_t = torch.from_numpy(idx).to(dev)
            n = idx.size
            x = X_all.index_select(0, idx_t).contiguous()
            y = torch.cat([torch.ones(class_start[a + 1] - class_start[a], device=dev),
                           -torch.ones(class_start[b + 1] - class_start[b], device=dev)])
            C = C_all.index_select(0, idx_t).contiguous()
            alpha = torch.zeros(n, dtype=torch.float64, device=dev)
            grad = -torch.ones(n, dtype=torch.float64, device=dev)
            q = min(WORKING_SET, 1 << max(1, int(np.floor(np.log2(n)))))
            workspace = torch.empty(_C.svm_cuda_workspace_bytes(n, x.shape[1], q), dtype=torch.uint8, device=dev)
            result = np.zeros(2)
            iters = _C.svm_svc_fit_cuda(view(x, "X"), view(y, "y"), view(C, "sample_c"), view(alpha, "alpha"),
                                        view(grad, "grad"), view(workspace, "workspace"), view(result, "result"),
                                        kernel, gamma, coef0, degree, tol, max_iter, q)
            yd = y.double()
            rho[p] = _rho(alpha, grad, yd, C)
            objective[p] = float(0.5 * (alpha * (grad - 1.0)).sum())
            coef[p, idx] = (yd * alpha).cpu().numpy()
            iterations[p] = iters
            unconverged += int(result[1] == 0.0)
            p += 1
    return coef, rho, objective, iterations, unconverged
