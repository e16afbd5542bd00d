// CPU kernel of the k-means assignment (see kmeans.h).
//
// ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: the argmin needs only ||c||^2 - 2 x.c, computed
// by register tiles of points x SIMD vectors of centres (see tile_rows) over the centres
// stored transposed (D x Kp, zero-padded; padded centres get +inf norms so they never win).
// The winner's distance is then recomputed directly as ||x - c||^2, so the inertia does not
// suffer the cancellation of the expanded form. Threads own contiguous point ranges and their
// own float64 cluster sums, added in thread order at the end.
#include "kmeans.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "fastlearn/parallel.h"
#include "fastlearn/simd.h"
#include "fastlearn/vec.h"

namespace fl::cluster {
namespace {

constexpr int64_t kBlock = 128;  // points per block

template <typename T>
struct Plan {
  int64_t N = 0, D = 0, K = 0, Kp = 0;
  const T* X = nullptr;
  const T* C = nullptr;          // K x D
  const T* w = nullptr;          // N
  std::vector<T> Ct;             // D x Kp
  std::vector<T> cnorm;          // Kp (+inf on padding)
  int64_t* labels = nullptr;
  T* min_dist = nullptr;
  bool stats = false;
  bool exact = true;  // distance to the winner (inertia, min_dist) wanted
};

struct Partial {
  std::vector<double> sums, counts;
  double inertia = 0.0;
};

// Register tiles: ROWS points x JV vectors of centres, ROWS * JV accumulators. An FMA's
// latency is ~4-5 cycles at two a cycle, so ~10 independent accumulators keep the units busy:
// few centres take more points a tile (8 x 1, 6 x 2, 4 x 3, 3 x 4 for 1-4 vectors of centres),
// more centres take groups of 4 x 3 (dist_rows picks JV from ROWS).
inline int tile_rows(int64_t nvec) {
  switch (nvec) {
    case 1: return 8;
    case 2: return 6;
    case 4: return 3;
    default: return 4;
  }
}

template <typename T, int ROWS, int JV>
FL_ALWAYS_INLINE void dist_tile(const T* x, int64_t D, const T* Ct, int64_t Kp, int64_t j0, const T* cn, T* dist) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V acc[ROWS][JV];
  for (int a = 0; a < ROWS; ++a)
    for (int v = 0; v < JV; ++v) acc[a][v] = V{};
  for (int64_t i = 0; i < D; ++i) {
    V c[JV];
    for (int v = 0; v < JV; ++v) c[v] = vload(Ct + i * Kp + j0 + v * W);
    for (int a = 0; a < ROWS; ++a) {
      const T xa = x[a * D + i];
      for (int v = 0; v < JV; ++v) acc[a][v] += xa * c[v];
    }
  }
  for (int a = 0; a < ROWS; ++a)
    for (int v = 0; v < JV; ++v) vstore(dist + a * Kp + j0 + v * W, vload(cn + j0 + v * W) - T(2) * acc[a][v]);
}

// dist[a, :] = ||c||^2 - 2 x_a . c for the ROWS points at x, all Kp centres.
template <typename T, int ROWS>
FL_ALWAYS_INLINE void dist_rows(const T* x, int64_t D, const T* Ct, int64_t Kp, const T* cn, T* dist) {
  constexpr int W = vec_width<T>;
  const int64_t nvec = Kp / W;
  int64_t v = 0;
  if constexpr (ROWS == 3) {
    for (; v + 4 <= nvec; v += 4) dist_tile<T, 3, 4>(x, D, Ct, Kp, v * W, cn, dist);
  }
  if constexpr (ROWS == 4) {
    for (; v + 3 < nvec; v += 3) dist_tile<T, 4, 3>(x, D, Ct, Kp, v * W, cn, dist);
  }
  switch (nvec - v) {
    case 0: break;
    case 1: dist_tile<T, ROWS, 1>(x, D, Ct, Kp, v * W, cn, dist); break;
    case 2: dist_tile<T, ROWS, 2>(x, D, Ct, Kp, v * W, cn, dist); break;
    default: dist_tile<T, ROWS, 3>(x, D, Ct, Kp, v * W, cn, dist); break;
  }
}

// The smallest lane of v (shuffles and minima, no scalar chain over the lanes).
FL_ALWAYS_INLINE float vmin_lanes(vec_t<float> v) {
  vec_t<float> u = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v = u < v ? u : v;
  u = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v = u < v ? u : v;
  return v[1] < v[0] ? v[1] : v[0];
}
FL_ALWAYS_INLINE double vmin_lanes(vec_t<double> v) {
  const vec_t<double> u = __builtin_shufflevector(v, v, 2, 3, 0, 1);
  v = u < v ? u : v;
  return v[1] < v[0] ? v[1] : v[0];
}

// ||x - c||^2 over D features, in vectors of W (then the tail).
template <typename T>
FL_ALWAYS_INLINE T squared_distance(const T* x, const T* c, int64_t D) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  V acc = V{};
  int64_t i = 0;
  for (; i + W <= D; i += W) {
    const V d = vload(x + i) - vload(c + i);
    acc += d * d;
  }
  T s = vsum<T>(acc);
  for (; i < D; ++i) s += (x[i] - c[i]) * (x[i] - c[i]);
  return s;
}

