// CPU flash attention. The forward cuts work into query blocks of kQueryBlock rows, the
// backward into key blocks of kBlock columns; the tile products go through a register-blocked
// FMA micro-kernel (MR rows x 16 columns held in 12 vector registers for float32), the softmax
// is online (running max m_i and sum l_i per row) and only the log-sum-exp is saved, so memory
// stays linear in length. float32 weights are base-2 exponentials computed a vector at a time.
//
// Packing: each (batch, kv-head) gets K^T (dim_qk x len_kv, blocked per key tile) once, and V
// (forward) / K (backward's dQ) padded to 16 columns unless their rows are 16-aligned already,
// in which case they are read in place; every tile product then reads its B operand as
// contiguous 16-wide rows. Worked numbers, D = 64, float32: the K^T and V tiles of one 64-key
// block are 16 KiB each; a 24-row step's scores are 6 KiB, so a step's working set stays in L1.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "fastlearn/math.h"
#include "fastlearn/parallel.h"
#include "fastlearn/simd.h"

namespace fl::attention {
namespace {

constexpr int64_t kBlock = 64;  // query rows and key columns per tile
constexpr int64_t kNR = 16;     // micro-kernel columns; packed widths are multiples of this
// Forward tiling, measured single-thread on a Zen 3 core (B=1, H=8, D=64, float32; paired A/B
// runs, medians): 192 query rows per work item stream each head's K^T and V from L3 half as
// often as 96 (N=4096: 3-9% faster; 384 no better); key tiles of 64 (32: 3.5% slower, 128:
// 2-3% slower); 4 row groups (24 rows) per softmax step keep the K^T / V tiles in L1 between
// the two products (1-6% faster than 1 group, 8 and 16 no better).
constexpr int64_t kQueryBlock = 192;  // forward query rows per work item: 32 micro-kernel row groups of 6
constexpr int64_t kFwdBlock = 64;     // forward key columns per tile (divides kBlock)
constexpr int64_t kFwdGroups = 4;     // micro-kernel row groups per softmax step

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// --- micro-kernel ------------------------------------------------------------------------------

// The helpers below pass 32-byte vectors by value; they are always inlined into the
// AVX2/AVX-512 clones, so the baseline ABI GCC warns about (-Wpsabi) is never used.
#pragma GCC diagnostic ignored "-Wpsabi"

template <typename T>
struct Vec {
  static constexpr int kWidth = 32 / static_cast<int>(sizeof(T));
  typedef T type __attribute__((vector_size(32)));
  typedef T unaligned __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));
  static constexpr int kRows = sizeof(T) == 4 ? 6 : 3;  // 6 x 16 floats or 3 x 16 doubles: 12 registers
};

template <typename T>
FL_ALWAYS_INLINE typename Vec<T>::type load(const T* p) {
  return *reinterpret_cast<const typename Vec<T>::unaligned*>(p);
}
template <typename T>
FL_ALWAYS_INLINE void store(T* p, typename Vec<T>::type v) {
  *reinterpret_cast<typename Vec<T>::unaligned*>(p) = v;
}

// A splat written as a shuffle: GCC then emits one vbroadcastss from memory per use (an
// initializer list {s, s, ...} became chains of vinsertps inside the target clones).
template <typename T>
FL_ALWAYS_INLINE typename Vec<T>::type broadcast(T s) {
  const typename Vec<T>::type t = {s};
  if constexpr (sizeof(T) == 4) {
    return __builtin_shufflevector(t, t, 0, 0, 0, 0, 0, 0, 0, 0);
  } else {
    return __builtin_shufflevector(t, t, 0, 0, 0, 0);
  }
}

// C[MR x 16] += A[MR x K] * B[K x 16]; A, B, C row-major with leading dimensions lda, ldb, ldc.
// kTransA reads A stored transposed (K x MR, A[k * lda + i]): dV += P^T dO and dK += dS^T Q
// then use P and dS as computed, with no transposed copy.
// kZero: C = A * B instead (no read of C, so no zero fill before).
template <typename T, int MR, bool kTransA = false, bool kZero = false>
FL_ALWAYS_INLINE void micro_kernel(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict B,
                                   int64_t ldb, T* __restrict C, int64_t ldc) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth, NV = kNR / W;
  V acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = kZero ? V{} : load(C + i * ldc + j * W);
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int j = 0; j < NV; ++j) b[j] = load(B + k * ldb + j * W);
    for (int i = 0; i < MR; ++i) {
      const V a = broadcast<T>(kTransA ? A[k * lda + i] : A[i * lda + k]);
      for (int j = 0; j < NV; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) store(C + i * ldc + j * W, acc[i][j]);
}

// C[M x N] += A[M x K] * B[K x N], N a multiple of 16 (B and C padded). Row groups outside,
// column strips inside: the MR x K panel of A and MR rows of C stay in L1 while the K x N tile
// of B (16 KiB at 64 x 64 floats) is reread from L1; strips outside would stream A and C.
template <typename T, bool kTransA = false, bool kZero = false>
FL_ALWAYS_INLINE void gemm_acc(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                               T* C, int64_t ldc) {
  constexpr int MR = Vec<T>::kRows;
  int64_t m = 0;
  for (; m + MR <= M; m += MR) {
    const T* a = kTransA ? A + m : A + m * lda;
    for (int64_t n = 0; n < N; n += kNR) micro_kernel<T, MR, kTransA, kZero>(K, a, lda, B + n, ldb, C + m * ldc + n, ldc);
  }
  const T* a = kTransA ? A + m : A + m * lda;
  for (int64_t n = 0; n < N; n += kNR) {
    switch (M - m) {
      case 1: micro_kernel<T, 1, kTransA, kZero>(K, a, lda, B + n, ldb, C + m * ldc + n, ldc); break;
      case 2: micro_kernel<T, 2, kTransA, kZero>(K, a, lda, B + n, ldb, C + m * ldc + n, ldc); break;
      case 3: if constexpr (MR > 3) micro_kernel<T, 3, kTransA, kZero>(K, a, lda, B + n, ldb, C + m * ldc + n, ldc); break;
      case 4: if constexpr (MR > 4) micro_kernel<T, 4, kTransA, kZero>(K, a, lda, B + n, ldb, C + m * ldc + n, ldc); break;
      case 5: if constexpr (MR > 5) micro_kernel<T, 5, kTransA, kZero>(K, a, lda, B + n, ldb, C + m * ldc + n, ldc); break;
      default: break;
    }
  }
}

