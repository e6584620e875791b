// tpkit/comm/mock.hpp: the in-process backend. N ranks are N threads of one process.
//
// Used by tests, by the example engine's CPU path and for fault injection. Guarantees:
//   * Reductions combine ranks in rank order 0, 1, ..., n-1 (16-bit types accumulate in float
//     and round once), so results are bitwise identical on every rank and in every run.
//   * Misuse never hangs. Ranks that enter the same collective slot with different operations,
//     sizes, dtypes or roots, or all_to_all calls whose counts disagree (rank a's send count to
//     b is not b's receive count from a), raise CollectiveMismatch on every rank; a rank that
//     does not arrive within MockOptions::timeout raises CollectiveTimeout on the waiting ranks,
//     naming the missing rank(s); when any rank's function throws, the others' pending
//     operations raise RankAborted at once. run_mock_ranks() rethrows the first failure.
//   * Fault injection: Fault::fail_at / Fault::stall_at make a rank throw or sleep at its n-th
//     communicator operation (counted over all of its groups, from 0).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "tpkit/comm/backend.hpp"
#include "tpkit/comm/call_signature.hpp"
#include "tpkit/comm/communicator.hpp"
#include "tpkit/comm/fault.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"

namespace tpkit {

struct MockOptions {
  // How long a rank waits for its peers in one operation before it reports them missing.
  std::chrono::milliseconds timeout{30000};
  std::vector<Fault> faults;
};

namespace mock_detail {

// One rank's call of one collective, with its send data copied in so the rank may return as
// soon as every peer has arrived (one synchronisation per collective). A backend layered on the
// mock that moves device data itself stages a token instead (MockBackend::rendezvous), and
// marks the call `device_memory` so a rank passing host memory to the same call is a mismatch.
struct Entry {
  CallSignature call;
  int color = 0, key = 0;  // split
  std::vector<unsigned char> staged;
};

struct Message {
  DType dtype;
  std::size_t count;
  std::vector<unsigned char> bytes;
};

struct World;

struct Group {
  struct Slot {
    std::uint64_t seq = ~std::uint64_t(0);
    int arrived = 0;
    std::vector<Entry> entries;
    std::vector<std::uint64_t> arrived_seq;  // per rank: the collective it last posted here
    std::string mismatch;
    std::vector<std::shared_ptr<Group>> split_groups;  // per rank of this group
    std::vector<int> split_ranks;
  };

  Group(std::shared_ptr<World> w, std::string n, std::vector<int> ranks)
      : world(std::move(w)), name(std::move(n)), world_ranks(std::move(ranks)) {
    for (Slot& s : slots) {
      s.entries.resize(world_ranks.size());
      s.arrived_seq.assign(world_ranks.size(), ~std::uint64_t(0));
    }
  }
  int size() const { return int(world_ranks.size()); }
  std::string rank_label(int r) const {
    std::string s = "rank " + std::to_string(r);
    if (world_ranks[std::size_t(r)] != r || name != "world")  // in a sub-group, always say which process
      s += " (world rank " + std::to_string(world_ranks[std::size_t(r)]) + ")";
    return s;
  }

  std::shared_ptr<World> world;
  std::string name;
  std::vector<int> world_ranks;
  std::mutex mutex;
  std::condition_variable changed;
  Slot slots[2];         // collective n uses slots[n % 2]; see MockBackend::collective
  std::string poisoned;  // set once a collective failed: later operations fail at once
  std::map<std::tuple<int, int, int>, std::deque<Message>> mailboxes;  // (from, to, tag)
};

struct World {
  World(int n, MockOptions opts)
      : size(n), options(std::move(opts)), operations(std::size_t(n), 0), blocked(std::size_t(n)) {}

