// CPU kernel of the Gaussian-mixture pass (see gaussian_mixture.h).
//
// Work is cut into blocks of B points spread over threads; threads keep their own float64
// statistics, summed in thread order at the end. Per block:
// 1. w[k, n] = offset_k - ||(x_n - mu_k) P_k||^2 / 2.
//    full: the block is transposed once (XT, D x B, a feature of the block's points
//    contiguous), so the points sit in the SIMD lanes: a register tile of 3 point vectors x 4
//    columns of P_k accumulates (x - mu_k) P_k with P_k's entries broadcast; for an upper-
//    triangular P_k (what the M-step makes) a group of 4 columns only visits the rows up to
//    its last column, D(D+1)/2 FMAs a point plus the zeros of the 4 x 4 diagonal blocks, and
//    the squares are summed in the lanes (no per-point horizontal sums).
//    tied: one triangular product X P (points x vectors of columns), then per component
//    ||z - mu_k P||^2. diag: one product [(x - c)^2, x - c] x [p^2; -2 (mu - c) p^2].
// 2. per point, a log-sum-exp over the K values in w (exp computed once: they become the
//    responsibilities), vectorised over the block's points.
// 3. the statistics nk += sum r, s1 += sum r (x - mu_k), s2 += sum r (x - mu_k)(x - mu_k)^T.
//    full: Y = sqrt(r) (XT - mu_k) once, then the upper triangle of s2 = Y Y^T in 4 x 3
//    register tiles over the block's point vectors, each reduced across the lanes once a
//    block before it meets the float64 accumulator.
// The scatter is taken about the current mean mu_k rather than zero, so large offsets in the
// data do not cancel; the M-step (Python) moves it to the new mean exactly.
// full, lifted (chosen when every mean is near the means' centre c, see lifted_plan): steps 1
// and 3 become two matrix products over z = [vech(x' x'^T), x', 1], x' = x - c, shared by
// all components; the moments about c are moved to the means in float64 at the end.
#include "gaussian_mixture.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "fastlearn/parallel.h"
#include "fastlearn/simd.h"
#include "fastlearn/math.h"
#include "fastlearn/vec.h"
#include "exp64.h"

namespace fl::mixture {
namespace {

constexpr int kTileRows = 4;  // points (or scatter rows) per register tile
constexpr int kTileVecs = 3;  // SIMD vectors of columns per register tile: 12 accumulators

template <typename T>
struct Plan {
  int64_t N = 0, D = 0, Dp = 0, K = 0, B = 0;
  Covariance cov = Covariance::full;
  const T* X = nullptr;      // N x D
  const T* means = nullptr;  // K x D
  std::vector<T> P;          // full: K x Dp x Dp; tied: Dp x Dp; diag: K x Dp squared factors
  std::vector<int32_t> lo, hi;  // full/tied: rows [lo, hi) of P that are nonzero in a column group
  // Per vector of a group (3 a group): the row where its nonzero part ends, when all vectors of
  // the group start at `lo` and these ends do not decrease (an upper-triangular P); else all
  // equal to `hi`. Rows past vhi[v] skip vector v, so a triangle costs no FMAs on its zeros.
  std::vector<int32_t> vhi;
  std::vector<int32_t> group_start, group_vecs;  // column groups: first vector, vector count
  std::vector<T> tied_b;     // tied: K x Dp, mu_k P
  // diag, as one product: [(x - c)^2, x - c] (2 Dp wide) times diag_bt (2 Dp x Kp) holding
  // p_k^2 and -2 (mu_k - c) p_k^2, c the mean of the means; diag_off adds sum p^2 (mu - c)^2.
  int64_t Kp = 0, Kq = 0;
  std::vector<T> diag_c, diag_bt, diag_off;
  std::vector<T> offset;     // K
  // full, points-in-lanes path: P zero-padded to Dq x Dq (Dq = D rounded up to kCJ), and per
  // component whether it is upper triangular (then the product skips its zeros).
  int64_t Dq = 0;
  std::vector<T> Pq, mq;  // and the means, K x Dq
  std::vector<uint8_t> upper;
  T* log_prob = nullptr;     // N x K
  T* log_norm = nullptr;     // N
  int64_t* labels = nullptr; // N
  bool stats = false;
};

// exp(-600) ~ 1e-261 (float64), exp(-70) ~ 4e-31 (float32): far above the subnormal range
// even after a product with the data, far below anything a sum of ones can register.
FL_ALWAYS_INLINE float exp_acc(float x) { return exp_f32(x); }
FL_ALWAYS_INLINE double exp_acc(double x) { return exp_f64(x); }

template <typename T>
constexpr T flush_below() { return sizeof(T) == 8 ? T(-600) : T(-70); }

struct Partial {
  std::vector<double> nk, s1, s2;
  double loglik = 0.0;
};

// acc[a][v] = x[a, lo:hi] . P[lo:hi, j0 + v W : j0 + (v + 1) W]; then either the squares go
// into q[a] or the values are stored in z (the tied case keeps X P; diag keeps its products).
template <typename T, int JV>
FL_ALWAYS_INLINE void tri_tile(const T* x, int64_t ldx, const T* P, int64_t ldp, int64_t lo, int64_t hi, int64_t j0,
                               vec_t<T>* q, T* z, int64_t ldz) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V acc[kTileRows][JV];
  for (int a = 0; a < kTileRows; ++a)
    for (int v = 0; v < JV; ++v) acc[a][v] = V{};
  for (int64_t i = lo; i < hi; ++i) {
    V p[JV];
    for (int v = 0; v < JV; ++v) p[v] = vload(P + i * ldp + j0 + v * W);
    for (int a = 0; a < kTileRows; ++a) {
      const T xa = x[a * ldx + i];
      for (int v = 0; v < JV; ++v) acc[a][v] += xa * p[v];
    }
  }
  if (z) {
    for (int a = 0; a < kTileRows; ++a)
      for (int v = 0; v < JV; ++v) vstore(z + a * ldz + j0 + v * W, acc[a][v]);
  } else {
    for (int a = 0; a < kTileRows; ++a)
      for (int v = 0; v < JV; ++v) q[a] += acc[a][v] * acc[a][v];
  }
}

// acc[a][v] += x[a, i0:i1] . P[i0:i1, vector v] for the vectors v >= V0 of the tile.
template <typename T, int JV, int V0>
FL_ALWAYS_INLINE void tri_rows(const T* x, int64_t ldx, const T* P, int64_t ldp, int64_t i0, int64_t i1, int64_t j0,
                               vec_t<T> (&acc)[kTileRows][JV]) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  for (int64_t i = i0; i < i1; ++i) {
    V p[JV];
    for (int v = V0; v < JV; ++v) p[v] = vload(P + i * ldp + j0 + v * W);
    for (int a = 0; a < kTileRows; ++a) {
      const T xa = x[a * ldx + i];
      for (int v = V0; v < JV; ++v) acc[a][v] += xa * p[v];
    }
  }
}

// q[a] += ||x[a] P[:, group]||^2 with the group's rows cut into segments by vhi (see Plan).
template <typename T, int JV>
FL_ALWAYS_INLINE void tri_tile_segmented(const T* x, int64_t ldx, const T* P, int64_t ldp, int64_t lo,
                                         const int32_t* vhi, int64_t j0, vec_t<T>* q) {
  using V = vec_t<T>;
  V acc[kTileRows][JV];
  for (int a = 0; a < kTileRows; ++a)
    for (int v = 0; v < JV; ++v) acc[a][v] = V{};
  tri_rows<T, JV, 0>(x, ldx, P, ldp, lo, vhi[0], j0, acc);
  if constexpr (JV > 1) tri_rows<T, JV, 1>(x, ldx, P, ldp, vhi[0], vhi[1], j0, acc);
  if constexpr (JV > 2) tri_rows<T, JV, 2>(x, ldx, P, ldp, vhi[1], vhi[2], j0, acc);
  for (int a = 0; a < kTileRows; ++a)
    for (int v = 0; v < JV; ++v) q[a] += acc[a][v] * acc[a][v];
}

