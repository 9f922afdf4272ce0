//===- ThreadPool.cpp - The workers of generated parallel loops -----------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// One job at a time: the caller publishes it under a generation number,
// workers spin briefly for it (a training step calls in thousands of times
// a second, and a futex wake costs more than a small chunk) and then sleep
// on a condition variable.
//
//===----------------------------------------------------------------------===//

#include "ThreadPool.h"

#include "nnc/runtime.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <sched.h>
#include <thread>
#include <vector>

using namespace nnc;

namespace {

using Body = void (*)(void *, int64_t, int64_t);

class Pool {
public:
  ~Pool() { stop(); }

  void start(int Threads) {
    stop();
    Count = std::max(1, Threads);
    Stopping = false;
    for (int I = 1; I < Count; ++I)
      Workers.emplace_back([this, I] { work(I); });
  }

  int threads() const { return Count; }

  void run(int64_t N, Body Fn, void *Ctx) {
    int Parts = int(std::min<int64_t>(Count, N));
    if (Parts <= 1) {
      if (N > 0)
        Fn(Ctx, 0, N);
      return;
    }
    {
      std::lock_guard<std::mutex> Lock(M);
      Job = {Fn, Ctx, N, Parts};
      // Every worker acknowledges, busy or not, so that none still reads
      // this job when the next one is published.
      Pending.store(Count - 1, std::memory_order_relaxed);
      Generation.fetch_add(1, std::memory_order_release);
    }
    Wake.notify_all();
    runPart(0);
    while (Pending.load(std::memory_order_acquire) != 0)
      std::this_thread::yield();
  }

private:
  struct Task {
    Body Fn = nullptr;
    void *Ctx = nullptr;
    int64_t N = 0;
    int Parts = 0;
  };

  void runPart(int Part) {
    int64_t Begin = Job.N * Part / Job.Parts,
            End = Job.N * (Part + 1) / Job.Parts;
    if (Begin < End)
      Job.Fn(Job.Ctx, Begin, End);
  }

  void work(int Index) {
    uint64_t Seen = 0;
    for (;;) {
      uint64_t Now = Generation.load(std::memory_order_acquire);
      for (int Spin = 0; Now == Seen && Spin < 20000; ++Spin) {
        std::this_thread::yield();
        Now = Generation.load(std::memory_order_acquire);
      }
      if (Now == Seen) {
        std::unique_lock<std::mutex> Lock(M);
        Wake.wait(Lock, [&] {
          return Stopping || Generation.load(std::memory_order_acquire) != Seen;
        });
        if (Stopping)
          return;
        Now = Generation.load(std::memory_order_acquire);
      }
      Seen = Now;
      if (Index < Job.Parts)
        runPart(Index);
      Pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> Lock(M);
      Stopping = true;
    }
    Wake.notify_all();
    for (std::thread &W : Workers)
      W.join();
    Workers.clear();
  }

  int Count = 1;
  std::vector<std::thread> Workers;
  std::mutex M;
  std::condition_variable Wake;
  bool Stopping = false;
  Task Job;
  std::atomic<uint64_t> Generation{0};
  std::atomic<int> Pending{0};
};

Pool &pool() {
  static Pool P;
  return P;
}

} // namespace

void nnc::setThreadCount(int Threads) { pool().start(Threads); }

int nnc::threadCount() { return pool().threads(); }

int nnc::availableCores() {
  cpu_set_t Set;
  if (sched_getaffinity(0, sizeof(Set), &Set) == 0)
    return std::max(1, CPU_COUNT(&Set));
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

extern "C" void nnc_parallel_for(int64_t N, Body Fn, void *Ctx) {
  pool().run(N, Fn, Ctx);
}
