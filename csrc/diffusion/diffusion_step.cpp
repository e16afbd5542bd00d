// CPU kernel of fastlearn.ops.diffusion_step. The flattened tensor is walked in the noise tiles
// of fastlearn/philox.h (2048 counters): a tile's 512 Philox groups are drawn into an L1
// buffer, then one SIMD loop reads x, m (and u) once and writes prev and x0 once. Tiles are
// shared among threads; the noise depends only on (seed, offset + i), never on the split.
// With guidance rescale a first parallel pass reduces (mean, M2) of the conditional and the
// guided output per (sample, 2048-element chunk), merged per sample in float64 (Chan et al.).
#include "diffusion_step.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fastlearn/half.h"
#include "fastlearn/parallel.h"
#include "fastlearn/philox.h"
#include "fastlearn/simd.h"

namespace fl::diffusion {
namespace {

constexpr const char* kOp = "diffusion_step";
// Elements per thread: a tile with noise costs ~2048 * 2.5 ns on one core (Philox ~0.9 ns,
// Box-Muller ~1 ns, the step ~0.4 ns per element), so 8192 elements (~20 us) amortise waking a
// second thread.
constexpr int64_t kStepGrain = 8192;
constexpr int64_t kStatsChunk = 2048;  // elements of one sample reduced together (L1-resident)

template <typename A>
struct Coeffs {
  A ax, am, ex, em, e0, p0, px, pe, sigma;
};

template <typename A>
Coeffs<A> cast_coeffs(const StepCoefficients& c) {
  return {static_cast<A>(c.ax), static_cast<A>(c.am), static_cast<A>(c.ex), static_cast<A>(c.em),
          static_cast<A>(c.e0), static_cast<A>(c.p0), static_cast<A>(c.px), static_cast<A>(c.pe),
          static_cast<A>(c.sigma)};
}

// --- noise -------------------------------------------------------------------------------
// A tile's 512 Philox groups are drawn into `bits` (lane k of group j at bits[k * 512 + j]),
// then turned into normals. Philox is integer work that GCC vectorises poorly (it widens the
// 32x32->64 products through lane-crossing shuffles), so AVX2 machines use the explicit
// version below: 8 groups per register, even and odd lanes multiplied by vpmuludq and blended.

void philox_tile_portable(uint32_t* bits, uint64_t seed, int64_t tile) {
  const uint64_t q0 = static_cast<uint64_t>(tile) * kNoiseGroups;
  for (int64_t j = 0; j < kNoiseGroups; ++j) {
    const uint64_t q = q0 + static_cast<uint64_t>(j);
    uint32_t c0 = static_cast<uint32_t>(q), c1 = static_cast<uint32_t>(q >> 32), c2 = 0, c3 = 0;
    philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    bits[j] = c0;
    bits[j + kNoiseGroups] = c1;
    bits[j + 2 * kNoiseGroups] = c2;
    bits[j + 3 * kNoiseGroups] = c3;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define FL_PHILOX_AVX2 1
// hi and lo 32 bits of x * mult in each 32-bit lane (mult the same in every lane).
__attribute__((target("avx2"))) inline void mulhilo_avx2(__m256i x, __m256i mult, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, mult);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), mult);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

__attribute__((target("avx2"))) void philox_tile_avx2(uint32_t* bits, uint64_t seed, int64_t tile) {
  uint32_t k0[10], k1[10];
  k0[0] = static_cast<uint32_t>(seed);
  k1[0] = static_cast<uint32_t>(seed >> 32);
  for (int r = 1; r < 10; ++r) k0[r] = k0[r - 1] + 0x9E3779B9u, k1[r] = k1[r - 1] + 0xBB67AE85u;
  const __m256i mult_a = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i mult_b = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  // q = tile * 512 + j never carries into the high word inside a tile (2^32 is a multiple of 512)
  const uint64_t q0 = static_cast<uint64_t>(tile) * kNoiseGroups;
  const __m256i lo0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(q0))),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(q0 >> 32)));
  for (int64_t j = 0; j < kNoiseGroups; j += 8) {
    __m256i c0 = _mm256_add_epi32(lo0, _mm256_set1_epi32(static_cast<int>(j)));
    __m256i c1 = hi, c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, lo0r, hi1, lo1r;
      mulhilo_avx2(c0, mult_a, hi0, lo0r);
      mulhilo_avx2(c2, mult_b, hi1, lo1r);
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0[r])));
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1[r])));
      c1 = lo1r;
      c3 = lo0r;
      c0 = n0;
      c2 = n2;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bits + j), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bits + j + kNoiseGroups), c1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bits + j + 2 * kNoiseGroups), c2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bits + j + 3 * kNoiseGroups), c3);
  }
}
#endif

