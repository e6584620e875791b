// tpkit/cuda/context.cuh: device memory and the per-thread CUDA context that CudaOps uses.
//
//   DeviceBuffer<T>  owning, uninitialised device storage, grow-only like HostBuffer.
//   CudaContext      a device, a non-blocking stream, a cuBLASLt handle, its workspace and plans, and
//                    small staging buffers. One per rank thread: N ranks on one GPU get N
//                    streams.
//   ScopedContext    binds a context to the calling thread; CudaOps launches on the bound one.
//   check_cuda, check_status
//                    the exception layer over CUDA errors and launcher Status codes.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "tpkit/core/error.hpp"
#include "tpkit/cuda/gemm.cuh"
#include "tpkit/cuda/status.cuh"

namespace tpkit::cuda {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(std::string(what) + ": CUDA error " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// A launcher's Status as an exception naming the operation; a failed launch adds CUDA's reason.
inline void check_status(Status s, const char* what) {
  if (s == Status::ok) return;
  std::string message = std::string(what) + " failed: " + status_name(s);
  if (s == Status::launch_failed) message += std::string(" (") + cudaGetErrorString(cudaGetLastError()) + ")";
  throw Error(message);
}

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    if (count) check_cuda(cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T)), "cudaMalloc");
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return count_; }
  // Grows (never shrinks). cudaFree waits for the device, so work still reading the old
  // storage finishes first.
  void reserve_at_least(std::size_t count) {
    if (count > count_) *this = DeviceBuffer(count);
  }

 private:
  void release() {
    if (data_) cudaFree(data_);
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

class CudaContext {
 public:
  static constexpr std::size_t kGemmWorkspaceBytes = std::size_t(32) << 20;

  explicit CudaContext(int device = 0) : device_(device) {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    if (cublasLtCreate(&lt_) != CUBLAS_STATUS_SUCCESS) {
      cudaStreamDestroy(stream_);
      throw Error("cublasLtCreate failed");
    }
    gemm_workspace_ = DeviceBuffer<unsigned char>(kGemmWorkspaceBytes);
  }
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;
  ~CudaContext() {
    cudaStreamSynchronize(stream_);
    gemm_plans_.clear();
    cublasLtDestroy(lt_);
    cudaStreamDestroy(stream_);
  }

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t lt() const { return lt_; }
  void* gemm_workspace() { return gemm_workspace_.data(); }
  GemmPlanCache& gemm_plans() { return gemm_plans_; }
  std::size_t gemm_workspace_bytes() const { return gemm_workspace_.size(); }
  void synchronize(const char* what = "cudaStreamSynchronize") { check_cuda(cudaStreamSynchronize(stream_), what); }

  // Device staging for small per-call host data (token ids, argmax results). Stream order
  // makes reuse safe: a later upload into it runs after the kernels that read the earlier one.
  template <class T>
  T* staging(std::size_t count, int which = 0) {
    DeviceBuffer<unsigned char>& b = staging_[which];
    b.reserve_at_least(count * sizeof(T) + 256);
    return reinterpret_cast<T*>(b.data());
  }

  // The context bound to the calling thread (throws when there is none).
  static CudaContext& current() {
    CudaContext* c = bound();
    if (!c) throw Error("no CUDA context is bound to this thread: create a tpkit::cuda::ScopedContext first");
    return *c;
  }
  static CudaContext*& bound() {
    thread_local CudaContext* context = nullptr;
    return context;
  }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer<unsigned char> gemm_workspace_;
  GemmPlanCache gemm_plans_;
  DeviceBuffer<unsigned char> staging_[2];
};

// Binds `context` to this thread for the scope (and sets its device); restores the previous.
class ScopedContext {
 public:
  explicit ScopedContext(CudaContext& context) : previous_(CudaContext::bound()) {
    check_cuda(cudaSetDevice(context.device()), "cudaSetDevice");
    CudaContext::bound() = &context;
  }
  ~ScopedContext() { CudaContext::bound() = previous_; }
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  CudaContext* previous_;
};

}  // namespace tpkit::cuda