FL_ALWAYS_INLINE float exp_acc(float x) { return exp_f32(x); }
FL_ALWAYS_INLINE double exp_acc(double x) { return std::exp(x); }

// float32 works in base 2: the forward scales the queries (and the mask) by log2(e) once, so
// each weight is 2^(s - m), one add cheaper than e^x and with no range-reduction multiply;
// the saved log-sum-exp is converted back to base e. float64 keeps std::exp.
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;
template <typename T>
constexpr bool kBase2 = sizeof(T) == 4;

// 2^x lane by lane for x <= 0 (or NaN, kept): x = n + f with n = round(x), |f| <= 1/2; 2^f is
// exp_f32's polynomial (fastlearn/math.h) with r = f ln2 folded into the coefficients (relative
// error 2.3e-7), 2^n is built in the exponent bits; x < -127 (and -inf) gives 0.
FL_ALWAYS_INLINE Vec<float>::type exp2_vec(Vec<float>::type x) {
  using V = Vec<float>::type;
  typedef int32_t VI __attribute__((vector_size(32)));
  const V lo = V{} - 127.0f, shift = V{} + (12582912.0f + 127.0f);  // 1.5 * 2^23, plus the bias
  x = lo > x ? lo : x;  // this operand order is vmaxps (keeps a NaN x)
  const V t = x + shift;
  const V f = x - (t - shift);
  V q = V{} + 1.32764166e-3f;
  q = q * f + 9.67554096e-3f;
  q = q * f + 5.55071346e-2f;
  q = q * f + 2.40221187e-1f;
  q = q * f + 6.93146944e-1f;
  q = q * f + 1.0000001f;
  const VI biased = (VI)t - float_bits(12582912.0f);  // n + 127, in [0, 127]
  return q * (V)(biased << 23);
}
FL_ALWAYS_INLINE float exp_base(float x) { return exp_f32(x * kLn2); }  // scalar 2^x (row rescale)
FL_ALWAYS_INLINE double exp_base(double x) { return std::exp(x); }

// Horizontal max / sum of one vector by halving shuffles.
FL_ALWAYS_INLINE float hmax(Vec<float>::type v) {
  using V = Vec<float>::type;
  V w = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v = w > v ? w : v;
  w = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v = w > v ? w : v;
  w = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  v = w > v ? w : v;
  return v[0];
}
FL_ALWAYS_INLINE double hmax(Vec<double>::type v) {
  double r = v[0];
  for (int w = 1; w < 4; ++w) r = v[w] > r ? v[w] : r;
  return r;
}
FL_ALWAYS_INLINE float hsum(Vec<float>::type v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return v[0];
}

// Whether s[0, n) holds a NaN (rare branches only: rows whose max is -inf).
template <typename T>
bool any_nan(const T* s, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    if (s[j] != s[j]) return true;
  return false;
}

// Max of s[0, n), n a multiple of kNR; NaNs are skipped (as the scalar `a > m ? a : m`).
template <typename T>
FL_ALWAYS_INLINE T row_max(const T* s, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  V m = V{} - std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; j += W) {
    const V x = load(s + j);
    m = x > m ? x : m;
  }
  return hmax(m);
}

// s[j] = base^(s[j] - m) over [0, n), n a multiple of kNR; returns the sum.
FL_ALWAYS_INLINE float exp_sum_row(float* s, int64_t n, float m) {
  using V = Vec<float>::type;
  const V mv = broadcast(m);
  V sum0{}, sum1{};
  for (int64_t j = 0; j < n; j += 16) {
    const V e0 = exp2_vec(load(s + j) - mv), e1 = exp2_vec(load(s + j + 8) - mv);
    store(s + j, e0);
    store(s + j + 8, e1);
    sum0 += e0;
    sum1 += e1;
  }
  return hsum(sum0 + sum1);
}
FL_ALWAYS_INLINE double exp_sum_row(double* s, int64_t n, double m) {
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const double e = std::exp(s[j] - m);
    s[j] = e;
    sum += e;
  }
  return sum;
}

// --- dropout -----------------------------------------------------------------------------------

// murmur3's finaliser: a cheap bijective 32-bit mixer (also in kernels/triton/attention.py).
FL_ALWAYS_INLINE uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}
FL_ALWAYS_INLINE uint32_t row_key(uint64_t seed, int64_t bh, int64_t row) {
  const uint32_t lo = static_cast<uint32_t>(seed), hi = static_cast<uint32_t>(seed >> 32);
  return fmix32(fmix32(hi + static_cast<uint32_t>(bh) * 0x9e3779b9u) ^ (lo + static_cast<uint32_t>(row) * 0x85ebca6bu));
}
// Keep iff the top 24 bits of the element's hash are >= p * 2^24.
FL_ALWAYS_INLINE bool keep_element(uint32_t key, int64_t col, uint32_t threshold) {
  return (fmix32(key + static_cast<uint32_t>(col) * 0x27d4eb2fu) >> 8) >= threshold;
}
uint32_t dropout_threshold(double p) { return static_cast<uint32_t>(std::llround(p * 16777216.0)); }

// --- problem description -----------------------------------------------------------------------

