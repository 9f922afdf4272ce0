//===- SimDevice.cpp - The GPU simulator of cuda-sim trainers -------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// A --target=cuda-sim trainer's kernels are compiled for the host. Each runs
// as one thread of a block: it reads its indices and meets the block's
// other threads at barriers through the nnc_sim_* functions (runtime.h). The
// simulator runs a block as NNC_GPU_BLOCK real threads, so that the kernels'
// synchronization is exercised as on a GPU (a missing barrier is a race
// here too), and keeps "device memory" in allocations of its own, so that a
// missing upload or download gives wrong results here too. Blocks run one
// after another, on one pool of threads made when the device is opened.
// Barriers start and end each block: the launcher and the threads meet at
// one to start it and at another when it is done, and pthread barriers wake
// their waiters without a mutex for each to take in turn (a launch costs
// hundreds of thread wakes; it is a simulator).
//
//===----------------------------------------------------------------------===//

#include "Gpu.h"

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

using namespace nnc;

namespace {

/// What the threads of the block under way share.
struct Block {
  int32_t Index = 0;
  int32_t Count = 1;
  void *Shared = nullptr;
  pthread_barrier_t Barrier;
};

/// The block that the calling thread runs in (null outside the simulator's
/// threads), and its index in it: what the nnc_sim_* functions answer.
thread_local Block *CurrentBlock = nullptr;
thread_local int32_t CurrentThread = 0;

/// Simulated device memory is aligned as cuMemAlloc's is.
constexpr size_t MemoryAlignment = 256;
constexpr size_t SharedAlignment = 64;

void *alignedZeroed(size_t Alignment, size_t Bytes) {
  size_t Rounded = (std::max<size_t>(Bytes, 1) + Alignment - 1) / Alignment *
                   Alignment;
  void *P = Rounded >= Bytes ? std::aligned_alloc(Alignment, Rounded) : nullptr;
  if (P)
    std::memset(P, 0, Rounded);
  return P;
}

class SimDevice final : public Device {
public:
  /// Starts the threads; throws DeviceError when they cannot be had.
  explicit SimDevice(const GpuProgram &P);
  ~SimDevice() override;

  std::string name() const override { return "simulated GPU"; }
  void *allocate(size_t Bytes) override;
  void release(void *Ptr) noexcept override { std::free(Ptr); }
  void upload(void *To, const void *From, size_t Bytes) override {
    std::memcpy(To, From, Bytes);
  }
  void download(void *To, const void *From, size_t Bytes) override {
    std::memcpy(To, From, Bytes);
  }
  void copy(void *To, const void *From, size_t Bytes) override {
    std::memcpy(To, From, Bytes);
  }

protected:
  void launchKernel(int32_t Kernel, bool Wide, void *Call) override;
  /// A launch returns when its blocks are done.
  void synchronize() override {}

private:
  void work(int32_t Thread);
  /// Lets the threads through their starting gate, to work or to stop.
  void openGate(bool Stop);
  /// Joins the started threads and frees what the constructor made.
  void release();

  Block B;
  std::vector<std::thread> Workers;
  /// The threads wait at the gate until every one of them exists, since
  /// Start and Done count them all.
  std::mutex M;
  std::condition_variable Gate;
  bool GateOpen = false;
  /// The block to run, written by the launcher before Start.
  GpuProgram::SimKernel Kernel = nullptr;
  nnc_call *Call = nullptr;
  bool Stopping = false;
  pthread_barrier_t Start, Done; ///< The threads and the launcher.
};

SimDevice::SimDevice(const GpuProgram &P) : Device(P) {
  B.Shared = alignedZeroed(SharedAlignment, NNC_SIM_SHARED);
  if (!B.Shared)
    throw DeviceError("simulated GPU: out of memory for its shared memory");
  // Barrier initialization fails only for want of memory (the counts are
  // valid): a Linux pthread barrier is a few words.
  if (pthread_barrier_init(&B.Barrier, nullptr, NNC_GPU_BLOCK) ||
      pthread_barrier_init(&Start, nullptr, NNC_GPU_BLOCK + 1) ||
      pthread_barrier_init(&Done, nullptr, NNC_GPU_BLOCK + 1)) {
    std::free(B.Shared);
    throw DeviceError("simulated GPU: out of memory for its barriers");
  }
  try {
    for (int32_t T = 0; T < NNC_GPU_BLOCK; ++T)
      Workers.emplace_back([this, T] { work(T); });
  } catch (const std::system_error &E) {
    openGate(true);
    release();
    throw DeviceError("simulated GPU: cannot start its " +
                      std::to_string(NNC_GPU_BLOCK) +
                      " threads: " + E.what());
  }
  openGate(false);
}

SimDevice::~SimDevice() {
  Stopping = true;
  pthread_barrier_wait(&Start);
  release();
}

void SimDevice::release() {
  for (std::thread &W : Workers)
    W.join();
  pthread_barrier_destroy(&B.Barrier);
  pthread_barrier_destroy(&Start);
  pthread_barrier_destroy(&Done);
  std::free(B.Shared);
}

void SimDevice::openGate(bool Stop) {
  {
    std::lock_guard<std::mutex> Lock(M);
    GateOpen = true;
    Stopping = Stop;
  }
  Gate.notify_all();
}

void SimDevice::work(int32_t Thread) {
  CurrentBlock = &B;
  CurrentThread = Thread;
  {
    std::unique_lock<std::mutex> Lock(M);
    Gate.wait(Lock, [&] { return GateOpen; });
    if (Stopping)
      return;
  }
  for (;;) {
    pthread_barrier_wait(&Start);
    if (Stopping)
      return;
    Kernel(Call);
    pthread_barrier_wait(&Done);
  }
}

void *SimDevice::allocate(size_t Bytes) {
  void *P = alignedZeroed(MemoryAlignment, Bytes);
  if (!P)
    throw DeviceError("simulated GPU: out of memory allocating " +
                      std::to_string(Bytes) + " bytes");
  return P;
}

void SimDevice::launchKernel(int32_t Index, bool Wide, void *CallArg) {
  // As on a GPU, several blocks when the kernel says any count is right.
  int32_t Blocks = Wide ? 4 : 1;
  Kernel = program().SimKernels[Index];
  Call = static_cast<nnc_call *>(CallArg);
  B.Count = Blocks;
  for (B.Index = 0; B.Index < Blocks; ++B.Index) {
    pthread_barrier_wait(&Start);
    pthread_barrier_wait(&Done);
  }
}

} // namespace

std::unique_ptr<Device> nnc::openSimulator(const GpuProgram &P) {
  return std::make_unique<SimDevice>(P);
}

extern "C" int32_t nnc_sim_thread(void) { return CurrentThread; }

extern "C" int32_t nnc_sim_block(void) {
  return CurrentBlock ? CurrentBlock->Index : 0;
}

extern "C" int32_t nnc_sim_blocks(void) {
  return CurrentBlock ? CurrentBlock->Count : 1;
}

extern "C" void nnc_sim_barrier(void) {
  if (CurrentBlock)
    pthread_barrier_wait(&CurrentBlock->Barrier);
}

extern "C" void *nnc_sim_shared(void) {
  return CurrentBlock ? CurrentBlock->Shared : nullptr;
}
