// tpkit/comm/mpi.hpp: MpiBackend, a Communicator backend over MPI for multi-process CPU runs
// (and the usual launcher: mpirun, srun). Not included by tpkit.hpp, so that tpkit itself never
// depends on MPI.
// Needs: MPI (link tpkit::mpi, or MPI::MPI_CXX).
//
// Never hangs silently: every operation is posted non-blocking and polled against a deadline.
// A rank that times out tells every world rank what it waits for, listens for one more timeout
// for their reports, and throws CollectiveTimeout naming the world ranks that stayed silent
// (stalled, crashed, or never entered a tpkit operation). With verify_calls (the default) each
// collective first exchanges its CallSignature (tpkit/comm/call_signature.hpp), so ranks that
// call different collectives, counts (per rank, for all_gather and reduce_scatter), dtypes or
// roots get CollectiveMismatch naming them instead of undefined behaviour; for all_to_all, every
// rank checks every pair's counts (rank a's send count to b against b's receive count from a)
// before any data moves.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tpkit/comm/backend.hpp"
#include "tpkit/comm/call_signature.hpp"
#include "tpkit/comm/communicator.hpp"
#include "tpkit/comm/fault.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"

namespace tpkit {

struct MpiOptions {
  // How long a rank waits in one operation before it reports the ranks that are missing.
  std::chrono::milliseconds timeout{30000};
  // Exchange each collective's signature first (one small all-gather) to report mismatched
  // calls by name. Off saves that latency once the program is known to be correct.
  bool verify_calls = true;
  std::vector<Fault> faults;
};

namespace mpi_detail {

inline void check(int rc, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw CommError("MPI: " + what + " failed: " + std::string(text, std::size_t(length)));
}

inline bool finalized() {
  int done = 0;
  MPI_Finalized(&done);
  return done != 0;
}

// Reductions of 16-bit floats: MPI has no such types, so they travel as MPI_UINT16_T and are
// reduced by user operations that widen to float for each pairwise step.
template <class T, bool Max>
void reduce_16bit(void* in, void* inout, int* length, MPI_Datatype*) {
  const auto* a = static_cast<const T*>(in);
  auto* b = static_cast<T*>(inout);
  for (int i = 0; i < *length; ++i) {
    const float x = float(a[i]), y = float(b[i]);
    b[i] = T(Max ? (x > y ? x : y) : x + y);
  }
}

// State shared by a world backend and every group split from it.
struct Shared {
  MPI_Comm reports = MPI_COMM_NULL;  // the world, duplicated: timeout reports travel here
  int world_rank = 0, world_size = 1;
  MpiOptions options;
  std::uint64_t operations = 0;
  MPI_Op ops[2][2] = {{MPI_OP_NULL, MPI_OP_NULL}, {MPI_OP_NULL, MPI_OP_NULL}};  // [bf16, f16][sum, max]
  struct PendingSend {
    MPI_Request request;
    std::vector<unsigned char> bytes;
  };
  std::list<PendingSend> sends;  // buffered sends in flight (list: the buffers never move)
  std::list<PendingSend> spare;  // completed ones, whose buffers the next sends reuse

  // Completed sends hand their buffers back.
  void progress_sends() {
    for (auto it = sends.begin(); it != sends.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      const auto next = std::next(it);
      if (done) spare.splice(spare.end(), sends, it);
      it = next;
    }
  }
  // A send slot, reusing a completed one's node and capacity when there is one.
  PendingSend& new_send() {
    if (spare.empty()) return sends.emplace_back();
    sends.splice(sends.end(), spare, spare.begin());
    return sends.back();
  }

