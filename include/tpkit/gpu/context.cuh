// tpkit/gpu/context.cuh: device memory and the CUDA context that CudaOps runs on.
//
//   DeviceBuffer<T>  owning, uninitialised device storage, grow-only like HostBuffer.
//   CudaContext      a device, a non-blocking stream, a cuBLASLt handle, its workspace and plans, and
//                    small staging buffers. One per rank: N ranks on one GPU get N streams. A
//                    CudaOps (and a DeviceMockBackend) holds a pointer to its context; nothing
//                    is bound to a thread.
//   PinnedBuffer     page-locked host memory, grow-only (what a step's metadata is packed into, so
//                    that one asynchronous copy uploads it).
//   Event            a CUDA event created on first use, destroyed with its owner.
//   DeviceScope      makes a device current on the calling thread for a scope (allocations go
//                    to the current device).
//   check_cuda, check_status
//                    the exception layer over CUDA errors and launcher Status codes.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "tpkit/core/error.hpp"
#include "tpkit/kernels/gemm.cuh"
#include "tpkit/kernels/status.cuh"

namespace tpkit::gpu {

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

// Page-locked host memory: asynchronous copies from it need no staging by the runtime.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (data_) cudaFreeHost(data_);
  }
  unsigned char* data() { return data_; }
  std::size_t size() const { return size_; }
  // Grows (never shrinks); the caller makes sure no copy still reads the old memory.
  void reserve_at_least(std::size_t bytes) {
    if (bytes <= size_) return;
    if (data_) cudaFreeHost(data_);
    data_ = nullptr, size_ = 0;
    check_cuda(cudaMallocHost(reinterpret_cast<void**>(&data_), bytes), "cudaMallocHost");
    size_ = bytes;
  }

 private:
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() {
    if (event_) cudaEventDestroy(event_);
  }
  void record(cudaStream_t stream) {
    if (!event_) check_cuda(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventRecord(event_, stream), "cudaEventRecord");
    recorded_ = true;
  }
  // Waits for the work before the last record() (at once when nothing was recorded).
  void synchronize(const char* what) {
    if (recorded_) check_cuda(cudaEventSynchronize(event_), what);
  }

 private:
  cudaEvent_t event_ = nullptr;
  bool recorded_ = false;
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
    try {
      gemm_workspace_ = DeviceBuffer<unsigned char>(kGemmWorkspaceBytes);
    } catch (...) {  // the destructor does not run for a half-built context
      cublasLtDestroy(lt_);
      cudaStreamDestroy(stream_);
      throw;
    }
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

  // The attention kernels' workspace (the decode splits' partial results), grow-only. An
  // engine reserves the largest its steps can need at load (CudaOps::check_model), so no step
  // allocates; stream order makes sharing it between layers safe.
  void* attention_workspace(std::size_t bytes) {
    if (attention_workspace_.size() < bytes) attention_workspace_.reserve_at_least(bytes);
    return attention_workspace_.data();
  }

  // Device staging for small per-call host data (token ids, argmax results). Stream order
  // makes reuse safe: a later upload into it runs after the kernels that read the earlier one.
  template <class T>
  T* staging(std::size_t count, int which = 0) {
    DeviceBuffer<unsigned char>& b = staging_[which];
    b.reserve_at_least(count * sizeof(T) + 256);
    return reinterpret_cast<T*>(b.data());
  }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer<unsigned char> gemm_workspace_;
  GemmPlanCache gemm_plans_;
  DeviceBuffer<unsigned char> staging_[2];
  DeviceBuffer<unsigned char> attention_workspace_;
};

// Makes `device` current on the calling thread for the scope; restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace tpkit::gpu
