// tpkit/comm/device_memory.hpp: is_device_memory, how the device backends (NcclBackend and the
// one-GPU mock) tell device buffers from host ones. Needs <cuda_runtime.h> (link
// CUDA::cudart); not included by tpkit.hpp.
#pragma once

#include <cuda_runtime.h>

namespace tpkit {

// Whether the device can read `p` directly (device or managed memory). Any other pointer,
// pinned host memory included, is host memory; null is neither (false).
inline bool is_device_memory(const void* p) {
  if (p == nullptr) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // older runtimes reject unregistered host pointers; clear the error
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

}  // namespace tpkit