  ~Shared() {
    if (finalized()) return;
    // Give unreceived sends one timeout to complete (a correct program has received them all).
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    while (!sends.empty() && std::chrono::steady_clock::now() < deadline) {
      progress_sends();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    for (auto& s : sends) {
      MPI_Cancel(&s.request);
      MPI_Request_free(&s.request);
    }
    for (auto& row : ops)
      for (MPI_Op& op : row)
        if (op != MPI_OP_NULL) MPI_Op_free(&op);
    if (reports != MPI_COMM_NULL) MPI_Comm_free(&reports);
  }
};

// One MPI communicator, freed with its last owner.
struct Comm {
  MPI_Comm comm = MPI_COMM_NULL;
  ~Comm() {
    if (comm != MPI_COMM_NULL && !finalized()) MPI_Comm_free(&comm);
  }
};

}  // namespace mpi_detail

class MpiBackend {
 public:
  static constexpr int kReportTag = 30001;

  // The world (MPI_COMM_WORLD, duplicated so tpkit's traffic never mixes with the caller's).
  // MPI must be initialised. Collective over the world.
  static MpiBackend world(MpiOptions options = {}) {
    auto shared = std::make_shared<mpi_detail::Shared>();
    shared->options = std::move(options);
    MPI_Comm_rank(MPI_COMM_WORLD, &shared->world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &shared->world_size);
    mpi_detail::check(MPI_Comm_dup(MPI_COMM_WORLD, &shared->reports), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(shared->reports, MPI_ERRORS_RETURN);
    mpi_detail::check(MPI_Op_create(&mpi_detail::reduce_16bit<bfloat16, false>, 1, &shared->ops[0][0]),
                      "MPI_Op_create");
    mpi_detail::check(MPI_Op_create(&mpi_detail::reduce_16bit<bfloat16, true>, 1, &shared->ops[0][1]), "MPI_Op_create");
    mpi_detail::check(MPI_Op_create(&mpi_detail::reduce_16bit<half, false>, 1, &shared->ops[1][0]), "MPI_Op_create");
    mpi_detail::check(MPI_Op_create(&mpi_detail::reduce_16bit<half, true>, 1, &shared->ops[1][1]), "MPI_Op_create");
    auto comm = std::make_shared<mpi_detail::Comm>();
    mpi_detail::check(MPI_Comm_dup(MPI_COMM_WORLD, &comm->comm), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm->comm, MPI_ERRORS_RETURN);
    std::vector<int> world_ranks(static_cast<std::size_t>(shared->world_size));
    for (int r = 0; r < shared->world_size; ++r) world_ranks[std::size_t(r)] = r;
    return MpiBackend(std::move(shared), std::move(comm), "world", std::move(world_ranks));
  }

  int rank() const { return rank_; }
  int size() const { return int(world_ranks_.size()); }
  const std::string& name() const { return name_; }
  int world_rank_of(int r) const { return world_ranks_[std::size_t(r)]; }

  void all_reduce(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) {
    begin(CallSignature::all_reduce(count, t, op));
    MPI_Request request;
    mpi_detail::check(MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, to_int(count), type_of(t), op_of(t, op),
                                     comm_->comm, &request),
                      "MPI_Iallreduce");
    wait(request, [&] { return describe("all_reduce", count, t); });
  }

  void all_gather(const void* send, void* recv, const std::size_t* counts, DType t) {
    std::vector<int> counts_int, displs;
    std::size_t total = layout(counts, counts_int, displs);
    begin(CallSignature::all_gather(counts, size(), t));
    MPI_Request request;
    mpi_detail::check(MPI_Iallgatherv(send, counts_int[std::size_t(rank_)], type_of(t), recv, counts_int.data(),
                                      displs.data(), type_of(t), comm_->comm, &request),
                      "MPI_Iallgatherv");
    wait(request, [&] { return describe("all_gather", total, t); });
  }

  void reduce_scatter(const void* send, void* recv, const std::size_t* counts, DType t, ReduceOp op) {
    std::vector<int> counts_int, displs;
    const std::size_t total = layout(counts, counts_int, displs);
    begin(CallSignature::reduce_scatter(counts, size(), t, op));
    MPI_Request request;
    mpi_detail::check(
        MPI_Ireduce_scatter(send, recv, counts_int.data(), type_of(t), op_of(t, op), comm_->comm, &request),
        "MPI_Ireduce_scatter");
    wait(request, [&] { return describe("reduce_scatter", total, t); });
  }

