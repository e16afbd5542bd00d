// Launch checking for CUDA launchers: every launch is followed by FL_CUDA_CHECK_LAUNCH().
#pragma once

#include <cuda_runtime.h>

#include "fastlearn/common.h"

#define FL_CUDA_CHECK(expr)                                                                  \
  do {                                                                                       \
    cudaError_t fl_err_ = (expr);                                                            \
    FL_CHECK_RUNTIME(fl_err_ == cudaSuccess, "CUDA error: ", cudaGetErrorString(fl_err_), \
                     " (", #expr, ")");                                                      \
  } while (0)
#define FL_CUDA_CHECK_LAUNCH() FL_CUDA_CHECK(cudaGetLastError())
