// tpkit/engine/control.hpp: how requests reach a running engine and how their outputs leave it.
//
// EngineControl lives beside the controller rank (world rank 0). Any thread may submit, abort,
// read the status and shut down; the controller's step loop (EngineRank::serve) takes what
// arrived at the start of each round as a ControlMessage, which it sends to every other rank, so
// that every rank adds and aborts the same sequences at the same point of its loop (the
// schedulers are replicated and deterministic, so the ranks need nothing else: block tables and
// prefix-cache hits follow). At the end of each round the controller hands the round's outputs
// to the requests' callbacks and publishes the status.
//
// When there is no work the loop waits in one of three ways (IdleMode): ranks that are threads
// of one process park on this object (no message, so no collective timeout can trip); ranks that
// are processes receive a heartbeat message every EngineOptions::idle_heartbeat, so a follower
// still notices a dead controller within its backend's timeout; an offline generate() exits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/engine/request.hpp"

namespace tpkit {
namespace engine_detail {

// A request as every rank learns it: its id, prompt, parameters and generator seed, and the
// tokens it already generated elsewhere when it resumes (Engine::resume).
struct NewRequest {
  RequestId id = 0;
  std::vector<std::int32_t> prompt;
  SamplingParams params;
  std::uint64_t seed = 0;
  std::vector<std::int32_t> generated;
};

// What the controller sends every rank at the start of each round.
struct ControlMessage {
  enum Action : std::int64_t { run = 0, park = 1, exit = 2 };
  Action action = run;
  std::vector<NewRequest> added;
  std::vector<RequestId> aborted;

  // Little-endian-agnostic: sender and receivers are the same program on the same architecture.
  std::vector<std::uint8_t> encode() const {
    std::vector<std::uint8_t> out;
    const auto put = [&](const void* p, std::size_t n) {
      const auto* b = static_cast<const std::uint8_t*>(p);
      out.insert(out.end(), b, b + n);
    };
    const auto put_u64 = [&](std::uint64_t v) { put(&v, sizeof v); };
    const auto put_string = [&](const std::string& s) { put_u64(s.size()), put(s.data(), s.size()); };
    put_u64(added.size());
    for (const NewRequest& r : added) {
      put_u64(r.id), put_u64(r.seed), put_u64(r.prompt.size());
      put(r.prompt.data(), r.prompt.size() * sizeof(std::int32_t));
      const SamplingParams& p = r.params;
      put(&p.temperature, sizeof p.temperature), put(&p.top_k, sizeof p.top_k), put(&p.top_p, sizeof p.top_p);
      put(&p.min_p, sizeof p.min_p), put(&p.max_tokens, sizeof p.max_tokens);
      const std::uint8_t flags = std::uint8_t((p.ignore_eos ? 1 : 0) | (p.skip_special_tokens ? 2 : 0));
      put(&flags, 1);
      put_u64(p.stop.size());
      for (const std::string& s : p.stop) put_string(s);
      put_u64(p.stop_token_ids.size());
      put(p.stop_token_ids.data(), p.stop_token_ids.size() * sizeof(std::int32_t));
      put_u64(r.generated.size());
      put(r.generated.data(), r.generated.size() * sizeof(std::int32_t));
    }
    put_u64(aborted.size());
    put(aborted.data(), aborted.size() * sizeof(RequestId));
    return out;
  }

