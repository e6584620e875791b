// tpkit/comm/call_signature.hpp: what one rank passed to one collective, as the backends compare
// it across ranks: the operation, dtype, reduction, count, root, every rank's count (all_gather
// and reduce_scatter with unequal shards; all_to_all's send and receive counts), and whether the
// buffers are in device memory. The mock backend compares signatures at its rendezvous; the MPI
// backend exchanges them as 64-bit words before each collective (verify_calls). Two ranks whose
// per-rank counts differ are a mismatch even when the totals agree. all_to_all is the exception:
// its counts differ between ranks by design, and what must agree is the transpose (what rank a
// sends to rank b is what b expects from a), checked by all_to_all_disagreements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tpkit/core/dtype.hpp"
#include "tpkit/core/reduce_op.hpp"

namespace tpkit {

enum class CollectiveKind : unsigned char {
  all_reduce,
  all_gather,
  reduce_scatter,
  broadcast,
  barrier,
  split,
  all_to_all
};

inline const char* collective_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::all_reduce:
      return "all_reduce";
    case CollectiveKind::all_gather:
      return "all_gather";
    case CollectiveKind::reduce_scatter:
      return "reduce_scatter";
    case CollectiveKind::broadcast:
      return "broadcast";
    case CollectiveKind::barrier:
      return "barrier";
    case CollectiveKind::split:
      return "split";
    case CollectiveKind::all_to_all:
      return "all_to_all";
  }
  return "?";
}

struct CallSignature {
  CollectiveKind kind = CollectiveKind::barrier;
  DType dtype = DType::f32;
  ReduceOp op = ReduceOp::sum;
  std::size_t count = 0;  // all_reduce, broadcast
  int root = 0;           // broadcast
  bool device_memory = false;
  std::vector<std::size_t> counts;       // all_gather, reduce_scatter; all_to_all: sent to each rank
  std::vector<std::size_t> recv_counts;  // all_to_all: received from each rank

  static CallSignature all_reduce(std::size_t count, DType t, ReduceOp op) {
    CallSignature s;
    s.kind = CollectiveKind::all_reduce, s.count = count, s.dtype = t, s.op = op;
    return s;
  }
  static CallSignature all_gather(const std::size_t* counts, int ranks, DType t) {
    CallSignature s;
    s.kind = CollectiveKind::all_gather, s.dtype = t;
    s.counts.assign(counts, counts + ranks);
    return s;
  }
  static CallSignature reduce_scatter(const std::size_t* counts, int ranks, DType t, ReduceOp op) {
    CallSignature s = all_gather(counts, ranks, t);
    s.kind = CollectiveKind::reduce_scatter, s.op = op;
    return s;
  }
  static CallSignature broadcast(std::size_t count, DType t, int root) {
    CallSignature s;
    s.kind = CollectiveKind::broadcast, s.count = count, s.dtype = t, s.root = root;
    return s;
  }
  static CallSignature all_to_all(const std::size_t* send_counts, const std::size_t* recv_counts, int ranks, DType t) {
    CallSignature s;
    s.kind = CollectiveKind::all_to_all, s.dtype = t;
    s.counts.assign(send_counts, send_counts + ranks);
    s.recv_counts.assign(recv_counts, recv_counts + ranks);
    return s;
  }
  static CallSignature barrier() { return {}; }
  static CallSignature split() {
    CallSignature s;
    s.kind = CollectiveKind::split;
    return s;
  }

  bool same_call(const CallSignature& o) const {
    if (kind != o.kind || device_memory != o.device_memory) return false;
    switch (kind) {
      case CollectiveKind::all_reduce:
        return dtype == o.dtype && count == o.count && op == o.op;
      case CollectiveKind::all_gather:
        return dtype == o.dtype && counts == o.counts;
      case CollectiveKind::reduce_scatter:
        return dtype == o.dtype && counts == o.counts && op == o.op;
      case CollectiveKind::broadcast:
        return dtype == o.dtype && count == o.count && root == o.root;
      case CollectiveKind::all_to_all:  // the counts differ by design: see all_to_all_disagreements
        return dtype == o.dtype && counts.size() == o.counts.size() && recv_counts.size() == o.recv_counts.size();
      case CollectiveKind::barrier:
      case CollectiveKind::split:
        return true;
    }
    return false;
  }

  // Every argument, as in "all_gather(counts=[2,3], dtype=bf16, device memory)".
  std::string describe() const {
    std::string s = std::string(collective_name(kind)) + "(";
    switch (kind) {
      case CollectiveKind::all_reduce:
        s += "count=" + std::to_string(count) + ", dtype=" + dtype_name(dtype) + ", op=" + reduce_op_name(op);
        break;
      case CollectiveKind::all_gather:
      case CollectiveKind::reduce_scatter:
        s += "counts=" + list(counts, ",") + ", dtype=" + dtype_name(dtype);
        if (kind == CollectiveKind::reduce_scatter) s += std::string(", op=") + reduce_op_name(op);
        break;
      case CollectiveKind::broadcast:
        s += "count=" + std::to_string(count) + ", dtype=" + dtype_name(dtype) + ", root=" + std::to_string(root);
        break;
      case CollectiveKind::all_to_all:
        s += "send_counts=" + list(counts, ",") + ", recv_counts=" + list(recv_counts, ",") +
             ", dtype=" + dtype_name(dtype);
        break;
      case CollectiveKind::barrier:
      case CollectiveKind::split:
        break;
    }
    return s + (device_memory ? ", device memory)" : ")");
  }

