// tpkit/cuda/device_mock.cuh: N ranks on one GPU, for testing tensor parallelism without N
// GPUs. DeviceMockBackend wraps MockBackend (tpkit/comm/mock.hpp): the same rendezvous,
// mismatch and timeout reports and fault injection, with the data in device memory.
//
// Each operation waits for the rank's stream (the CudaContext bound to its thread), copies the
// rank's contribution to the host, runs the mock operation and copies the result back. So the
// reductions are the mock's own: in rank order, 16-bit types accumulated in float and rounded
// once, bitwise identical on every rank and to the host path. This is a correctness tool, not
// a fast path (NCCL is; see tpkit/comm/nccl.hpp). Copies use cudaMemcpyDefault, so host
// pointers (the engine's token and fingerprint messages) work as well as device ones.
#pragma once

#include <cuda_runtime.h>

#include <numeric>
#include <utility>
#include <vector>

#include "tpkit/comm/mock.hpp"
#include "tpkit/cuda/context.cuh"

namespace tpkit::cuda {

class DeviceMockBackend {
 public:
  explicit DeviceMockBackend(MockBackend inner) : inner_(std::move(inner)) {}

  int rank() const { return inner_.rank(); }
  int size() const { return inner_.size(); }

  void all_reduce(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) {
    const std::size_t bytes = count * dtype_size(t);
    if (size() == 1) return copy_alone(send, recv, bytes);
    stage_in(send, bytes);
    out_.resize(bytes);
    inner_.all_reduce(in_.data(), out_.data(), count, t, op);
    stage_out(recv, bytes);
  }
  void all_gather(const void* send, void* recv, const std::size_t* counts, DType t) {
    if (size() == 1) return copy_alone(send, recv, counts[0] * dtype_size(t));
    stage_in(send, counts[rank()] * dtype_size(t));
    out_.resize(total(counts) * dtype_size(t));
    inner_.all_gather(in_.data(), out_.data(), counts, t);
    stage_out(recv, out_.size());
  }
  void reduce_scatter(const void* send, void* recv, const std::size_t* counts, DType t, ReduceOp op) {
    stage_in(send, total(counts) * dtype_size(t));
    out_.resize(counts[rank()] * dtype_size(t));
    inner_.reduce_scatter(in_.data(), out_.data(), counts, t, op);
    stage_out(recv, out_.size());
  }
  void broadcast(void* data, std::size_t count, DType t, int root) {
    const std::size_t bytes = count * dtype_size(t);
    if (rank() == root)
      stage_in(data, bytes);
    else
      in_.resize(bytes);
    inner_.broadcast(in_.data(), count, t, root);
    if (rank() != root) {
      out_.swap(in_);
      stage_out(data, bytes);
    }
  }
  void send(const void* data, std::size_t count, DType t, int peer, int tag) {
    stage_in(data, count * dtype_size(t));
    inner_.send(in_.data(), count, t, peer, tag);
  }
  void recv(void* data, std::size_t count, DType t, int peer, int tag) {
    out_.resize(count * dtype_size(t));
    inner_.recv(out_.data(), count, t, peer, tag);
    stage_out(data, out_.size());
  }
  void barrier() {
    CudaContext::current().synchronize("barrier");
    inner_.barrier();
  }
  DeviceMockBackend split(int color, int key) { return DeviceMockBackend(inner_.split(color, key)); }

 private:
  std::size_t total(const std::size_t* counts) const {
    return std::accumulate(counts, counts + size(), std::size_t(0));
  }

  // A group of one: the result is the input, in stream order, with no host round trip (so a
  // TP 1 model on this backend runs at full speed).
  void copy_alone(const void* send, void* recv, std::size_t bytes) {
    if (send != recv && bytes)
      check_cuda(cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDefault, CudaContext::current().stream()), "copy");
  }

  // The rank's data as of now in its stream order.
  void stage_in(const void* src, std::size_t bytes) {
    in_.resize(bytes);
    CudaContext& c = CudaContext::current();
    if (bytes) check_cuda(cudaMemcpyAsync(in_.data(), src, bytes, cudaMemcpyDefault, c.stream()), "staging to host");
    c.synchronize("staging to host");
  }
  // out_ to dst, ordered before the rank's later work; waits so out_ may be reused at once.
  void stage_out(void* dst, std::size_t bytes) {
    CudaContext& c = CudaContext::current();
    if (bytes) check_cuda(cudaMemcpyAsync(dst, out_.data(), bytes, cudaMemcpyDefault, c.stream()), "staging to device");
    c.synchronize("staging to device");
  }

  MockBackend inner_;
  std::vector<unsigned char> in_, out_;
};
TPKIT_BACKEND_CHECK(DeviceMockBackend);

// run_mock_ranks on one GPU: each rank thread binds contexts[rank] (one stream per rank) and
// gets a Communicator<DeviceMockBackend>.
template <class F>
void run_device_mock_ranks(std::vector<std::unique_ptr<CudaContext>>& contexts, F&& fn, MockOptions options = {}) {
  run_mock_ranks(
      int(contexts.size()),
      [&](Communicator<MockBackend>& host) {
        ScopedContext bind(*contexts[std::size_t(host.rank())]);
        Communicator<DeviceMockBackend> comm(DeviceMockBackend(std::move(host.backend())));
        fn(comm);
      },
      std::move(options));
}

// One context per rank, all on `device`.
inline std::vector<std::unique_ptr<CudaContext>> make_contexts(int ranks, int device = 0) {
  std::vector<std::unique_ptr<CudaContext>> contexts;
  for (int r = 0; r < ranks; ++r) contexts.push_back(std::make_unique<CudaContext>(device));
  return contexts;
}

}  // namespace tpkit::cuda