template <typename T>
struct Problem {
  int64_t B, Hq, Hkv, group, L, S, E, Ev, EP, EvP, SP;
  T scale;
  bool causal;
  bool dropout;
  T keep_scale;  // 1 / (1 - p)
  uint32_t threshold;
  uint64_t seed;
  const T *q, *k, *v;
  const T* bias;
  int64_t bias_stride[4];
  // packed per (batch, kv-head): kt: E x SP (blocked); vp: SP x EvP; (backward) vt: Ev x SP
  // (blocked); kp: SP x EP. V and K are read in place instead of vp and kp when their rows
  // are already a multiple of 16 wide (v_direct, k_direct): the products only read rows < S.
  T *kt, *vp, *vt, *kp;
  bool v_direct, k_direct;
};

template <typename T>
Problem<T> describe(const View& query, const View& key, const View& value, const View* bias, const Options& opt) {
  Problem<T> p{};
  p.B = query.size(0), p.Hq = query.size(1), p.L = query.size(2), p.E = query.size(3);
  p.Hkv = key.size(1), p.S = key.size(2), p.Ev = value.size(3);
  p.group = p.Hq / p.Hkv;
  p.EP = round_up(p.E, kNR), p.EvP = round_up(p.Ev, kNR), p.SP = round_up(p.S, std::max(kBlock, kFwdBlock));
  p.scale = static_cast<T>(opt.scale);
  p.causal = opt.causal;
  p.dropout = opt.dropout_p > 0;
  p.keep_scale = p.dropout ? static_cast<T>(1.0 / (1.0 - opt.dropout_p)) : T(1);
  p.threshold = dropout_threshold(opt.dropout_p);
  p.seed = opt.seed;
  p.v_direct = p.Ev == p.EvP, p.k_direct = p.E == p.EP;
  p.q = query.ptr<T>(), p.k = key.ptr<T>(), p.v = value.ptr<T>();
  p.bias = bias ? bias->ptr<T>() : nullptr;
  for (int d = 0; d < 4; ++d) p.bias_stride[d] = bias ? bias->strides[d] : 0;
  return p;
}

// K^T and V^T are stored per key block ([block][dim][nb], nb = kFwdBlock for the forward's
// K^T, kBlock for the backward's): a 16-column strip then has rows nb * 4 bytes apart instead
// of len_kv * 4 (a multiple of 4 KiB aliases one L1 set), and one block's tile is contiguous.
FL_ALWAYS_INLINE int64_t blocked(int64_t dim, int64_t e, int64_t j, int64_t nb) {
  return (j / nb) * dim * nb + e * nb + j % nb;
}

// Rows of V (forward) and K (backward's dQ product) of one (batch, kv-head), EvP / EP apart.
template <typename T>
FL_ALWAYS_INLINE const T* v_rows(const Problem<T>& p, int64_t unit) {
  return p.v_direct ? p.v + unit * p.S * p.Ev : p.vp + unit * p.SP * p.EvP;
}
template <typename T>
FL_ALWAYS_INLINE const T* k_rows(const Problem<T>& p, int64_t unit) {
  return p.k_direct ? p.k + unit * p.S * p.E : p.kp + unit * p.SP * p.EP;
}

// dst (SP x ldd) = src (S x n) with zero padding; the buffers come uninitialised.
template <typename T>
FL_ALWAYS_INLINE void pad_rows(T* dst, int64_t ldd, const T* src, int64_t n, int64_t S, int64_t SP) {
  for (int64_t j = 0; j < S; ++j) {
    std::memcpy(dst + j * ldd, src + j * n, sizeof(T) * n);
    std::fill(dst + j * ldd + n, dst + (j + 1) * ldd, T(0));
  }
  std::fill(dst + S * ldd, dst + SP * ldd, T(0));
}
// dst (blocked, dim x SP) = src^T (src S x dim), zero columns S..SP.
template <typename T>
FL_ALWAYS_INLINE void pack_transposed(T* dst, const T* src, int64_t dim, int64_t S, int64_t SP, int64_t nb) {
  for (int64_t j0 = 0; j0 < S; j0 += 16)  // transpose in 16-row strips (cache friendly)
    for (int64_t e = 0; e < dim; ++e)
      for (int64_t j = j0; j < std::min(S, j0 + 16); ++j) dst[blocked(dim, e, j, nb)] = src[j * dim + e];
  for (int64_t e = 0; e < dim; ++e)
    for (int64_t j = S; j < SP; ++j) dst[blocked(dim, e, j, nb)] = T(0);
}

// Pack what one (batch, kv-head) needs: forward K^T (and V unless read in place); backward
// K^T, V^T (and K unless read in place).
template <typename T>
FL_ALWAYS_INLINE void pack_head(const Problem<T>& p, int64_t unit, bool backward) {
  const T* k = p.k + unit * p.S * p.E;
  const T* v = p.v + unit * p.S * p.Ev;
  pack_transposed(p.kt + unit * p.E * p.SP, k, p.E, p.S, p.SP, backward ? kBlock : kFwdBlock);
  if (!backward) {
    if (!p.v_direct) pad_rows(p.vp + unit * p.SP * p.EvP, p.EvP, v, p.Ev, p.S, p.SP);
    return;
  }
  pack_transposed(p.vt + unit * p.Ev * p.SP, v, p.Ev, p.S, p.SP, kBlock);
  if (!p.k_direct) pad_rows(p.kp + unit * p.SP * p.EP, p.EP, k, p.E, p.S, p.SP);
}

