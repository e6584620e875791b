// tpkit/comm/communicator.hpp: the typed collective interface every layer talks to.
#pragma once

#include <cstddef>
#include <vector>

#include "tpkit/comm/backend.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"

namespace tpkit {

// One rank's handle on a group of ranks. Buffers are pointers into the memory the backend works
// on (host memory for the mock and MPI backends, device memory for NCCL). Arguments that can be
// checked locally (ranks in range, count vectors of the right length) throw InvalidArgument
// before anything is sent; disagreements between ranks are the backend's to detect.
template <class Backend>
class Communicator {
  TPKIT_BACKEND_CHECK(Backend);

 public:
  using backend_type = Backend;

  explicit Communicator(Backend backend) : backend_(std::move(backend)) {}

  int rank() const { return backend_.rank(); }
  int size() const { return backend_.size(); }
  Backend& backend() { return backend_; }

  template <class T>
  void all_reduce(const T* send, T* recv, std::size_t count, ReduceOp op = ReduceOp::sum) {
    backend_.all_reduce(send, recv, count, dtype_of_v<T>, op);
  }
  template <class T>
  void all_reduce(T* data, std::size_t count, ReduceOp op = ReduceOp::sum) {
    all_reduce(data, data, count, op);
  }

  // Every rank contributes `count` elements; recv receives size() * count, in rank order.
  template <class T>
  void all_gather(const T* send, std::size_t count, T* recv) {
    equal_counts(count);
    backend_.all_gather(send, recv, counts_.data(), dtype_of_v<T>);
  }
  // Rank r contributes counts[r] elements (unequal shards); recv receives sum(counts).
  template <class T>
  void all_gather(const T* send, T* recv, const std::vector<std::size_t>& counts) {
    check_counts(counts, "all_gather");
    backend_.all_gather(send, recv, counts.data(), dtype_of_v<T>);
  }

  // send holds size() * recv_count elements; this rank receives the reduction of its segment.
  template <class T>
  void reduce_scatter(const T* send, T* recv, std::size_t recv_count, ReduceOp op = ReduceOp::sum) {
    equal_counts(recv_count);
    backend_.reduce_scatter(send, recv, counts_.data(), dtype_of_v<T>, op);
  }
  template <class T>
  void reduce_scatter(const T* send, T* recv, const std::vector<std::size_t>& counts, ReduceOp op = ReduceOp::sum) {
    check_counts(counts, "reduce_scatter");
    backend_.reduce_scatter(send, recv, counts.data(), dtype_of_v<T>, op);
  }

  template <class T>
  void broadcast(T* data, std::size_t count, int root) {
    check_rank(root, "broadcast root");
    backend_.broadcast(data, count, dtype_of_v<T>, root);
  }

  template <class T>
  void send(const T* data, std::size_t count, int peer, int tag = 0) {
    check_peer(peer, "send peer");
    backend_.send(data, count, dtype_of_v<T>, peer, tag);
  }
  template <class T>
  void recv(T* data, std::size_t count, int peer, int tag = 0) {
    check_peer(peer, "recv peer");
    backend_.recv(data, count, dtype_of_v<T>, peer, tag);
  }

  void barrier() { backend_.barrier(); }

  // Collective: ranks passing the same color form a new group, ranked by (key, current rank).
  // A world of tp * pp ranks becomes TP groups with split(rank / tp, rank) and PP groups with
  // split(rank % tp, rank).
  Communicator split(int color, int key) {
    TPKIT_REQUIRE(color >= 0, "split color must be non-negative (got ", color, ")");
    return Communicator(backend_.split(color, key));
  }

 private:
  void check_rank(int r, const char* what) const {
    TPKIT_REQUIRE(r >= 0 && r < size(), what, " ", r, " is out of range for a group of ", size(), " ranks");
  }
  void check_peer(int peer, const char* what) const {
    check_rank(peer, what);
    TPKIT_REQUIRE(peer != rank(), what, " ", peer, " is this rank itself");
  }
  void check_counts(const std::vector<std::size_t>& counts, const char* op) const {
    TPKIT_REQUIRE(counts.size() == std::size_t(size()), op, ": counts has ", counts.size(),
                  " entries but the group has ", size(), " ranks");
  }
  void equal_counts(std::size_t count) { counts_.assign(std::size_t(size()), count); }

  Backend backend_;
  std::vector<std::size_t> counts_;  // reused so equal-count collectives do not allocate per call
};

}  // namespace tpkit