  // Throws FormatError on bytes encode() could not have written (a corrupted message).
  static ControlMessage decode(Action action, const std::uint8_t* data, std::size_t size) {
    ControlMessage m;
    m.action = action;
    std::size_t at = 0;
    const auto get = [&](void* p, std::size_t n) {
      if (n > size - at) throw FormatError("engine control message: truncated at byte " + std::to_string(at));
      std::memcpy(p, data + at, n);
      at += n;
    };
    const auto get_u64 = [&] {
      std::uint64_t v;
      get(&v, sizeof v);
      return v;
    };
    const auto get_count = [&](std::size_t element) {  // a count whose elements must fit in what is left
      const std::uint64_t n = get_u64();
      if (element != 0 && n > (size - at) / element)
        throw FormatError("engine control message: count " + std::to_string(n) + " overruns the message");
      return std::size_t(n);
    };
    if (size == 0) return m;
    m.added.resize(get_count(8));
    for (NewRequest& r : m.added) {
      r.id = get_u64(), r.seed = get_u64();
      r.prompt.resize(get_count(sizeof(std::int32_t)));
      get(r.prompt.data(), r.prompt.size() * sizeof(std::int32_t));
      SamplingParams& p = r.params;
      get(&p.temperature, sizeof p.temperature), get(&p.top_k, sizeof p.top_k), get(&p.top_p, sizeof p.top_p);
      get(&p.min_p, sizeof p.min_p), get(&p.max_tokens, sizeof p.max_tokens);
      std::uint8_t flags = 0;
      get(&flags, 1);
      p.ignore_eos = flags & 1, p.skip_special_tokens = flags & 2;
      p.seed = r.seed;
      p.stop.resize(get_count(8));
      for (std::string& s : p.stop) {
        s.resize(get_count(1));
        get(s.data(), s.size());
      }
      p.stop_token_ids.resize(get_count(sizeof(std::int32_t)));
      get(p.stop_token_ids.data(), p.stop_token_ids.size() * sizeof(std::int32_t));
      r.generated.resize(get_count(sizeof(std::int32_t)));
      get(r.generated.data(), r.generated.size() * sizeof(std::int32_t));
    }
    m.aborted.resize(get_count(sizeof(RequestId)));
    get(m.aborted.data(), m.aborted.size() * sizeof(RequestId));
    if (at != size) throw FormatError("engine control message: " + std::to_string(size - at) + " trailing bytes");
    return m;
  }
};

enum class IdleMode { park, heartbeat, exit };

}  // namespace engine_detail

class EngineControl {
  using Clock = std::chrono::steady_clock;

 public:
  // ---- any thread ----

