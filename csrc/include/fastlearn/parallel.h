// OpenMP helpers: one place decides when work is worth more than one thread.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace fl {

// Below this many elements of work a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 32768;

// Run body(begin, end) over [0, n) in contiguous chunks, one per thread, on as many threads
// as there are `grain` elements of work (n items of `cost_per_item` elements each).
template <typename F>
void parallel_for(int64_t n, int64_t cost_per_item, F&& body, int64_t grain = kParallelGrain) {
  if (n <= 0) return;
  const int64_t total = n * std::max<int64_t>(cost_per_item, 1);
  const int max_threads = omp_get_max_threads();
  int threads = static_cast<int>(std::min<int64_t>(max_threads, std::max<int64_t>(1, total / grain)));
  threads = static_cast<int>(std::min<int64_t>(threads, n));
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  }
}

}  // namespace fl