using PhiloxTile = void (*)(uint32_t*, uint64_t, int64_t);
PhiloxTile pick_philox_tile() {
#if defined(FL_PHILOX_AVX2)
  __builtin_cpu_init();  // this runs during static initialisation
  if (__builtin_cpu_supports("avx2")) return philox_tile_avx2;
#endif
  return philox_tile_portable;
}
const PhiloxTile philox_tile = pick_philox_tile();

// The normals of one noise tile: z[k * 512 + j] is lane k of group tile * 512 + j.
FL_ALWAYS_INLINE void noise_tile(float* z, uint32_t* bits, uint64_t seed, int64_t tile) {
  philox_tile(bits, seed, tile);
#pragma omp simd
  for (int64_t j = 0; j < kNoiseGroups; ++j) {
    float n0, n1, n2, n3;
    pair_uniform_to_normal(uint_to_uniform_float(bits[j]), uint_to_uniform_float(bits[j + kNoiseGroups]), n0, n1);
    pair_uniform_to_normal(uint_to_uniform_float(bits[j + 2 * kNoiseGroups]),
                           uint_to_uniform_float(bits[j + 3 * kNoiseGroups]), n2, n3);
    z[j] = n0;
    z[j + kNoiseGroups] = n1;
    z[j + 2 * kNoiseGroups] = n2;
    z[j + 3 * kNoiseGroups] = n3;
  }
}

// --- the step ----------------------------------------------------------------------------

// The step on n contiguous elements; f is the sample's guidance-rescale factor (1 without).
template <typename T, bool kUncond, bool kNoise>
FL_ALWAYS_INLINE void step_run(const T* x, const T* m, const T* u, const float* z, T* prev, T* x0, int64_t n,
                               const Coeffs<acc_t<T>>& k, acc_t<T> w, acc_t<T> f, acc_t<T> clip) {
  using A = acc_t<T>;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const A xv = to_float(x[j]);
    A g = to_float(m[j]);
    if constexpr (kUncond) {
      const A uv = to_float(u[j]);
      g = uv + w * (g - uv);
    }
    const A mv = g * f;
    A x0v = k.ax * xv + k.am * mv;
    x0v = x0v < -clip ? -clip : (x0v > clip ? clip : x0v);  // NaN passes through, as torch.clamp
    const A eps = k.ex * xv + k.em * mv + k.e0 * x0v;
    A p = k.p0 * x0v + k.px * xv + k.pe * eps;
    if constexpr (kNoise) p += k.sigma * static_cast<A>(z[j]);
    prev[j] = from_acc<T>(p);
    x0[j] = from_acc<T>(x0v);
  }
}

template <typename T>
struct StepData {
  const T* x;
  const T* m;
  const T* u;
  T* prev;
  T* x0;
  int64_t n, per_sample, offset;
  uint64_t seed;
  Coeffs<acc_t<T>> k;
  acc_t<T> w, clip;
  const acc_t<T>* factor;  // per sample, or nullptr (no rescale)
};

// Tiles [t0, t1) counted from the tile holding counter `offset`.
template <typename T, bool kUncond, bool kNoise>
FL_ALWAYS_INLINE void step_tiles(const StepData<T>& d, int64_t t0, int64_t t1) {
  using A = acc_t<T>;
  alignas(64) float z[kNoiseTile];
  alignas(64) uint32_t bits[kNoiseTile];
  const int64_t first_tile = d.offset / kNoiseTile;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t tile = first_tile + t;
    const int64_t start = tile * kNoiseTile - d.offset;  // element of the tile's first counter
    const int64_t lo = std::max<int64_t>(start, 0), hi = std::min<int64_t>(start + kNoiseTile, d.n);
    if constexpr (kNoise) noise_tile(z, bits, d.seed, tile);
    for (int64_t e = lo; e < hi;) {
      int64_t end = hi;
      A f = A(1);
      if (d.factor) {
        const int64_t b = e / d.per_sample;
        end = std::min(hi, (b + 1) * d.per_sample);
        f = d.factor[b];
      }
      step_run<T, kUncond, kNoise>(d.x + e, d.m + e, kUncond ? d.u + e : nullptr, z + (e - start), d.prev + e,
                                   d.x0 + e, end - e, d.k, d.w, f, d.clip);
      e = end;
    }
  }
}