// q[a] = ||xc[a] P||^2 for the nbp (multiple of 4) rows of xc, or z = xc P when z is given.
template <typename T>
FL_ALWAYS_INLINE void triangular_product(const Plan<T>& p, const T* xc, int64_t nbp, const T* P, const int32_t* lo,
                                         const int32_t* hi, const int32_t* vhi, T* q, T* z) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t Dp = p.Dp, G = static_cast<int64_t>(p.group_start.size());
  for (int64_t a0 = 0; a0 < nbp; a0 += kTileRows) {
    V qa[kTileRows] = {};
    const T* x = xc + a0 * Dp;
    T* za = z ? z + a0 * Dp : nullptr;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t j0 = static_cast<int64_t>(p.group_start[g]) * W;
      if (za) {
        switch (p.group_vecs[g]) {
          case 3: tri_tile<T, 3>(x, Dp, P, Dp, lo[g], hi[g], j0, qa, za, Dp); break;
          case 2: tri_tile<T, 2>(x, Dp, P, Dp, lo[g], hi[g], j0, qa, za, Dp); break;
          default: tri_tile<T, 1>(x, Dp, P, Dp, lo[g], hi[g], j0, qa, za, Dp); break;
        }
      } else {
        const int32_t* vh = vhi + g * kTileVecs;
        switch (p.group_vecs[g]) {
          case 3: tri_tile_segmented<T, 3>(x, Dp, P, Dp, lo[g], vh, j0, qa); break;
          case 2: tri_tile_segmented<T, 2>(x, Dp, P, Dp, lo[g], vh, j0, qa); break;
          default: tri_tile_segmented<T, 1>(x, Dp, P, Dp, lo[g], vh, j0, qa); break;
        }
      }
    }
    if (!z)
      for (int a = 0; a < kTileRows; ++a) q[a0 + a] = vsum<T>(qa[a]);
  }
}

// S[i0 + a, j0 : j0 + JV W] += sum_n r[n, i0 + a] * x[n, j0 : ...], n over the block's rows.
template <typename T, int JV>
FL_ALWAYS_INLINE void scatter_tile(const T* r, int64_t ldr, const T* x, int64_t ldx, int64_t nbp, int64_t i0,
                                   int64_t j0, double* S, int64_t lds) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V acc[kTileRows][JV];
  for (int a = 0; a < kTileRows; ++a)
    for (int v = 0; v < JV; ++v) acc[a][v] = V{};
  for (int64_t n = 0; n < nbp; ++n) {
    V xv[JV];
    for (int v = 0; v < JV; ++v) xv[v] = vload(x + n * ldx + j0 + v * W);
    for (int a = 0; a < kTileRows; ++a) {
      const T ra = r[n * ldr + i0 + a];
      for (int v = 0; v < JV; ++v) acc[a][v] += ra * xv[v];
    }
  }
  for (int a = 0; a < kTileRows; ++a)
    for (int v = 0; v < JV; ++v)
      for (int l = 0; l < W; ++l) S[(i0 + a) * lds + j0 + v * W + l] += static_cast<double>(acc[a][v][l]);
}

// xc[a, :] = X[n0 + a, :] - mu (mu may be null), zero-padded to Dp columns and nbp rows.
template <typename T>
FL_ALWAYS_INLINE void load_centered(const Plan<T>& p, int64_t n0, int64_t nb, int64_t nbp, const T* mu, T* xc) {
  const int64_t D = p.D, Dp = p.Dp;
  for (int64_t a = 0; a < nb; ++a) {
    const T* x = p.X + (n0 + a) * D;
    T* o = xc + a * Dp;
    if (mu) {
#pragma omp simd
      for (int64_t i = 0; i < D; ++i) o[i] = x[i] - mu[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < D; ++i) o[i] = x[i];
    }
    for (int64_t i = D; i < Dp; ++i) o[i] = T(0);
  }
  for (int64_t a = nb; a < nbp; ++a)
    for (int64_t i = 0; i < Dp; ++i) xc[a * Dp + i] = T(0);
}


// ---- full covariance: points in the SIMD lanes --------------------------------------------
// The block is held transposed (Dq x B: feature i of the block's points contiguous), so the
// triangular product runs at the granularity of 4-column groups of P (for an upper-triangular
// P, D(D+1)/2 FMAs a point plus the diagonal blocks' zeros; no per-point horizontal sums) and
// the scatter at that of its upper triangle.
constexpr int kPV = 3;  // E-step tile: point vectors ...
constexpr int kCJ = 4;  // ... x columns of P (12 accumulators)
constexpr int kSI = 4;  // scatter tile: rows ...
constexpr int kSJ = 3;  // ... x columns of S: 12 accumulators, 3 column vectors and a row vector
                        // fill AVX2's 16 registers; 7 loads per 12 FMAs (3 x 3 took 6 per 9, and
                        // its dense EM pass ran 15-25% slower on the 2-core EPYC, f32 and f64)

// q[pv] += sum_{c < kCJ} (sum_i xcT[i, pv] P[i, j0 + c])^2. With `upper` (P[i, j] = 0 for
// i > j) the rows past the group's last column, j0 + kCJ - 1, are skipped; otherwise all Dq
// rows are summed. The group's own 4 x 4 diagonal block runs in the same loop, multiplying its
// exact zeros: 18 FMAs more a tile than skipping them one by one, but that unrolled triangle
// took ~24% of the E-step's time for 15% of its FMAs (spills, a subtraction per 2.5 FMAs).
template <typename T>
FL_ALWAYS_INLINE void full_etile(const T* xcT, int64_t ldx, const T* mu, const T* P, int64_t ldp, int64_t j0,
                                 int64_t Dq, bool upper, vec_t<T>* q) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V acc[kPV][kCJ];
  for (int pv = 0; pv < kPV; ++pv)
    for (int c = 0; c < kCJ; ++c) acc[pv][c] = V{};
  const int64_t rows = upper ? j0 + kCJ : Dq;  // Dq is a multiple of kCJ
  for (int64_t i = 0; i < rows; ++i) {
    V x[kPV];
    for (int pv = 0; pv < kPV; ++pv) x[pv] = vload(xcT + i * ldx + pv * W) - mu[i];
    for (int c = 0; c < kCJ; ++c) {
      const T pc = P[i * ldp + j0 + c];
      for (int pv = 0; pv < kPV; ++pv) acc[pv][c] += x[pv] * pc;
    }
  }
  for (int pv = 0; pv < kPV; ++pv)
    for (int c = 0; c < kCJ; ++c) q[pv] += acc[pv][c] * acc[pv][c];
}

// The lane sums of four vectors, as [a, b, c, d] (shuffles and adds, no scalar chain).
FL_ALWAYS_INLINE void hsum4(vec_t<float> a, vec_t<float> b, vec_t<float> c, vec_t<float> d, float* out) {
  const vec_t<float> ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11) +
                          __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
  const vec_t<float> cd = __builtin_shufflevector(c, d, 0, 1, 2, 3, 8, 9, 10, 11) +
                          __builtin_shufflevector(c, d, 4, 5, 6, 7, 12, 13, 14, 15);
  // lanes: a0+a2, a1+a3, c0+c2, c1+c3, b0+b2, b1+b3, d0+d2, d1+d3
  const vec_t<float> u = __builtin_shufflevector(ab, cd, 0, 1, 8, 9, 4, 5, 12, 13) +
                         __builtin_shufflevector(ab, cd, 2, 3, 10, 11, 6, 7, 14, 15);
  const vec_t<float> s = __builtin_shufflevector(u, u, 0, 2, 4, 6, 0, 2, 4, 6) +
                         __builtin_shufflevector(u, u, 1, 3, 5, 7, 1, 3, 5, 7);
  out[0] = s[0], out[1] = s[2], out[2] = s[1], out[3] = s[3];
}
FL_ALWAYS_INLINE void hsum4(vec_t<double> a, vec_t<double> b, vec_t<double> c, vec_t<double> d, double* out) {
  const vec_t<double> ab = __builtin_shufflevector(a, b, 0, 1, 4, 5) + __builtin_shufflevector(a, b, 2, 3, 6, 7);
  const vec_t<double> cd = __builtin_shufflevector(c, d, 0, 1, 4, 5) + __builtin_shufflevector(c, d, 2, 3, 6, 7);
  // ab: a0+a2, a1+a3, b0+b2, b1+b3
  const vec_t<double> s = __builtin_shufflevector(ab, cd, 0, 2, 4, 6) + __builtin_shufflevector(ab, cd, 1, 3, 5, 7);
  out[0] = s[0], out[1] = s[1], out[2] = s[2], out[3] = s[3];
}