template <typename T, int ROWS>
FL_ALWAYS_INLINE void run_blocks_rows(const Plan<T>& p, int64_t blk0, int64_t blk1, Partial& part) {
  using V = vec_t<T>;
  constexpr int W = vec_width<T>;
  const int64_t N = p.N, D = p.D, K = p.K, Kp = p.Kp, nvec = Kp / W;
  std::vector<T> pad(static_cast<size_t>(ROWS * D), T(0)), dist(static_cast<size_t>(ROWS * Kp));
  V lane_ids;  // 0, 1, ..., W - 1, as T (indices are exact: kmeans_assign checks K)
  for (int l = 0; l < W; ++l) lane_ids[l] = static_cast<T>(l);
  // This thread's inertia and counts, added to `part` at the end: the threads' Partials (and
  // their small counts arrays) sit side by side, so per-point writes there shared cache lines
  // between cores. The sums (K x D) are written in place.
  double inertia = 0.0;
  std::vector<double> counts(p.stats ? static_cast<size_t>(K) : 0, 0.0);
  for (int64_t blk = blk0; blk < blk1; ++blk) {
    const int64_t n0 = blk * kBlock, nb = std::min(kBlock, N - n0);
    for (int64_t a0 = 0; a0 < nb; a0 += ROWS) {
      const int64_t rows = std::min<int64_t>(ROWS, nb - a0);
      const T* x = p.X + (n0 + a0) * D;
      if (rows < ROWS) {  // the block's tail: copy into a zero-padded tile
        std::fill(pad.begin(), pad.end(), T(0));
        std::copy(x, x + rows * D, pad.begin());
        x = pad.data();
      }
      dist_rows<T, ROWS>(x, D, p.Ct.data(), Kp, p.cnorm.data(), dist.data());
      for (int64_t a = 0; a < rows; ++a) {
        // Branch-free argmin, first of ties (as a scalar scan with strict < would pick): each
        // lane keeps its smallest value and the index where it first appeared (strict <, so an
        // earlier vector wins a tie), then among the lanes holding the smallest value the
        // smallest index. (A separate min-reduction over indices after the minimum took ~19% of
        // a pass at K=16, D=32, float64.)
        const T* d = dist.data() + a * Kp;
        V mv = vload(d), iv = lane_ids, kv = lane_ids;
        for (int64_t v = 1; v < nvec; ++v) {
          const V dv = vload(d + v * W);
          kv += T(W);
          const auto lt = dv < mv;
          mv = lt ? dv : mv;
          iv = lt ? kv : iv;
        }
        const T bd = vmin_lanes(mv);
        const int64_t first = static_cast<int64_t>(vmin_lanes(mv == bd ? iv : vsplat(static_cast<T>(Kp))));
        const int64_t best = std::min<int64_t>(first, K - 1);  // K - 1 only if every distance overflowed
        const int64_t n = n0 + a0 + a;
        const T* xn = p.X + n * D;
        // The winner's distance recomputed directly (no cancellation), when wanted.
        const T s = p.exact ? squared_distance(xn, p.C + best * D, D) : T(0);
        p.labels[n] = best;
        if (p.min_dist) p.min_dist[n] = s;
        const double wn = static_cast<double>(p.w[n]);
        inertia += wn * static_cast<double>(s);
        if (p.stats) {
          double* sum = part.sums.data() + best * D;
#pragma omp simd
          for (int64_t i = 0; i < D; ++i) sum[i] += wn * static_cast<double>(xn[i]);
          counts[static_cast<size_t>(best)] += wn;
        }
      }
    }
  }
  part.inertia += inertia;
  for (size_t k = 0; k < counts.size(); ++k) part.counts[k] += counts[k];
}

template <typename T>
FL_ALWAYS_INLINE void run_blocks(const Plan<T>& p, int64_t blk0, int64_t blk1, Partial& part) {
  switch (tile_rows(p.Kp / vec_width<T>)) {
    case 8: run_blocks_rows<T, 8>(p, blk0, blk1, part); break;
    case 6: run_blocks_rows<T, 6>(p, blk0, blk1, part); break;
    case 4: run_blocks_rows<T, 4>(p, blk0, blk1, part); break;
    default: run_blocks_rows<T, 3>(p, blk0, blk1, part); break;
  }
}

FL_MULTIVERSION void run_blocks_f32(const Plan<float>& p, int64_t b0, int64_t b1, Partial& part) {
  run_blocks(p, b0, b1, part);
}
FL_MULTIVERSION void run_blocks_f64(const Plan<double>& p, int64_t b0, int64_t b1, Partial& part) {
  run_blocks(p, b0, b1, part);
}
void run_blocks_any(const Plan<float>& p, int64_t b0, int64_t b1, Partial& part) { run_blocks_f32(p, b0, b1, part); }
void run_blocks_any(const Plan<double>& p, int64_t b0, int64_t b1, Partial& part) { run_blocks_f64(p, b0, b1, part); }

