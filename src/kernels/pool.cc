// The library's thread pool instance, its size and spin-wait setters.
#include "thread_pool.h"

namespace ghost {

ThreadPool& pool() {
  // Never destroyed: the workers must outlive every caller, including
  // MindSpore's threads running kernels while the process exits.
  static ThreadPool* instance = [] {
    auto* p = new ThreadPool();
    p->resize(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    return p;
  }();
  return *instance;
}

}  // namespace ghost

extern "C" {
void SetNumThreads(int n) { ghost::pool().resize(std::max(1, n)); }
int GetNumThreads() { return ghost::pool().size(); }
// Microseconds idle workers spin for the next job; 0 (training) sleeps at once.
void SetSpinWait(int microseconds) { ghost::pool().set_spin_us(microseconds); }
int GetSpinWait() { return ghost::pool().spin_us(); }
}