// S[i0 + a, j0 + c] += sum_n Y[i0 + a, n] Y[j0 + c, n] over the block's npv point vectors,
// Y = sqrt(r) (XT - mu) (so Y Y^T = sum r (x - mu)(x - mu)^T: both operands are one array,
// read as they are, with no centring in the loop).
template <typename T, int SI, int SJ>
FL_ALWAYS_INLINE void full_stile(const T* Y, int64_t ldx, int64_t npv, int64_t i0, int64_t j0, double* S, int64_t lds) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V acc[SI * SJ + 3];
  for (int e = 0; e < SI * SJ + 3; ++e) acc[e] = V{};
  for (int64_t v = 0; v < npv; ++v) {
    V xj[SJ];
    for (int c = 0; c < SJ; ++c) xj[c] = vload(Y + (j0 + c) * ldx + v * W);
    for (int a = 0; a < SI; ++a) {
      const V ri = vload(Y + (i0 + a) * ldx + v * W);
      for (int c = 0; c < SJ; ++c) acc[a * SJ + c] += ri * xj[c];
    }
  }
  for (int e = 0; e < SI * SJ; e += 4) {
    T out[4];
    hsum4(acc[e], acc[e + 1], acc[e + 2], acc[e + 3], out);
    for (int f = 0; f < 4 && e + f < SI * SJ; ++f) {
      const int a = (e + f) / SJ, c = (e + f) % SJ;
      S[(i0 + a) * lds + j0 + c] += static_cast<double>(out[f]);
    }
  }
}

template <typename T, int SI>
FL_ALWAYS_INLINE void full_srow(const T* Y, int64_t ldx, int64_t npv, int64_t i0, int64_t D, double* S, int64_t lds) {
  int64_t j0 = i0;
  for (; j0 + kSJ <= D; j0 += kSJ) full_stile<T, SI, kSJ>(Y, ldx, npv, i0, j0, S, lds);
  switch (D - j0) {
    case 3: full_stile<T, SI, 3>(Y, ldx, npv, i0, j0, S, lds); break;
    case 2: full_stile<T, SI, 2>(Y, ldx, npv, i0, j0, S, lds); break;
    case 1: full_stile<T, SI, 1>(Y, ldx, npv, i0, j0, S, lds); break;
    default: break;
  }
}