  // While a rank waits inside an operation it is marked blocked. A rank that times out waiting
  // for peers that are all themselves blocked (a stage waiting on a stage that waits on the
  // rank really lost) waits one more timeout: the peers' own timeouts then name the lost rank
  // and wake it, instead of it blaming a peer that was only a link in the chain. Bounded, so
  // ranks that wait on each other in a cycle still fail.
  struct BlockedScope {
    World& world;
    int rank;
    BlockedScope(World& w, int r) : world(w), rank(r) { world.blocked[std::size_t(r)] = true; }
    ~BlockedScope() { world.blocked[std::size_t(rank)] = false; }
  };
  bool all_blocked(const std::vector<int>& world_ranks) const {
    for (int r : world_ranks)
      if (!blocked[std::size_t(r)]) return false;
    return !world_ranks.empty();
  }

  // Called by each rank before each operation: counts it and applies injected faults.
  void before_operation(int world_rank, const char* what) {
    apply_faults(options.faults, world_rank, operations[std::size_t(world_rank)]++, what);
  }

  void register_group(const std::shared_ptr<Group>& g) {
    std::lock_guard<std::mutex> lock(mutex);
    groups.push_back(g);
  }

  // Records a failure as the root cause if it is the first. A rank that detects a failure in a
  // collective records it before waking its peers, so their follow-on errors never win.
  void record_failure(int world_rank, const std::exception_ptr& error, const std::string& what) {
    std::lock_guard<std::mutex> lock(mutex);
    if (first_failure) return;
    first_failure = error;
    abort_reason = "world rank " + std::to_string(world_rank) + " failed: " + what;
  }

  // A rank's function threw: record it and wake every rank so pending operations abandon.
  void fail(int world_rank, const std::exception_ptr& error, const std::string& what) {
    record_failure(world_rank, error, what);
    std::vector<std::shared_ptr<Group>> live;
    {
      std::lock_guard<std::mutex> lock(mutex);
      aborted = true;
      live = groups;
    }
    for (auto& g : live) {
      std::lock_guard<std::mutex> lock(g->mutex);
      g->changed.notify_all();
    }
  }

  std::string reason() {
    std::lock_guard<std::mutex> lock(mutex);
    return abort_reason;
  }

  const int size;
  const MockOptions options;
  std::vector<std::uint64_t> operations;   // element r is touched only by rank r's thread
  std::vector<std::atomic<bool>> blocked;  // element r: rank r waits inside an operation
  std::atomic<bool> aborted{false};
  std::mutex mutex;
  std::exception_ptr first_failure;
  std::string abort_reason;
  // Every group of the world; a cycle with Group::world that run_mock_ranks breaks at the end.
  std::vector<std::shared_ptr<Group>> groups;
};

template <class Acc, class T>
Acc load_as(const unsigned char* p, std::size_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>)
    return Acc(to_float(v));
  else
    return Acc(v);
}

// out[i] = op over entries (in rank order) of element (offset + i); accumulates in float for
// 16-bit types, in the element type otherwise.
template <class T>
void reduce_typed(const std::vector<Entry>& entries, std::size_t offset, std::size_t count, ReduceOp op, void* out) {
  using Acc = std::conditional_t<std::is_same_v<T, half> || std::is_same_v<T, bfloat16>, float, T>;
  auto* dst = static_cast<unsigned char*>(out);
  for (std::size_t i = 0; i < count; ++i) {
    Acc acc = load_as<Acc, T>(entries[0].staged.data(), offset + i);
    for (std::size_t r = 1; r < entries.size(); ++r) {
      const Acc v = load_as<Acc, T>(entries[r].staged.data(), offset + i);
      acc = op == ReduceOp::sum ? Acc(acc + v) : (v > acc ? v : acc);
    }
    T result;
    if constexpr (std::is_same_v<Acc, float> && !std::is_same_v<T, float>)
      result = from_float<T>(acc);
    else
      result = T(acc);
    std::memcpy(dst + i * sizeof(T), &result, sizeof(T));
  }
}

inline void reduce(DType t, const std::vector<Entry>& entries, std::size_t offset, std::size_t count, ReduceOp op,
                   void* out) {
  switch (t) {
    case DType::f32:
      return reduce_typed<float>(entries, offset, count, op, out);
    case DType::f64:
      return reduce_typed<double>(entries, offset, count, op, out);
    case DType::f16:
      return reduce_typed<half>(entries, offset, count, op, out);
    case DType::bf16:
      return reduce_typed<bfloat16>(entries, offset, count, op, out);
    case DType::i32:
      return reduce_typed<std::int32_t>(entries, offset, count, op, out);
    case DType::i64:
      return reduce_typed<std::int64_t>(entries, offset, count, op, out);
    case DType::u8:
      return reduce_typed<std::uint8_t>(entries, offset, count, op, out);
  }
}

}  // namespace mock_detail

