// The fit drivers: build each sub-problem of LIBSVM's C-SVC (one per class pair) or
// epsilon-SVR (2n variables over n kernel rows) and solve it against one shared cache.
#include "fit.h"

#include <algorithm>

#include "fastlearn/common.h"
#include "smo.h"

namespace fl::svm {
namespace {

constexpr const char* kOp = "svm fit";

void check_fit_inputs(const View& x, const View& sample_c, const FitOptions& o) {
  check_dtype(x, {DType::f32}, kOp);
  check_contiguous(x, kOp);
  FL_CHECK(x.device == Device::cpu, kOp, ": the CPU solver got '", x.name, "' on a GPU.");
  FL_CHECK(x.ndim() == 2 && x.size(0) > 0 && x.size(1) > 0, kOp, ": argument '", x.name,
           "' must be a non-empty 2-D array.");
  check_dtype(sample_c, {DType::f64}, kOp);
  check_contiguous(sample_c, kOp);
  FL_CHECK(sample_c.ndim() == 1 && sample_c.size(0) == x.size(0), kOp, ": argument '", sample_c.name,
           "' must have one entry per sample.");
  FL_CHECK(o.tol > 0, kOp, ": argument 'tol' must be > 0, got ", o.tol, ".");
  FL_CHECK(o.cache_mb > 0, kOp, ": argument 'cache_size' must be > 0 (MB), got ", o.cache_mb, ".");
  FL_CHECK(o.max_iter >= -1, kOp, ": argument 'max_iter' must be -1 (no limit) or >= 0.");
}

void check_out(const View& v, DType dt, int64_t numel) {
  check_dtype(v, {dt}, kOp);
  check_contiguous(v, kOp);
  FL_CHECK(v.numel() == numel, kOp, ": output '", v.name, "' must have ", numel, " elements.");
}

int64_t cache_columns(double cache_mb, int64_t n) {
  const double bytes = cache_mb * 1024.0 * 1024.0;
  return static_cast<int64_t>(bytes / (static_cast<double>(n) * sizeof(float)));
}

}  // namespace

int64_t svc_fit(const View& x, const View& class_start, const View& sample_c, const View& coef, const View& rho,
                const View& objective, const View& iterations, const FitOptions& o) {
  check_fit_inputs(x, sample_c, o);
  check_dtype(class_start, {DType::i64}, kOp);
  check_contiguous(class_start, kOp);
  const int64_t n = x.size(0), k = class_start.numel() - 1;
  FL_CHECK(k >= 2, kOp, ": need at least two classes.");
  const int64_t* start = class_start.ptr<int64_t>();
  FL_CHECK(start[0] == 0 && start[k] == n, kOp, ": class offsets must span the rows.");
  for (int64_t c = 0; c < k; ++c) FL_CHECK(start[c + 1] > start[c], kOp, ": class ", c, " has no samples.");
  const int64_t pairs = k * (k - 1) / 2;
  check_out(coef, DType::f64, pairs * n);
  check_out(rho, DType::f64, pairs);
  check_out(objective, DType::f64, pairs);
  check_out(iterations, DType::i64, pairs);

  // Columns are computed on demand and kept for every later pair: on digits the 45 pairs
  // touch ~800 of the 1797 columns, each computed once (LIBSVM computes them per pair).
  KernelMatrix kernel(x.ptr<float>(), n, x.size(1), o.kernel);
  ColumnCache cache(kernel, cache_columns(o.cache_mb, n));
  const double* cs = sample_c.ptr<double>();
  double* coef_out = coef.ptr<double>();
  std::fill(coef_out, coef_out + pairs * n, 0.0);
  int64_t unconverged = 0, p = 0;
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t b = a + 1; b < k; ++b, ++p) {
      SubProblem pb;
      for (int64_t cls : {a, b}) {
        for (int64_t t = start[cls]; t < start[cls + 1]; ++t) {
          pb.row.push_back(static_cast<int32_t>(t));
          pb.y.push_back(cls == a ? 1.0f : -1.0f);
          pb.p.push_back(-1.0);
          pb.C.push_back(cs[t]);
        }
      }
      SolverOptions so;
      so.tol = o.tol;
      so.shrinking = o.shrinking;
      so.max_iter = o.max_iter;
      so.cache_mb = o.cache_mb;
      if (o.poll) so.poll = [&, p](int64_t it) { o.poll(p, it); };
      const Solution sol = smo_solve(pb, cache, kernel, so);
      for (size_t t = 0; t < pb.row.size(); ++t) coef_out[p * n + pb.row[t]] = pb.y[t] * sol.alpha[t];
      rho.ptr<double>()[p] = sol.rho;
      objective.ptr<double>()[p] = sol.objective;
      iterations.ptr<int64_t>()[p] = sol.iterations;
      unconverged += !sol.converged;
      if (o.poll) o.poll(p + 1, -1);
    }
  }
  return unconverged;
}

int64_t svr_fit(const View& x, const View& target, const View& sample_c, double epsilon, const View& coef,
                const View& rho, const View& objective, const View& iterations, const FitOptions& o) {
  check_fit_inputs(x, sample_c, o);
  const int64_t n = x.size(0);
  check_dtype(target, {DType::f64}, kOp);
  check_contiguous(target, kOp);
  FL_CHECK(target.numel() == n, kOp, ": argument '", target.name, "' must have one value per sample.");
  FL_CHECK(epsilon >= 0, kOp, ": argument 'epsilon' must be >= 0, got ", epsilon, ".");
  check_out(coef, DType::f64, n);
  check_out(rho, DType::f64, 1);
  check_out(objective, DType::f64, 1);
  check_out(iterations, DType::i64, 1);

  KernelMatrix kernel(x.ptr<float>(), n, x.size(1), o.kernel);
  ColumnCache cache(kernel, cache_columns(o.cache_mb, n));
  const double* z = target.ptr<double>();
  const double* cs = sample_c.ptr<double>();
  SubProblem pb;
  pb.row.resize(static_cast<size_t>(2 * n));
  pb.y.resize(static_cast<size_t>(2 * n));
  pb.p.resize(static_cast<size_t>(2 * n));
  pb.C.resize(static_cast<size_t>(2 * n));
  for (int64_t t = 0; t < n; ++t) {
    pb.row[t] = pb.row[t + n] = static_cast<int32_t>(t);
    pb.y[t] = 1.0f;
    pb.y[t + n] = -1.0f;
    pb.p[t] = epsilon - z[t];
    pb.p[t + n] = epsilon + z[t];
    pb.C[t] = pb.C[t + n] = cs[t];
  }
  SolverOptions so;
  so.tol = o.tol;
  so.shrinking = o.shrinking;
  so.max_iter = o.max_iter;
  so.cache_mb = o.cache_mb;
  if (o.poll) so.poll = [&](int64_t it) { o.poll(0, it); };
  const Solution sol = smo_solve(pb, cache, kernel, so);
  for (int64_t t = 0; t < n; ++t) coef.ptr<double>()[t] = sol.alpha[t] - sol.alpha[t + n];
  rho.ptr<double>()[0] = sol.rho;
  objective.ptr<double>()[0] = sol.objective;
  iterations.ptr<int64_t>()[0] = sol.iterations;
  if (o.poll) o.poll(1, -1);
  return sol.converged ? 0 : 1;
}

}  // namespace fl::svm
