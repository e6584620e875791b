// tpkit/comm/nccl.hpp: NcclBackend, a Communicator backend over NCCL for device buffers.
// Not included by tpkit.hpp.
// Needs: CUDA, NCCL (link tpkit::nccl).
//
// Every operation is enqueued on the backend's CUDA stream and returns at once, so a decode
// step can be captured in a CUDA graph. A world of size 1 makes no NCCL call at all (copies
// only). Communicators are created non-blocking and every NCCL call's result is checked. A
// watchdog thread polls each communicator's asynchronous error state and aborts the
// communicator when NCCL reports one (a dead peer, a network failure), so that stream work
// fails instead of hanging; synchronize() waits for the stream against the timeout and
// aborts on expiry, naming the communicator and the last operation enqueued.
//
// Host buffers are accepted too, for small control messages (an engine's sampled tokens, the
// fingerprints ranks compare): they are staged through device memory and the call waits for
// the result (against the timeout) before it returns. Device buffers never wait.
//
// Calls are not compared across ranks (there is no host-side channel): ranks that disagree,
// all_to_all counts included, end in a timeout in synchronize(), not a CollectiveMismatch.
//
// Status: compiled in CI; run only where a GPU is lent (see docs/distributed.md).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tpkit/comm/backend.hpp"
#include "tpkit/comm/bootstrap.hpp"
#include "tpkit/comm/communicator.hpp"
#include "tpkit/comm/device_memory.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"

namespace tpkit {

struct NcclOptions {
  std::chrono::milliseconds timeout{30000};        // communicator creation, synchronize()
  std::chrono::milliseconds watchdog_period{100};  // how often asynchronous errors are polled
};

namespace nccl_detail {

inline void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw CommError("CUDA: " + what + " failed: " + cudaGetErrorString(e));
}

inline ncclDataType_t type_of(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::f16:
      return ncclFloat16;
    case DType::bf16:
      return ncclBfloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::u8:
      return ncclUint8;
  }
  return ncclUint8;
}

// Aborts every registered communicator when one of them reports an asynchronous error.
class Watchdog {
 public:
  explicit Watchdog(std::chrono::milliseconds period) : period_(period), thread_([this] { loop(); }) {}
  ~Watchdog() {
    stop_ = true;
    thread_.join();
  }
  void add(ncclComm_t c) {
    std::lock_guard<std::mutex> lock(mutex_);
    comms_.push_back(c);
  }
  void remove(ncclComm_t c) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& x : comms_)
      if (x == c) x = nullptr;
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

 private:
  void loop() {
    while (!stop_) {
      std::this_thread::sleep_for(period_);
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_.empty()) continue;
      for (ncclComm_t c : comms_) {
        ncclResult_t state = ncclSuccess;
        if (!c || ncclCommGetAsyncError(c, &state) != ncclSuccess) continue;
        if (state == ncclSuccess || state == ncclInProgress) continue;
        error_ = std::string("NCCL reported an asynchronous error (") + ncclGetErrorString(state) +
                 "): a peer failed or the network broke; the communicators were aborted";
        for (ncclComm_t& a : comms_)
          if (a) ncclCommAbort(a), a = nullptr;
        break;
      }
    }
  }

  std::chrono::milliseconds period_;
  std::mutex mutex_;
  std::vector<ncclComm_t> comms_;
  std::string error_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Comm {
  ncclComm_t comm = nullptr;
  std::shared_ptr<Watchdog> watchdog;
  ~Comm() {
    if (!comm) return;
    watchdog->remove(comm);
    if (watchdog->error().empty()) ncclCommDestroy(comm);
  }
};

}  // namespace nccl_detail

class NcclBackend {
 public:
  static constexpr bool kStreamOrdered = true;  // device buffers: enqueued on stream(), no wait

  // A unique id for a new world: created by rank 0 and given to every rank (through MPI, or a
  // Bootstrap's broadcast).
  static ncclUniqueId unique_id() {
    ncclUniqueId id;
    check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    return id;
  }

  // The world of `size` ranks; this process is `rank` and uses the current CUDA device.
  static NcclBackend create(const ncclUniqueId& id, int rank, int size, cudaStream_t stream, NcclOptions options = {}) {
    TPKIT_REQUIRE(size >= 1 && rank >= 0 && rank < size, "NCCL: rank ", rank, " must be in [0, ", size, ")");
    auto watchdog = std::make_shared<nccl_detail::Watchdog>(options.watchdog_period);
    auto comm = std::make_shared<nccl_detail::Comm>();
    comm->watchdog = watchdog;
    if (size > 1) {
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;  // creation polled against the timeout instead of blocking forever
      ncclResult_t rc = ncclCommInitRankConfig(&comm->comm, size, id, rank, &config);
      settle(comm->comm, rc, "ncclCommInitRankConfig (world of " + std::to_string(size) + ")", options.timeout);
      watchdog->add(comm->comm);
    }
    return NcclBackend(std::move(comm), rank, size, stream, options, "world");
  }