// One rank's endpoint in one group of the in-process world. Move-only: its operation counter
// is what pairs this rank's n-th collective with its peers' n-th.
class MockBackend {
 public:
  MockBackend(std::shared_ptr<mock_detail::Group> group, int rank) : group_(std::move(group)), rank_(rank) {}
  MockBackend(MockBackend&&) = default;
  MockBackend& operator=(MockBackend&&) = default;
  MockBackend(const MockBackend&) = delete;
  MockBackend& operator=(const MockBackend&) = delete;

  int rank() const { return rank_; }
  int size() const { return group_->size(); }
  const std::string& name() const { return group_->name; }

  void all_reduce(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) {
    collective(CallSignature::all_reduce(count, t, op), send, count * dtype_size(t),
               [&](const std::vector<mock_detail::Entry>& all) { mock_detail::reduce(t, all, 0, count, op, recv); });
  }

  void all_gather(const void* send, void* recv, const std::size_t* counts, DType t) {
    const std::size_t bytes = counts[rank_] * dtype_size(t);
    collective(CallSignature::all_gather(counts, size(), t), send, bytes,
               [&](const std::vector<mock_detail::Entry>& all) {
                 auto* out = static_cast<unsigned char*>(recv);
                 for (const auto& peer : all) {
                   std::memcpy(out, peer.staged.data(), peer.staged.size());
                   out += peer.staged.size();
                 }
               });
  }

  void reduce_scatter(const void* send, void* recv, const std::size_t* counts, DType t, ReduceOp op) {
    const std::size_t total = std::accumulate(counts, counts + size(), std::size_t(0));
    const std::size_t offset = std::accumulate(counts, counts + rank_, std::size_t(0));
    collective(CallSignature::reduce_scatter(counts, size(), t, op), send, total * dtype_size(t),
               [&](const std::vector<mock_detail::Entry>& all) {
                 mock_detail::reduce(t, all, offset, counts[rank_], op, recv);
               });
  }

  // Each rank stages its whole send buffer; once the counts are known to agree, each reads its
  // segment of every peer's: rank q's segment for this rank starts after what q sends to the
  // ranks before this one (q's own send counts, from its signature).
  void all_to_all(const void* send, const std::size_t* send_counts, void* recv, const std::size_t* recv_counts,
                  DType t) {
    const std::size_t element = dtype_size(t);
    const std::size_t sent = std::accumulate(send_counts, send_counts + size(), std::size_t(0));
    collective(CallSignature::all_to_all(send_counts, recv_counts, size(), t), send, sent * element,
               [&](const std::vector<mock_detail::Entry>& all) {
                 auto* out = static_cast<unsigned char*>(recv);
                 for (int q = 0; q < size(); ++q) {
                   const auto& peer_counts = all[std::size_t(q)].call.counts;
                   const std::size_t offset =
                       std::accumulate(peer_counts.begin(), peer_counts.begin() + rank_, std::size_t(0));
                   const std::size_t bytes = recv_counts[q] * element;  // == peer_counts[rank_]: checked
                   if (bytes) std::memcpy(out, all[std::size_t(q)].staged.data() + offset * element, bytes);
                   out += bytes;
                 }
               });
  }

  void broadcast(void* data, std::size_t count, DType t, int root) {
    const std::size_t bytes = count * dtype_size(t);
    collective(CallSignature::broadcast(count, t, root), data, rank_ == root ? bytes : 0,
               [&](const std::vector<mock_detail::Entry>& all) {
                 if (rank_ != root) std::memcpy(data, all[std::size_t(root)].staged.data(), bytes);
               });
  }