  // Queues checked requests (each `params.seed` set; ids and seeds are filled in here), all at once
  // so that they reach the ranks in the same round, and returns their ids; `on_output` receives the outputs of each
  // (its index in `requests` and the output). Throws Unavailable once shutdown began, Overloaded when more than
  // `max_waiting` (>= 0) requests would wait.
  std::vector<RequestId> submit(std::vector<engine_detail::NewRequest> requests,
                                const std::function<void(std::size_t, const RequestOutput&)>& on_output,
                                std::int64_t max_waiting = -1) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!accepting_) throw Unavailable("the engine is shutting down and accepts no new requests");
    if (max_waiting >= 0 && waiting_ + std::int64_t(requests.size()) > max_waiting)
      throw Overloaded("the engine's queue is full (" + std::to_string(waiting_) + " requests waiting, at most " +
                       std::to_string(max_waiting) + ")");
    std::vector<RequestId> ids;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      engine_detail::NewRequest& r = requests[i];
      r.id = next_id_++;
      r.seed = r.params.seed.value_or(0);
      Live& live = live_[r.id];
      if (on_output) live.callback = [on_output, i](const RequestOutput& out) { on_output(i, out); };
      live.submitted = Clock::now();
      live.prompt_tokens = std::int64_t(r.prompt.size());
      ++waiting_;
      ids.push_back(r.id);
      inbox_.push_back(std::move(r));
    }
    changed_.notify_all();
    return ids;
  }

  // Ends a request with "abort" (its blocks are freed at the start of the next step). False when
  // the request is unknown or already finished.
  bool abort(RequestId id) {
    std::vector<Ending> endings;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = live_.find(id);
      if (it == live_.end()) return false;
      for (auto q = inbox_.begin(); q != inbox_.end(); ++q)
        if (q->id == id) {  // not sent to the ranks yet: ends here
          inbox_.erase(q);
          endings.push_back(end_here(it, "abort", nullptr));
          break;
        }
      if (endings.empty()) aborts_.push_back(id);
      changed_.notify_all();
    }
    deliver(endings);
    return true;
  }

  EngineStatus status() const {
    std::lock_guard<std::mutex> lock(mutex_);
    EngineStatus s = ranks_;
    s.accepting = accepting_, s.failure = failure_, s.requests_finished = finished_;
    s.waiting += std::int64_t(inbox_.size());
    s.unfinished = std::int64_t(live_.size());
    for (const auto& [layer, tokens] : expert_load_) s.expert_load.push_back({layer, tokens});
    return s;
  }

  // A pipeline stage's expert statistics (its sparse layers), published by the stage's first
  // TP rank after each step it ran: status() shows every stage's layers.
  void publish_expert_load(const std::vector<ExpertLoad>& loads) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const ExpertLoad& l : loads) expert_load_[l.layer] = l.tokens;
  }

  // Stops accepting requests; with ShutdownMode::abort also ends every request in flight. The
  // loop exits once nothing is left.
  void begin_shutdown(ShutdownMode mode) {
    std::vector<Ending> endings;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      accepting_ = false;
      stopping_ = true;
      if (mode == ShutdownMode::abort) {
        for (const engine_detail::NewRequest& r : inbox_)
          if (auto it = live_.find(r.id); it != live_.end()) endings.push_back(end_here(it, "abort", nullptr));
        inbox_.clear();
        for (const auto& [id, live] : live_) aborts_.push_back(id);
      }
      changed_.notify_all();
    }
    deliver(endings);
  }
  // ---- the controller's loop ----

  // The message for the next round. `idle`: no sequence is live on the ranks.
  engine_detail::ControlMessage next(bool idle, engine_detail::IdleMode mode, std::chrono::milliseconds heartbeat) {
    using engine_detail::ControlMessage;
    using engine_detail::IdleMode;
    std::unique_lock<std::mutex> lock(mutex_);
    ControlMessage m;
    if (idle && inbox_.empty()) {
      aborts_.clear();  // nothing live on the ranks: aborts of requests that just finished
      if (stopping_ || mode == IdleMode::exit) {
        m.action = ControlMessage::exit;
        return m;
      }
      if (mode == IdleMode::park) {
        m.action = ControlMessage::park;
        return m;
      }
      changed_.wait_for(lock, heartbeat, [&] { return !inbox_.empty() || stopping_; });
    }
    m.added.assign(std::make_move_iterator(inbox_.begin()), std::make_move_iterator(inbox_.end()));
    inbox_.clear();
    m.aborted.swap(aborts_);
    return m;
  }

  // Parking (IdleMode::park). Every rank reads wake_count() before a barrier that follows the
  // park message; then the controller waits in park() for work or a shutdown, and the others in
  // wait_past(count) until the controller woke.
  std::uint64_t wake_count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return wakes_;
  }
  void park() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !inbox_.empty() || stopping_; });
    ++wakes_;
    changed_.notify_all();
  }
  void wait_past(std::uint64_t count) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return wakes_ > count; });
  }

  // The end of a round: `started` are the requests first scheduled in it, `outputs` its outputs
  // (handed to the callbacks, outside the lock), `status` the ranks' state after it.
  void end_round(const std::vector<RequestId>& started, std::vector<RequestOutput>& outputs,
                 const EngineStatus& status) {
    std::vector<std::pair<OutputCallback*, RequestOutput*>> calls;
    std::vector<OutputCallback> finished_callbacks;  // kept alive until their last call returned
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const Clock::time_point now = Clock::now();
      for (RequestId id : started) {
        auto it = live_.find(id);
        if (it == live_.end() || it->second.started) continue;
        it->second.started = true;
        it->second.queue_seconds = std::chrono::duration<double>(now - it->second.submitted).count();
        --waiting_;
      }
      ranks_ = status;
      finished_callbacks.reserve(outputs.size());
      for (RequestOutput& out : outputs) {
        auto it = live_.find(out.id);
        if (it == live_.end()) continue;  // already ended here (a failure)
        if (!out.finished) {
          calls.push_back({&it->second.callback, &out});
          continue;
        }
        out.queue_seconds = it->second.queue_seconds;
        if (!it->second.started) --waiting_;  // refused before it ran
        ++finished_;
        finished_callbacks.push_back(std::move(it->second.callback));
        calls.push_back({&finished_callbacks.back(), &out});
        live_.erase(it);
      }
    }
    // The entries of requests that have outputs stay while this thread delivers: only this thread
    // and fail_all (which runs when the loop has stopped) erase requests the ranks hold; abort()
    // and begin_shutdown() erase only those still in the inbox.
    for (auto& [callback, out] : calls) call(*callback, *out);
  }

  // The ranks failed (their loop has stopped): every request submitted and not finished ends with
  // `error`. `accept_more`: whether later requests will run (a threaded engine starts its ranks
  // again); if not, submit() throws Unavailable from now on.
  void fail_all(std::exception_ptr error, bool accept_more) {
    const std::string message = message_of(error);
    std::vector<Ending> endings;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The state first: a caller woken by a request's last output sees it.
      failure_ = message;
      ranks_.running = ranks_.waiting = ranks_.kv_blocks_used = 0;
      if (!accept_more) accepting_ = false;
      while (!live_.empty()) endings.push_back(end_here(live_.begin(), "error: " + message, error));
      inbox_.clear();
      aborts_.clear();
      waiting_ = 0;
    }
    deliver(endings);
  }

  // Waits until a request arrives (true) or a shutdown began with nothing queued (false): how a
  // threaded engine's runner knows when to start its ranks.
  bool wait_for_work() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !inbox_.empty() || stopping_; });
    return !inbox_.empty();
  }

  // The id the next submission gets (DistributedEngine::generate tells the other ranks).
  RequestId next_id() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_id_;
  }

 private:
  struct Live {
    OutputCallback callback;
    Clock::time_point submitted;
    std::int64_t prompt_tokens = 0;
    bool started = false;
    double queue_seconds = 0;
  };

  // A request that ends here, not on the ranks: its last output, for its callback.
  struct Ending {
    OutputCallback callback;
    RequestOutput out;
  };
  // Under the lock: ends the request at `it` and erases it; deliver() calls the callback later,
  // with the lock released.
  Ending end_here(std::map<RequestId, Live>::iterator it, std::string reason, std::exception_ptr error) {
    Ending e;
    e.out.id = it->first;
    e.out.finished = true;
    e.out.finish_reason = std::move(reason);
    e.out.error = std::move(error);
    e.out.prompt_tokens = it->second.prompt_tokens;
    if (!it->second.started) --waiting_;
    e.callback = std::move(it->second.callback);
    live_.erase(it);
    ++finished_;
    return e;
  }
  static void deliver(std::vector<Ending>& endings) {
    for (Ending& e : endings) call(e.callback, e.out);
  }
  // A callback must not throw; one that does cannot stop the loop or the other requests' outputs.
  static void call(const OutputCallback& callback, const RequestOutput& out) noexcept {
    try {
      if (callback) callback(out);
    } catch (...) {
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<RequestId, Live> live_;  // submitted and not finished
  std::vector<engine_detail::NewRequest> inbox_;
  std::vector<RequestId> aborts_;
  RequestId next_id_ = 0;
  std::int64_t waiting_ = 0;  // live and not yet scheduled
  std::uint64_t wakes_ = 0;
  bool stopping_ = false;
  EngineStatus ranks_;  // as the loop published it at the end of its last round
  std::map<std::int64_t, std::vector<std::int64_t>> expert_load_;  // by layer, as the stages published it
  bool accepting_ = true;
  std::string failure_;        // the last failure of the ranks
  std::int64_t finished_ = 0;  // requests finished
};

}  // namespace tpkit
