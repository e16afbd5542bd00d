// Binary C-SVC on the GPU by batched working-set SMO (in the manner of ThunderSVM):
//   1. keys: v_t = -y_t G_t over I_up, -v_t over I_low (larger = more violating);
//   2. radix-sort both key sets (CUB) and take the q/2 strongest of each as the working set;
//      the first keys of the two sorted sets give the maximal violation (the stopping gap);
//   3. kernel rows K(ws, all) as one tiled matrix product (q x n, float32);
//   4. the q-variable sub-problem by SMO (WSS2) inside one thread block, in shared memory;
//   5. G_t += y_t sum_k y_k dalpha_k K(ws_k, t) for every sample.
// The host reads two numbers per outer iteration (gap) and nothing else.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "../check.cuh"
#include "fastlearn/cuda/svm.h"

namespace fl::cuda {
namespace {

constexpr int kTile = 16;           // tile edge of the kernel-row product
constexpr double kTau = 1e-12;      // quadratic coefficient floor (LIBSVM's TAU)
constexpr int kPoly = 1, kRbf = 2, kSigmoid = 3;  // KernelKind codes; anything else is linear

__device__ __forceinline__ float apply_kernel(float dot, float sq_a, float sq_b, int kind, float gamma, float coef0,
                                              int degree) {
  switch (kind) {
    case kRbf: return __expf(-gamma * fmaxf(sq_a + sq_b - 2.0f * dot, 0.0f));
    case kPoly: {
      const float base = gamma * dot + coef0;
      float r = 1.0f;
      for (int e = 0; e < degree; ++e) r *= base;
      return r;
    }
    case kSigmoid: return tanhf(gamma * dot + coef0);
    default: return dot;
  }
}

__global__ void squared_norms_kernel(const float* __restrict__ X, int64_t n, int64_t d, float* __restrict__ SQ) {
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int64_t k = 0; k < d; ++k) {
      const float v = X[t * d + k];
      s += v * v;
    }
    SQ[t] = s;
  }
}

// Keys for the working-set choice: up[t] = v_t on I_up, low[t] = -v_t on I_low, else -inf.
__global__ void violation_keys_kernel(const float* __restrict__ Y, const double* __restrict__ C,
                                      const double* __restrict__ ALPHA, const double* __restrict__ G, int64_t n,
                                      double* __restrict__ UP_KEY, double* __restrict__ LOW_KEY,
                                      int* __restrict__ UP_IDX, int* __restrict__ LOW_IDX) {
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    const double y = Y[t], a = ALPHA[t], c = C[t];
    const bool below_c = a < c, above_0 = a > 0;
    const bool up = y > 0 ? below_c : above_0;
    const bool low = y > 0 ? above_0 : below_c;
    const double v = -y * G[t];
    UP_KEY[t] = up ? v : -DBL_MAX;
    LOW_KEY[t] = low ? -v : -DBL_MAX;
    UP_IDX[t] = static_cast<int>(t);
    LOW_IDX[t] = static_cast<int>(t);
  }
}

// One thread: the first q/2 valid indices of the sorted I_up keys, then I_low's, without
// repeats (FLAG marks chosen samples and is cleared again). Unused slots get -1.
__global__ void build_working_set_kernel(const double* __restrict__ UP_KEY, const int* __restrict__ UP_IDX,
                                         const double* __restrict__ LOW_KEY, const int* __restrict__ LOW_IDX,
                                         int64_t n, int q, unsigned char* __restrict__ FLAG, int* __restrict__ WS,
                                         double* __restrict__ GAP) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  GAP[0] = UP_KEY[0] + LOW_KEY[0];  // max over I_up of v + max over I_low of -v
  int m = 0;
  const int half = q / 2;
  for (int64_t r = 0; r < n && m < half; ++r) {
    if (UP_KEY[r] == -DBL_MAX) break;
    const int t = UP_IDX[r];
    if (!FLAG[t]) { FLAG[t] = 1; WS[m++] = t; }
  }
  for (int64_t r = 0; r < n && m < q; ++r) {
    if (LOW_KEY[r] == -DBL_MAX) break;
    const int t = LOW_IDX[r];
    if (!FLAG[t]) { FLAG[t] = 1; WS[m++] = t; }
  }
  for (int k = 0; k < m; ++k) FLAG[WS[k]] = 0;
  for (int k = m; k < q; ++k) WS[k] = -1;
}