  void barrier() {
    collective(CallSignature::barrier(), nullptr, 0, [](const std::vector<mock_detail::Entry>&) {});
  }

  MockBackend split(int color, int key) {
    std::shared_ptr<mock_detail::Group> group;
    int new_rank = 0;
    collective(CallSignature::split(), nullptr, 0, color, key, [&](const std::vector<mock_detail::Entry>&) {
      // Read under no lock: the slot is stable until every rank has entered its next collective.
      const auto& slot = group_->slots[(seq_ - 1) % 2];
      group = slot.split_groups[std::size_t(rank_)];
      new_rank = slot.split_ranks[std::size_t(rank_)];
    });
    return MockBackend(std::move(group), new_rank);
  }

  // For a backend layered on this one that moves the data itself (the one-GPU mock,
  // tpkit/gpu/device_mock.cuh): enters the collective `call` describes, with its mismatch
  // checks, timeouts and fault injection, but exchanges `token` (bytes standing for this rank's
  // data, such as device addresses) instead of the data. Once every rank has arrived,
  // with_tokens gets each rank's entry in rank order; entry.staged holds that rank's token.
  template <class F>
  void rendezvous(CallSignature call, const void* token, std::size_t token_bytes, F&& with_tokens) {
    call.device_memory = true;
    collective(std::move(call), token, token_bytes, std::forward<F>(with_tokens));
  }

  void send(const void* data, std::size_t count, DType t, int peer, int tag) {
    world().before_operation(world_rank(), "send");
    mock_detail::Message m{t, count, {}};
    const auto* p = static_cast<const unsigned char*>(data);
    m.bytes.assign(p, p + count * dtype_size(t));
    std::lock_guard<std::mutex> lock(group_->mutex);
    if (unusable()) throw_if_unusable("send");
    group_->mailboxes[{rank_, peer, tag}].push_back(std::move(m));
    group_->changed.notify_all();
  }

  void recv(void* data, std::size_t count, DType t, int peer, int tag) {
    world().before_operation(world_rank(), "recv");
    auto deadline = std::chrono::steady_clock::now() + world().options.timeout;
    std::unique_lock<std::mutex> lock(group_->mutex);
    auto& box = group_->mailboxes[{peer, rank_, tag}];
    const auto what = [&] {
      return "recv(from " + group_->rank_label(peer) + ", tag " + std::to_string(tag) + ", " + std::to_string(count) +
             " x " + dtype_name(t) + ")";
    };
    mock_detail::World::BlockedScope blocked(world(), world_rank());
    bool extended = false;
    while (box.empty()) {
      if (unusable()) throw_if_unusable(what().c_str());
      if (group_->changed.wait_until(lock, deadline) == std::cv_status::timeout && box.empty()) {
        if (!extended && world().all_blocked({group_->world_ranks[std::size_t(peer)]})) {
          extended = true;
          deadline += world().options.timeout;
          continue;
        }
        throw CollectiveTimeout(prefix() + group_->rank_label(rank_) + " waited " +
                                std::to_string(world().options.timeout.count()) + " ms in " + what() + " but " +
                                group_->rank_label(peer) + " sent nothing");
      }
    }
    mock_detail::Message m = std::move(box.front());
    box.pop_front();
    if (m.dtype != t || m.count != count) {
      throw CollectiveMismatch(prefix() + group_->rank_label(rank_) + " called " + what() + " but " +
                               group_->rank_label(peer) + " sent " + std::to_string(m.count) + " x " +
                               dtype_name(m.dtype));
    }
    std::memcpy(data, m.bytes.data(), m.bytes.size());
  }

 private:
  mock_detail::World& world() const { return *group_->world; }
  int world_rank() const { return group_->world_ranks[std::size_t(rank_)]; }
  std::string prefix() const { return "communicator '" + group_->name + "': "; }