  void all_to_all(const void* send, const std::size_t* send_counts, void* recv, const std::size_t* recv_counts,
                  DType t) {
    std::vector<int> send_int, send_displs, recv_int, recv_displs;
    layout(send_counts, send_int, send_displs);
    const std::size_t received = layout(recv_counts, recv_int, recv_displs);
    begin(CallSignature::all_to_all(send_counts, recv_counts, size(), t));
    MPI_Request request;
    mpi_detail::check(MPI_Ialltoallv(send, send_int.data(), send_displs.data(), type_of(t), recv, recv_int.data(),
                                     recv_displs.data(), type_of(t), comm_->comm, &request),
                      "MPI_Ialltoallv");
    wait(request, [&] { return describe("all_to_all", received, t); });
  }

  void broadcast(void* data, std::size_t count, DType t, int root) {
    begin(CallSignature::broadcast(count, t, root));
    MPI_Request request;
    mpi_detail::check(MPI_Ibcast(data, to_int(count), type_of(t), root, comm_->comm, &request), "MPI_Ibcast");
    wait(request, [&] { return describe("broadcast", count, t) + " from rank " + std::to_string(root); });
  }

  void barrier() {
    begin(CallSignature::barrier());
    MPI_Request request;
    mpi_detail::check(MPI_Ibarrier(comm_->comm, &request), "MPI_Ibarrier");
    wait(request, [] { return std::string("barrier"); });
  }

  // Buffered: returns once the data is copied; the copy is released when the send completes.
  void send(const void* data, std::size_t count, DType t, int peer, int tag) {
    before_operation("send");
    const std::size_t bytes = count * dtype_size(t);
    auto& s = shared_->new_send();
    s.bytes.assign(static_cast<const unsigned char*>(data), static_cast<const unsigned char*>(data) + bytes);
    mpi_detail::check(MPI_Isend(s.bytes.data(), to_int(count), type_of(t), peer, tag, comm_->comm, &s.request),
                      "MPI_Isend");
    shared_->progress_sends();
  }

  void recv(void* data, std::size_t count, DType t, int peer, int tag) {
    before_operation("recv");
    MPI_Request request;
    mpi_detail::check(MPI_Irecv(data, to_int(count), type_of(t), peer, tag, comm_->comm, &request), "MPI_Irecv");
    const auto what = [&] {
      return "recv(from " + label(peer) + ", tag " + std::to_string(tag) + ", " + describe("", count, t).substr(1);
    };
    MPI_Status status;
    wait(request, what, &status);
    int got = 0;
    MPI_Get_count(&status, type_of(t), &got);
    if (std::size_t(got) != count)
      throw CollectiveMismatch(prefix() + what() + " but " + label(peer) + " sent " + std::to_string(got) +
                               " elements");
  }

  // Collective: a group of the ranks that passed `color`, ordered by (key, rank).
  MpiBackend split(int color, int key) {
    // Checked as a split (a rank calling barrier here is a mismatch), then every rank present (or
    // a named timeout) before the blocking MPI_Comm_split.
    begin(CallSignature::split());
    MPI_Request request;
    mpi_detail::check(MPI_Ibarrier(comm_->comm, &request), "MPI_Ibarrier");
    wait(request, [] { return std::string("split"); });
    auto comm = std::make_shared<mpi_detail::Comm>();
    mpi_detail::check(MPI_Comm_split(comm_->comm, color, key, &comm->comm), "MPI_Comm_split");
    MPI_Comm_set_errhandler(comm->comm, MPI_ERRORS_RETURN);
    int size = 0;
    MPI_Comm_size(comm->comm, &size);
    // The world ranks of the new group, for messages.
    std::vector<int> world_ranks(static_cast<std::size_t>(size));
    const int me = shared_->world_rank;
    MPI_Allgather(&me, 1, MPI_INT, world_ranks.data(), 1, MPI_INT, comm->comm);
    return MpiBackend(shared_, std::move(comm), name_ + "/" + std::to_string(color), std::move(world_ranks));
  }

