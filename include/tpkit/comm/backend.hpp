// tpkit/comm/backend.hpp: what a communication backend must provide.
//
// Communicator<Backend> adds types, argument checks and convenience on top of a backend that
// moves untyped bytes. A backend is one rank's endpoint in one group of ranks. Requirements
// (checked by the `communicator_backend` concept under C++20, by static_asserts otherwise):
//
//   int rank() const, int size() const      this endpoint's rank and the group size
//   all_reduce(send, recv, count, dtype, op)  recv[i] = op over ranks of send[i]; send may == recv
//   all_gather(send, recv, counts, dtype)     rank r contributes counts[r] elements; recv holds
//                                             them packed in rank order (counts has size() entries)
//   reduce_scatter(send, recv, counts, dtype, op)
//                                             send holds sum(counts) elements; rank r receives
//                                             the reduction of segment r (counts[r] elements)
//   all_to_all(send, send_counts, recv, recv_counts, dtype)
//                                             send_counts[r] elements go to rank r, packed in rank
//                                             order in send; recv_counts[r] elements arrive from
//                                             rank r, packed in rank order in recv (both count
//                                             arrays have size() entries). Zero counts are allowed,
//                                             and send/recv may be null when theirs are all zero;
//                                             send and recv never overlap. Rank a's send_counts[b]
//                                             must equal rank b's recv_counts[a]
//   broadcast(data, count, dtype, root)       root's data is copied to every rank
//   send(data, count, dtype, peer, tag), recv(data, count, dtype, peer, tag)
//   barrier()
//   split(color, key) -> Backend              a new group of the ranks that passed the same
//                                             color, ranked by (key, old rank); collective
//
// Optional: `static constexpr bool kStreamOrdered = true` says that operations on device
// buffers only enqueue work on a CUDA stream, in call order, and return without waiting
// (NcclBackend). Two things follow: a CUDA graph may capture its collectives (without it a
// group larger than one is never captured), and a send need not complete before its receive
// is posted, so ranks must enqueue their operations in one order (EngineRank's tokens).
//
// Every operation is collective over the group (except send/recv) and must be entered by all
// ranks in the same order with matching arguments. A backend must not hang on misuse: it
// reports it as a tpkit::CommError subclass naming the operation and the ranks involved.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "tpkit/config.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/reduce_op.hpp"

#if TPKIT_HAS_CONCEPTS
#include <concepts>
#endif

namespace tpkit {

#if TPKIT_HAS_CONCEPTS
template <class B>
concept communicator_backend = std::move_constructible<B> &&
    requires(B& b, const B& cb, const void* src, void* dst, std::size_t n, const std::size_t* counts, DType t,
             ReduceOp op, int peer, int tag) {
  { cb.rank() } -> std::convertible_to<int>;
  { cb.size() } -> std::convertible_to<int>;
  b.all_reduce(src, dst, n, t, op);
  b.all_gather(src, dst, counts, t);
  b.reduce_scatter(src, dst, counts, t, op);
  b.all_to_all(src, counts, dst, counts, t);
  b.broadcast(dst, n, t, peer);
  b.send(src, n, t, peer, tag);
  b.recv(dst, n, t, peer, tag);
  b.barrier();
  { b.split(peer, tag) } -> std::same_as<B>;
};
#define TPKIT_BACKEND_CHECK(B) \
  static_assert(::tpkit::communicator_backend<B>, "B does not satisfy communicator_backend")
#else
#define TPKIT_BACKEND_CHECK(B) \
  static_assert(std::is_move_constructible_v<B>, "a communicator backend must be move constructible")
#endif

// Whether Backend is stream-ordered (see above).
template <class B, class = void>
struct stream_ordered : std::false_type {};
template <class B>
struct stream_ordered<B, std::void_t<decltype(B::kStreamOrdered)>> : std::bool_constant<B::kStreamOrdered> {};

}  // namespace tpkit