  // Caller holds the group lock.
  bool unusable() const { return world().aborted || !group_->poisoned.empty(); }
  const CallSignature& slot_call() const { return group_->slots[seq_ % 2].entries[std::size_t(rank_)].call; }
  void throw_if_unusable(const char* what) const {
    if (world().aborted)
      throw RankAborted(prefix() + what + " on " + group_->rank_label(rank_) + " abandoned because " +
                        world().reason());
    if (!group_->poisoned.empty())
      throw CommError(prefix() + what + " on " + group_->rank_label(rank_) +
                      " refused: an earlier collective failed: " + group_->poisoned);
  }

  // The rendezvous. Collective number n uses slot n % 2. Its first arriver resets it: every
  // rank that could still read it (collective n - 2) has since entered collective n - 1, which
  // cannot complete before this rank's own arrival there, so nobody reads a slot being reset.
  template <class Finish>
  void collective(CallSignature mine, const void* send, std::size_t send_bytes, Finish&& finish) {
    collective(std::move(mine), send, send_bytes, 0, 0, std::forward<Finish>(finish));
  }
  template <class Finish>
  void collective(CallSignature mine, const void* send, std::size_t send_bytes, int color, int key, Finish&& finish) {
    using mock_detail::Group;
    world().before_operation(world_rank(), collective_name(mine.kind));
    // Described only on the error paths: no allocation per collective.
    const auto what = [&] { return slot_call().describe() + " #" + std::to_string(seq_); };
    auto deadline = std::chrono::steady_clock::now() + world().options.timeout;
    std::unique_lock<std::mutex> lock(group_->mutex);
    if (unusable()) throw_if_unusable((mine.describe() + " #" + std::to_string(seq_)).c_str());
    Group::Slot& slot = group_->slots[seq_ % 2];
    if (slot.seq != seq_) {
      slot.seq = seq_;
      slot.arrived = 0;
      slot.mismatch.clear();
    }
    mock_detail::Entry& entry = slot.entries[std::size_t(rank_)];
    entry.call = std::move(mine);
    entry.color = color, entry.key = key;
    std::vector<unsigned char> staged = std::move(entry.staged);  // keep its capacity
    const auto* bytes = static_cast<const unsigned char*>(send);
    staged.assign(bytes, bytes + send_bytes);
    entry.staged = std::move(staged);
    slot.arrived_seq[std::size_t(rank_)] = seq_;

    if (++slot.arrived == group_->size()) {
      complete(slot);
      group_->changed.notify_all();
    } else {
      mock_detail::World::BlockedScope blocked(world(), world_rank());
      bool extended = false;
      while (slot.arrived < group_->size()) {
        if (unusable()) throw_if_unusable(what().c_str());
        if (group_->changed.wait_until(lock, deadline) == std::cv_status::timeout && slot.arrived < group_->size()) {
          std::string missing, waiting;
          std::vector<int> missing_world_ranks;
          for (int r = 0; r < group_->size(); ++r) {
            const bool arrived = slot.arrived_seq[std::size_t(r)] == seq_;
            std::string& list = arrived ? waiting : missing;
            list += (list.empty() ? "" : ", ") + group_->rank_label(r);
            if (!arrived) missing_world_ranks.push_back(group_->world_ranks[std::size_t(r)]);
          }
          if (!extended && world().all_blocked(missing_world_ranks)) {
            extended = true;
            deadline += world().options.timeout;
            continue;
          }
          group_->poisoned = what() + " timed out: " + missing + " did not arrive within " +
                             std::to_string(world().options.timeout.count()) + " ms (waiting: " + waiting + ")";
          raise_and_wake(CollectiveTimeout(prefix() + group_->poisoned));
        }
      }
    }
    if (!slot.mismatch.empty()) {
      group_->poisoned = slot.mismatch;
      raise_and_wake(CollectiveMismatch(prefix() + slot.mismatch));
    }
    ++seq_;
    lock.unlock();
    finish(slot.entries);
  }

  // Caller holds the group lock (lock order: group, then world).
  template <class E>
  [[noreturn]] void raise_and_wake(E error) {
    world().record_failure(world_rank(), std::make_exception_ptr(error), error.what());
    group_->changed.notify_all();
    throw error;
  }

