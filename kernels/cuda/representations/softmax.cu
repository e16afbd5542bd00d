// CUDA softmax / log_softmax along the last dimension (the Python layer moves `dim` last),
// forward and backward, and one_hot. The GPU path of choice is the Triton kernel; these
// serve when Triton is missing. One block per row: each thread keeps an online (max, sum)
// over a strided slice, the block merges them with warp shuffles, then a second pass writes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "../check.cuh"
#include "fastlearn/cuda/representations.h"
#include "fastlearn/math.h"

namespace fl::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_f(const float* p) { return *p; }
__device__ __forceinline__ double load_f(const double* p) { return *p; }
__device__ __forceinline__ float load_f(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_f(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float dev_exp(float x) { return fl::exp_f32(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }

template <typename A>
struct MS {
  A m, s;
};
template <typename A>
__device__ __forceinline__ MS<A> merge(MS<A> a, MS<A> b) {
  if (a.m < b.m) { MS<A> t = a; a = b; b = t; }
  if (isinf(b.m) && b.m < 0) return a;
  return MS<A>{a.m, a.s + b.s * dev_exp(b.m - a.m)};
}

// Block-wide reduction; every thread gets the result.
template <typename A, typename F>
__device__ A block_reduce(A v, F op) {
  __shared__ A warp_vals[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  v = warp_vals[0];
  for (int w = 1; w < kThreads / 32; ++w) v = op(v, warp_vals[w]);
  __syncthreads();
  return v;
}

template <typename T, bool kLog>
__global__ void softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n) {
  using A = typename Acc<T>::type;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    T* yr = y + row * n;
    MS<A> st{-INFINITY, A(0)};
    for (int64_t i = threadIdx.x; i < n; i += kThreads) st = merge(st, MS<A>{A(load_f(xr + i)), A(1)});
    const A m = block_reduce(st.m, [](A a, A b) { return a > b || a != a ? a : b; });
    const A s = block_reduce(isinf(st.m) && st.m < 0 ? A(0) : st.s * dev_exp(st.m - m),
                             [](A a, A b) { return a + b; });
    const A shift = m + dev_log(s), inv = A(1) / s;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const A v = A(load_f(xr + i));
      store_f(yr + i, kLog ? v - shift : dev_exp(v - m) * inv);
    }
  }
}

template <typename T, bool kLog>
__global__ void softmax_backward_kernel(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ gx,
                                        int64_t rows, int64_t n) {
  using A = typename Acc<T>::type;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t off = row * n;
    A r = 0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads)
      r += kLog ? A(load_f(g + off + i)) : A(load_f(g + off + i)) * A(load_f(y + off + i));
    r = block_reduce(r, [](A a, A b) { return a + b; });
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const A gi = load_f(g + off + i), yi = load_f(y + off + i);
      store_f(gx + off + i, kLog ? gi - dev_exp(yi) * r : yi * (gi - r));
    }
  }
}

template <typename L>
__global__ void one_hot_kernel(const L* __restrict__ labels, int64_t* __restrict__ out, int64_t total,
                               int64_t num_classes) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / num_classes, k = i - row * num_classes;
    out[i] = static_cast<int64_t>(labels[row]) == k ? 1 : 0;
  }
}

int64_t last_dim_rows(const View& v, int64_t dim, const char* op) {
  const int d = normalize_dim(v, dim, op);
  const Split3 s = split_around(v, d);
  FL_CHECK(s.inner == 1, op, ": the CUDA kernel reduces over the last dimension; move dim last first.");
  return s.outer;
}

template <typename F>
void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::f16: f(__half{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
    default: FL_CHECK_TYPE(false, op, ": unsupported dtype ", dtype_name(dt), "; use a floating dtype.");
  }
}

dim3 grid_for_rows(int64_t rows) { return dim3(static_cast<unsigned>(std::min<int64_t>(rows, 65535 * 16))); }

}  // namespace

void softmax_forward(const View& x, const View& y, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_same_shape(x, y, op);
  check_contiguous(x, op);
  check_contiguous(y, op);
  if (x.numel() == 0) return;
  const int64_t rows = last_dim_rows(x, dim, op), n = x.ndim() == 0 ? 1 : x.shape.back();
  auto stream = reinterpret_cast<cudaStream_t>(x.stream);
  dispatch_float(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    if (log)
      softmax_forward_kernel<T, true><<<grid_for_rows(rows), kThreads, 0, stream>>>(x.ptr<T>(), y.ptr<T>(), rows, n);
    else
      softmax_forward_kernel<T, false><<<grid_for_rows(rows), kThreads, 0, stream>>>(x.ptr<T>(), y.ptr<T>(), rows, n);
    FL_CUDA_CHECK_LAUNCH();
  });
}

void softmax_backward(const View& grad_y, const View& y, const View& grad_x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  check_same_shape(grad_y, y, op);
  check_same_shape(grad_x, y, op);
  check_contiguous(grad_y, op);
  check_contiguous(y, op);
  check_contiguous(grad_x, op);
  if (y.numel() == 0) return;
  const int64_t rows = last_dim_rows(y, dim, op), n = y.ndim() == 0 ? 1 : y.shape.back();
  auto stream = reinterpret_cast<cudaStream_t>(y.stream);
  dispatch_float(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    if (log)
      softmax_backward_kernel<T, true><<<grid_for_rows(rows), kThreads, 0, stream>>>(
          grad_y.ptr<T>(), y.ptr<T>(), grad_x.ptr<T>(), rows, n);
    else
      softmax_backward_kernel<T, false><<<grid_for_rows(rows), kThreads, 0, stream>>>(
          grad_y.ptr<T>(), y.ptr<T>(), grad_x.ptr<T>(), rows, n);
    FL_CUDA_CHECK_LAUNCH();
  });
}

void one_hot(const View& labels, const View& out, int64_t num_classes) {
  check_contiguous(labels, "one_hot");
  check_contiguous(out, "one_hot");
  const int64_t total = labels.numel() * num_classes;
  if (total == 0) return;
  auto stream = reinterpret_cast<cudaStream_t>(labels.stream);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 65535 * 16));
  switch (labels.dtype) {
    case DType::i64: one_hot_kernel<<<blocks, 256, 0, stream>>>(labels.ptr<int64_t>(), out.ptr<int64_t>(), total, num_classes); break;
    case DType::i32: one_hot_kernel<<<blocks, 256, 0, stream>>>(labels.ptr<int32_t>(), out.ptr<int64_t>(), total, num_classes); break;
    default: FL_CHECK_TYPE(false, "one_hot: argument 'labels' must be int64 or int32 on the GPU, got ", dtype_name(labels.dtype), ".");
  }
  FL_CUDA_CHECK_LAUNCH();
}

}  // namespace fl::cuda