template <typename T>
FL_ALWAYS_INLINE void step_dispatch(const StepData<T>& d, int64_t t0, int64_t t1) {
  const bool noise = d.k.sigma != 0;
  if (d.u) {
    if (noise)
      step_tiles<T, true, true>(d, t0, t1);
    else
      step_tiles<T, true, false>(d, t0, t1);
  } else {
    if (noise)
      step_tiles<T, false, true>(d, t0, t1);
    else
      step_tiles<T, false, false>(d, t0, t1);
  }
}

// (mean, M2) of the conditional output c and of the guided g = u + w (c - u) over n elements,
// accumulated in float64; two passes over an L1-resident chunk.
template <typename T>
FL_ALWAYS_INLINE void chunk_stats(const T* c, const T* u, int64_t n, double w, double* out) {
  double sc = 0, sg = 0;
#pragma omp simd reduction(+ : sc, sg)
  for (int64_t j = 0; j < n; ++j) {
    const double cv = to_float(c[j]), uv = to_float(u[j]);
    sc += cv;
    sg += uv + w * (cv - uv);
  }
  const double mc = sc / static_cast<double>(n), mg = sg / static_cast<double>(n);
  double qc = 0, qg = 0;
#pragma omp simd reduction(+ : qc, qg)
  for (int64_t j = 0; j < n; ++j) {
    const double cv = to_float(c[j]), uv = to_float(u[j]);
    const double dc = cv - mc, dg = uv + w * (cv - uv) - mg;
    qc += dc * dc;
    qg += dg * dg;
  }
  out[0] = mc, out[1] = qc, out[2] = mg, out[3] = qg;
}

// Multiversioned drivers, one per storage type.
#define FL_STEP_DRIVERS(T, SUFFIX, ATTR)                                                              \
  ATTR void step_##SUFFIX(const StepData<T>& d, int64_t t0, int64_t t1) { step_dispatch<T>(d, t0, t1); } \
  ATTR void stats_##SUFFIX(const T* c, const T* u, int64_t n, double w, double* out) {                 \
    chunk_stats<T>(c, u, n, w, out);                                                                  \
  }                                                                                                   \
  ATTR void noise_##SUFFIX(T* out, int64_t n, uint64_t seed, int64_t offset, int64_t t0, int64_t t1) {  \
    alignas(64) float z[kNoiseTile];                                                                  \
    alignas(64) uint32_t bits[kNoiseTile];                                                            \
    const int64_t first_tile = offset / kNoiseTile;                                                   \
    for (int64_t t = t0; t < t1; ++t) {                                                               \
      const int64_t start = (first_tile + t) * kNoiseTile - offset;                                   \
      const int64_t lo = std::max<int64_t>(start, 0), hi = std::min<int64_t>(start + kNoiseTile, n);  \
      noise_tile(z, bits, seed, first_tile + t);                                                      \
      for (int64_t e = lo; e < hi; ++e) out[e] = from_acc<T>(static_cast<acc_t<T>>(z[e - start]));    \
    }                                                                                                 \
  }

FL_STEP_DRIVERS(float, f32, FL_MULTIVERSION)
FL_STEP_DRIVERS(double, f64, FL_MULTIVERSION)
FL_STEP_DRIVERS(half_t, f16, FL_MULTIVERSION)
FL_STEP_DRIVERS(bfloat16_t, bf16, FL_MULTIVERSION)
#undef FL_STEP_DRIVERS

void check_float_view(const View& v) {
  check_dtype(v, {DType::f32, DType::f64, DType::f16, DType::bf16}, kOp);
  FL_CHECK(v.device == Device::cpu, kOp, ": the CPU kernel got '", v.name,
           "' on a GPU; GPU tensors go to the Triton kernel (fastlearn.ops.diffusion_step).");
  check_contiguous(v, kOp);
}

void check_like(const View& ref, const View& v) {
  check_float_view(v);
  FL_CHECK_TYPE(v.dtype == ref.dtype, kOp, ": argument '", v.name, "' has dtype ", dtype_name(v.dtype), " but '",
                ref.name, "' has ", dtype_name(ref.dtype), "; convert it with .to(", ref.name, ".dtype).");
  check_same_shape(ref, v, kOp);
}

