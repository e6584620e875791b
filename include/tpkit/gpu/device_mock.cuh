// tpkit/gpu/device_mock.cuh: N ranks on one GPU, for testing tensor parallelism without N
// GPUs. DeviceMockBackend wraps MockBackend (tpkit/comm/mock.hpp): the same rendezvous,
// mismatch and timeout reports and fault injection, with the data in device memory. Each rank's
// endpoint works on its own CudaContext's stream.
//
// Collectives on device memory never leave the device and never wait for it. Each rank copies
// its input into a staging buffer of its own on its stream and records an event; the host
// rendezvous (MockBackend::rendezvous) exchanges the staging addresses and events; then each
// rank's stream waits on its peers' events and reads their staging buffers: copies for
// all_gather, all_to_all and broadcast, the rank-order reduction kernel
// (tpkit/kernels/rank_reduce.cuh) for all_reduce and reduce_scatter. So the results are the host
// mock's bitwise (rank order, 16-bit types accumulated in float and rounded once) and identical
// on every rank. Staging buffers alternate between two, and a rank refills one only after its
// peers' streams have finished reading it (their "done" events of two collectives before), so
// back-to-back and in-place collectives are safe without a second rendezvous.
//
// Collectives on host memory (the engine's token and fingerprint messages) go to the host mock
// directly. send and recv stage through the host. This is a correctness tool, not a fast path
// (NCCL is; see tpkit/comm/nccl.hpp): one host rendezvous per collective.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <utility>
#include <vector>

#include "tpkit/comm/device_memory.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/gpu/context.cuh"
#include "tpkit/kernels/rank_reduce.cuh"

namespace tpkit::gpu {

class DeviceMockBackend {
  // Per parity of the collective's number: a staging buffer and the two events.
  struct DeviceSide {
    DeviceBuffer<unsigned char> staged[2];
    cudaEvent_t ready[2] = {}, done[2] = {};
    std::vector<cudaEvent_t> peers_done[2];  // the peers' done events, learnt two collectives ago
    std::uint64_t collectives = 0;
    DeviceSide() = default;
    DeviceSide(const DeviceSide&) = delete;
    DeviceSide& operator=(const DeviceSide&) = delete;
    ~DeviceSide() {
      // Freeing the staging buffers waits for the device (see DeviceBuffer).
      for (cudaEvent_t e : ready)
        if (e) cudaEventDestroy(e);
      for (cudaEvent_t e : done)
        if (e) cudaEventDestroy(e);
    }
  };

 public:
  // The staging buffers and events of every endpoint of one run. A rank may still wait on a
  // peer's event after that peer's endpoint is gone (when a rank fails), so they are released
  // only when the run is over.
  class Resources {
   public:
    DeviceSide& add() {
      std::lock_guard<std::mutex> lock(mutex_);
      sides_.push_back(std::make_unique<DeviceSide>());
      return *sides_.back();
    }

   private:
    std::mutex mutex_;
    std::vector<std::unique_ptr<DeviceSide>> sides_;
  };

  DeviceMockBackend(MockBackend inner, std::shared_ptr<Resources> resources, CudaContext& context)
      : inner_(std::move(inner)), resources_(std::move(resources)), device_(&resources_->add()), context_(&context) {}

  int rank() const { return inner_.rank(); }
  int size() const { return inner_.size(); }