// Scores of one tile row in place: s = scale * s + bias, and -inf where the key is masked out
// (beyond len_kv, or above the diagonal when causal). Returns the row max.
template <typename T>
FL_ALWAYS_INLINE T score_row(const Problem<T>& p, T* s, int64_t b, int64_t h, int64_t row, int64_t k0,
                             int64_t width, T scale, T bias_mul = T(1)) {
  int64_t visible = std::min<int64_t>(width, p.S - k0);
  if (p.causal) visible = std::max<int64_t>(0, std::min<int64_t>(visible, row - k0 + 1));
  if (p.bias) {
    const T* bias = p.bias + b * p.bias_stride[0] + h * p.bias_stride[1] + row * p.bias_stride[2] + k0 * p.bias_stride[3];
    const int64_t bs = p.bias_stride[3];
#pragma omp simd
    for (int64_t j = 0; j < visible; ++j) s[j] = s[j] * scale + bias[j * bs] * bias_mul;
  } else if (scale != T(1)) {
#pragma omp simd
    for (int64_t j = 0; j < visible; ++j) s[j] = s[j] * scale;
  }
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (int64_t j = visible; j < width; ++j) s[j] = kNegInf;
  T m = kNegInf;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < visible; ++j) m = s[j] > m ? s[j] : m;
  return m;
}

// --- forward -----------------------------------------------------------------------------------

// Lazy rescaling (as FlashAttention-4): a row's weights are 2^(s - m) against a reference max
// m that is only raised when a tile's max exceeds it by more than kLazyMax (weights up to 256);
// the result stays exact because the final normalisation and the log-sum-exp use the same m.
constexpr float kLazyMax = 8.0f;

// One full, unmasked float32 row of kFwdBlock scores (log2 units) in one pass: the row is
// loaded into registers once, its max only checked against the reference (a rare rescale of
// the accumulator row, its sums and m), then turned into weights in place. The sum goes into
// a per-row vector (lv), reduced once at the end of the row's keys.
FL_ALWAYS_INLINE void lazy_softmax_row(float* si, float* m, float* l, float* lv, float* acc, int64_t EvP) {
  using V = Vec<float>::type;
  constexpr int NV = static_cast<int>(kFwdBlock) / 8;
  V x[NV];
  for (int j = 0; j < NV; ++j) x[j] = load(si + 8 * j);
  V mx0 = V{} - std::numeric_limits<float>::infinity(), mx1 = mx0;  // two chains; NaNs skipped, as row_max
  for (int j = 0; j < NV; j += 2) {
    mx0 = x[j] > mx0 ? x[j] : mx0;
    mx1 = x[j + 1] > mx1 ? x[j + 1] : mx1;
  }
  const float tile_max = hmax(mx1 > mx0 ? mx1 : mx0);
  if (__builtin_expect(!(tile_max <= *m + kLazyMax), 0)) {  // also taken while *m is -inf
    const float m_new = std::max(*m, tile_max);
    if (m_new == -std::numeric_limits<float>::infinity()) {  // nothing visible yet (all -inf or NaN)
      if (any_nan(si, kFwdBlock)) *l = std::numeric_limits<float>::quiet_NaN();  // a NaN score: NaN row
      std::fill(si, si + kFwdBlock, 0.0f);
      return;
    }
    if (m_new != *m) {
      const float alpha = exp_base(*m - m_new);
      *l *= alpha;
      for (int w = 0; w < 8; ++w) lv[w] *= alpha;
#pragma omp simd
      for (int64_t e = 0; e < EvP; ++e) acc[e] *= alpha;
      *m = m_new;
    }
  }
  const V mv = broadcast(*m);
  V e[NV];
  for (int j = 0; j < NV; ++j) {
    e[j] = exp2_vec(x[j] - mv);
    store(si + 8 * j, e[j]);
  }
  for (int w = NV / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) e[j] += e[j + w];
  store(lv, load(lv) + e[0]);
}

// One (batch, head, query block): the online-softmax loop over key blocks. Inside a key
// block each micro-kernel row group (6 rows for float32) runs start to finish: its score
// strip (6 x kFwdBlock) is computed, turned into weights and multiplied into its accumulator
// rows while still in L1, and the key block's K^T and V tiles (2 x 8 KiB at kFwdBlock = 32,
// D = 64) stay in L1 across the row groups.
template <typename T>
FL_ALWAYS_INLINE void forward_block(const Problem<T>& p, int64_t item, T* out, T* lse, T* work) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  constexpr int64_t GR = Vec<T>::kRows * kFwdGroups;
  const int64_t nqb = (p.L + kQueryBlock - 1) / kQueryBlock;
  const int64_t bh = item / nqb, qb = item % nqb;
  const int64_t b = bh / p.Hq, h = bh % p.Hq, unit = b * p.Hkv + h / p.group;
  const int64_t q0 = qb * kQueryBlock, rows = std::min(kQueryBlock, p.L - q0);
  T* qs = work;                         // rows x E
  T* s = qs + kQueryBlock * p.E;        // GR x kFwdBlock: one row group's scores, then weights
  T* acc = s + GR * kFwdBlock;          // rows x EvP
  T* m = acc + kQueryBlock * p.EvP;     // rows
  T* l = m + kQueryBlock;               // rows
  T* lv = l + kQueryBlock;              // rows x vector width: the lazy path's partial sums
  const T* q = p.q + (bh * p.L + q0) * p.E;  // scaled once here, so the scores need no multiply
  const T base = kBase2<T> ? T(kLog2e) : T(1);   // scores in log2 units for float32
  const T qscale = p.scale * base;