// KWS[k, t] = K(x_ws[k], x_t): a (q x d) by (d x n) product in 16 x 16 shared-memory tiles.
__global__ void kernel_rows_kernel(const float* __restrict__ X, const float* __restrict__ SQ,
                                   const int* __restrict__ WS, int64_t n, int64_t d, int q, int kind, float gamma,
                                   float coef0, int degree, float* __restrict__ KWS) {
  __shared__ float a_tile[kTile][kTile + 1];
  __shared__ float b_tile[kTile][kTile + 1];
  const int k = blockIdx.y * kTile + threadIdx.y;              // working-set row
  const int64_t t = blockIdx.x * (int64_t)kTile + threadIdx.x;  // sample column
  const int src = (k < q) ? WS[k] : -1;
  float acc = 0.0f;
  for (int64_t f0 = 0; f0 < d; f0 += kTile) {
    const int64_t fa = f0 + threadIdx.x;
    a_tile[threadIdx.y][threadIdx.x] = (src >= 0 && fa < d) ? X[src * d + fa] : 0.0f;
    const int64_t tb = blockIdx.x * (int64_t)kTile + threadIdx.y;  // b_tile row = sample, col = feature
    b_tile[threadIdx.y][threadIdx.x] = (tb < n && f0 + threadIdx.x < d) ? X[tb * d + f0 + threadIdx.x] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int f = 0; f < kTile; ++f) acc += a_tile[threadIdx.y][f] * b_tile[threadIdx.x][f];
    __syncthreads();
  }
  if (k < q && t < n) KWS[k * n + t] = src >= 0 ? apply_kernel(acc, SQ[src], SQ[t], kind, gamma, coef0, degree) : 0.0f;
}

// Block-wide argmax over blockDim.x (a power of two) values; ties go to the larger index.
__device__ void block_argmax(double* val, int* idx) {
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const double a = val[threadIdx.x], b = val[threadIdx.x + s];
      if (b > a || (b == a && idx[threadIdx.x + s] > idx[threadIdx.x])) {
        val[threadIdx.x] = b;
        idx[threadIdx.x] = idx[threadIdx.x + s];
      }
    }
    __syncthreads();
  }
}

