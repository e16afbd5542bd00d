// CUDA runtime probes for fastlearn.info(): how many GPUs this build's runtime can use.
#include <cuda_runtime.h>

namespace fl::bindings {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace fl::bindings