#pragma omp simd
  for (int64_t i = 0; i < rows * p.E; ++i) qs[i] = q[i] * qscale;
  std::fill(acc, acc + rows * p.EvP, T(0));
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, T(0));
  std::fill(lv, lv + rows * Vec<T>::kWidth, T(0));
  const T* kt = p.kt + unit * p.E * p.SP;
  const T* vp = v_rows(p, unit);
  int64_t k_end = p.S;
  if (p.causal) k_end = std::min(p.S, q0 + rows);  // keys past the last row are all masked
  for (int64_t k0 = 0; k0 < k_end; k0 += kFwdBlock) {
    const int64_t width = std::min(kFwdBlock, round_up(p.S - k0, kNR));
    for (int64_t g0 = 0; g0 < rows; g0 += GR) {
      const int64_t mr = std::min(GR, rows - g0);
      if (p.causal && k0 > q0 + g0 + mr - 1) continue;  // the group sees none of these keys
      // Every score of the strip visible and unbiased: no masking pass, just the max.
      const bool plain = !p.bias && k0 + width <= p.S && (!p.causal || k0 + width - 1 <= q0 + g0);
      gemm_acc<T, false, true>(mr, width, p.E, qs + g0 * p.E, p.E, kt + k0 * p.E, kFwdBlock, s, kFwdBlock);
      for (int64_t i = 0; i < mr; ++i) {
        T* si = s + i * kFwdBlock;
        const int64_t r = g0 + i, row = q0 + r;
        if constexpr (kBase2<T>) {
          if (plain && !p.dropout && width == kFwdBlock) {
            lazy_softmax_row(si, m + r, l + r, lv + r * Vec<T>::kWidth, acc + r * p.EvP, p.EvP);
            continue;
          }
        }
        const T tile_max = plain ? row_max(si, width) : score_row(p, si, b, h, row, k0, width, T(1), base);
        const T m_new = std::max(m[r], tile_max);
        if (m_new == kNegInf) {  // nothing visible yet: the row's weights stay zero
          if (any_nan(si, width)) l[r] = std::numeric_limits<T>::quiet_NaN();  // a NaN score: NaN row
          std::fill(si, si + width, T(0));
          continue;
        }
        const T alpha = m_new == m[r] ? T(1) : exp_base(m[r] - m_new);
        l[r] = l[r] * alpha + exp_sum_row(si, width, m_new);
        m[r] = m_new;
        if (p.dropout) {
          const uint32_t key = row_key(p.seed, bh, row);
          for (int64_t j = 0; j < width; ++j) si[j] = keep_element(key, k0 + j, p.threshold) ? si[j] * p.keep_scale : T(0);
        }
        if (alpha != T(1)) {
          for (int w = 0; w < Vec<T>::kWidth; ++w) lv[r * Vec<T>::kWidth + w] *= alpha;
          T* ai = acc + r * p.EvP;
#pragma omp simd
          for (int64_t e = 0; e < p.EvP; ++e) ai[e] *= alpha;
        }
      }
      gemm_acc<T>(mr, p.EvP, std::min(width, p.S - k0), s, kFwdBlock, vp + k0 * p.EvP, p.EvP, acc + g0 * p.EvP, p.EvP);
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    T* o = out + (bh * p.L + q0 + i) * p.Ev;
    const T* ai = acc + i * p.EvP;
    for (int w = 0; w < Vec<T>::kWidth; ++w) l[i] += lv[i * Vec<T>::kWidth + w];
    if (l[i] > 0 || l[i] != l[i]) {  // a NaN sum (a NaN score) gives a NaN row, as in PyTorch
      const T inv = T(1) / l[i];
#pragma omp simd
      for (int64_t e = 0; e < p.Ev; ++e) o[e] = ai[e] * inv;
      lse[bh * p.L + q0 + i] = kBase2<T> ? (m[i] + std::log2(l[i])) * T(kLn2) : m[i] + std::log(l[i]);
    } else {  // no visible key: output 0 (as PyTorch), lse +inf so the backward's weights are 0
      std::fill(o, o + p.Ev, T(0));
      lse[bh * p.L + q0 + i] = std::numeric_limits<T>::infinity();
    }
  }
}

// --- backward ----------------------------------------------------------------------------------