// The q-variable sub-problem, one thread per variable, in shared memory. Writes the change
// of each working-set alpha to DALPHA and the new alpha to ALPHA.
__global__ void local_smo_kernel(const float* __restrict__ KWS, const int* __restrict__ WS,
                                 const float* __restrict__ Y, const double* __restrict__ C,
                                 double* __restrict__ ALPHA, const double* __restrict__ G, int64_t n, double tol,
                                 int max_local, double* __restrict__ DALPHA) {
  extern __shared__ unsigned char smem[];
  const int q = blockDim.x;
  double* red_val = reinterpret_cast<double*>(smem);
  int* red_idx = reinterpret_cast<int*>(red_val + q);
  __shared__ double s_delta_i, s_delta_j, s_gmax;
  __shared__ int s_i, s_j;

  const int k = threadIdx.x;
  const int src = WS[k];
  const bool valid = src >= 0;
  const double y = valid ? Y[src] : 1.0, c = valid ? C[src] : 0.0;
  double a = valid ? ALPHA[src] : 0.0;
  const double a0 = a;
  double g = valid ? G[src] : 0.0;
  const double kd = valid ? KWS[k * n + src] : 1.0;
  // This thread's kernel values against the other working-set members are read from
  // the rows of the working set: K(ws_i, ws_k) = KWS[i, ws_k].
  double local_tol = tol;
  for (int it = 0; it < max_local; ++it) {
    const bool up = valid && (y > 0 ? a < c : a > 0);
    const bool low = valid && (y > 0 ? a > 0 : a < c);
    const double v = -y * g;
    // i: most violating in I_up
    red_val[k] = up ? v : -DBL_MAX;
    red_idx[k] = k;
    __syncthreads();
    block_argmax(red_val, red_idx);
    if (k == 0) { s_i = red_idx[0]; s_gmax = red_val[0]; }
    __syncthreads();
    const int i = s_i;
    const double gmax = s_gmax;
    // gap over I_low, for the local stopping rule
    red_val[k] = low ? -v : -DBL_MAX;
    red_idx[k] = k;
    __syncthreads();
    block_argmax(red_val, red_idx);
    const double gmax2 = red_val[0];
    if (it == 0) local_tol = fmax(tol, 0.1 * (gmax + gmax2));  // ThunderSVM's local precision
    __syncthreads();
    if (gmax + gmax2 < local_tol || gmax == -DBL_MAX) break;
    // j: second-order choice given i
    const double kik = KWS[(int64_t)i * n + (valid ? src : 0)];
    const double kdi = KWS[(int64_t)i * n + WS[i]];
    const double gd = gmax - v;
    double quad = kdi + kd - 2.0 * kik;
    quad = quad > 0 ? quad : kTau;
    red_val[k] = (low && gd > 0) ? gd * gd / quad : -DBL_MAX;
    red_idx[k] = k;
    __syncthreads();
    block_argmax(red_val, red_idx);
    if (k == 0) s_j = red_val[0] == -DBL_MAX ? -1 : red_idx[0];
    __syncthreads();
    const int j = s_j;
    if (j < 0) break;
    // The two-variable update (LIBSVM's clipping), by the thread owning i; j's values are
    // published through shared memory first.
    __shared__ double s_aj, s_gj, s_cj, s_yj, s_kdj;
    if (k == j) { s_aj = a; s_gj = g; s_cj = c; s_yj = y; s_kdj = kd; }
    __syncthreads();
    if (k == i) {
      const double yi = y, yj = s_yj, Ci = c, Cj = s_cj;
      const double Kij = KWS[(int64_t)i * n + WS[j]];
      double ai = a, aj = s_aj;
      const double old_ai = ai, old_aj = aj;
      if (yi != yj) {
        double qc = kd + s_kdj - 2.0 * Kij;  // = K_ii + K_jj + 2 Q_ij with Q_ij = -K_ij
        qc = qc > 0 ? qc : kTau;
        const double delta = (-g - s_gj) / qc;
        const double diff = ai - aj;
        ai += delta;
        aj += delta;
        if (diff > 0) { if (aj < 0) { aj = 0; ai = diff; } }
        else { if (ai < 0) { ai = 0; aj = -diff; } }
        if (diff > Ci - Cj) { if (ai > Ci) { ai = Ci; aj = Ci - diff; } }
        else { if (aj > Cj) { aj = Cj; ai = Cj + diff; } }
      } else {
        double qc = kd + s_kdj - 2.0 * Kij;
        qc = qc > 0 ? qc : kTau;
        const double delta = (g - s_gj) / qc;
        const double sum = ai + aj;
        ai -= delta;
        aj += delta;
        if (sum > Ci) { if (ai > Ci) { ai = Ci; aj = sum - Ci; } }
        else { if (aj < 0) { aj = 0; ai = sum; } }
        if (sum > Cj) { if (aj > Cj) { aj = Cj; ai = sum - Cj; } }
        else { if (ai < 0) { ai = 0; aj = sum; } }
      }
      s_delta_i = (ai - old_ai) * yi;  // y_i dalpha_i
      s_delta_j = (aj - old_aj) * yj;
      a = ai;
      s_aj = aj;
    }
    __syncthreads();
    if (k == j && j != i) a = s_aj;
    // local gradient: g_k += y_k (y_i da_i K_ik + y_j da_j K_jk)
    if (valid) {
      const double kjk = KWS[(int64_t)j * n + src];
      g += y * (s_delta_i * kik + s_delta_j * kjk);
    }
    __syncthreads();
  }
  if (valid) {
    DALPHA[k] = (a - a0) * y;  // y_k dalpha_k
    ALPHA[src] = a;
  } else {
    DALPHA[k] = 0.0;
  }
}

// G_t += y_t sum_k (y_k dalpha_k) K(ws_k, t).
__global__ void update_gradient_kernel(const float* __restrict__ KWS, const double* __restrict__ DALPHA,
                                       const float* __restrict__ Y, int64_t n, int q, double* __restrict__ G) {
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    double s = 0.0;
    for (int k = 0; k < q; ++k) {
      const double dk = DALPHA[k];
      if (dk != 0.0) s += dk * static_cast<double>(KWS[k * n + t]);
    }
    G[t] += static_cast<double>(Y[t]) * s;
  }
}

