// tpkit/comm/communicator.hpp: the typed collective interface every layer talks to.
#pragma once

#include <cstddef>
#include <cstdint>
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

  // send holds size() * count elements: segment r (count elements) goes to rank r. recv receives
  // size() * count elements: segment r came from rank r. send and recv must not overlap.
  template <class T>
  void all_to_all(const T* send, T* recv, std::size_t count) {
    TPKIT_REQUIRE(count <= SIZE_MAX / sizeof(T) / std::size_t(size()), "all_to_all: ", count, " elements per rank x ",
                  size(), " ranks overflow");
    equal_counts(count);
    check_disjoint(send, recv, count * std::size_t(size()), count * std::size_t(size()), "all_to_all");
    backend_.all_to_all(send, counts_.data(), recv, counts_.data(), dtype_of_v<T>);
  }
  // send_counts[r] elements go to rank r, packed in rank order in send; recv_counts[r] elements
  // arrive from rank r, packed in rank order in recv. Rank a's send_counts[b] must equal rank b's
  // recv_counts[a]; a disagreement is a CommError naming both ranks (never a hang or truncation;
  // under NCCL, which cannot compare calls, a timeout in synchronize()). Zero counts are allowed,
  // and send (recv) may be null when all send (recv) counts are zero. send and recv must not
  // overlap. What this rank sends itself (send_counts[rank()] == recv_counts[rank()]) is checked
  // here, before anything moves.
  template <class T>
  void all_to_all_v(const T* send, const std::vector<std::size_t>& send_counts, T* recv,
                    const std::vector<std::size_t>& recv_counts) {
    check_counts(send_counts, "all_to_all_v", "send_counts");
    check_counts(recv_counts, "all_to_all_v", "recv_counts");
    const std::size_t self = std::size_t(rank());
    TPKIT_REQUIRE(send_counts[self] == recv_counts[self], "all_to_all_v: rank ", rank(), " sends ", send_counts[self],
                  " elements to itself but expects ", recv_counts[self], " from itself");
    check_disjoint(send, recv, total<T>(send_counts, "send_counts"), total<T>(recv_counts, "recv_counts"),
                   "all_to_all_v");
    backend_.all_to_all(send, send_counts.data(), recv, recv_counts.data(), dtype_of_v<T>);
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
  void check_counts(const std::vector<std::size_t>& counts, const char* op, const char* name = "counts") const {
    TPKIT_REQUIRE(counts.size() == std::size_t(size()), op, ": ", name, " has ", counts.size(),
                  " entries but the group has ", size(), " ranks");
  }
  // The sum of counts, in elements of T, checked against overflow of its size in bytes.
  template <class T>
  static std::size_t total(const std::vector<std::size_t>& counts, const char* name) {
    std::size_t n = 0;
    for (std::size_t c : counts) {
      TPKIT_REQUIRE(c <= SIZE_MAX / sizeof(T) - n, "all_to_all_v: the sum of ", name, " overflows");
      n += c;
    }
    return n;
  }
  // send (n elements) and recv (m elements) must not overlap; empty ranges never do.
  template <class T>
  static void check_disjoint(const T* send, const T* recv, std::size_t n, std::size_t m, const char* op) {
    if (n == 0 || m == 0) return;
    const auto s = reinterpret_cast<std::uintptr_t>(send), r = reinterpret_cast<std::uintptr_t>(recv);
    TPKIT_REQUIRE(s + n * sizeof(T) <= r || r + m * sizeof(T) <= s, op,
                  ": send and recv overlap (an all-to-all cannot work in place)");
  }
  void equal_counts(std::size_t count) { counts_.assign(std::size_t(size()), count); }

  Backend backend_;
  std::vector<std::size_t> counts_;  // reused so equal-count collectives do not allocate per call
};

}  // namespace tpkit