// One (batch, kv-head, key block): dK and dV of the block, and its share of dQ added to dq_acc
// (len_q x EP per query head of the unit, owned by this thread).
template <typename T>
FL_ALWAYS_INLINE void backward_block(const Problem<T>& p, int64_t unit, int64_t kb, const T* go, const T* lse,
                                     const T* delta, T* dq_acc, T* dk, T* dv, T* work) {
  const int64_t b = unit / p.Hkv, hk = unit % p.Hkv;
  const int64_t k0 = kb * kBlock, cols = std::min(kBlock, p.S - k0);
  const int64_t width = std::min(kBlock, round_up(p.S - k0, kNR));
  T* qp = work;                       // rows x EP (query block, zero padded)
  T* gop = qp + kBlock * p.EP;        // rows x EvP (grad_out block)
  T* s = gop + kBlock * p.EvP;        // rows x kBlock: scores, then (dropped) probabilities
  T* dp = s + kBlock * kBlock;        // rows x kBlock: dP, then dS
  T* dk_acc = dp + kBlock * kBlock;   // kBlock x EP
  T* dv_acc = dk_acc + kBlock * p.EP; // kBlock x EvP
  const T* kt = p.kt + unit * p.E * p.SP;
  const T* vt = p.vt + unit * p.Ev * p.SP;
  const T* kp = k_rows(p, unit);
  std::fill(dk_acc, dk_acc + kBlock * p.EP, T(0));
  std::fill(dv_acc, dv_acc + kBlock * p.EvP, T(0));
  std::fill(qp, qp + kBlock * p.EP, T(0));
  std::fill(gop, gop + kBlock * p.EvP, T(0));
  const int64_t q_start = p.causal ? (k0 / kBlock) * kBlock : 0;  // rows above k0 see none of these keys
  for (int64_t g = 0; g < p.group; ++g) {
    const int64_t h = hk * p.group + g, bh = b * p.Hq + h;
    T* dq = dq_acc + g * p.L * p.EP;
    for (int64_t q0 = q_start; q0 < p.L; q0 += kBlock) {
      const int64_t rows = std::min(kBlock, p.L - q0);
      // Query and grad_out rows in place when 16-aligned (they are B operands below), else padded copies.
      const T* qb = p.q + (bh * p.L + q0) * p.E;
      const T* gb = go + (bh * p.L + q0) * p.Ev;
      if (p.E != p.EP) {
        for (int64_t i = 0; i < rows; ++i) std::memcpy(qp + i * p.EP, qb + i * p.E, sizeof(T) * p.E);
        qb = qp;
      }
      if (p.Ev != p.EvP) {
        for (int64_t i = 0; i < rows; ++i) std::memcpy(gop + i * p.EvP, gb + i * p.Ev, sizeof(T) * p.Ev);
        gb = gop;
      }
      gemm_acc<T, false, true>(rows, width, p.E, qb, p.EP, kt + k0 * p.E, kBlock, s, kBlock);
      gemm_acc<T, false, true>(rows, width, p.Ev, gb, p.EvP, vt + k0 * p.Ev, kBlock, dp, kBlock);
      // Every score of the tile visible and unbiased: one fused pass per row.
      const bool plain = !p.bias && !p.dropout && k0 + width <= p.S && (!p.causal || k0 + width - 1 <= q0);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = q0 + i;
        T* si = s + i * kBlock;
        T* dpi = dp + i * kBlock;
        const T lse_i = lse[bh * p.L + row], delta_i = delta[bh * p.L + row];
        if constexpr (kBase2<T>) {  // P = 2^(s scale log2(e) - lse log2(e)), as the forward's weights
          using V = typename Vec<T>::type;
          constexpr int W = Vec<T>::kWidth;
          const V lse2 = broadcast<T>(lse_i * kLog2e), dl = broadcast<T>(delta_i), sc = broadcast<T>(p.scale);
          if (plain) {
            const V c = broadcast<T>(p.scale * kLog2e);
            for (int64_t j = 0; j < width; j += W) {
              const V pj = exp2_vec(load(si + j) * c - lse2);
              store(si + j, pj);
              store(dpi + j, pj * (load(dpi + j) - dl) * sc);
            }
            continue;
          }
          score_row(p, si, b, h, row, k0, width, p.scale * kLog2e, kLog2e);
          for (int64_t j = 0; j < width; j += W) store(si + j, exp2_vec(load(si + j) - lse2));  // 0 when masked
        } else {
          score_row(p, si, b, h, row, k0, width, p.scale);
#pragma omp simd
          for (int64_t j = 0; j < width; ++j) si[j] = exp_acc(si[j] - lse_i);  // P (0 when masked or lse = inf)
        }
        if (p.dropout) {  // si becomes the dropped weights P * Z, dpi becomes dS
          const uint32_t key = row_key(p.seed, bh, row);
          for (int64_t j = 0; j < width; ++j) {
            const T z = keep_element(key, k0 + j, p.threshold) ? p.keep_scale : T(0);
            dpi[j] = si[j] * (dpi[j] * z - delta_i) * p.scale;
            si[j] *= z;
          }
        } else {
#pragma omp simd
          for (int64_t j = 0; j < width; ++j) dpi[j] = si[j] * (dpi[j] - delta_i) * p.scale;
        }
      }
      gemm_acc<T, true>(cols, p.EvP, rows, s, kBlock, gb, p.EvP, dv_acc, p.EvP);   // dV += (P Z)^T dO
      gemm_acc<T, true>(cols, p.EP, rows, dp, kBlock, qb, p.EP, dk_acc, p.EP);      // dK += dS^T Q
      gemm_acc<T>(rows, p.EP, cols, dp, kBlock, kp + k0 * p.EP, p.EP, dq + q0 * p.EP, p.EP);
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    std::memcpy(dk + (unit * p.S + k0 + j) * p.E, dk_acc + j * p.EP, sizeof(T) * p.E);
    std::memcpy(dv + (unit * p.S + k0 + j) * p.Ev, dv_acc + j * p.EvP, sizeof(T) * p.Ev);
  }
}

// --- drivers (run-time dispatched clones; the loops above inline into them) --------------------

template <typename T>
FL_ALWAYS_INLINE void pack_range(const Problem<T>& p, int64_t u0, int64_t u1, bool backward) {
  for (int64_t u = u0; u < u1; ++u) pack_head(p, u, backward);
}
template <typename T>
FL_ALWAYS_INLINE void forward_range(const Problem<T>& p, int64_t i0, int64_t i1, T* out, T* lse) {
  std::vector<T> work(static_cast<size_t>(kQueryBlock * (p.E + p.EvP + 2 + Vec<T>::kWidth) + Vec<T>::kRows * kFwdGroups * kFwdBlock));
  for (int64_t i = i0; i < i1; ++i) forward_block(p, i, out, lse, work.data());
}
template <typename T>
FL_ALWAYS_INLINE void backward_range(const Problem<T>& p, int64_t i0, int64_t i1, int64_t chunks, const T* go,
                                     const T* lse, const T* delta, T* dq_acc, T* dk, T* dv) {
  std::vector<T> work(static_cast<size_t>(kBlock * (2 * p.EP + 2 * p.EvP + 2 * kBlock)));
  const int64_t nkb = (p.S + kBlock - 1) / kBlock;
  const int64_t per_chunk = (nkb + chunks - 1) / chunks;
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t unit = item / chunks, c = item % chunks;
    T* dq = dq_acc + (c * p.B * p.Hkv + unit) * p.group * p.L * p.EP;
    for (int64_t kb = c * per_chunk; kb < std::min(nkb, (c + 1) * per_chunk); ++kb)
      backward_block(p, unit, kb, go, lse, delta, dq, dk, dv, work.data());
  }
}

#define FL_ATTENTION_DRIVERS(T, SUFFIX, ATTR)                                                                 \
  ATTR void pack_##SUFFIX(const Problem<T>& p, int64_t u0, int64_t u1, bool backward) {                    \
    pack_range(p, u0, u1, backward);                                                                        \
  }                                                                                                         \
  ATTR void forward_##SUFFIX(const Problem<T>& p, int64_t i0, int64_t i1, T* out, T* lse) {                \
    forward_range(p, i0, i1, out, lse);                                                                     \
  }                                                                                                         \
  ATTR void backward_##SUFFIX(const Problem<T>& p, int64_t i0, int64_t i1, int64_t chunks, const T* go,    \
                              const T* lse, const T* delta, T* dq_acc, T* dk, T* dv) {                      \
    backward_range(p, i0, i1, chunks, go, lse, delta, dq_acc, dk, dv);                                      \
  }