 private:
  MpiBackend(std::shared_ptr<mpi_detail::Shared> shared, std::shared_ptr<mpi_detail::Comm> comm, std::string name,
             std::vector<int> world_ranks)
      : shared_(std::move(shared)),
        comm_(std::move(comm)),
        name_(std::move(name)),
        world_ranks_(std::move(world_ranks)) {
    MPI_Comm_rank(comm_->comm, &rank_);
  }

  static int to_int(std::size_t count) {
    TPKIT_REQUIRE(count <= std::size_t(INT_MAX), "MPI: ", count, " elements exceed MPI's int counts");
    return int(count);
  }
  static MPI_Datatype type_of(DType t) {
    switch (t) {
      case DType::f32:
        return MPI_FLOAT;
      case DType::f64:
        return MPI_DOUBLE;
      case DType::i32:
        return MPI_INT32_T;
      case DType::i64:
        return MPI_INT64_T;
      case DType::u8:
        return MPI_UINT8_T;
      case DType::f16:
      case DType::bf16:
        return MPI_UINT16_T;
    }
    return MPI_BYTE;
  }
  MPI_Op op_of(DType t, ReduceOp op) const {
    if (t == DType::bf16 || t == DType::f16) return shared_->ops[t == DType::f16 ? 1 : 0][op == ReduceOp::max ? 1 : 0];
    TPKIT_REQUIRE(t != DType::u8 || op == ReduceOp::max, "MPI: u8 supports only max reductions");
    return op == ReduceOp::sum ? MPI_SUM : MPI_MAX;
  }
  std::size_t layout(const std::size_t* counts, std::vector<int>& counts_int, std::vector<int>& displs) const {
    std::size_t total = 0;
    for (int r = 0; r < size(); ++r) {
      counts_int.push_back(to_int(counts[r]));
      displs.push_back(to_int(total));
      total += counts[r];
    }
    return total;
  }

  std::string label(int r) const {
    return "rank " + std::to_string(r) + " (world rank " + std::to_string(world_ranks_[std::size_t(r)]) + ")";
  }
  std::string prefix() const { return "MPI communicator '" + name_ + "', " + label(rank_) + ": "; }
  static std::string describe(const char* op, std::size_t count, DType t) {
    return std::string(op) + "(" + std::to_string(count) + " x " + dtype_name(t) + ")";
  }

  void before_operation(const char* what) {
    apply_faults(shared_->options.faults, shared_->world_rank, shared_->operations++, what);
    shared_->progress_sends();
  }

  // Counts the operation and, with verify_calls, checks that every rank called the same one.
  void begin(const CallSignature& mine) {
    const char* what = collective_name(mine.kind);
    before_operation(what);
    ++collectives_;
    if (!shared_->options.verify_calls || size() == 1) return;
    const std::size_t words = CallSignature::words(size());
    signature_.resize(words * std::size_t(size() + 1));
    std::int64_t* sent = signature_.data() + words * std::size_t(size());  // after the gathered ones
    mine.encode(sent, size());
    MPI_Request request;
    mpi_detail::check(MPI_Iallgather(sent, int(words), MPI_INT64_T, signature_.data(), int(words), MPI_INT64_T,
                                     comm_->comm, &request),
                      "MPI_Iallgather");
    wait(request, [&] { return std::string(what) + " #" + std::to_string(collectives_); });
    std::string differ;
    std::vector<CallSignature> theirs;  // all_to_all only: its counts are compared across ranks below
    for (int r = 0; r < size(); ++r) {
      CallSignature call = CallSignature::decode(signature_.data() + words * std::size_t(r), size());
      if (!call.same_call(mine)) differ += (differ.empty() ? "" : "; ") + label(r) + " called " + call.brief();
      if (mine.kind == CollectiveKind::all_to_all) theirs.push_back(std::move(call));
    }
    if (!differ.empty()) throw CollectiveMismatch(prefix() + "called " + mine.brief() + " but " + differ);
    if (mine.kind != CollectiveKind::all_to_all) return;
    // Every rank sees every rank's counts, so every rank reports every disagreeing pair.
    differ = CallSignature::all_to_all_disagreements(
        size(), [&](int r) -> const CallSignature& { return theirs[std::size_t(r)]; }, [&](int r) { return label(r); });
    if (!differ.empty())
      throw CollectiveMismatch(prefix() + "all_to_all #" + std::to_string(collectives_) +
                               " counts disagree: " + differ);
  }

