// The kernels' thread pool.
//
// Not OpenMP: OpenMP's idle threads spin, and between two kernels they take
// the cores from MindSpore's own threads (measured: batch-1 latency 3-10x
// worse). These workers sleep on a condition variable, the calling thread
// works too, and the work is handed out in chunks, so a descheduled thread
// delays nobody: the caller waits only for workers that took a chunk, not
// for one that has not been scheduled since it was woken (with the cores
// shared, that wait was a scheduler time slice). SetNumThreads (exported by
// pool.cc) sets the size.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ghost {

class ThreadPool {
 public:
  ~ThreadPool() { resize(1); }

  int size() {
    std::lock_guard<std::mutex> guard(run_mutex_);
    return static_cast<int>(workers_.size()) + 1;
  }

  void resize(int threads) {
    std::lock_guard<std::mutex> guard(run_mutex_);
    stop_workers();
    // A new worker starts at the current generation: it must not take the
    // last (finished) parallel_for for new work.
    for (int i = 1; i < threads; ++i)
      workers_.emplace_back([this, start = generation_] { worker_loop(start); });
  }

  // body(begin, end) over [0, n) in chunks, on the calling thread and the
  // workers. `cost` (about the floats read, written or multiplied) below
  // kMinParallelCost runs on the calling thread alone: waking a worker costs
  // tens of microseconds, more than small operations take (batch 1).
  static constexpr int64_t kMinParallelCost = 1 << 18;

  void parallel_for(int64_t n, int64_t cost, const std::function<void(int64_t, int64_t)>& body) {
    std::lock_guard<std::mutex> guard(run_mutex_);  // one parallel_for at a time
    const int64_t threads = static_cast<int64_t>(workers_.size()) + 1;
    if (threads == 1 || n < 2 || cost < kMinParallelCost) {
      body(0, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      total_ = n;
      chunk_ = std::max<int64_t>(1, n / (threads * 4));
      next_.store(0);
      open_ = true;
      ++generation_;
    }
    wake_.notify_all();
    work();
    // Every chunk is taken. Wait only for the workers that took some: one
    // that the OS has not run yet (the cores busy with other processes)
    // finds the job closed when it wakes, and nobody waits for it.
    std::unique_lock<std::mutex> lock(mutex_);
    open_ = false;
    done_.wait(lock, [this] { return active_ == 0; });
  }

 private:
  void work() {
    for (;;) {
      const int64_t begin = next_.fetch_add(chunk_);
      if (begin >= total_) return;
      (*body_)(begin, std::min(total_, begin + chunk_));
    }
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || (open_ && generation_ != seen); });
        if (stop_) return;
        seen = generation_;
        ++active_;  // joins the open job: the caller waits for it now
      }
      work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
    workers_.clear();
    stop_ = false;
  }

  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  uint64_t generation_ = 0;
  int active_ = 0;  // workers inside the current job
  bool open_ = false;  // the current job takes workers
  bool stop_ = false;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t total_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
};

// The library's single pool (pool.cc).
ThreadPool& pool();


}  // namespace ghost
