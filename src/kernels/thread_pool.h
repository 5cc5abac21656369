// The kernels' thread pool.
//
// Not OpenMP: OpenMP's idle threads spin without limit, and between two
// kernels they take the cores from MindSpore's own threads (measured:
// batch-1 latency 3-10x worse). These workers spin only briefly (spin_us_,
// about 100 microseconds) for the next job, then sleep on a condition
// variable: at batch 1 the jobs are tens of microseconds apart and waking a
// sleeping worker cost more than the job, while a longer wait hands the core
// back. When the machine is crowded (load average above the core count) or
// spinning is turned off (training: MindSpore's own threads need the cores),
// workers sleep at once. The calling thread works too, and the work is
// handed out in chunks, so a descheduled thread delays nobody: the caller
// waits only for workers that took a chunk, not for one that has not been
// scheduled since it was woken (with the cores shared, that wait was a
// scheduler time slice). SetNumThreads and SetSpinWait (pool.cc) set it up.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GHOST_CPU_RELAX() _mm_pause()
#else
#define GHOST_CPU_RELAX() std::this_thread::yield()
#endif

namespace ghost {

class ThreadPool {
 public:
  using Clock = std::chrono::steady_clock;

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
      workers_.emplace_back([this, start = generation_.load()] { worker_loop(start); });
  }

  // How long workers and caller spin before sleeping; 0: sleep at once.
  void set_spin_us(int microseconds) { spin_us_.store(std::max(0, microseconds)); }
  int spin_us() const { return spin_us_.load(); }

  // body(begin, end) over [0, n) in chunks, on the calling thread and the
  // workers. `cost` (about the floats read, written or multiplied) below
  // kMinParallelCost runs on the calling thread alone. With spinning workers
  // a hand-over costs about a microsecond, so jobs from 2^13 floats pay
  // (measured, benchmark/RESULTS.md "Batch 1"); sleeping workers take tens of
  // microseconds to wake, so then only jobs from 2^18 do (the old threshold).
  static constexpr int64_t kMinParallelCost = 1 << 13;
  static constexpr int64_t kMinParallelCostSleeping = 1 << 18;

  void parallel_for(int64_t n, int64_t cost, const std::function<void(int64_t, int64_t)>& body) {
    std::lock_guard<std::mutex> guard(run_mutex_);  // one parallel_for at a time
    const int64_t threads = static_cast<int64_t>(workers_.size()) + 1;
    const bool spin = spinning();
    spin_now_.store(spin);
    if (threads == 1 || n < 2 || cost < (spin ? kMinParallelCost : kMinParallelCostSleeping)) {
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
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    work();
    // Every chunk is taken. Wait only for the workers that took some: one
    // that the OS has not run yet (the cores busy with other processes)
    // finds the job closed when it wakes, and nobody waits for it.
    std::unique_lock<std::mutex> lock(mutex_);
    open_ = false;
    if (spin && active_.load() != 0) {
      lock.unlock();
      spin_until([this] { return active_.load() == 0; });
      lock.lock();
    }
    done_.wait(lock, [this] { return active_.load() == 0; });
  }

 private:
  // Spin allowed now: not turned off, and the machine not crowded. The load
  // average is read at most every 0.5 s (a file read costs ~10 us).
  bool spinning() {
    if (spin_us_.load() == 0) return false;
    const auto now = Clock::now();
    if (now - load_checked_ > std::chrono::milliseconds(500)) {
      load_checked_ = now;
      crowded_ = load_average() > static_cast<double>(std::thread::hardware_concurrency());
    }
    return !crowded_;
  }

  static double load_average() {
    double load = 0.0;
    if (FILE* file = std::fopen("/proc/loadavg", "r")) {
      if (std::fscanf(file, "%lf", &load) != 1) load = 0.0;
      std::fclose(file);
    }
    return load;
  }

  // Busy-waits up to spin_us_ for done(); true when it came.
  template <typename Done>
  bool spin_until(Done done) {
    const auto deadline = Clock::now() + std::chrono::microseconds(spin_us_.load());
    for (int i = 0;; ++i) {
      if (done()) return true;
      if ((i & 63) == 63 && Clock::now() > deadline) return false;
      GHOST_CPU_RELAX();
    }
  }

  void work() {
    for (;;) {
      const int64_t begin = next_.fetch_add(chunk_);
      if (begin >= total_) return;
      (*body_)(begin, std::min(total_, begin + chunk_));
    }
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      if (spin_now_.load())
        spin_until([&] { return generation_.load() != seen || stop_flag_.load(); });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || (open_ && generation_.load() != seen); });
        if (stop_) return;
        seen = generation_.load();
        active_.fetch_add(1);  // joins the open job: the caller waits for it now
      }
      work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (active_.fetch_sub(1) == 1) done_.notify_one();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      stop_flag_.store(true);
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
    workers_.clear();
    stop_ = false;
    stop_flag_.store(false);
  }

  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};  // written under mutex_, read spinning
  std::atomic<int> active_{0};  // workers inside the current job (changed under mutex_)
  bool open_ = false;  // the current job takes workers
  bool stop_ = false;
  std::atomic<bool> stop_flag_{false};  // stop_, for spinning workers
  std::atomic<int> spin_us_{100};
  std::atomic<bool> spin_now_{false};  // the last job's spinning() verdict
  Clock::time_point load_checked_{};
  bool crowded_ = false;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t total_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
};

// The library's single pool (pool.cc).
ThreadPool& pool();


}  // namespace ghost
