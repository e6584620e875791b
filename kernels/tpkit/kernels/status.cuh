// tpkit/kernels/status.cuh: what a kernel launcher returns. Launchers never throw (they may be
// called from code built without exceptions, and inside CUDA-graph capture); the layer that
// calls them turns a non-ok status into an exception (tpkit's two error layers).
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

namespace tpkit::gpu {

enum class Status {
  ok,
  invalid_argument,  // a size or count out of range
  misaligned,        // a pointer or leading dimension a vectorised kernel cannot take
  unsupported,       // a value the kernels are not compiled for (a head_dim, say)
  launch_failed,     // cudaGetLastError after the launch; see last_cuda_error()
};

inline const char* status_name(Status s) {
  switch (s) {
    case Status::ok:
      return "ok";
    case Status::invalid_argument:
      return "invalid argument";
    case Status::misaligned:
      return "misaligned pointer or leading dimension";
    case Status::unsupported:
      return "unsupported value";
    case Status::launch_failed:
      return "kernel launch failed";
  }
  return "?";
}

// The status of the launch that was just made.
inline Status launch_status() { return cudaGetLastError() == cudaSuccess ? Status::ok : Status::launch_failed; }

}  // namespace tpkit::gpu
