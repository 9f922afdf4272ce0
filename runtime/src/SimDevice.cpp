//===- SimDevice.cpp - The GPU simulator of cuda-sim trainers -------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// A --target=cuda-sim trainer's kernels are compiled for the host. Each runs
// as one thread of a block: it reads its indices and meets the block's
// other threads at barriers through the nnc_sim_* functions (runtime.h). The
// simulator keeps "device memory" in allocations of its own, so that a
// missing upload or download gives wrong results here as on a GPU.
//
// A block's NNC_GPU_BLOCK threads are fibers, each with a stack of its own,
// run on the launching thread: each runs until it reaches a barrier or
// ends, then the next; when all have, the round is over and the next one
// lets them past the barrier. On x86-64 a switch saves and loads the few
// registers a call preserves (no system call, as ucontext's signal mask
// needs): a barrier of 256 real threads cost milliseconds.
// Rounds run the threads in alternate orders, first to last then last to
// first, so that a missing barrier (a thread reading what another writes in
// the same round) gives wrong results whichever thread writes first. So do
// launches their blocks, which a GPU runs in no set order: a block reading
// what another writes in the same launch gives wrong results. With
// NNC_SIM_BLOCKS=reversed in the environment, the first launch runs its
// blocks last to first (and so every other launch after it): a result that
// changes with it depends on the order of the blocks. A block's
// shared memory starts as NaNs (all bits set), as a GPU's holds whatever
// was there: a read of what the block never wrote shows in its results. A
// barrier that some threads of a block never reach is an error, where a
// GPU would hang or be undefined.
//
//===----------------------------------------------------------------------===//

#include "Gpu.h"

#include <sys/mman.h>
#include <unistd.h>
#ifndef __x86_64__
#include <ucontext.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define NNC_ASAN_FIBERS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NNC_ASAN_FIBERS 1
#endif
#endif
#ifdef NNC_ASAN_FIBERS
#include <sanitizer/common_interface_defs.h>
#endif

using namespace nnc;