  // Runs under the group lock on the last rank to arrive.
  void complete(mock_detail::Group::Slot& slot) {
    const auto& entries = slot.entries;
    for (std::size_t r = 1; r < entries.size(); ++r) {
      if (!entries[r].call.same_call(entries[0].call)) {
        slot.mismatch = "collective mismatch at operation #" + std::to_string(seq_) + ": ";
        for (std::size_t q = 0; q < entries.size(); ++q)
          slot.mismatch += (q ? ", " : "") + group_->rank_label(int(q)) + " called " + entries[q].call.describe();
        return;
      }
    }
    if (entries[0].call.kind == CollectiveKind::all_to_all) {
      const std::string disagree = CallSignature::all_to_all_disagreements(
          group_->size(), [&](int r) -> const CallSignature& { return entries[std::size_t(r)].call; },
          [&](int r) { return group_->rank_label(r); });
      if (!disagree.empty())
        slot.mismatch = "collective mismatch at operation #" + std::to_string(seq_) + ": " +
                        "all_to_all counts disagree: " + disagree;
      return;
    }
    if (entries[0].call.kind != CollectiveKind::split) return;
    std::map<int, std::vector<int>> members;  // color -> ranks of this group, sorted by (key, rank)
    for (int r = 0; r < group_->size(); ++r) members[entries[std::size_t(r)].color].push_back(r);
    slot.split_groups.assign(entries.size(), nullptr);
    slot.split_ranks.assign(entries.size(), 0);
    for (auto& [color, ranks] : members) {
      std::stable_sort(ranks.begin(), ranks.end(),
                       [&](int a, int b) { return entries[std::size_t(a)].key < entries[std::size_t(b)].key; });
      std::vector<int> world_ranks;
      for (int r : ranks) world_ranks.push_back(group_->world_ranks[std::size_t(r)]);
      auto g = std::make_shared<mock_detail::Group>(group_->world, group_->name + "/" + std::to_string(color),
                                                    std::move(world_ranks));
      world().register_group(g);
      for (std::size_t i = 0; i < ranks.size(); ++i) {
        slot.split_groups[std::size_t(ranks[i])] = g;
        slot.split_ranks[std::size_t(ranks[i])] = int(i);
      }
    }
  }

  std::shared_ptr<mock_detail::Group> group_;
  int rank_ = 0;
  std::uint64_t seq_ = 0;  // collectives this rank has completed in this group
};

// Runs fn(Communicator<MockBackend>&) on `world_size` threads, one per rank, and returns when
// all have finished. The first exception any rank throws is rethrown here (the others' pending
// operations are abandoned with RankAborted rather than left to hang). A message sent but never
// received is reported as a CommError after a run that otherwise succeeded.
template <class F>
void run_mock_ranks(int world_size, F&& fn, MockOptions options = {}) {
  TPKIT_REQUIRE(world_size >= 1, "world_size must be at least 1 (got ", world_size, ")");
  auto world = std::make_shared<mock_detail::World>(world_size, std::move(options));
  std::vector<int> ranks(std::size_t(world_size), 0);
  std::iota(ranks.begin(), ranks.end(), 0);
  auto root = std::make_shared<mock_detail::Group>(world, "world", ranks);
  world->register_group(root);

  std::vector<std::thread> threads;
  threads.reserve(std::size_t(world_size));
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      try {
        Communicator<MockBackend> comm(MockBackend(root, r));
        fn(comm);
      } catch (const std::exception& e) {
        world->fail(r, std::current_exception(), e.what());
      } catch (...) {
        world->fail(r, std::current_exception(), "unknown exception");
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto groups = std::move(world->groups);
  world->groups.clear();
  if (world->first_failure) std::rethrow_exception(world->first_failure);

  for (const auto& g : groups) {
    for (const auto& [key, box] : g->mailboxes) {
      if (box.empty()) continue;
      const auto& [from, to, tag] = key;
      throw CommError("communicator '" + g->name + "': " + g->rank_label(from) + " sent " +
                      std::to_string(box.front().count) + " x " + dtype_name(box.front().dtype) + " to " +
                      g->rank_label(to) + " (tag " + std::to_string(tag) + ") that was never received");
    }
  }
}

}  // namespace tpkit