int64_t read_int64_scalar(const View& v, const char* what) {
  FL_CHECK_TYPE(v.dtype == DType::i64, kOp, ": argument '", v.name, "' (", what, ") must be an int64 tensor, got ",
                dtype_name(v.dtype), ".");
  FL_CHECK(v.numel() == 1, kOp, ": argument '", v.name, "' (", what, ") must hold one element, got ", v.numel(), ".");
  FL_CHECK(v.device == Device::cpu, kOp, ": argument '", v.name, "' must be on the CPU with the sample.");
  return *v.ptr<int64_t>();
}

StepCoefficients read_coefficients(const View& coeffs, int64_t step) {
  check_dtype(coeffs, {DType::f32, DType::f64}, kOp);
  FL_CHECK(coeffs.ndim() == 2 && coeffs.shape[1] == 9 && coeffs.shape[0] >= 1, kOp, ": argument '", coeffs.name,
           "' must be the scheduler's fused coefficient table of shape [num_steps, 9] (columns ax, am, ex, em, e0, "
           "p0, px, pe, sigma).");
  FL_CHECK(coeffs.device == Device::cpu, kOp, ": argument '", coeffs.name, "' must be on the CPU with the sample.");
  check_contiguous(coeffs, kOp);
  FL_CHECK(step >= 0 && step < coeffs.shape[0], kOp, ": step ", step, " is out of range for a coefficient table of ",
           coeffs.shape[0], " rows; use a step in [0, ", coeffs.shape[0] - 1, "].");
  double c[9];
  for (int j = 0; j < 9; ++j)
    c[j] = coeffs.dtype == DType::f32 ? static_cast<double>(coeffs.ptr<float>()[step * 9 + j])
                                      : coeffs.ptr<double>()[step * 9 + j];
  return {c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]};
}

void check_offset(int64_t offset, int64_t n) {
  FL_CHECK(offset >= 0 && offset <= std::numeric_limits<int64_t>::max() - n - kNoiseTile, kOp, ": offset ", offset,
           " must be >= 0 and leave room for ", n, " counters below 2^63.");
}

int64_t noise_tiles(int64_t offset, int64_t n) { return (offset % kNoiseTile + n + kNoiseTile - 1) / kNoiseTile; }

// Per-sample guidance-rescale factor r * std(c) / std(g) + (1 - r) (unbiased std, as torch.std);
// 1 where std(g) == 0 (diffusers would divide by zero there).
template <typename T>
std::vector<acc_t<T>> rescale_factors(const T* c, const T* u, int64_t batch, int64_t per_sample, double w, double r,
                                      void (*stats)(const T*, const T*, int64_t, double, double*)) {
  const int64_t chunks = (per_sample + kStatsChunk - 1) / kStatsChunk;
  std::vector<double> part(static_cast<size_t>(batch * chunks * 4));
  parallel_for(batch * chunks, std::min(per_sample, kStatsChunk), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / chunks, p = i % chunks;
      const int64_t begin = b * per_sample + p * kStatsChunk;
      const int64_t len = std::min(kStatsChunk, per_sample - p * kStatsChunk);
      stats(c + begin, u + begin, len, w, &part[static_cast<size_t>(i * 4)]);
    }
  });
  std::vector<acc_t<T>> factor(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    const double* pb = &part[static_cast<size_t>(b * chunks * 4)];
    double mean_c = 0, mean_g = 0;
    for (int64_t p = 0; p < chunks; ++p) {
      const double len = static_cast<double>(std::min(kStatsChunk, per_sample - p * kStatsChunk));
      mean_c += len * pb[p * 4 + 0];
      mean_g += len * pb[p * 4 + 2];
    }
    mean_c /= static_cast<double>(per_sample);
    mean_g /= static_cast<double>(per_sample);
    double m2_c = 0, m2_g = 0;
    for (int64_t p = 0; p < chunks; ++p) {
      const double len = static_cast<double>(std::min(kStatsChunk, per_sample - p * kStatsChunk));
      const double dc = pb[p * 4 + 0] - mean_c, dg = pb[p * 4 + 2] - mean_g;
      m2_c += pb[p * 4 + 1] + len * dc * dc;
      m2_g += pb[p * 4 + 3] + len * dg * dg;
    }
    const double std_c = std::sqrt(m2_c / static_cast<double>(per_sample - 1));
    const double std_g = std::sqrt(m2_g / static_cast<double>(per_sample - 1));
    factor[static_cast<size_t>(b)] = static_cast<acc_t<T>>(std_g == 0 ? 1.0 : r * (std_c / std_g) + (1.0 - r));
  }
  return factor;
}