  // Polls `request` until it completes or the timeout passes; then diagnoses and throws.
  // `what()` describes the operation; it is built only for an error, not on the hot path.
  template <class Describe>
  void wait(MPI_Request& request, Describe&& what, MPI_Status* status = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + shared_->options.timeout;
    for (int polls = 0;; ++polls) {
      int done = 0;
      const int rc = MPI_Test(&request, &done, status ? status : MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) mpi_detail::check(rc, what());
      if (done) return;
      if (std::chrono::steady_clock::now() >= deadline) break;
      // Spin briefly for low latency, then sleep so oversubscribed ranks leave cores to peers.
      if (polls > 200) std::this_thread::sleep_for(std::chrono::microseconds(polls > 2000 ? 200 : 20));
    }
    diagnose_and_throw(what());
  }

  // Tells every world rank what this one waits for, collects their reports for one more
  // timeout, and names the ranks that stayed silent.
  [[noreturn]] void diagnose_and_throw(const std::string& what) {
    mpi_detail::Shared& sh = *shared_;
    const std::string mine = "on '" + name_ + "' in " + what;
    for (int r = 0; r < sh.world_size; ++r) {
      if (r == sh.world_rank) continue;
      auto& s = sh.new_send();
      s.bytes.assign(mine.begin(), mine.end());
      MPI_Isend(s.bytes.data(), int(s.bytes.size()), MPI_CHAR, r, kReportTag, sh.reports, &s.request);
    }
    std::map<int, std::string> heard;
    const auto deadline = std::chrono::steady_clock::now() + sh.options.timeout;
    while (int(heard.size()) < sh.world_size - 1 && std::chrono::steady_clock::now() < deadline) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, kReportTag, sh.reports, &flag, &st);
      if (!flag) {
        sh.progress_sends();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      int length = 0;
      MPI_Get_count(&st, MPI_CHAR, &length);
      std::string text(std::size_t(length), '\0');
      MPI_Recv(text.data(), length, MPI_CHAR, st.MPI_SOURCE, kReportTag, sh.reports, MPI_STATUS_IGNORE);
      heard[st.MPI_SOURCE] = std::move(text);
    }
    std::string silent, waiting;
    for (int r = 0; r < sh.world_size; ++r) {
      if (r == sh.world_rank) continue;
      const auto it = heard.find(r);
      if (it == heard.end())
        silent += (silent.empty() ? "" : ", ") + std::to_string(r);
      else
        waiting += "; world rank " + std::to_string(r) + " is waiting " + it->second;
    }
    const std::string ms = std::to_string(sh.options.timeout.count());
    throw CollectiveTimeout(prefix() + what + " timed out after " + ms + " ms: " +
                            (silent.empty() ? std::string("every rank is waiting (mismatched calls or a deadlock)")
                                            : "world rank(s) " + silent + " did not respond within another " + ms +
                                                  " ms (stalled, crashed, or never entered a tpkit operation)") +
                            waiting);
  }

  std::shared_ptr<mpi_detail::Shared> shared_;
  std::shared_ptr<mpi_detail::Comm> comm_;
  std::string name_;
  std::vector<int> world_ranks_;
  int rank_ = 0;
  std::uint64_t collectives_ = 0;
  std::vector<std::int64_t> signature_;  // every rank's signature words, then this rank's
};

}  // namespace tpkit