  // The short form of a mismatch report, as in "all_reduce(count 4, f32)" or
  // "all_gather(counts [2, 3], f32)".
  std::string brief() const {
    std::string s = collective_name(kind);
    switch (kind) {
      case CollectiveKind::all_reduce:
        return s + "(count " + std::to_string(count) + ", " + dtype_name(dtype) + ")";
      case CollectiveKind::all_gather:
      case CollectiveKind::reduce_scatter:
        return s + "(counts " + list(counts, ", ") + ", " + dtype_name(dtype) + ")";
      case CollectiveKind::broadcast:
        return s + "(count " + std::to_string(count) + ", " + dtype_name(dtype) + ", root " + std::to_string(root) +
               ")";
      case CollectiveKind::all_to_all:
        return s + "(send counts " + list(counts, ", ") + ", recv counts " + list(recv_counts, ", ") + ", " +
               dtype_name(dtype) + ")";
      case CollectiveKind::barrier:
      case CollectiveKind::split:
        break;
    }
    return s;
  }

  // As 64-bit words, for backends that exchange signatures: the same number of words on every
  // rank of a group of `ranks` (the counts slots are zero for operations without them).
  static std::size_t words(int ranks) { return kFixedWords + 2 * std::size_t(ranks); }
  void encode(std::int64_t* out, int ranks) const {
    out[0] = std::int64_t(kind), out[1] = std::int64_t(dtype), out[2] = std::int64_t(op);
    out[3] = std::int64_t(count), out[4] = root, out[5] = device_memory ? 1 : 0;
    for (int r = 0; r < ranks; ++r) {
      out[kFixedWords + r] = r < int(counts.size()) ? std::int64_t(counts[r]) : 0;
      out[kFixedWords + ranks + r] = r < int(recv_counts.size()) ? std::int64_t(recv_counts[r]) : 0;
    }
  }
  // What encode wrote. Words that are not a valid signature (a peer built differently) decode
  // to an unknown operation that matches nothing.
  static CallSignature decode(const std::int64_t* in, int ranks) {
    CallSignature s;
    const bool valid = in[0] >= 0 && in[0] <= std::int64_t(CollectiveKind::all_to_all) && in[1] >= 0 &&
                       in[1] <= std::int64_t(DType::u8) && (in[2] == 0 || in[2] == 1);
    s.kind = valid ? CollectiveKind(in[0]) : CollectiveKind::split;
    s.dtype = valid ? DType(in[1]) : DType::u8;
    s.op = ReduceOp(valid ? in[2] : 0);
    s.count = std::size_t(in[3]), s.root = int(in[4]), s.device_memory = in[5] != 0 || !valid;
    if (s.kind == CollectiveKind::all_gather || s.kind == CollectiveKind::reduce_scatter ||
        s.kind == CollectiveKind::all_to_all)
      for (int r = 0; r < ranks; ++r) s.counts.push_back(std::size_t(in[kFixedWords + r]));
    if (s.kind == CollectiveKind::all_to_all)
      for (int r = 0; r < ranks; ++r) s.recv_counts.push_back(std::size_t(in[kFixedWords + ranks + r]));
    return s;
  }

  // all_to_all across a group of `ranks`, given each rank's call (call_of(r), all of them
  // all_to_all calls that are same_call): every pair whose counts disagree, as "rank 0 sends 3
  // x f32 to rank 1, which expects 2 from it", with label(r) naming rank r; empty when rank a's
  // send count to b is b's receive count from a for every a and b. One check for every backend
  // that sees every rank's signature (the mock at its rendezvous, MPI after verify_calls).
  template <class CallOf, class Label>
  static std::string all_to_all_disagreements(int ranks, CallOf&& call_of, Label&& label) {
    std::string out;
    for (int a = 0; a < ranks; ++a) {
      const CallSignature& from = call_of(a);
      for (int b = 0; b < ranks; ++b) {
        const std::size_t sends = from.counts[std::size_t(b)];
        const std::size_t expects = call_of(b).recv_counts[std::size_t(a)];
        if (sends == expects) continue;
        out += (out.empty() ? "" : "; ") + label(a) + " sends " + std::to_string(sends) + " x " +
               dtype_name(from.dtype) + " to " + label(b) + ", which expects " + std::to_string(expects) + " from it";
      }
    }
    return out;
  }

 private:
  static constexpr std::size_t kFixedWords = 6;
  static std::string list(const std::vector<std::size_t>& v, const char* separator) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? separator : "") + std::to_string(v[i]);
    return s + "]";
  }
};

}  // namespace tpkit