  // The world over a bootstrap: rank 0's unique id reaches every rank through it. Collective
  // over the bootstrap's ranks; this process uses the current CUDA device.
  static NcclBackend create(Bootstrap& bootstrap, cudaStream_t stream, NcclOptions options = {}) {
    std::string id_bytes(sizeof(ncclUniqueId), '\0');
    if (bootstrap.rank() == 0) {
      const ncclUniqueId id = unique_id();
      std::memcpy(id_bytes.data(), &id, sizeof id);
    }
    id_bytes = bootstrap.broadcast(id_bytes);
    TPKIT_REQUIRE(id_bytes.size() == sizeof(ncclUniqueId), "NCCL: the bootstrap delivered ", id_bytes.size(),
                  " bytes for a unique id of ", sizeof(ncclUniqueId));
    ncclUniqueId id;
    std::memcpy(&id, id_bytes.data(), sizeof id);
    return create(id, bootstrap.rank(), bootstrap.size(), stream, options);
  }

  // The world from torchrun-style variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
  // LOCAL_RANK) or Slurm's, over a TcpRendezvous; each process takes the GPU LOCAL_RANK.
  static NcclBackend create_from_env(cudaStream_t stream, NcclOptions options = {}) {
    const BootstrapInfo info = bootstrap_from_env();
    nccl_detail::check_cuda(cudaSetDevice(info.local_rank), "cudaSetDevice(LOCAL_RANK)");
    TcpRendezvous rendezvous(info, options.timeout);
    return create(rendezvous, stream, options);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  cudaStream_t stream() const { return stream_; }

  void all_reduce(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) {
    if (size_ == 1 && send == recv) return;  // no runtime query either (inside a graph capture)
    const std::size_t bytes = count * dtype_size(t);
    if (in_host_memory(send, recv, "all_reduce"))
      return staged(send, bytes, recv, bytes, [&](const void* s, void* r) { all_reduce(s, r, count, t, op); });
    last_ = "all_reduce";
    if (size_ == 1) return copy(send, recv, count * dtype_size(t));
    call(ncclAllReduce(send, recv, count, nccl_detail::type_of(t), op_of(op), comm_->comm, stream_), "ncclAllReduce");
  }

  void all_gather(const void* send, void* recv, const std::size_t* counts, DType t) {
    const std::size_t element = dtype_size(t);
    if (in_host_memory(send, recv, "all_gather"))
      return staged(send, counts[rank_] * element, recv, total(counts) * element,
                    [&](const void* s, void* r) { all_gather(s, r, counts, t); });
    last_ = "all_gather";
    if (size_ == 1) return copy(send, recv, counts[0] * element);
    if (equal(counts)) {
      call(ncclAllGather(send, recv, counts[0], nccl_detail::type_of(t), comm_->comm, stream_), "ncclAllGather");
      return;
    }
    // Unequal shards: NCCL has no all-gather-v; grouped point-to-point does it in one launch.
    call(ncclGroupStart(), "ncclGroupStart");
    std::size_t offset = 0;
    for (int r = 0; r < size_; ++r) {
      auto* dst = static_cast<unsigned char*>(recv) + offset * element;
      if (r == rank_) {
        copy(send, dst, counts[r] * element);
      } else {
        call(ncclSend(send, counts[rank_], nccl_detail::type_of(t), r, comm_->comm, stream_), "ncclSend");
        call(ncclRecv(dst, counts[r], nccl_detail::type_of(t), r, comm_->comm, stream_), "ncclRecv");
      }
      offset += counts[r];
    }
    call(ncclGroupEnd(), "ncclGroupEnd");
  }

  void reduce_scatter(const void* send, void* recv, const std::size_t* counts, DType t, ReduceOp op) {
    const std::size_t element = dtype_size(t);
    if (in_host_memory(send, recv, "reduce_scatter"))
      return staged(send, total(counts) * element, recv, counts[rank_] * element,
                    [&](const void* s, void* r) { reduce_scatter(s, r, counts, t, op); });
    last_ = "reduce_scatter";
    if (size_ == 1) return copy(send, recv, counts[0] * element);
    if (equal(counts)) {
      call(ncclReduceScatter(send, recv, counts[0], nccl_detail::type_of(t), op_of(op), comm_->comm, stream_),
           "ncclReduceScatter");
      return;
    }
    call(ncclGroupStart(), "ncclGroupStart");
    std::size_t offset = 0;
    for (int r = 0; r < size_; ++r) {
      const auto* src = static_cast<const unsigned char*>(send) + offset * element;
      call(ncclReduce(src, r == rank_ ? recv : const_cast<unsigned char*>(src), counts[r], nccl_detail::type_of(t),
                      op_of(op), r, comm_->comm, stream_),
           "ncclReduce");
      offset += counts[r];
    }
    call(ncclGroupEnd(), "ncclGroupEnd");
  }

  // Grouped point-to-point: one send and one receive per peer with a non-zero count, and this
  // rank's own segment copied on the stream. Buffers that are both null (a rank that moves
  // nothing) count as device memory, so such a rank neither stages nor waits.
  void all_to_all(const void* send, const std::size_t* send_counts, void* recv, const std::size_t* recv_counts,
                  DType t) {
    const std::size_t element = dtype_size(t);
    if ((send || recv) && in_host_memory(send, recv, "all_to_all"))
      return staged(send, total(send_counts) * element, recv, total(recv_counts) * element,
                    [&](const void* s, void* r) { all_to_all(s, send_counts, r, recv_counts, t); });
    last_ = "all_to_all";
    if (size_ == 1) return copy(send, recv, send_counts[0] * element);
    call(ncclGroupStart(), "ncclGroupStart");
    std::size_t sent = 0, received = 0;
    for (int r = 0; r < size_; ++r) {
      const auto* src = static_cast<const unsigned char*>(send) + sent * element;
      auto* dst = static_cast<unsigned char*>(recv) + received * element;
      if (r == rank_) {
        copy(src, dst, send_counts[r] * element);  // send_counts[rank] == recv_counts[rank]: the Communicator checks
      } else {
        if (send_counts[r])
          call(ncclSend(src, send_counts[r], nccl_detail::type_of(t), r, comm_->comm, stream_), "ncclSend");
        if (recv_counts[r])
          call(ncclRecv(dst, recv_counts[r], nccl_detail::type_of(t), r, comm_->comm, stream_), "ncclRecv");
      }
      sent += send_counts[r];
      received += recv_counts[r];
    }
    call(ncclGroupEnd(), "ncclGroupEnd");
  }

  void broadcast(void* data, std::size_t count, DType t, int root) {
    if (size_ == 1) return;
    const std::size_t bytes = count * dtype_size(t);
    if (in_host_memory(data, data, "broadcast"))
      return staged(data, bytes, data, bytes, [&](const void*, void* d) { broadcast(d, count, t, root); });
    last_ = "broadcast";
    call(ncclBroadcast(data, data, count, nccl_detail::type_of(t), root, comm_->comm, stream_), "ncclBroadcast");
  }

  void send(const void* data, std::size_t count, DType t, int peer, int tag) {
    const std::size_t bytes = count * dtype_size(t);
    if (in_host_memory(data, data, "send"))
      return staged(data, bytes, nullptr, 0, [&](const void* s, void*) { send(s, count, t, peer, tag); });
    last_ = "send to rank " + std::to_string(peer);
    call(ncclSend(data, count, nccl_detail::type_of(t), peer, comm_->comm, stream_), "ncclSend");
  }
  void recv(void* data, std::size_t count, DType t, int peer, int tag) {
    const std::size_t bytes = count * dtype_size(t);
    if (in_host_memory(data, data, "recv"))
      return staged(nullptr, 0, data, bytes, [&](const void*, void* r) { recv(r, count, t, peer, tag); });
    last_ = "recv from rank " + std::to_string(peer);
    call(ncclRecv(data, count, nccl_detail::type_of(t), peer, comm_->comm, stream_), "ncclRecv");
  }

  // A host barrier: a one-element all-reduce, then synchronize().
  void barrier() {
    if (size_ > 1) {
      if (!scratch_) {
        void* p = nullptr;
        nccl_detail::check_cuda(cudaMalloc(&p, sizeof(float)), "cudaMalloc");
        scratch_ = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
      }
      all_reduce(scratch_.get(), scratch_.get(), 1, DType::f32, ReduceOp::sum);
    }
    last_ = "barrier";
    synchronize();
  }

  // Collective: ranks that pass the same color form a group, ordered by (key, rank).
  NcclBackend split(int color, int key) {
    const std::string name = name_ + "/" + std::to_string(color);
    auto comm = std::make_shared<nccl_detail::Comm>();
    comm->watchdog = comm_->watchdog;
    if (size_ == 1) return NcclBackend(std::move(comm), 0, 1, stream_, options_, name);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    settle(comm->comm, ncclCommSplit(comm_->comm, color, key, &comm->comm, &config), "ncclCommSplit", options_.timeout);
    int rank = 0, size = 1;
    check(ncclCommUserRank(comm->comm, &rank), "ncclCommUserRank");
    check(ncclCommCount(comm->comm, &size), "ncclCommCount");
    comm->watchdog->add(comm->comm);
    return NcclBackend(std::move(comm), rank, size, stream_, options_, name);
  }

  // Waits for this backend's stream; on timeout aborts the communicator and throws.
  void synchronize() {
    const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    while (true) {
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) nccl_detail::check_cuda(e, "cudaStreamQuery after " + last_);
      const std::string async = comm_->watchdog->error();
      if (!async.empty()) throw RankAborted("NCCL communicator '" + name_ + "': " + async);
      if (std::chrono::steady_clock::now() >= deadline) {
        if (comm_->comm) ncclCommAbort(comm_->comm), comm_->watchdog->remove(comm_->comm), comm_->comm = nullptr;
        throw CollectiveTimeout("NCCL communicator '" + name_ + "', rank " + std::to_string(rank_) + ": " + last_ +
                                " did not complete within " + std::to_string(options_.timeout.count()) +
                                " ms (a peer stalled, exited or never entered it); the communicator was aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  NcclBackend(std::shared_ptr<nccl_detail::Comm> comm, int rank, int size, cudaStream_t stream, NcclOptions options,
              std::string name)
      : comm_(std::move(comm)), rank_(rank), size_(size), stream_(stream), options_(options), name_(std::move(name)) {}

  static void check(ncclResult_t rc, const std::string& what) {
    if (rc != ncclSuccess && rc != ncclInProgress)
      throw CommError("NCCL: " + what + " failed: " + ncclGetErrorString(rc) + " (" + ncclGetLastError(nullptr) + ")");
  }
  // Non-blocking communicators answer ncclInProgress until the call has settled.
  static void settle(ncclComm_t comm, ncclResult_t rc, const std::string& what, std::chrono::milliseconds timeout) {
    check(rc, what);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    ncclResult_t state = rc;
    while (state == ncclInProgress) {
      if (std::chrono::steady_clock::now() >= deadline) {
        ncclCommAbort(comm);
        throw CollectiveTimeout("NCCL: " + what + " did not complete within " + std::to_string(timeout.count()) +
                                " ms (a rank is missing or unreachable)");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      check(ncclCommGetAsyncError(comm, &state), what);
    }
    check(state, what);
  }
  void call(ncclResult_t rc, const char* what) {
    const std::string async = comm_->watchdog->error();
    if (!async.empty()) throw RankAborted("NCCL communicator '" + name_ + "': " + async);
    settle(comm_->comm, rc, what, options_.timeout);
  }
  static ncclRedOp_t op_of(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }
  bool equal(const std::size_t* counts) const {
    for (int r = 1; r < size_; ++r)
      if (counts[r] != counts[0]) return false;
    return true;
  }
  std::size_t total(const std::size_t* counts) const {
    std::size_t n = 0;
    for (int r = 0; r < size_; ++r) n += counts[r];
    return n;
  }

  // Both buffers must be in the same kind of memory (null: the one that is not used).
  static bool in_host_memory(const void* send, const void* recv, const char* what) {
    return !buffers_on_device(send, recv, "NcclBackend", what);
  }

  // Runs op(device send, device recv) on copies of host buffers and waits for the result.
  template <class Op>
  void staged(const void* send, std::size_t send_bytes, void* recv, std::size_t recv_bytes, Op&& op) {
    const bool in_place = send == recv;
    const std::size_t recv_offset = in_place ? 0 : (send_bytes + 255) / 256 * 256;
    const std::size_t bytes = recv_offset + recv_bytes + 1;
    if (staging_bytes_ < bytes) {
      synchronize();  // work still reading the old buffer
      void* p = nullptr;
      nccl_detail::check_cuda(cudaMalloc(&p, bytes), "cudaMalloc (staging)");
      staging_ = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
      staging_bytes_ = bytes;
    }
    auto* base = static_cast<unsigned char*>(staging_.get());
    if (send_bytes)
      nccl_detail::check_cuda(cudaMemcpyAsync(base, send, send_bytes, cudaMemcpyHostToDevice, stream_),
                              "staging a host buffer");
    op(base, base + recv_offset);
    if (recv_bytes)
      nccl_detail::check_cuda(cudaMemcpyAsync(recv, base + recv_offset, recv_bytes, cudaMemcpyDeviceToHost, stream_),
                              "returning a staged buffer");
    synchronize();
  }

  void copy(const void* src, void* dst, std::size_t bytes) {
    if (src != dst && bytes)
      nccl_detail::check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync");
  }

  std::shared_ptr<nccl_detail::Comm> comm_;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
  NcclOptions options_;
  std::string name_;
  std::string last_ = "nothing";
  std::shared_ptr<void> scratch_;
  std::shared_ptr<void> staging_;  // host buffers' device copies
  std::size_t staging_bytes_ = 0;
};

}  // namespace tpkit