FL_ATTENTION_DRIVERS(float, f32, FL_MULTIVERSION)
FL_ATTENTION_DRIVERS(double, f64, FL_MULTIVERSION)
#undef FL_ATTENTION_DRIVERS

void pack(const Problem<float>& p, int64_t a, int64_t b, bool bw) { pack_f32(p, a, b, bw); }
void pack(const Problem<double>& p, int64_t a, int64_t b, bool bw) { pack_f64(p, a, b, bw); }
void forward_items(const Problem<float>& p, int64_t a, int64_t b, float* o, float* l) { forward_f32(p, a, b, o, l); }
void forward_items(const Problem<double>& p, int64_t a, int64_t b, double* o, double* l) { forward_f64(p, a, b, o, l); }
void backward_items(const Problem<float>& p, int64_t a, int64_t b, int64_t c, const float* go, const float* lse,
                    const float* d, float* dq, float* dk, float* dv) {
  backward_f32(p, a, b, c, go, lse, d, dq, dk, dv);
}
void backward_items(const Problem<double>& p, int64_t a, int64_t b, int64_t c, const double* go, const double* lse,
                    const double* d, double* dq, double* dk, double* dv) {
  backward_f64(p, a, b, c, go, lse, d, dq, dk, dv);
}

// Work items of very different cost (causal blocks) or threads descheduled on a busy machine
// make static chunks wait for the slowest; items are handed out one at a time instead.
template <typename F>
void parallel_dynamic(int64_t n, F&& body) {
  const int64_t threads = std::min<int64_t>(omp_get_max_threads(), n);
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(threads))
  for (int64_t i = 0; i < n; ++i) body(i, i + 1);
}

// --- checks ------------------------------------------------------------------------------------

void check_tensor(const View& v, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const View& like, const char* op) {
  FL_CHECK(v.device == Device::cpu, op, ": argument '", v.name, "' must be a CPU tensor here.");
  FL_CHECK_TYPE(v.dtype == like.dtype, op, ": argument '", v.name, "' has dtype ", dtype_name(v.dtype), " but '",
                like.name, "' has ", dtype_name(like.dtype), "; convert them to one dtype.");
  FL_CHECK(v.ndim() == 4 && v.shape[0] == d0 && v.shape[1] == d1 && v.shape[2] == d2 && v.shape[3] == d3, op,
           ": argument '", v.name, "' has the wrong shape for this call.");
  check_contiguous(v, op);
}

void check_inputs(const View& q, const View& k, const View& v, const View* bias, const Options& opt, const char* op) {
  check_dtype(q, {DType::f32, DType::f64}, op);
  FL_CHECK(q.device == Device::cpu, op, ": argument 'query' must be a CPU tensor here.");
  FL_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, op,
           ": query, key and value must be 4-d (batch, heads, length, dim) here.");
  const int64_t B = q.size(0), Hq = q.size(1), L = q.size(2), E = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), Ev = v.size(3);
  FL_CHECK(Hkv > 0 && Hq % Hkv == 0, op, ": heads of 'query' (", Hq, ") must be a multiple of the heads of 'key' (",
           Hkv, ").");
  check_contiguous(q, op);
  check_tensor(k, B, Hkv, S, E, q, op);
  check_tensor(v, B, Hkv, S, Ev, q, op);
  if (bias) {
    FL_CHECK(bias->device == Device::cpu, op, ": argument 'attn_mask' must be a CPU tensor here.");
    FL_CHECK_TYPE(bias->dtype == q.dtype, op, ": argument 'attn_mask' must have the dtype of 'query' here.");
    FL_CHECK(bias->ndim() == 4 && bias->shape[0] == B && bias->shape[1] == Hq && bias->shape[2] == L &&
                 bias->shape[3] == S,
             op, ": argument 'attn_mask' must be expanded to (batch, heads, len_q, len_kv) here.");
  }
  FL_CHECK(opt.dropout_p >= 0 && opt.dropout_p < 1, op, ": dropout_p must be in [0, 1), got ", opt.dropout_p, ".");
  FL_CHECK(std::isfinite(opt.scale), op, ": scale must be finite, got ", opt.scale, ".");
}

template <typename T>
void forward_typed(const View& query, const View& key, const View& value, const View* bias, const View& out,
                   const View& lse, const Options& opt) {
  Problem<T> p = describe<T>(query, key, value, bias, opt);
  if (p.B * p.Hq * p.L == 0) return;
  if (p.S == 0) {  // no keys: PyTorch returns zeros
    std::fill(out.ptr<T>(), out.ptr<T>() + out.numel(), T(0));
    std::fill(lse.ptr<T>(), lse.ptr<T>() + lse.numel(), std::numeric_limits<T>::infinity());
    return;
  }
  const int64_t units = p.B * p.Hkv;
  // Uninitialised (pack_head writes every element): no zeroing pass over megabytes.
  std::unique_ptr<T[]> kt(new T[static_cast<size_t>(units * p.E * p.SP)]);
  std::unique_ptr<T[]> vp(new T[p.v_direct ? 0 : static_cast<size_t>(units * p.SP * p.EvP)]);
  p.kt = kt.get(), p.vp = vp.get();
  parallel_for(units, p.S * (p.E + p.Ev), [&](int64_t a, int64_t b) { pack(p, a, b, false); });
  const int64_t nqb = (p.L + kQueryBlock - 1) / kQueryBlock;
  const int64_t items = p.B * p.Hq * nqb;
  auto run = [&](int64_t a, int64_t b) { forward_items(p, a, b, out.ptr<T>(), lse.ptr<T>()); };
  if (items * kQueryBlock * p.S * (p.E + p.Ev) < 4 * kParallelGrain)
    run(0, items);  // too small to pay for threads
  else
    parallel_dynamic(items, run);
}