size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

struct Workspace {
  double *up_key, *low_key, *up_key_sorted, *low_key_sorted, *dalpha, *gap;
  int *up_idx, *low_idx, *up_idx_sorted, *low_idx_sorted, *ws;
  float *sq, *kws;
  unsigned char* flag;
  void* sort_temp;
  size_t sort_bytes;
};

size_t sort_temp_bytes(int64_t n) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, static_cast<const double*>(nullptr),
                                            static_cast<double*>(nullptr), static_cast<const int*>(nullptr),
                                            static_cast<int*>(nullptr), static_cast<int>(n));
  return bytes;
}

// Carve the caller's buffer (base may be null to measure it).
size_t carve(unsigned char* base, int64_t n, int64_t q, Workspace* w) {
  size_t off = 0;
  auto take = [&](size_t bytes) {
    unsigned char* p = base ? base + off : nullptr;
    off += align256(bytes);
    return p;
  };
  const size_t nd = static_cast<size_t>(n);
  w->up_key = reinterpret_cast<double*>(take(nd * 8));
  w->low_key = reinterpret_cast<double*>(take(nd * 8));
  w->up_key_sorted = reinterpret_cast<double*>(take(nd * 8));
  w->low_key_sorted = reinterpret_cast<double*>(take(nd * 8));
  w->up_idx = reinterpret_cast<int*>(take(nd * 4));
  w->low_idx = reinterpret_cast<int*>(take(nd * 4));
  w->up_idx_sorted = reinterpret_cast<int*>(take(nd * 4));
  w->low_idx_sorted = reinterpret_cast<int*>(take(nd * 4));
  w->sq = reinterpret_cast<float*>(take(nd * 4));
  w->flag = take(nd);
  w->ws = reinterpret_cast<int*>(take(static_cast<size_t>(q) * 4));
  w->dalpha = reinterpret_cast<double*>(take(static_cast<size_t>(q) * 8));
  w->gap = reinterpret_cast<double*>(take(8));
  w->kws = reinterpret_cast<float*>(take(static_cast<size_t>(q) * nd * 4));
  w->sort_bytes = sort_temp_bytes(n);
  w->sort_temp = take(w->sort_bytes);
  return off;
}

int grid_for(int64_t n, int block) { return static_cast<int>(std::min<int64_t>((n + block - 1) / block, 65535)); }

}  // namespace

int64_t svm_workspace_bytes(int64_t n, int64_t d, int64_t q) {
  (void)d;
  Workspace w;
  return static_cast<int64_t>(carve(nullptr, n, q, &w));
}

