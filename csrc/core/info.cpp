// What was built and what this CPU offers: read by fastlearn.info().
#include <omp.h>

#include "fastlearn/simd.h"

namespace fl {

const char* cpu_simd_level() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "avx512";
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2";
  return "sse2";
#else
  return "generic";
#endif
}

}  // namespace fl