template <typename T>
void backward_typed(const View& grad_out, const View& query, const View& key, const View& value, const View* bias,
                    const View& out, const View& lse, const View& grad_query, const View& grad_key,
                    const View& grad_value, const Options& opt) {
  Problem<T> p = describe<T>(query, key, value, bias, opt);
  T* dq = grad_query.ptr<T>();
  T* dk = grad_key.ptr<T>();
  T* dv = grad_value.ptr<T>();
  std::fill(dq, dq + grad_query.numel(), T(0));
  std::fill(dk, dk + grad_key.numel(), T(0));
  std::fill(dv, dv + grad_value.numel(), T(0));
  if (p.B * p.Hq * p.L == 0 || p.S == 0) return;
  const int64_t units = p.B * p.Hkv;
  std::unique_ptr<T[]> kt(new T[static_cast<size_t>(units * p.E * p.SP)]);
  std::unique_ptr<T[]> vt(new T[static_cast<size_t>(units * p.Ev * p.SP)]);
  std::unique_ptr<T[]> kp(new T[p.k_direct ? 0 : static_cast<size_t>(units * p.SP * p.EP)]);
  p.kt = kt.get(), p.vt = vt.get(), p.kp = kp.get();
  parallel_for(units, 2 * p.S * (p.E + p.Ev), [&](int64_t a, int64_t b) { pack(p, a, b, true); });
  // delta_i = <grad_out_i, out_i>: the row term of the softmax gradient.
  const int64_t rows = p.B * p.Hq * p.L;
  std::vector<T> delta(static_cast<size_t>(rows));
  const T* go = grad_out.ptr<T>();
  const T* o = out.ptr<T>();
  parallel_for(rows, p.Ev, [&](int64_t a, int64_t b) {
    for (int64_t r = a; r < b; ++r) {
      T d = 0;
      for (int64_t e = 0; e < p.Ev; ++e) d += go[r * p.Ev + e] * o[r * p.Ev + e];
      delta[static_cast<size_t>(r)] = d;
    }
  });
  // Each (unit, chunk of key blocks) is one work item; with fewer units than threads the key
  // blocks are split into chunks whose dQ shares go to private buffers, summed afterwards.
  const int64_t nkb = (p.S + kBlock - 1) / kBlock;
  const int64_t threads = omp_get_max_threads();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(nkb, (2 * threads + units - 1) / units));
  // One chunk and unpadded rows: each item owns its heads' rows of grad_query (zeroed above),
  // which then has dq_acc's layout, so the shares go there directly.
  const bool direct_dq = chunks == 1 && p.E == p.EP;
  std::vector<T> dq_acc(direct_dq ? 0 : static_cast<size_t>(chunks * units * p.group * p.L * p.EP), T(0));
  T* dq_dst = direct_dq ? dq : dq_acc.data();
  auto run = [&](int64_t a, int64_t b) {
    backward_items(p, a, b, chunks, go, lse.ptr<T>(), delta.data(), dq_dst, dk, dv);
  };
  if (p.B * p.Hq * p.L * p.S * (p.E + p.Ev) < 4 * kParallelGrain)
    run(0, units * chunks);
  else
    parallel_dynamic(units * chunks, run);
  if (direct_dq) return;
  parallel_for(rows, p.E * chunks, [&](int64_t a, int64_t b) {
    for (int64_t r = a; r < b; ++r)
      for (int64_t c = 0; c < chunks; ++c) {
        const T* src = dq_acc.data() + (c * rows + r) * p.EP;
        for (int64_t e = 0; e < p.E; ++e) dq[r * p.E + e] += src[e];
      }
  });
}

}  // namespace

bool dropout_keep(uint64_t seed, int64_t bh, int64_t row, int64_t col, double p) {
  return keep_element(row_key(seed, bh, row), col, dropout_threshold(p));
}

void forward(const View& query, const View& key, const View& value, const View* bias, const View& out,
             const View& lse, const Options& opt) {
  const char* op = "scaled_dot_product_attention";
  check_inputs(query, key, value, bias, opt, op);
  check_tensor(out, query.size(0), query.size(1), query.size(2), value.size(3), query, op);
  FL_CHECK(lse.numel() == query.size(0) * query.size(1) * query.size(2) && lse.dtype == query.dtype, op,
           ": 'lse' buffer has the wrong shape or dtype.");
  if (query.dtype == DType::f32)
    forward_typed<float>(query, key, value, bias, out, lse, opt);
  else
    forward_typed<double>(query, key, value, bias, out, lse, opt);
}

void backward(const View& grad_out, const View& query, const View& key, const View& value, const View* bias,
              const View& out, const View& lse, const View& grad_query, const View& grad_key,
              const View& grad_value, const Options& opt) {
  const char* op = "scaled_dot_product_attention backward";
  check_inputs(query, key, value, bias, opt, op);
  const int64_t B = query.size(0), Hq = query.size(1), L = query.size(2), Ev = value.size(3);
  check_tensor(grad_out, B, Hq, L, Ev, query, op);
  check_tensor(out, B, Hq, L, Ev, query, op);
  check_tensor(grad_query, B, Hq, L, query.size(3), query, op);
  check_tensor(grad_key, B, key.size(1), key.size(2), key.size(3), query, op);
  check_tensor(grad_value, B, value.size(1), value.size(2), Ev, query, op);
  FL_CHECK(lse.numel() == B * Hq * L && lse.dtype == query.dtype, op, ": 'lse' has the wrong shape or dtype.");
  if (query.dtype == DType::f32)
    backward_typed<float>(grad_out, query, key, value, bias, out, lse, grad_query, grad_key, grad_value, opt);
  else
    backward_typed<double>(grad_out, query, key, value, bias, out, lse, grad_query, grad_key, grad_value, opt);
}

}  // namespace fl::attention