int64_t svm_binary_fit(const View& x, const View& y, const View& sample_c, const View& alpha, const View& grad,
                       const View& workspace, const View& result, const SvmGpuOptions& o) {
  constexpr const char* op = "svm fit (cuda)";
  check_dtype(x, {DType::f32}, op);
  check_dtype(y, {DType::f32}, op);
  check_dtype(sample_c, {DType::f64}, op);
  check_dtype(alpha, {DType::f64}, op);
  check_dtype(grad, {DType::f64}, op);
  check_dtype(workspace, {DType::u8}, op);
  check_dtype(result, {DType::f64}, op);
  for (const View* v : {&x, &y, &sample_c, &alpha, &grad, &workspace}) {
    check_contiguous(*v, op);
    FL_CHECK(v->device == Device::cuda, op, ": argument '", v->name, "' must be on the GPU.");
  }
  FL_CHECK(result.device == Device::cpu && result.numel() >= 2, op, ": 'result' must be 2 float64 on the host.");
  FL_CHECK(x.ndim() == 2, op, ": 'x' must be 2-D.");
  const int64_t n = x.size(0), d = x.size(1), q = o.working_set;
  FL_CHECK(n >= 2 && n < (int64_t{1} << 31), op, ": need 2 <= n < 2^31 samples.");
  FL_CHECK(q >= 2 && q <= 1024 && (q & (q - 1)) == 0, op, ": 'working_set' must be a power of two in [2, 1024].");
  FL_CHECK(o.kernel >= 0 && o.kernel <= 3, op, ": the GPU solver takes linear, poly, rbf or sigmoid kernels.");
  for (const View* v : {&y, &sample_c, &alpha, &grad})
    FL_CHECK(v->numel() == n, op, ": argument '", v->name, "' must have one entry per sample.");
  Workspace w;
  const size_t need = carve(nullptr, n, q, &w);
  FL_CHECK(static_cast<size_t>(workspace.numel()) >= need, op, ": workspace has ", workspace.numel(),
           " bytes; svm_workspace_bytes says ", need, ".");
  carve(workspace.ptr<unsigned char>(), n, q, &w);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(x.stream);

  const float* X = x.ptr<float>();
  const float* Y = y.ptr<float>();
  const double* C = sample_c.ptr<double>();
  double* ALPHA = alpha.ptr<double>();
  double* G = grad.ptr<double>();
  const int block = 256, grid = grid_for(n, block);
  squared_norms_kernel<<<grid, block, 0, stream>>>(X, n, d, w.sq);
  FL_CUDA_CHECK_LAUNCH();
  FL_CUDA_CHECK(cudaMemsetAsync(w.flag, 0, static_cast<size_t>(n), stream));

  const int64_t max_iter = o.max_iter >= 0 ? o.max_iter : std::max<int64_t>(10000, 100 * n / q);
  const int max_local = static_cast<int>(std::max<int64_t>(100, 10 * q));
  double* out = result.ptr<double>();
  out[0] = INFINITY;
  out[1] = 0.0;
  int64_t iter = 0;
  for (; iter < max_iter; ++iter) {
    violation_keys_kernel<<<grid, block, 0, stream>>>(Y, C, ALPHA, G, n, w.up_key, w.low_key, w.up_idx, w.low_idx);
    FL_CUDA_CHECK_LAUNCH();
    size_t bytes = w.sort_bytes;
    FL_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(w.sort_temp, bytes, w.up_key, w.up_key_sorted, w.up_idx,
                                                            w.up_idx_sorted, static_cast<int>(n), 0, 64, stream));
    bytes = w.sort_bytes;
    FL_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(w.sort_temp, bytes, w.low_key, w.low_key_sorted,
                                                            w.low_idx, w.low_idx_sorted, static_cast<int>(n), 0, 64,
                                                            stream));
    build_working_set_kernel<<<1, 1, 0, stream>>>(w.up_key_sorted, w.up_idx_sorted, w.low_key_sorted,
                                                  w.low_idx_sorted, n, static_cast<int>(q), w.flag, w.ws, w.gap);
    FL_CUDA_CHECK_LAUNCH();
    // The convergence check: the one host read of an iteration.
    double gap = 0.0;
    FL_CUDA_CHECK(cudaMemcpyAsync(&gap, w.gap, sizeof(double), cudaMemcpyDeviceToHost, stream));
    FL_CUDA_CHECK(cudaStreamSynchronize(stream));
    out[0] = gap;
    if (gap < o.tol) {
      out[1] = 1.0;
      break;
    }
    const dim3 tiles(static_cast<unsigned>((n + kTile - 1) / kTile), static_cast<unsigned>((q + kTile - 1) / kTile));
    kernel_rows_kernel<<<tiles, dim3(kTile, kTile), 0, stream>>>(X, w.sq, w.ws, n, d, static_cast<int>(q), o.kernel,
                                                                 static_cast<float>(o.gamma),
                                                                 static_cast<float>(o.coef0), o.degree, w.kws);
    FL_CUDA_CHECK_LAUNCH();
    const size_t smem = static_cast<size_t>(q) * (sizeof(double) + sizeof(int));
    local_smo_kernel<<<1, static_cast<unsigned>(q), smem, stream>>>(w.kws, w.ws, Y, C, ALPHA, G, n, o.tol, max_local,
                                                                    w.dalpha);
    FL_CUDA_CHECK_LAUNCH();
    update_gradient_kernel<<<grid, block, 0, stream>>>(w.kws, w.dalpha, Y, n, static_cast<int>(q), G);
    FL_CUDA_CHECK_LAUNCH();
  }
  return iter;
}

}  // namespace fl::cuda
