// CPU code is built for plain x86-64 and dispatched at run time: FL_MULTIVERSION makes GCC
// emit AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and baseline clones of a function and pick
// one at load time. A native build (FASTLEARN_NATIVE=ON) compiles everything with
// -march=native instead. Put it on small non-template drivers; the hot loops inline into them.
#pragma once

#if defined(FASTLEARN_NATIVE_BUILD) || !defined(__x86_64__) || !defined(__GNUC__) || defined(__clang__)
#define FL_MULTIVERSION
#else
#define FL_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

#define FL_ALWAYS_INLINE inline __attribute__((always_inline))

namespace fl {
// The widest instruction set this CPU offers among those we build clones for.
const char* cpu_simd_level();
}  // namespace fl