  void all_reduce(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) {
    // In place in a group of one: nothing to do, and no runtime query (inside a graph capture).
    if (size() == 1 && send == recv) return;
    const std::size_t bytes = count * dtype_size(t);
    if (!on_device(send, recv, "all_reduce")) return inner_.all_reduce(send, recv, count, t, op);
    if (size() == 1) return copy_alone(send, recv, bytes);
    exchange(CallSignature::all_reduce(count, t, op), send, bytes, [&](const ReduceInputs& peers) {
      check_status(rank_order_reduce(t, peers, 0, count, op, recv, stream()), "all_reduce on the device");
    });
  }
  void all_gather(const void* send, void* recv, const std::size_t* counts, DType t) {
    const std::size_t element = dtype_size(t);
    if (!on_device(send, recv, "all_gather")) return inner_.all_gather(send, recv, counts, t);
    if (size() == 1) return copy_alone(send, recv, counts[0] * element);
    exchange(CallSignature::all_gather(counts, size(), t), send, counts[rank()] * element,
             [&](const ReduceInputs& peers) {
               auto* out = static_cast<unsigned char*>(recv);
               for (int r = 0; r < size(); ++r) {
                 copy(peers.data[r], out, counts[r] * element, "all_gather on the device");
                 out += counts[r] * element;
               }
             });
  }
  void reduce_scatter(const void* send, void* recv, const std::size_t* counts, DType t, ReduceOp op) {
    const std::size_t total = std::accumulate(counts, counts + size(), std::size_t(0));
    const std::size_t offset = std::accumulate(counts, counts + rank(), std::size_t(0));
    if (!on_device(send, recv, "reduce_scatter")) return inner_.reduce_scatter(send, recv, counts, t, op);
    if (size() == 1) return copy_alone(send, recv, counts[0] * dtype_size(t));
    exchange(CallSignature::reduce_scatter(counts, size(), t, op), send, total * dtype_size(t),
             [&](const ReduceInputs& peers) {
               check_status(rank_order_reduce(t, peers, offset, counts[rank()], op, recv, stream()),
                            "reduce_scatter on the device");
             });
  }
  // Each rank stages its whole send buffer and copies its segment out of every peer's: rank q's
  // segment for this rank starts after what q sends to the ranks before this one (q's send
  // counts, from its signature at the rendezvous). Buffers that are both null (a rank that moves
  // nothing) count as device memory, so such a rank still meets its peers on the device path.
  void all_to_all(const void* send, const std::size_t* send_counts, void* recv, const std::size_t* recv_counts,
                  DType t) {
    const std::size_t element = dtype_size(t);
    if ((send || recv) && !on_device(send, recv, "all_to_all"))
      return inner_.all_to_all(send, send_counts, recv, recv_counts, t);
    if (size() == 1) return copy_alone(send, recv, send_counts[0] * element);
    const std::size_t sent = std::accumulate(send_counts, send_counts + size(), std::size_t(0));
    // Where this rank's segment starts in each peer's send buffer (from the peers' signatures).
    std::vector<std::size_t> offsets(static_cast<std::size_t>(size()));
    exchange(
        CallSignature::all_to_all(send_counts, recv_counts, size(), t), send, sent * element,
        [&](const ReduceInputs& peers) {
          auto* out = static_cast<unsigned char*>(recv);
          for (int q = 0; q < size(); ++q) {
            const std::size_t bytes = recv_counts[q] * element;
            if (bytes)
              copy(static_cast<const unsigned char*>(peers.data[q]) + offsets[std::size_t(q)] * element, out, bytes,
                   "all_to_all on the device");
            out += bytes;
          }
        },
        [&](const std::vector<mock_detail::Entry>& all) {
          for (int q = 0; q < size(); ++q) {
            const auto& c = all[std::size_t(q)].call.counts;
            offsets[std::size_t(q)] = std::accumulate(c.begin(), c.begin() + rank(), std::size_t(0));
          }
        });
  }
  void broadcast(void* data, std::size_t count, DType t, int root) {
    const std::size_t bytes = count * dtype_size(t);
    if (!on_device(data, data, "broadcast")) return inner_.broadcast(data, count, t, root);
    if (size() == 1) return;
    // Only the root stages; the others read its staging buffer.
    exchange(CallSignature::broadcast(count, t, root), data, rank() == root ? bytes : 0,
             [&](const ReduceInputs& peers) {
               if (rank() != root) copy(peers.data[root], data, bytes, "broadcast on the device");
             });
  }
  void send(const void* data, std::size_t count, DType t, int peer, int tag) {
    stage_in(data, count * dtype_size(t));
    inner_.send(host_.data(), count, t, peer, tag);
  }
  void recv(void* data, std::size_t count, DType t, int peer, int tag) {
    host_.resize(count * dtype_size(t));
    inner_.recv(host_.data(), count, t, peer, tag);
    stage_out(data, host_.size());
  }
  void barrier() {
    context_->synchronize("barrier");
    inner_.barrier();
  }
  DeviceMockBackend split(int color, int key) {
    return DeviceMockBackend(inner_.split(color, key), resources_, *context_);
  }

 private:
  // What a rank publishes at a collective's rendezvous.
  struct Token {
    const void* staged;
    cudaEvent_t ready;  // recorded after the staging copy
    cudaEvent_t done;   // recorded after this rank's reads of its peers' staging buffers
  };
  cudaStream_t stream() const { return context_->stream(); }

  // Both buffers must be in the same kind of memory; every rank must choose the same kind
  // (a rank passing host memory where its peers pass device memory is a CollectiveMismatch).
  static bool on_device(const void* send, const void* recv, const char* what) {
    return buffers_on_device(send, recv, "DeviceMockBackend", what);
  }

