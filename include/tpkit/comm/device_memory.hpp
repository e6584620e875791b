// tpkit/comm/device_memory.hpp: how the device backends (NcclBackend and the one-GPU mock) tell
// device buffers from host ones: one classifier for both. Not included by tpkit.hpp.
// Needs: CUDA (the runtime; link tpkit::cuda or CUDA::cudart).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "tpkit/core/error.hpp"

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

// Whether an operation's buffers are in device memory (null: a buffer the operation does not
// use). Both must be in the same kind: a host buffer with a device one is an InvalidArgument
// naming `who` and `what`. The runtime is asked once per distinct buffer.
inline bool buffers_on_device(const void* send, const void* recv, const char* who, const char* what) {
  const bool send_device = is_device_memory(send);
  const bool recv_device = recv == send ? send_device : is_device_memory(recv);
  if (send && recv && send_device != recv_device)
    throw InvalidArgument(std::string(who) + "::" + what +
                          ": one buffer is in device memory and the other in host memory");
  return send_device || recv_device;
}

}  // namespace tpkit