template <typename T>
void run_step(const View& x, const View& m, const View* u, const StepCoefficients& c, double w, double r,
              double clip, uint64_t seed, int64_t offset, const View& prev, const View& x0,
              void (*step)(const StepData<T>&, int64_t, int64_t),
              void (*stats)(const T*, const T*, int64_t, double, double*)) {
  using A = acc_t<T>;
  StepData<T> d;
  d.x = x.ptr<T>();
  d.m = m.ptr<T>();
  d.u = u ? u->ptr<T>() : nullptr;
  d.prev = prev.ptr<T>();
  d.x0 = x0.ptr<T>();
  d.n = x.numel();
  d.per_sample = d.n / x.shape[0];
  d.offset = offset;
  d.seed = seed;
  d.k = cast_coeffs<A>(c);
  d.w = static_cast<A>(w);
  d.clip = static_cast<A>(clip);
  d.factor = nullptr;
  std::vector<A> factor;
  if (u && r > 0) {
    factor = rescale_factors<T>(d.m, d.u, x.shape[0], d.per_sample, w, r, stats);
    d.factor = factor.data();
  }
  parallel_for(noise_tiles(offset, d.n), kNoiseTile, [&](int64_t t0, int64_t t1) { step(d, t0, t1); }, kStepGrain);
}

}  // namespace

void diffusion_step(const View& x, const View& m, const View* u, const View& coeffs, const View* step_view,
                    int64_t step_index, double guidance_scale, double guidance_rescale, double clip,
                    const View* seed_view, int64_t seed_value, int64_t offset, const View& prev, const View& x0) {
  check_float_view(x);
  FL_CHECK(x.ndim() >= 1, kOp, ": argument '", x.name, "' must have a batch dimension first (got a 0-d tensor).");
  check_like(x, m);
  if (u) check_like(x, *u);
  check_like(x, prev);
  check_like(x, x0);
  FL_CHECK(std::isfinite(guidance_scale), kOp, ": guidance_scale must be finite, got ", guidance_scale, ".");
  FL_CHECK(guidance_rescale >= 0 && guidance_rescale <= 1, kOp, ": guidance_rescale must be in [0, 1], got ",
           guidance_rescale, ".");
  FL_CHECK(clip > 0, kOp, ": clip must be > 0 (or +inf for no clipping), got ", clip, ".");
  const int64_t step = step_view ? read_int64_scalar(*step_view, "step") : step_index;
  const StepCoefficients c = read_coefficients(coeffs, step);
  const uint64_t seed = static_cast<uint64_t>(seed_view ? read_int64_scalar(*seed_view, "seed") : seed_value);
  const int64_t n = x.numel();
  check_offset(offset, n);
  if (n == 0) return;
  FL_CHECK(!(u && guidance_rescale > 0) || n / x.shape[0] >= 2, kOp,
           ": guidance_rescale needs at least 2 elements per sample for the standard deviation.");
  switch (x.dtype) {
    case DType::f32: run_step<float>(x, m, u, c, guidance_scale, guidance_rescale, clip, seed, offset, prev, x0, step_f32, stats_f32); break;
    case DType::f64: run_step<double>(x, m, u, c, guidance_scale, guidance_rescale, clip, seed, offset, prev, x0, step_f64, stats_f64); break;
    case DType::f16: run_step<half_t>(x, m, u, c, guidance_scale, guidance_rescale, clip, seed, offset, prev, x0, step_f16, stats_f16); break;
    default: run_step<bfloat16_t>(x, m, u, c, guidance_scale, guidance_rescale, clip, seed, offset, prev, x0, step_bf16, stats_bf16); break;
  }
}

void philox_normal(const View& out, const View* seed_view, int64_t seed_value, int64_t offset) {
  check_float_view(out);
  const uint64_t seed = static_cast<uint64_t>(seed_view ? read_int64_scalar(*seed_view, "seed") : seed_value);
  const int64_t n = out.numel();
  check_offset(offset, n);
  if (n == 0) return;
  parallel_for(noise_tiles(offset, n), kNoiseTile, [&](int64_t t0, int64_t t1) {
    switch (out.dtype) {
      case DType::f32: noise_f32(out.ptr<float>(), n, seed, offset, t0, t1); break;
      case DType::f64: noise_f64(out.ptr<double>(), n, seed, offset, t0, t1); break;
      case DType::f16: noise_f16(out.ptr<half_t>(), n, seed, offset, t0, t1); break;
      default: noise_bf16(out.ptr<bfloat16_t>(), n, seed, offset, t0, t1); break;
    }
  }, kStepGrain);
}

}  // namespace fl::diffusion