namespace {

/// Simulated device memory is aligned as cuMemAlloc's is.
constexpr size_t MemoryAlignment = 256;
constexpr size_t SharedAlignment = 64;
/// A fiber's stack: a kernel's frame is small, but the host's libm and
/// AddressSanitizer's frames are not.
constexpr size_t StackBytes = 256 * 1024;

void *alignedZeroed(size_t Alignment, size_t Bytes) {
  size_t Rounded =
      (std::max<size_t>(Bytes, 1) + Alignment - 1) / Alignment * Alignment;
  void *P = Rounded >= Bytes ? std::aligned_alloc(Alignment, Rounded) : nullptr;
  if (P)
    std::memset(P, 0, Rounded);
  return P;
}

#ifdef __x86_64__
// nnc_sim_switch(Save, Load): pushes the registers that the System V ABI
// has a call preserve (and the SSE and x87 control words), stores the stack
// pointer in *Save, and goes on where stack pointer Load was saved.
asm(R"(
  .text
  .p2align 4
  .type nnc_sim_switch,@function
nnc_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr 8(%rsp)
  fldcw (%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size nnc_sim_switch, .-nnc_sim_switch
)");
extern "C" void nnc_sim_switch(void **Save, void *Load);

/// Where a fiber or the launcher goes on from.
struct Context {
  void *StackPointer = nullptr;

  /// A context that calls \p Entry (which must never return) on the stack
  /// [Stack, Stack + Bytes).
  void start(char *Stack, size_t Bytes, void (*Entry)()) {
    auto **Top = reinterpret_cast<void **>(
        reinterpret_cast<uintptr_t>(Stack + Bytes) & ~uintptr_t(15));
    *--Top = nullptr; // Entry's return address: as after a call, aligned
    *--Top = reinterpret_cast<void *>(Entry); // nnc_sim_switch's
    for (int Register = 0; Register < 6; ++Register)
      *--Top = nullptr;
    Top -= 2;
    auto *Control = reinterpret_cast<uint32_t *>(Top);
    Control[0] = 0x037f; // x87: the default, every exception masked
    Control[2] = 0x1f80; // SSE: every exception masked, round to nearest
    StackPointer = Top;
  }
};

void switchContext(Context &From, Context &To) {
  nnc_sim_switch(&From.StackPointer, To.StackPointer);
}
#else
struct Context {
  ucontext_t State;

  void start(char *Stack, size_t Bytes, void (*Entry)()) {
    getcontext(&State);
    State.uc_stack.ss_sp = Stack;
    State.uc_stack.ss_size = Bytes;
    State.uc_link = nullptr;
    makecontext(&State, Entry, 0);
  }
};

void switchContext(Context &From, Context &To) {
  swapcontext(&From.State, &To.State);
}
#endif

/// One simulated thread of the block under way.
struct Fiber {
  enum class State { Running, AtBarrier, Ended };
  Context Resume;
  char *Stack = nullptr;
  State Now = State::Ended;
  void *FakeStack = nullptr; ///< AddressSanitizer's, while switched out
};

class SimDevice;

/// The device whose block runs on this thread, and the fiber running:
/// what the nnc_sim_* functions answer (none outside a launch).
thread_local SimDevice *Running = nullptr;
thread_local int32_t RunningThread = 0;

class SimDevice final : public Device {
public:
  /// Maps the fibers' stacks; throws DeviceError when they cannot be had.
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

  int32_t block() const { return BlockIndex; }
  int32_t blocks() const { return BlockCount; }
  void *shared() const { return Shared; }
  /// nnc_sim_barrier: back to the launcher until the round is over.
  void barrier();

protected:
  void launchKernel(int32_t Kernel, int32_t Blocks, void *Call) override;
  /// A launch returns when its blocks are done.
  void synchronize() override {}
  void beginTiming() override { Started = std::chrono::steady_clock::now(); }
  void endTiming(int32_t Kernel) override {
    addKernelTime(Kernel, std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - Started)
                              .count());
  }
  const char *timedBy() const override {
    return "the host's clock (simulated GPU)";
  }
  void beginRecord() override { Recorder = std::make_unique<Launches>(); }
  std::unique_ptr<Record> endRecord() override { return std::move(Recorder); }
  void replay(Record &R) override {
    auto &L = static_cast<Launches &>(R);
    for (const Launch &Each : L.Order)
      runKernel(Each.Kernel, Each.Blocks, Each.Call);
  }

private:
  struct Launch {
    int32_t Kernel;
    int32_t Blocks;
    void *Call;
  };
  struct Launches final : Record {
    std::vector<Launch> Order;
  };
  /// Runs a kernel's blocks to their end.
  void runKernel(int32_t Kernel, int32_t Blocks, void *Call);
  /// Runs one block of the kernel to its end.
  void runBlock();
  /// Switches from the launcher to fiber T until it reaches a barrier or
  /// ends.
  void resume(int32_t T);
  static void fiberMain();

  /// While a schedule is recorded, its launches.
  std::unique_ptr<Launches> Recorder;
  std::chrono::steady_clock::time_point Started; ///< Of the timed launch.
  std::vector<Fiber> Threads;
  char *Stacks = nullptr;
  size_t MappedBytes = 0;
  void *Shared = nullptr;
  Context Launcher;
  /// The launcher's stack, for AddressSanitizer.
  const void *LauncherStack = nullptr;
  size_t LauncherStackBytes = 0;
  void *LauncherFakeStack = nullptr;

  GpuProgram::SimKernel Kernel = nullptr;
  nnc_call *Call = nullptr;
  int32_t BlockIndex = 0, BlockCount = 1;
  /// Launches run so far: odd ones run their blocks last to first.
  uint64_t LaunchCount = 0;
};

void startSwitch(void **FakeStack, const void *Bottom, size_t Bytes) {
#ifdef NNC_ASAN_FIBERS
  __sanitizer_start_switch_fiber(FakeStack, Bottom, Bytes);
#else
  (void)FakeStack, (void)Bottom, (void)Bytes;
#endif
}

void finishSwitch(void *FakeStack, const void **OldBottom, size_t *OldBytes) {
#ifdef NNC_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(FakeStack, OldBottom, OldBytes);
#else
  (void)FakeStack, (void)OldBottom, (void)OldBytes;
#endif
}

SimDevice::SimDevice(const GpuProgram &P) : Device(P), Threads(NNC_GPU_BLOCK) {
  const char *Blocks = std::getenv("NNC_SIM_BLOCKS");
  if (Blocks && std::strcmp(Blocks, "reversed") == 0)
    LaunchCount = 1;
  // Each stack above a page that faults, so that an overflow stops the
  // trainer rather than writing over the next fiber's stack.
  size_t Page = size_t(sysconf(_SC_PAGESIZE)), Slot = StackBytes + Page;
  MappedBytes = Slot * Threads.size();
  void *Mapped = mmap(nullptr, MappedBytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (Mapped == MAP_FAILED)
    throw DeviceError("simulated GPU: cannot map its threads' stacks: " +
                      std::string(std::strerror(errno)));
  Stacks = static_cast<char *>(Mapped);
  for (size_t T = 0; T < Threads.size(); ++T) {
    mprotect(Stacks + T * Slot, Page, PROT_NONE);
    Threads[T].Stack = Stacks + T * Slot + Page;
  }
  Shared = alignedZeroed(SharedAlignment, NNC_SIM_SHARED);
  if (!Shared) {
    munmap(Stacks, MappedBytes);
    throw DeviceError("simulated GPU: out of memory for its shared memory");
  }
}

SimDevice::~SimDevice() {
  std::free(Shared);
  munmap(Stacks, MappedBytes);
}

void *SimDevice::allocate(size_t Bytes) {
  void *P = alignedZeroed(MemoryAlignment, Bytes);
  if (!P)
    throw DeviceError("simulated GPU: out of memory allocating " +
                      std::to_string(Bytes) + " bytes");
  return P;
}

void SimDevice::launchKernel(int32_t Index, int32_t Blocks, void *CallArg) {
  if (Recorder)
    Recorder->Order.push_back({Index, Blocks, CallArg});
  else
    runKernel(Index, Blocks, CallArg);
}

void SimDevice::runKernel(int32_t Index, int32_t Blocks, void *CallArg) {
  // As on a GPU, several blocks when the kernel says any count is right.
  Kernel = program().SimKernels[Index];
  Call = static_cast<nnc_call *>(CallArg);
  BlockCount = Blocks ? Blocks : 4;
  bool Backward = LaunchCount++ % 2;
  Running = this;
  try {
    for (int32_t B = 0; B < BlockCount; ++B) {
      BlockIndex = Backward ? BlockCount - 1 - B : B;
      runBlock();
    }
  } catch (...) {
    Running = nullptr;
    throw;
  }
  Running = nullptr;
}

void SimDevice::runBlock() {
  std::memset(Shared, 0xff, NNC_SIM_SHARED);
  for (Fiber &F : Threads) {
    F.Resume.start(F.Stack, StackBytes, fiberMain);
    F.Now = Fiber::State::Running;
  }
  int32_t Count = int32_t(Threads.size());
  for (bool Forward = true;; Forward = !Forward) {
    int32_t AtBarrier = 0, Ended = 0;
    for (int32_t I = 0; I < Count; ++I) {
      int32_t T = Forward ? I : Count - 1 - I;
      if (Threads[T].Now != Fiber::State::Ended)
        resume(T);
      (Threads[T].Now == Fiber::State::Ended ? Ended : AtBarrier) += 1;
    }
    if (Ended == Count)
      return;
    if (Ended > 0) {
      // The fibers at the barrier are left as they are: the next block
      // makes them anew.
      throw DeviceError(
          "simulated GPU: " + std::to_string(AtBarrier) + " of block " +
          std::to_string(BlockIndex) + "'s " + std::to_string(Count) +
          " threads wait at a barrier that the others ended without");
    }
  }
}

void SimDevice::resume(int32_t T) {
  Fiber &F = Threads[T];
  F.Now = Fiber::State::Running;
  RunningThread = T;
  startSwitch(&LauncherFakeStack, F.Stack, StackBytes);
  switchContext(Launcher, F.Resume);
  finishSwitch(LauncherFakeStack, nullptr, nullptr);
}

void SimDevice::fiberMain() {
  SimDevice &D = *Running;
  finishSwitch(nullptr, &D.LauncherStack, &D.LauncherStackBytes);
  D.Kernel(D.Call);
  Fiber &F = D.Threads[RunningThread];
  F.Now = Fiber::State::Ended;
  // Back to the launcher for good: the next block starts the fiber anew.
  startSwitch(nullptr, D.LauncherStack, D.LauncherStackBytes);
  switchContext(F.Resume, D.Launcher);
}

void SimDevice::barrier() {
  Fiber &F = Threads[RunningThread];
  F.Now = Fiber::State::AtBarrier;
  startSwitch(&F.FakeStack, LauncherStack, LauncherStackBytes);
  switchContext(F.Resume, Launcher);
  finishSwitch(F.FakeStack, &LauncherStack, &LauncherStackBytes);
}

} // namespace

std::unique_ptr<Device> nnc::openSimulator(const GpuProgram &P) {
  return std::make_unique<SimDevice>(P);
}

extern "C" int32_t nnc_sim_thread(void) { return Running ? RunningThread : 0; }

extern "C" int32_t nnc_sim_block(void) {
  return Running ? Running->block() : 0;
}

extern "C" int32_t nnc_sim_blocks(void) {
  return Running ? Running->blocks() : 1;
}

extern "C" void nnc_sim_barrier(void) {
  if (Running)
    Running->barrier();
}

extern "C" void *nnc_sim_shared(void) {
  return Running ? Running->shared() : nullptr;
}