// W x W tiles transposed in registers (the lanes of each row regrouped by shuffles).
FL_ALWAYS_INLINE void transpose_tile(vec_t<float>* r) {
  using V = vec_t<float>;
  V t[8], u[8];
  for (int q = 0; q < 8; q += 2) {
    t[q] = __builtin_shufflevector(r[q], r[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[q + 1] = __builtin_shufflevector(r[q], r[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int q = 0; q < 8; q += 4)
    for (int h = 0; h < 2; ++h) {
      u[q + h] = __builtin_shufflevector(t[q + h], t[q + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[q + h + 2] = __builtin_shufflevector(t[q + h], t[q + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  // u[0]: column 0 (rows 0-3) and column 4 (rows 0-3); u[4]: the same for rows 4-7; and so on
  const int order[4] = {0, 2, 1, 3};
  for (int c = 0; c < 4; ++c) {
    r[c] = __builtin_shufflevector(u[order[c]], u[order[c] + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[c + 4] = __builtin_shufflevector(u[order[c]], u[order[c] + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
FL_ALWAYS_INLINE void transpose_tile(vec_t<double>* r) {
  using V = vec_t<double>;
  const V t0 = __builtin_shufflevector(r[0], r[1], 0, 4, 2, 6), t1 = __builtin_shufflevector(r[0], r[1], 1, 5, 3, 7);
  const V t2 = __builtin_shufflevector(r[2], r[3], 0, 4, 2, 6), t3 = __builtin_shufflevector(r[2], r[3], 1, 5, 3, 7);
  r[0] = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  r[1] = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  r[2] = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  r[3] = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}

// XT[i, a] = X[a, i] for the block's nb points (X: rows of D), XT with rows of ldt.
template <typename T>
FL_ALWAYS_INLINE void transpose_block(const T* X, int64_t D, int64_t nb, T* XT, int64_t ldt) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t nbw = nb / W * W, Dw = D / W * W;
  for (int64_t a0 = 0; a0 < nbw; a0 += W)
    for (int64_t i0 = 0; i0 < Dw; i0 += W) {
      V r[W];
      for (int q = 0; q < W; ++q) r[q] = vload(X + (a0 + q) * D + i0);
      transpose_tile(r);
      for (int q = 0; q < W; ++q) vstore(XT + (i0 + q) * ldt + a0, r[q]);
    }
  for (int64_t i = Dw; i < D; ++i)  // the features past the last whole tile
    for (int64_t a = 0; a < nbw; ++a) XT[i * ldt + a] = X[a * D + i];
  for (int64_t i = 0; i < D; ++i)  // the points past it
    for (int64_t a = nbw; a < nb; ++a) XT[i * ldt + a] = X[a * D + i];
}

// ---- full covariance, lifted: two matrix products over z = [vech(x' x'^T), x', 1] ---------
// With x' = x - c (c the mean of the means) and d_k = mu_k - c,
//   log N_k(x) + log pi_k = offset_k - (x' - d_k)^T L_k (x' - d_k) / 2 = z . lam_k,
// L_k = P_k P_k^T, lam_k = [-L_ii / 2 and -L_ij (i < j), L_k d_k, offset_k - d_k^T L_k d_k / 2]:
// the E-step for all components is the product Z Lam (B x Lz times Lz x K), and the statistics
// are one product R^T Z (K x B times B x Lz): its columns are sum r x'_i x'_j, sum r x' and nk,
// the moments about c, moved to the means in float64 at the end. Both products run in 6 x 2W
// register tiles (12 accumulators, two column vectors and a broadcast), the shape of a BLAS
// kernel: no lane sums and no centring in the loops, 2 loads of the panel and 6 broadcasts a
// 12 FMAs. Against the triangular path's pair of loops it does (D + 1)(D + 2)/2 products a
// point and component instead of D(D + 1)/2 in each, and none of its diagonal blocks' zeros.
// Used only when every mean is near c (d_k^T L_k d_k <= D): the terms of z . lam_k are then at
// most a few times the value they sum to, and the moments about c a few times the scatter about
// the mean, so the rounding stays within a small factor of the triangular path's.
constexpr int kLR = 6;  // rows of a lifted tile: points (E-step) or lifted features (statistics)

// acc[a][v] = sum_{t < n} A[a sa + t st] Bm[t ldb + v W : ...], a < kLR, v < JV.
template <typename T, int JV, bool kRowsAdjacent>
FL_ALWAYS_INLINE void lifted_tile(const T* A, int64_t sa, int64_t st, const T* Bm, int64_t ldb, int64_t n,
                                  vec_t<T> (&acc)[kLR][JV]) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  if constexpr (kRowsAdjacent) sa = 1;
  for (int a = 0; a < kLR; ++a)
    for (int v = 0; v < JV; ++v) acc[a][v] = V{};
  for (int64_t t = 0; t < n; ++t) {
    V b[JV];
    for (int v = 0; v < JV; ++v) b[v] = vload(Bm + t * ldb + v * W);
    const T* at = A + t * st;
    for (int a = 0; a < kLR; ++a)
      for (int v = 0; v < JV; ++v) acc[a][v] += b[v] * at[a * sa];
  }
}

// e[a, v W : ...] = the tile's log-densities (6 points x JV vectors of components).
template <typename T, int JV>
FL_ALWAYS_INLINE void lifted_estep_tile(const T* ZT, int64_t B, const T* lam, int64_t Kz, int64_t Lz, T* e) {
  constexpr int W = vec_width<T>;
  vec_t<T> acc[kLR][JV];
  lifted_tile<T, JV, true>(ZT, 1, B, lam, Kz, Lz, acc);
  for (int a = 0; a < kLR; ++a)
    for (int v = 0; v < JV; ++v) vstore(e + a * Kz + v * W, acc[a][v]);
}

// M[a, v W : ...] += the tile's moments (6 lifted features x JV vectors of components), summed
// over the block's nbp points in X's dtype, added in float64.
template <typename T, int JV>
FL_ALWAYS_INLINE void lifted_stats_tile(const T* ZT, int64_t B, const T* R, int64_t Kz, int64_t nbp, double* M) {
  constexpr int W = vec_width<T>;
  vec_t<T> acc[kLR][JV];
  lifted_tile<T, JV, false>(ZT, B, 1, R, Kz, nbp, acc);
  for (int a = 0; a < kLR; ++a)
    for (int v = 0; v < JV; ++v)
      for (int l = 0; l < W; ++l) M[a * Kz + v * W + l] += static_cast<double>(acc[a][v][l]);
}

template <typename T>
struct Lifted {
  int64_t Lz = 0, Lzp = 0, Kz = 0, B = 0;
  std::vector<T> c;     // D: the centre, rounded to X's dtype
  std::vector<T> lam;   // Lzp x Kz; padding columns: 0 but a large negative constant
  std::vector<double> d;  // K x D: mu_k - c, exactly (c as X's dtype)
};

// Per point a (a row of E, Kz wide): the log-sum-exp over its K columns, and the row turned into
// responsibilities in place (the padding columns' values are far below the others: they get 0).
template <typename T>
FL_ALWAYS_INLINE T lifted_lse(T* e, int64_t Kz) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V mv = vload(e);
  for (int64_t j = W; j < Kz; j += W) {
    const V v = vload(e + j);
    mv = v > mv ? v : mv;
  }
  T m = mv[0];
  for (int l = 1; l < W; ++l) m = mv[l] > m ? mv[l] : m;
  const V lo = vsplat(flush_below<T>());
  V sv{};
  for (int64_t j = 0; j < Kz; j += W) {
    const V d = vload(e + j) - m;
    V ex;
    if constexpr (sizeof(T) == 4) {
      ex = vexp_nonpos(d);
    } else {
      for (int l = 0; l < W; ++l) ex[l] = exp_acc(d[l]);
    }
    ex = d < lo ? V{} : ex;  // as in the triangular path: no subnormal factors in the statistics
    vstore(e + j, ex);
    sv += ex;
  }
  const T s = vsum<T>(sv);
  const T inv = T(1) / s;
  for (int64_t j = 0; j < Kz; j += W) vstore(e + j, vload(e + j) * inv);
  return m + std::log(s);
}

template <typename T>
FL_ALWAYS_INLINE void lifted_blocks(const Plan<T>& p, const Lifted<T>& lf, int64_t blk0, int64_t blk1,
                                    Partial& part) {
  constexpr int W = vec_width<T>;
  const int64_t N = p.N, D = p.D, K = p.K, B = lf.B, Lz = lf.Lz, Lzp = lf.Lzp, Kz = lf.Kz;
  const int64_t o_lin = D * (D + 1) / 2;  // the row of x'_0 in ZT
  // ZT (Lzp x B: z of the block's points, a lifted feature's values contiguous; rows past Lz
  // stay zero), the block transposed (XT, D x B) and E (B x Kz: log-densities, then
  // responsibilities).
  std::vector<T> ZT(static_cast<size_t>(Lzp * B), T(0)), XT(static_cast<size_t>(D * B), T(0));
  std::vector<T> E(static_cast<size_t>(B * Kz), T(0));
  for (int64_t blk = blk0; blk < blk1; ++blk) {
    const int64_t n0 = blk * B, nb = std::min(B, N - n0), nbp = round_up(nb, kLR), nbv = round_up(nb, W);
    transpose_block(p.X + n0 * D, D, nb, XT.data(), B);
    for (int64_t i = 0; i < D; ++i) {
      T* xi = XT.data() + i * B;
      const T ci = lf.c[i];
      for (int64_t a = 0; a < nb; ++a) xi[a] -= ci;
      for (int64_t a = nb; a < nbv; ++a) xi[a] = T(0);
    }
    // Padding points (nb <= a < nbp, in the last block) are zero in every row, the row of ones
    // included.
    if (nb < B)
      for (int64_t t = 0; t < Lz; ++t)
        for (int64_t a = nb; a < round_up(nbp, W); ++a) ZT[t * B + a] = T(0);
    int64_t o = 0;
    for (int64_t i = 0; i < D; ++i) {
      const T* xi = XT.data() + i * B;
      for (int64_t j = i; j < D; ++j, ++o) {
        const T* xj = XT.data() + j * B;
        T* z = ZT.data() + o * B;
        for (int64_t a = 0; a < nbv; a += W) vstore(z + a, vload(xi + a) * vload(xj + a));
      }
    }
    for (int64_t i = 0; i < D; ++i)
      std::copy(XT.data() + i * B, XT.data() + i * B + nbv, ZT.data() + (o_lin + i) * B);
    for (int64_t a = 0; a < nb; ++a) ZT[(o_lin + D) * B + a] = T(1);
    // 1. E = Z Lam: the weighted log-densities, 6 points x 2 W components a tile
    for (int64_t a0 = 0; a0 < nbp; a0 += kLR)
      for (int64_t j0 = 0; j0 < Kz; j0 += 2 * W) {
        T* e = E.data() + a0 * Kz + j0;
        if (j0 + 2 * W <= Kz)
          lifted_estep_tile<T, 2>(ZT.data() + a0, B, lf.lam.data() + j0, Kz, Lz, e);
        else
          lifted_estep_tile<T, 1>(ZT.data() + a0, B, lf.lam.data() + j0, Kz, Lz, e);
      }
    // 2. per point: outputs, log-sum-exp, responsibilities (in place)
    double ll = 0;
    for (int64_t a = 0; a < nb; ++a) {
      T* e = E.data() + a * Kz;
      if (p.log_prob)
        for (int64_t k = 0; k < K; ++k) p.log_prob[(n0 + a) * K + k] = e[k];
      if (p.labels) {
        int64_t arg = 0;
        for (int64_t k = 1; k < K; ++k)
          if (e[k] > e[arg]) arg = k;
        p.labels[n0 + a] = arg;
      }
      if (!(p.stats || p.log_norm)) continue;
      const T lse = lifted_lse(e, Kz);
      if (p.log_norm) p.log_norm[n0 + a] = lse;
      ll += static_cast<double>(lse);
    }
    part.loglik += ll;
    if (!p.stats) continue;
    for (int64_t a = nb; a < nbp; ++a)
      for (int64_t k = 0; k < Kz; ++k) E[a * Kz + k] = T(0);
    // 3. M += Z^T R, 6 lifted features x 2 W components a tile: row t of M holds feature t
    // summed with the responsibilities
    double* M = part.s2.data();
    for (int64_t t0 = 0; t0 < Lzp; t0 += kLR)
      for (int64_t j0 = 0; j0 < Kz; j0 += 2 * W) {
        if (j0 + 2 * W <= Kz)
          lifted_stats_tile<T, 2>(ZT.data() + t0 * B, B, E.data() + j0, Kz, nbp, M + t0 * Kz + j0);
        else
          lifted_stats_tile<T, 1>(ZT.data() + t0 * B, B, E.data() + j0, Kz, nbp, M + t0 * Kz + j0);
      }
  }
}

FL_MULTIVERSION void run_lifted_f32(const Plan<float>& p, const Lifted<float>& lf, int64_t b0, int64_t b1,
                                    Partial& part) {
  lifted_blocks<float>(p, lf, b0, b1, part);
}
FL_MULTIVERSION void run_lifted_f64(const Plan<double>& p, const Lifted<double>& lf, int64_t b0, int64_t b1,
                                    Partial& part) {
  lifted_blocks<double>(p, lf, b0, b1, part);
}
void run_lifted_any(const Plan<float>& p, const Lifted<float>& lf, int64_t b0, int64_t b1, Partial& part) {
  run_lifted_f32(p, lf, b0, b1, part);
}
void run_lifted_any(const Plan<double>& p, const Lifted<double>& lf, int64_t b0, int64_t b1, Partial& part) {
  run_lifted_f64(p, lf, b0, b1, part);
}

// The lifted path's set-up, or false when it does not apply (see above): path 0 chooses, 1 never,
// 2 always (for tests).
template <typename T>
bool lifted_plan(const Plan<T>& p, const T* prec, int path, Lifted<T>& lf) {
  constexpr int W = vec_width<T>;
  const int64_t D = p.D, K = p.K;
  if (path == 1) return false;
  const int64_t Kz = round_up(K, W);
  // Automatic: where it measured faster on the 2-core EPYC (interleaved A/B of the two paths,
  // N=100k, float32): 8 to 32 features, whole 2W-wide panels of components and at most 1/16 of
  // them padding (at D = 32, K = 16 medians of 0.84-0.99x the triangular pass over seven runs
  // whose single rounds ranged 0.65-1.16x; 0.83x at D = 8 and 16; 0.87x at K = 32; 0.99x at
  // K = 15; slower with 6 x 1 tiles (K = 8: 1.27x), more padding (K = 13: 1.17x), or D >= 48,
  // where the lifted rows outgrow the caches (1.0-1.14x)). In float64 its 6 x 8 tiles did not
  // win at D = 32 (medians 0.88-1.07x), so float64 keeps the triangular pass unless asked.
  if (path == 0 && (sizeof(T) != 4 || D < 8 || D > 32 || Kz % (2 * W) != 0 || 16 * K < 15 * Kz)) return false;
  lf.Kz = Kz;
  lf.Lz = D * (D + 1) / 2 + D + 1;
  lf.Lzp = round_up(lf.Lz, kLR);
  lf.c.assign(static_cast<size_t>(D), T(0));
  for (int64_t i = 0; i < D; ++i) {
    double c = 0;
    for (int64_t k = 0; k < K; ++k) c += static_cast<double>(p.means[k * D + i]);
    lf.c[i] = static_cast<T>(c / static_cast<double>(K));
  }
  lf.d.assign(static_cast<size_t>(K * D), 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < D; ++i)
      lf.d[k * D + i] = static_cast<double>(p.means[k * D + i]) - static_cast<double>(lf.c[i]);
  lf.lam.assign(static_cast<size_t>(lf.Lzp * Kz), T(0));
  std::vector<double> L(static_cast<size_t>(D * D)), Ld(static_cast<size_t>(D));
  const int64_t o_lin = D * (D + 1) / 2;
  for (int64_t k = 0; k < K; ++k) {
    const T* P = prec + k * D * D;
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = i; j < D; ++j) {
        double s = 0;  // an upper-triangular P (p.upper) is zero in row j before column j
        for (int64_t q = p.upper[k] ? j : 0; q < D; ++q)
          s += static_cast<double>(P[i * D + q]) * static_cast<double>(P[j * D + q]);
        L[i * D + j] = L[j * D + i] = s;
      }
    const double* d = lf.d.data() + k * D;
    double dLd = 0;
    for (int64_t i = 0; i < D; ++i) {
      double s = 0;
      for (int64_t j = 0; j < D; ++j) s += L[i * D + j] * d[j];
      Ld[i] = s;
      dLd += d[i] * s;
    }
    if (path == 0 && !(dLd <= static_cast<double>(D))) return false;
    int64_t o = 0;
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = i; j < D; ++j) lf.lam[(o++) * Kz + k] = static_cast<T>(i == j ? -0.5 * L[i * D + i] : -L[i * D + j]);
    for (int64_t i = 0; i < D; ++i) lf.lam[(o_lin + i) * Kz + k] = static_cast<T>(Ld[i]);
    lf.lam[(o_lin + D) * Kz + k] = static_cast<T>(static_cast<double>(p.offset[k]) - 0.5 * dLd);
  }
  // Padding columns: a log-density far below any other, so their responsibility is 0.
  for (int64_t k = K; k < Kz; ++k) lf.lam[(o_lin + D) * Kz + k] = -std::numeric_limits<T>::max() / T(4);
  // Points a block: ZT near 192 KiB (L2); a multiple of the tile height and of the vector width.
  const int64_t unit = kLR * W / std::gcd(kLR, W);
  lf.B = std::clamp<int64_t>(196608 / (lf.Lzp * static_cast<int64_t>(sizeof(T))) / unit * unit, unit, 16 * unit);
  return true;
}

// The lifted pass over all blocks; the statistics moved from c to the means in float64:
// s1 = m1 - nk d, s2 = M2 - m1 d^T - d m1^T + nk d d^T (m1, M2 the moments about c).
template <typename T>
double run_lifted(const Plan<T>& p, const Lifted<T>& lf, const PassOutputs& out) {
  const int64_t D = p.D, K = p.K, Kz = lf.Kz;
  const int64_t nblocks = (p.N + lf.B - 1) / lf.B;
  std::vector<Partial> parts(static_cast<size_t>(std::max(1, omp_get_max_threads())));
  if (p.stats)
    for (Partial& part : parts) part.s2.assign(static_cast<size_t>(lf.Lzp * Kz), 0.0);
  parallel_for(nblocks, lf.B * K * lf.Lz * 2, [&](int64_t b0, int64_t b1) {
    run_lifted_any(p, lf, b0, b1, parts[static_cast<size_t>(omp_get_thread_num())]);
  });
  double loglik = 0.0;
  for (const Partial& part : parts) loglik += part.loglik;
  if (!p.stats) return loglik;
  std::vector<double> M(static_cast<size_t>(lf.Lzp * Kz), 0.0);
  for (const Partial& part : parts)
    for (size_t j = 0; j < M.size(); ++j) M[j] += part.s2[j];
  const int64_t o_lin = D * (D + 1) / 2;
  double* nk = out.nk->ptr<double>();
  double* s1 = out.s1->ptr<double>();
  double* s2 = out.s2->ptr<double>();
  for (int64_t k = 0; k < K; ++k) {
    const double n = M[(o_lin + D) * Kz + k];
    const double* d = lf.d.data() + k * D;
    nk[k] = n;
    for (int64_t i = 0; i < D; ++i) s1[k * D + i] = M[(o_lin + i) * Kz + k] - n * d[i];
    int64_t o = 0;
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = i; j < D; ++j) {
        const double mi = M[(o_lin + i) * Kz + k], mj = M[(o_lin + j) * Kz + k];
        const double v = M[(o++) * Kz + k] - mi * d[j] - d[i] * mj + n * d[i] * d[j];
        s2[(k * D + i) * D + j] = s2[(k * D + j) * D + i] = v;
      }
  }
  return loglik;
}

// kFull: the full-covariance path (compiled apart from the others, see run_full_f32).
template <typename T, bool kFull>
FL_ALWAYS_INLINE void run_blocks(const Plan<T>& p, int64_t blk0, int64_t blk1, Partial& part) {
  constexpr int W = vec_width<T>;
  const int64_t N = p.N, D = p.D, Dp = p.Dp, K = p.K, B = p.B;
  std::vector<T> xc(p.cov == Covariance::tied ? static_cast<size_t>(B * Dp) : 0);
  std::vector<T> z(p.cov == Covariance::tied ? static_cast<size_t>(B * Dp) : 0);
  std::vector<T> w(static_cast<size_t>(K * B)), q(static_cast<size_t>(std::max(B, Dp)));
  std::vector<T> mx(static_cast<size_t>(B)), sx(static_cast<size_t>(B));
  const bool diag = p.cov == Covariance::diag;
  std::vector<T> A(diag ? static_cast<size_t>(B * 2 * Dp) : 0), dist(diag ? static_cast<size_t>(kTileRows * p.Kp) : 0);
  std::vector<T> rt(diag ? static_cast<size_t>(B * p.Kq) : 0);
  constexpr bool full = kFull;
  const int64_t Dq = p.Dq;
  // full: the block transposed (XT) and, per component, sqrt(r) (XT - mu_k) (Y), both Dq x B;
  // the rows past D stay zero. srk: sqrt(r) of the component's points.
  std::vector<T> XT(full ? static_cast<size_t>(Dq * B) : 0), Y(XT.size(), T(0)), srk(full ? static_cast<size_t>(B) : 0);
  // full: the block's points of nonzero responsibility, gathered (XTc, rc; see step 3)
  std::vector<T> XTc(XT.size(), T(0)), rc(full ? static_cast<size_t>(B) : 0);
  for (int64_t blk = blk0; blk < blk1; ++blk) {
    const int64_t n0 = blk * B, nb = std::min(B, N - n0), nbp = round_up(nb, full ? kPV * W : kTileRows);
    // 1. w[k, a] = offset_k - ||(x_a - mu_k) P_k||^2 / 2
    if constexpr (kFull) {
      transpose_block(p.X + n0 * D, D, nb, XT.data(), B);
      for (int64_t i = 0; i < D; ++i)
        for (int64_t a = nb; a < nbp; ++a) XT[i * B + a] = T(0);
      for (int64_t k = 0; k < K; ++k) {
        const T* mu = p.mq.data() + k * Dq;
        const T* Pk = p.Pq.data() + k * Dq * Dq;
        const bool up = p.upper[k] != 0;
        const T off = p.offset[k];
        T* wk = w.data() + k * B;
        for (int64_t v0 = 0; v0 < nbp / W; v0 += kPV) {
          vec_t<T> qv[kPV] = {};
          for (int64_t j0 = 0; j0 < Dq; j0 += kCJ) full_etile(XT.data() + v0 * W, B, mu, Pk, Dq, j0, Dq, up, qv);
          for (int pv = 0; pv < kPV; ++pv) vstore(wk + (v0 + pv) * W, vsplat(off) - T(0.5) * qv[pv]);
        }
      }
    } else if (p.cov == Covariance::tied) {
      load_centered(p, n0, nb, nbp, static_cast<const T*>(nullptr), xc.data());
      triangular_product(p, xc.data(), nbp, p.P.data(), p.lo.data(), p.hi.data(), p.vhi.data(), q.data(), z.data());
      for (int64_t k = 0; k < K; ++k) {
        const T* b = p.tied_b.data() + k * Dp;
        const T off = p.offset[k];
        T* wk = w.data() + k * B;
        for (int64_t a = 0; a < nb; ++a) {
          const T* za = z.data() + a * Dp;
          T s = 0;
#pragma omp simd reduction(+ : s)
          for (int64_t j = 0; j < Dp; ++j) s += (za[j] - b[j]) * (za[j] - b[j]);
          wk[a] = off - T(0.5) * s;
        }
      }
    } else {
      const int64_t L = 2 * Dp, Kp = p.Kp;
      for (int64_t a = 0; a < nbp; ++a) {
        T* row = A.data() + a * L;
        if (a >= nb) {
          for (int64_t i = 0; i < L; ++i) row[i] = T(0);
          continue;
        }
        const T* x = p.X + (n0 + a) * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) {
          const T xs = x[i] - p.diag_c[i];
          row[i] = xs * xs;
          row[Dp + i] = xs;
        }
        for (int64_t i = D; i < Dp; ++i) row[i] = row[Dp + i] = T(0);
      }
      for (int64_t a0 = 0; a0 < nbp; a0 += kTileRows) {
        const T* Aa = A.data() + a0 * L;
        // (No lambdas here: they would not inherit the target clone's instruction set.)
        for (int64_t v = 0; v < Kp / W; v += kTileVecs) {
          const int64_t j0 = v * W;
          switch (std::min<int64_t>(kTileVecs, Kp / W - v)) {
            case 3: tri_tile<T, 3>(Aa, L, p.diag_bt.data(), Kp, 0, L, j0, nullptr, dist.data(), Kp); break;
            case 2: tri_tile<T, 2>(Aa, L, p.diag_bt.data(), Kp, 0, L, j0, nullptr, dist.data(), Kp); break;
            default: tri_tile<T, 1>(Aa, L, p.diag_bt.data(), Kp, 0, L, j0, nullptr, dist.data(), Kp); break;
          }
        }
        const int64_t rows = std::min<int64_t>(kTileRows, nb - a0);
        for (int64_t a = 0; a < rows; ++a)
          for (int64_t k = 0; k < K; ++k) w[k * B + a0 + a] = p.diag_off[k] - T(0.5) * dist[a * Kp + k];
      }
    }
    // 2. per point: outputs, log-sum-exp, responsibilities (in place of w). The loops run
    // over the block's points (contiguous in w) so they vectorise, exp included.
    if (p.labels)
      for (int64_t a = 0; a < nb; ++a) {
        T m = w[a];
        int64_t arg = 0;
        for (int64_t k = 1; k < K; ++k)
          if (w[k * B + a] > m) m = w[k * B + a], arg = k;
        p.labels[n0 + a] = arg;
      }
    if (p.log_prob)
      for (int64_t a = 0; a < nb; ++a)
        for (int64_t k = 0; k < K; ++k) p.log_prob[(n0 + a) * K + k] = w[k * B + a];
    if (p.stats || p.log_norm) {
      T* m = mx.data();
      T* s = sx.data();
      for (int64_t a = 0; a < nb; ++a) m[a] = w[a], s[a] = T(0);
      for (int64_t k = 1; k < K; ++k) {
        const T* wk = w.data() + k * B;
#pragma omp simd
        for (int64_t a = 0; a < nb; ++a) m[a] = wk[a] > m[a] ? wk[a] : m[a];
      }
      for (int64_t k = 0; k < K; ++k) {
        T* wk = w.data() + k * B;
        // Responsibilities below exp(flush_below) become 0: they change no sum at this
        // precision, and as subnormal factors in the scatter they would cost microcode assists.
#pragma omp simd
        for (int64_t a = 0; a < nb; ++a) {
          const T d = wk[a] - m[a];
          const T e = d < flush_below<T>() ? T(0) : exp_acc(d);
          wk[a] = e;
          s[a] += e;
        }
      }
      double ll = 0;
      for (int64_t a = 0; a < nb; ++a) {
        const T lse = m[a] + std::log(s[a]);
        if (p.log_norm) p.log_norm[n0 + a] = lse;
        ll += static_cast<double>(lse);
        s[a] = T(1) / s[a];
      }
      part.loglik += ll;
      if (p.stats)
        for (int64_t k = 0; k < K; ++k) {
          T* wk = w.data() + k * B;
#pragma omp simd
          for (int64_t a = 0; a < nb; ++a) wk[a] *= s[a];
        }
    }
    if (!p.stats) continue;
    // 3. statistics
    for (int64_t k = 0; k < K; ++k) {
      T* r = w.data() + k * B;
      for (int64_t a = nb; a < nbp; ++a) r[a] = T(0);
      double sr = 0;
#pragma omp simd reduction(+ : sr)
      for (int64_t a = 0; a < nb; ++a) sr += static_cast<double>(r[a]);
      part.nk[k] += sr;
      const T* mu = p.means + k * D;
      double* s1 = part.s1.data() + k * Dp;
      if constexpr (kFull) {
        // Points whose responsibility underflowed to exactly 0 (see flush_below) add nothing;
        // when most of the block's points are such for this component (separated components),
        // the others are gathered first and only they go through the scatter.
        int64_t M = 0;
#pragma omp simd reduction(+ : M)
        for (int64_t a = 0; a < nb; ++a) M += r[a] != T(0);
        if (M == 0) continue;
        const T* XTk = XT.data();
        const T* rk = r;
        int64_t npv = nbp / W;
        if (M * 4 < nbp) {  // gathering costs about what a quarter of the dense scatter does
          const int64_t Mp = round_up(M, W);
          for (int64_t a = 0, m = 0; a < nb; ++a) {
            if (r[a] == T(0)) continue;
            const T* x = p.X + (n0 + a) * D;
            for (int64_t i = 0; i < D; ++i) XTc[i * B + m] = x[i];
            rc[m++] = r[a];
          }
          for (int64_t m = M; m < Mp; ++m) {
            for (int64_t i = 0; i < D; ++i) XTc[i * B + m] = T(0);
            rc[m] = T(0);
          }
          XTk = XTc.data();
          rk = rc.data();
          npv = Mp / W;
        }
        T* sr = srk.data();
#pragma omp simd
        for (int64_t a = 0; a < npv * W; ++a) sr[a] = std::sqrt(rk[a]);
        // Y and s1 += sum r (x - mu); the sum runs in three accumulators: with one, each
        // vector waited on the previous FMA's latency (this loop was ~13% of a dense f32 pass).
        for (int64_t i = 0; i < D; ++i) {
          using V = vec_t<T>;
          const V m = vsplat(mu[i]);
          const T* xi = XTk + i * B;
          T* yi = Y.data() + i * B;
          V acc[3] = {};
          int64_t v = 0;
          for (; v + 3 <= npv; v += 3)
            for (int u = 0; u < 3; ++u) {
              const V xc = vload(xi + (v + u) * W) - m;
              vstore(yi + (v + u) * W, vload(sr + (v + u) * W) * xc);
              acc[u] += vload(rk + (v + u) * W) * xc;
            }
          for (; v < npv; ++v) {
            const V xc = vload(xi + v * W) - m;
            vstore(yi + v * W, vload(sr + v * W) * xc);
            acc[0] += vload(rk + v * W) * xc;
          }
          s1[i] += static_cast<double>(vsum<T>(acc[0] + acc[1] + acc[2]));
        }
        double* S = part.s2.data() + k * Dq * Dq;
        int64_t i0 = 0;
        for (; i0 + kSI <= D; i0 += kSI) full_srow<T, kSI>(Y.data(), B, npv, i0, D, S, Dq);
        switch (D - i0) {
          case 3: full_srow<T, 3>(Y.data(), B, npv, i0, D, S, Dq); break;
          case 2: full_srow<T, 2>(Y.data(), B, npv, i0, D, S, Dq); break;
          case 1: full_srow<T, 1>(Y.data(), B, npv, i0, D, S, Dq); break;
          default: break;
        }
      } else if (!diag) {  // tied: first moments only
        for (int64_t a = 0; a < nb; ++a) {
          const T* x = p.X + (n0 + a) * D;
          const double ra = static_cast<double>(r[a]);
#pragma omp simd
          for (int64_t i = 0; i < D; ++i) s1[i] += ra * static_cast<double>(x[i] - mu[i]);
        }
      }
    }
    if (diag) {  // both moments about c at once: (K x B) r^T times [(x - c)^2, x - c]
      const int64_t Kq = p.Kq, L = 2 * Dp;
      for (int64_t a = 0; a < nbp; ++a)
        for (int64_t k = 0; k < Kq; ++k) rt[a * Kq + k] = (k < K && a < nb) ? w[k * B + a] : T(0);
      for (int64_t k0 = 0; k0 < K; k0 += kTileRows) {
        for (int64_t v = 0; v < L / W; v += kTileVecs) {
          const int64_t j0 = v * W;
          switch (std::min<int64_t>(kTileVecs, L / W - v)) {
            case 3: scatter_tile<T, 3>(rt.data(), Kq, A.data(), L, nbp, k0, j0, part.s2.data(), L); break;
            case 2: scatter_tile<T, 2>(rt.data(), Kq, A.data(), L, nbp, k0, j0, part.s2.data(), L); break;
            default: scatter_tile<T, 1>(rt.data(), Kq, A.data(), L, nbp, k0, j0, part.s2.data(), L); break;
          }
        }
      }
    }
  }
}

// One target-cloned driver per path: the full path in the same function as the others made
// GCC stop inlining small helpers there (the diag pass ran ~1.7x slower).
FL_MULTIVERSION void run_full_f32(const Plan<float>& p, int64_t b0, int64_t b1, Partial& part) {
  run_blocks<float, true>(p, b0, b1, part);
}
FL_MULTIVERSION void run_other_f32(const Plan<float>& p, int64_t b0, int64_t b1, Partial& part) {
  run_blocks<float, false>(p, b0, b1, part);
}
FL_MULTIVERSION void run_full_f64(const Plan<double>& p, int64_t b0, int64_t b1, Partial& part) {
  run_blocks<double, true>(p, b0, b1, part);
}
FL_MULTIVERSION void run_other_f64(const Plan<double>& p, int64_t b0, int64_t b1, Partial& part) {
  run_blocks<double, false>(p, b0, b1, part);
}
void run_blocks_any(const Plan<float>& p, int64_t b0, int64_t b1, Partial& part) {
  if (p.cov == Covariance::full)
    run_full_f32(p, b0, b1, part);
  else
    run_other_f32(p, b0, b1, part);
}
void run_blocks_any(const Plan<double>& p, int64_t b0, int64_t b1, Partial& part) {
  if (p.cov == Covariance::full)
    run_full_f64(p, b0, b1, part);
  else
    run_other_f64(p, b0, b1, part);
}

void check_out(const std::optional<View>& v, std::vector<int64_t> shape, DType dtype, const char* what) {
  if (!v) return;
  FL_CHECK_TYPE(v->dtype == dtype, "gaussian_mixture_pass: output '", v->name, "' must have dtype ",
                dtype_name(dtype), " (", what, ").");
  FL_CHECK(v->shape == shape, "gaussian_mixture_pass: output '", v->name, "' has the wrong shape (", what, ").");
  check_contiguous(*v, "gaussian_mixture_pass");
  FL_CHECK(v->device == Device::cpu, "gaussian_mixture_pass: output '", v->name, "' must be on the CPU.");
}

template <typename T>
double run(const View& X, const View& means, const View& prec, const View& offset, Covariance cov,
           const PassOutputs& out, int full_path) {
  constexpr int W = vec_width<T>;
  Plan<T> p;
  p.N = X.size(0), p.D = X.size(1), p.K = means.size(0), p.cov = cov;
  p.Dp = round_up(p.D, W);
  p.X = X.ptr<T>(), p.means = means.ptr<T>();
  const int64_t D = p.D, Dp = p.Dp, K = p.K;
  // Points per block: ~16 KiB of centred data; a multiple of the tile height.
  p.B = std::clamp<int64_t>(16384 / (Dp * static_cast<int64_t>(sizeof(T))), 8, 256) / kTileRows * kTileRows;
  if (cov == Covariance::full) {
    // Points per block a multiple of the tile's kPV vectors; enough of them that the scatter's
    // per-block reductions are a small part of its work, few enough that a block's three
    // Dq x B arrays stay near L1/L2.
    p.Dq = round_up(D, kCJ);
    const int64_t unit = kPV * W;
    p.B = std::clamp<int64_t>(49152 / (p.Dq * static_cast<int64_t>(sizeof(T))) / unit * unit, unit, 32 * unit);
  }
  p.offset.assign(offset.ptr<T>(), offset.ptr<T>() + K);
  const int64_t nvec = Dp / W;
  for (int64_t v = 0; v < nvec; v += kTileVecs) {
    p.group_start.push_back(static_cast<int32_t>(v));
    p.group_vecs.push_back(static_cast<int32_t>(std::min<int64_t>(kTileVecs, nvec - v)));
  }
  const int64_t G = static_cast<int64_t>(p.group_start.size());
  const T* src = prec.ptr<T>();
  if (cov == Covariance::diag) {
    p.P.assign(static_cast<size_t>(K * Dp), T(0));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t i = 0; i < D; ++i) p.P[k * Dp + i] = src[k * D + i] * src[k * D + i];
    p.Kp = round_up(K, W);
    p.Kq = round_up(K, kTileRows);
    p.diag_c.assign(static_cast<size_t>(Dp), T(0));
    for (int64_t i = 0; i < D; ++i) {
      double c = 0;
      for (int64_t k = 0; k < K; ++k) c += static_cast<double>(p.means[k * D + i]);
      p.diag_c[i] = static_cast<T>(c / static_cast<double>(K));
    }
    p.diag_bt.assign(static_cast<size_t>(2 * Dp * p.Kp), T(0));
    p.diag_off.assign(static_cast<size_t>(K), T(0));
    for (int64_t k = 0; k < K; ++k) {
      double extra = 0;
      for (int64_t i = 0; i < D; ++i) {
        const T p2 = p.P[k * Dp + i];
        const T m = p.means[k * D + i] - p.diag_c[i];
        p.diag_bt[i * p.Kp + k] = p2;
        p.diag_bt[(Dp + i) * p.Kp + k] = T(-2) * m * p2;
        extra += static_cast<double>(p2) * static_cast<double>(m) * static_cast<double>(m);
      }
      p.diag_off[k] = static_cast<T>(static_cast<double>(p.offset[k]) - 0.5 * extra);
    }
  } else {
    const int64_t nmat = cov == Covariance::tied ? 1 : 0;  // full uses Pq below
    p.P.assign(static_cast<size_t>(nmat * Dp * Dp), T(0));
    p.lo.assign(static_cast<size_t>(nmat * G), 0);
    p.hi.assign(static_cast<size_t>(nmat * G), 0);
    p.vhi.assign(static_cast<size_t>(nmat * G * kTileVecs), 0);
    for (int64_t k = 0; k < nmat; ++k) {
      for (int64_t i = 0; i < D; ++i)
        for (int64_t j = 0; j < D; ++j) p.P[(k * Dp + i) * Dp + j] = src[(k * D + i) * D + j];
      for (int64_t g = 0; g < G; ++g) {
        const int64_t c0 = p.group_start[g] * W, c1 = std::min(D, c0 + p.group_vecs[g] * W);
        int64_t lo = D, hi = 0;
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = c0; j < c1; ++j)
            if (p.P[(k * Dp + i) * Dp + j] != T(0)) lo = std::min(lo, i), hi = std::max(hi, i + 1);
        p.lo[k * G + g] = static_cast<int32_t>(std::min(lo, hi));
        p.hi[k * G + g] = static_cast<int32_t>(hi);
        // Per-vector row ranges; segmented only when they share the start and nest.
        int32_t* vh = p.vhi.data() + (k * G + g) * kTileVecs;
        bool nested = true;
        int64_t prev_hi = 0;
        for (int64_t v = 0; v < kTileVecs; ++v) {
          vh[v] = static_cast<int32_t>(hi);
          if (v >= p.group_vecs[g]) continue;
          const int64_t v0 = c0 + v * W, v1 = std::min(D, v0 + W);
          int64_t vlo = D, vhi_ = 0;
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = v0; j < v1; ++j)
              if (p.P[(k * Dp + i) * Dp + j] != T(0)) vlo = std::min(vlo, i), vhi_ = std::max(vhi_, i + 1);
          if (v0 >= D) vlo = lo, vhi_ = prev_hi;  // a padding vector: nothing to add
          if (vlo != lo && vhi_ > 0) nested = false;
          if (vhi_ < prev_hi) nested = false;
          vh[v] = static_cast<int32_t>(std::max(vhi_, prev_hi));
          prev_hi = vh[v];
        }
        if (!nested)
          for (int64_t v = 0; v < kTileVecs; ++v) vh[v] = static_cast<int32_t>(hi);
        else
          vh[p.group_vecs[g] - 1] = static_cast<int32_t>(hi);
      }
    }
    if (cov == Covariance::full) {
      const int64_t Dq = p.Dq;
      p.Pq.assign(static_cast<size_t>(K * Dq * Dq), T(0));
      p.upper.assign(static_cast<size_t>(K), 1);
      p.mq.assign(static_cast<size_t>(K * Dq), T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < D; ++i) p.mq[k * Dq + i] = p.means[k * D + i];
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < D; ++j) {
            const T v = src[(k * D + i) * D + j];
            p.Pq[(k * Dq + i) * Dq + j] = v;
            if (j < i && v != T(0)) p.upper[k] = 0;
          }
    }
    if (cov == Covariance::tied) {  // b_k = mu_k P, as scikit-learn subtracts it
      p.tied_b.assign(static_cast<size_t>(K * Dp), T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < D; ++j) {
          T s = 0;
          for (int64_t i = 0; i < D; ++i) s += p.means[k * D + i] * p.P[i * Dp + j];
          p.tied_b[k * Dp + j] = s;
        }
    }
  }
  if (out.log_prob) p.log_prob = out.log_prob->ptr<T>();
  if (out.log_norm) p.log_norm = out.log_norm->ptr<T>();
  if (out.labels) p.labels = out.labels->ptr<int64_t>();
  p.stats = out.nk.has_value();
  Lifted<T> lf;
  if (cov == Covariance::full && lifted_plan(p, src, full_path, lf)) return run_lifted(p, lf, out);

  const int64_t s2_size = cov == Covariance::full ? K * p.Dq * p.Dq : cov == Covariance::diag ? p.Kq * 2 * Dp : 0;
  const int64_t nblocks = (p.N + p.B - 1) / p.B;
  std::vector<Partial> parts(static_cast<size_t>(std::max(1, omp_get_max_threads())));
  for (Partial& part : parts) {
    if (!p.stats) continue;
    part.nk.assign(static_cast<size_t>(K), 0.0);
    part.s1.assign(static_cast<size_t>(K * Dp), 0.0);
    part.s2.assign(static_cast<size_t>(s2_size), 0.0);
  }
  const int64_t work_per_block = p.B * K * (cov == Covariance::diag ? D : D * D);
  parallel_for(nblocks, work_per_block, [&](int64_t b0, int64_t b1) {
    run_blocks_any(p, b0, b1, parts[static_cast<size_t>(omp_get_thread_num())]);
  });

  double loglik = 0.0;
  for (const Partial& part : parts) loglik += part.loglik;
  if (p.stats) {
    double* nk = out.nk->ptr<double>();
    double* s1 = out.s1->ptr<double>();
    std::fill(nk, nk + K, 0.0);
    std::fill(s1, s1 + K * D, 0.0);
    for (const Partial& part : parts)
      for (int64_t k = 0; k < K; ++k) {
        nk[k] += part.nk[k];
        for (int64_t i = 0; i < D; ++i) s1[k * D + i] += part.s1[k * Dp + i];
      }
    if (cov == Covariance::full) {
      double* s2 = out.s2->ptr<double>();
      std::fill(s2, s2 + K * D * D, 0.0);
      for (const Partial& part : parts)
        for (int64_t k = 0; k < K; ++k)
          for (int64_t i = 0; i < D; ++i)
            for (int64_t j = i; j < D; ++j) s2[(k * D + i) * D + j] += part.s2[(k * p.Dq + i) * p.Dq + j];
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < D; ++i)
          for (int64_t j = 0; j < i; ++j) s2[(k * D + i) * D + j] = s2[(k * D + j) * D + i];
    } else if (cov == Covariance::diag) {
      // Moments about c, summed over threads, moved to the current means:
      // sum r (x - mu) = m1 - nk (mu - c); sum r (x - mu)^2 = m2 - 2 (mu - c) m1 + nk (mu - c)^2.
      const int64_t L = 2 * Dp;
      std::vector<double> M(static_cast<size_t>(p.Kq * L), 0.0);
      for (const Partial& part : parts)
        for (size_t j = 0; j < M.size(); ++j) M[j] += part.s2[j];
      double* s2 = out.s2->ptr<double>();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < D; ++i) {
          const double m = static_cast<double>(p.means[k * D + i]) - static_cast<double>(p.diag_c[i]);
          const double m1 = M[k * L + Dp + i], m2 = M[k * L + i];
          s1[k * D + i] = m1 - nk[k] * m;
          s2[k * D + i] = m2 - 2.0 * m * m1 + nk[k] * m * m;
        }
    }
  }
  return loglik;
}

}  // namespace

double gaussian_mixture_pass(const View& X, const View& means, const View& prec_chol, const View& offset,
                             int covariance, const PassOutputs& out, int full_path) {
  const char* op = "gaussian_mixture_pass";
  FL_CHECK(covariance >= 0 && covariance <= 2, op, ": covariance code must be 0 (full), 1 (tied) or 2 (diag).");
  FL_CHECK(full_path >= 0 && full_path <= 2, op, ": full_path must be 0 (choose), 1 (triangular) or 2 (lifted).");
  const Covariance cov = static_cast<Covariance>(covariance);
  check_dtype(X, {DType::f32, DType::f64}, op);
  for (const View* v : {&X, &means, &prec_chol, &offset}) {
    FL_CHECK_TYPE(v->dtype == X.dtype, op, ": argument '", v->name, "' must have the dtype of X (",
                  dtype_name(X.dtype), ").");
    check_contiguous(*v, op);
    FL_CHECK(v->device == Device::cpu, op, ": argument '", v->name, "' must be on the CPU.");
  }
  FL_CHECK(X.ndim() == 2, op, ": X must be 2-D (n_samples, n_features).");
  const int64_t N = X.size(0), D = X.size(1);
  FL_CHECK(means.ndim() == 2 && means.size(1) == D, op, ": means must be (n_components, ", D, ").");
  const int64_t K = means.size(0);
  FL_CHECK(K >= 1 && D >= 1, op, ": need at least one component and one feature.");
  const std::vector<int64_t> want_prec =
      cov == Covariance::full ? std::vector<int64_t>{K, D, D}
                              : cov == Covariance::tied ? std::vector<int64_t>{D, D} : std::vector<int64_t>{K, D};
  FL_CHECK(prec_chol.shape == want_prec, op, ": precisions_cholesky has the wrong shape for this covariance type.");
  FL_CHECK(offset.ndim() == 1 && offset.size(0) == K, op, ": offset must have shape (n_components,).");
  check_out(out.log_prob, {N, K}, X.dtype, "n_samples x n_components");
  check_out(out.log_norm, {N}, X.dtype, "n_samples");
  check_out(out.labels, {N}, DType::i64, "n_samples");
  FL_CHECK(out.nk.has_value() == out.s1.has_value(), op, ": nk and s1 go together.");
  if (out.nk) {
    check_out(out.nk, {K}, DType::f64, "n_components");
    check_out(out.s1, {K, D}, DType::f64, "n_components x n_features");
    if (cov == Covariance::full) {
      FL_CHECK(out.s2.has_value(), op, ": full covariance statistics need s2.");
      check_out(out.s2, {K, D, D}, DType::f64, "n_components x n_features x n_features");
    } else if (cov == Covariance::diag) {
      FL_CHECK(out.s2.has_value(), op, ": diag covariance statistics need s2.");
      check_out(out.s2, {K, D}, DType::f64, "n_components x n_features");
    }
  }
  if (N == 0) return 0.0;
  if (X.dtype == DType::f32) return run<float>(X, means, prec_chol, offset, cov, out, full_path);
  return run<double>(X, means, prec_chol, offset, cov, out, full_path);
}

}  // namespace fl::mixture