  void copy(const void* src, void* dst, std::size_t bytes, const char* what) {
    if (bytes && src != dst) check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()), what);
  }

  // A group of one: the result is the input, in stream order, with no rendezvous.
  void copy_alone(const void* send, void* recv, std::size_t bytes) { copy(send, recv, bytes, "copy"); }

  // Stages `bytes` of `send`, meets the peers, makes this rank's stream wait for their staging
  // copies, runs use(peer staging buffers) on it and records that this rank is done reading.
  // arrived(every rank's rendezvous entry) runs once all have arrived, before use.
  template <class Use>
  void exchange(CallSignature call, const void* send, std::size_t bytes, Use&& use) {
    exchange(std::move(call), send, bytes, std::forward<Use>(use), [](const std::vector<mock_detail::Entry>&) {});
  }
  template <class Use, class Arrived>
  void exchange(CallSignature call, const void* send, std::size_t bytes, Use&& use, Arrived&& arrived) {
    TPKIT_REQUIRE(size() <= kMaxReduceInputs, "DeviceMockBackend: a group of ", size(), " ranks is more than ",
                  kMaxReduceInputs);
    DeviceSide& d = *device_;
    const int parity = int(d.collectives % 2);
    if (!d.ready[parity]) {
      check_cuda(cudaEventCreateWithFlags(&d.ready[parity], cudaEventDisableTiming), "cudaEventCreate");
      check_cuda(cudaEventCreateWithFlags(&d.done[parity], cudaEventDisableTiming), "cudaEventCreate");
    }
    // The peers read this staging buffer two collectives ago: wait until they are done.
    for (cudaEvent_t e : d.peers_done[parity])
      check_cuda(cudaStreamWaitEvent(stream(), e, 0), "waiting for the peers' reads");
    if (d.staged[parity].size() < bytes) {
      context_->synchronize("growing the staging buffer");
      d.staged[parity].reserve_at_least(bytes);
    }
    copy(send, d.staged[parity].data(), bytes, "staging on the device");
    check_cuda(cudaEventRecord(d.ready[parity], stream()), "cudaEventRecord");

    const Token mine{d.staged[parity].data(), d.ready[parity], d.done[parity]};
    ReduceInputs peers{};
    peers.count = size();
    d.peers_done[parity].clear();
    inner_.rendezvous(std::move(call), &mine, sizeof mine, [&](const std::vector<mock_detail::Entry>& all) {
      arrived(all);
      for (int r = 0; r < size(); ++r) {
        Token t;
        std::memcpy(&t, all[std::size_t(r)].staged.data(), sizeof t);
        peers.data[r] = t.staged;
        if (r == rank()) continue;
        check_cuda(cudaStreamWaitEvent(stream(), t.ready, 0), "waiting for a peer's staging copy");
        d.peers_done[parity].push_back(t.done);
      }
    });
    ++d.collectives;
    use(peers);
    check_cuda(cudaEventRecord(d.done[parity], stream()), "cudaEventRecord");
  }

  // send/recv through the host: the rank's data as of now in its stream order.
  void stage_in(const void* src, std::size_t bytes) {
    host_.resize(bytes);
    CudaContext& c = *context_;
    if (bytes) check_cuda(cudaMemcpyAsync(host_.data(), src, bytes, cudaMemcpyDefault, c.stream()), "staging to host");
    c.synchronize("staging to host");
  }
  // host_ to dst, ordered before the rank's later work; waits so host_ may be reused at once.
  void stage_out(void* dst, std::size_t bytes) {
    CudaContext& c = *context_;
    if (bytes)
      check_cuda(cudaMemcpyAsync(dst, host_.data(), bytes, cudaMemcpyDefault, c.stream()), "staging to device");
    c.synchronize("staging to device");
  }

  MockBackend inner_;
  std::shared_ptr<Resources> resources_;
  DeviceSide* device_;
  CudaContext* context_;
  std::vector<unsigned char> host_;
};
TPKIT_BACKEND_CHECK(DeviceMockBackend);

// run_mock_ranks on one GPU: rank r's thread makes contexts[r]'s device current and gets a
// Communicator<DeviceMockBackend> on contexts[r]'s stream (one stream per rank).
template <class F>
void run_device_mock_ranks(std::vector<std::unique_ptr<CudaContext>>& contexts, F&& fn, MockOptions options = {}) {
  auto resources = std::make_shared<DeviceMockBackend::Resources>();
  run_mock_ranks(
      int(contexts.size()),
      [&](Communicator<MockBackend>& host) {
        CudaContext& context = *contexts[std::size_t(host.rank())];
        DeviceScope device(context.device());
        Communicator<DeviceMockBackend> comm(DeviceMockBackend(std::move(host.backend()), resources, context));
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

}  // namespace tpkit::gpu
