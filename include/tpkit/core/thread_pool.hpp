// tpkit/core/thread_pool.hpp: the threads inside one rank. Created once (by the rank's ops)
// and reused by every call, never per call.
//
// run(fn) calls fn(part) for part = 0 .. size() - 1, part 0 on the calling thread and each other
// part on its own worker, and returns when all are done. Callers split work so that each output
// element is computed by exactly one part, in the order a single thread would use: results are
// then bitwise identical at any thread count.
//
// Workers spin briefly after a job (a decode step runs several back to back), then sleep on a
// condition variable, so an idle pool costs no CPU. One caller at a time: a pool belongs to one
// rank's thread, and a second caller while a run is in progress is an error, not a race.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"

namespace tpkit {

class ThreadPool {
 public:
  // threads >= 1: the calling thread plus threads - 1 workers.
  explicit ThreadPool(int threads) : size_(threads) {
    TPKIT_REQUIRE(threads >= 1 && threads <= 1024, "a thread pool needs between 1 and 1024 threads (got ", threads,
                  ")");
    workers_.reserve(std::size_t(threads - 1));
    try {
      for (int part = 1; part < threads; ++part) workers_.emplace_back([this, part] { work(part); });
    } catch (...) {  // no thread left running on a half-built pool
      stop_workers();
      throw;
    }
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { stop_workers(); }

  int size() const { return size_; }

  // Runs fn(part) on every part and waits; rethrows the first exception a part threw.
  template <class F>
  void run(F&& fn) {
    if (size_ == 1) return fn(0);
    if (busy_.exchange(true, std::memory_order_acquire))
      TPKIT_THROW(InvalidArgument,
                  "a thread pool (HostOps with threads) was used by two threads at once; give each "
                  "rank its own HostOps");
    struct Release {
      std::atomic<bool>& flag;
      ~Release() { flag.store(false, std::memory_order_release); }
    } release{busy_};
    using Fn = std::remove_reference_t<F>;
    job_ = [](void* f, int part) { (*static_cast<Fn*>(f))(part); };
    job_arg_ = static_cast<void*>(&fn);
    error_ = nullptr;
    pending_.store(size_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    try {
      fn(0);
    } catch (...) {
      record(std::current_exception());
    }
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < kSpins) {
        pause();
        continue;
      }
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static constexpr int kSpins = 1 << 14;

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::move(e);
  }

  void work(int part) {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t now = generation_.load(std::memory_order_acquire);
      for (int spin = 0; now == seen; ++spin) {
        if (spin < kSpins) {
          pause();
        } else {
          std::unique_lock<std::mutex> lock(mutex_);
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        }
        now = generation_.load(std::memory_order_acquire);
      }
      seen = now;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_) return;
      }
      try {
        job_(job_arg_, part);
      } catch (...) {
        record(std::current_exception());
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller may be between its check and its wait
        done_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> busy_{false};  // a run is in progress
  bool stop_ = false;              // under mutex_
  void (*job_)(void*, int) = nullptr;
  void* job_arg_ = nullptr;
  std::exception_ptr error_;
};

}  // namespace tpkit