template <typename T>
double run(const View& X, const View& centers, const View& weight, const AssignOutputs& out) {
  constexpr int W = vec_width<T>;
  Plan<T> p;
  p.N = X.size(0), p.D = X.size(1), p.K = centers.size(0), p.Kp = round_up(p.K, W);
  p.X = X.ptr<T>(), p.C = centers.ptr<T>(), p.w = weight.ptr<T>();
  const int64_t D = p.D, K = p.K, Kp = p.Kp;
  p.Ct.assign(static_cast<size_t>(D * Kp), T(0));
  p.cnorm.assign(static_cast<size_t>(Kp), std::numeric_limits<T>::infinity());
  for (int64_t k = 0; k < K; ++k) {
    T s = 0;
    for (int64_t i = 0; i < D; ++i) {
      const T c = p.C[k * D + i];
      p.Ct[i * Kp + k] = c;
      s += c * c;
    }
    p.cnorm[k] = s;
  }
  p.labels = out.labels.ptr<int64_t>();
  if (out.min_dist) p.min_dist = out.min_dist->ptr<T>();
  p.stats = out.sums.has_value();
  p.exact = out.inertia || out.min_dist.has_value();
  std::vector<Partial> parts(static_cast<size_t>(std::max(1, omp_get_max_threads())));
  if (p.stats)
    for (Partial& part : parts) part.sums.assign(static_cast<size_t>(K * D), 0.0), part.counts.assign(K, 0.0);
  const int64_t nblocks = (p.N + kBlock - 1) / kBlock;
  parallel_for(nblocks, kBlock * K * D, [&](int64_t b0, int64_t b1) {
    run_blocks_any(p, b0, b1, parts[static_cast<size_t>(omp_get_thread_num())]);
  });
  double inertia = 0.0;
  for (const Partial& part : parts) inertia += part.inertia;
  if (p.stats) {
    double* sums = out.sums->ptr<double>();
    double* counts = out.counts->ptr<double>();
    std::fill(sums, sums + K * D, 0.0);
    std::fill(counts, counts + K, 0.0);
    for (const Partial& part : parts) {
      for (int64_t j = 0; j < K * D; ++j) sums[j] += part.sums[j];
      for (int64_t k = 0; k < K; ++k) counts[k] += part.counts[k];
    }
  }
  return inertia;
}

void check_in(const View& v, DType dtype, const char* op) {
  FL_CHECK_TYPE(v.dtype == dtype, op, ": argument '", v.name, "' must have dtype ", dtype_name(dtype), ".");
  check_contiguous(v, op);
  FL_CHECK(v.device == Device::cpu, op, ": argument '", v.name, "' must be on the CPU.");
}

}  // namespace

double kmeans_assign(const View& X, const View& centers, const View& sample_weight, const AssignOutputs& out) {
  const char* op = "kmeans_assign";
  check_dtype(X, {DType::f32, DType::f64}, op);
  FL_CHECK(X.ndim() == 2, op, ": X must be 2-D (n_samples, n_features).");
  const int64_t N = X.size(0), D = X.size(1);
  for (const View* v : {&X, &centers, &sample_weight}) check_in(*v, X.dtype, op);
  FL_CHECK(centers.ndim() == 2 && centers.size(1) == D && centers.size(0) >= 1, op,
           ": centers must be (n_clusters >= 1, ", D, ").");
  const int64_t K = centers.size(0);
  // The argmin carries centre indices in X's floating type: exact below 2^24 in float32.
  FL_CHECK(X.dtype == DType::f64 || K < (int64_t{1} << 24), op, ": ", K,
           " centres is more than float32 can index exactly (2^24); pass float64 data.");
  FL_CHECK(sample_weight.ndim() == 1 && sample_weight.size(0) == N, op, ": sample_weight must have shape (", N, ",).");
  check_in(out.labels, DType::i64, op);
  FL_CHECK(out.labels.ndim() == 1 && out.labels.size(0) == N, op, ": labels must have shape (", N, ",).");
  if (out.min_dist) {
    check_in(*out.min_dist, X.dtype, op);
    FL_CHECK(out.min_dist->ndim() == 1 && out.min_dist->size(0) == N, op, ": min_dist must have shape (", N, ",).");
  }
  FL_CHECK(out.sums.has_value() == out.counts.has_value(), op, ": sums and counts go together.");
  if (out.sums) {
    check_in(*out.sums, DType::f64, op);
    check_in(*out.counts, DType::f64, op);
    FL_CHECK(out.sums->shape == (std::vector<int64_t>{K, D}) && out.counts->shape == (std::vector<int64_t>{K}), op,
             ": sums must be (n_clusters, n_features) and counts (n_clusters,).");
  }
  if (N == 0 || D == 0) return 0.0;
  if (X.dtype == DType::f32) return run<float>(X, centers, sample_weight, out);
  return run<double>(X, centers, sample_weight, out);
}

}  // namespace fl::cluster
