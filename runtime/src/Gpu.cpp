//===- Gpu.cpp - Devices that run a GPU trainer's kernels -----------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Gpu.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <utility>

// A CPU-only trainer defines none of the GPU symbols, and must link all the
// same: every reference to them is weak, and they read as null. This is the
// only file that names them, so that no strong reference elsewhere undoes
// that.
extern "C" {
extern const char *const nnc_gpu_kernels[] __attribute__((weak));
extern const int64_t nnc_gpu_workspace[2] __attribute__((weak));
void nnc_gpu_train_step(void *) __attribute__((weak));
void nnc_gpu_loss_grad(void *) __attribute__((weak));
void nnc_gpu_eval(void *) __attribute__((weak));
void nnc_gpu_predict(void *) __attribute__((weak));
void nnc_gpu_gather(void *) __attribute__((weak));
extern void (*const nnc_gpu_probes[])(void *) __attribute__((weak));
extern const char nnc_cuda_ptx[] __attribute__((weak));
extern void (*const nnc_sim_kernels[])(nnc_call *) __attribute__((weak));
}

using namespace nnc;

GpuProgram nnc::trainerGpuProgram() {
  GpuProgram P;
  P.Kernels = nnc_gpu_kernels;
  P.Workspace = nnc_gpu_workspace;
  P.TrainStep = nnc_gpu_train_step;
  P.LossGrad = nnc_gpu_loss_grad;
  P.Eval = nnc_gpu_eval;
  P.Predict = nnc_gpu_predict;
  P.Gather = nnc_gpu_gather;
  P.Probes = nnc_gpu_probes;
  P.Ptx = nnc_cuda_ptx;
  P.SimKernels = nnc_sim_kernels;
  return P;
}

size_t GpuProgram::kernelCount() const {
  size_t N = 0;
  while (Kernels && Kernels[N])
    ++N;
  return N;
}

void Device::launchSchedule(GpuProgram::Schedule S, const char *Name,
                            void *CallArg, int64_t CallRows) {
  Call = CallArg;
  Rows = CallRows;
  Failure.clear();
  if (!Recording) {
    S(this);
  } else {
    auto Found =
        std::find_if(Records.begin(), Records.end(), [&](const Recorded &R) {
          return R.S == S && R.Call == CallArg && R.Rows == CallRows;
        });
    if (Found == Records.end()) {
      beginRecord();
      S(this);
      std::unique_ptr<Record> Launches;
      try {
        Launches = endRecord();
      } catch (const DeviceError &) {
        if (Failure.empty()) // else the launch's failure says more
          throw;
      }
      if (Failure.empty()) {
        // A few arguments recur (a batch's rows, the last batch's, the
        // evaluation's): the oldest recording goes beyond them.
        constexpr size_t Kept = 8;
        if (Records.size() == Kept)
          Records.erase(Records.begin());
        Records.push_back({S, CallArg, CallRows, std::move(Launches)});
        Found = std::prev(Records.end());
      }
    }
    if (Found != Records.end())
      replay(*Found->Launches);
  }
  Call = nullptr;
  if (!Failure.empty())
    throw DeviceError(Failure + " in " + Name);
}

// A kernel's fault shows at the wait after the launches: the driver knows no
// more than the schedules it may have come from (CUDA_LAUNCH_BLOCKING=1
// makes every launch wait, and so names the kernel).
static DeviceError failedAfter(const DeviceError &E, const std::string &What) {
  return DeviceError(std::string(E.what()) + " after " + What);
}

void Device::run(GpuProgram::Schedule S, const char *Name, void *CallArg,
                 int64_t CallRows, const Readback *Result) {
  launchSchedule(S, Name, CallArg, CallRows);
  int Slot = NextSlot;
  NextSlot ^= 1;
  std::optional<Pending> Before = std::exchange(Queued, std::nullopt);
  try {
    if (Result)
      startReadback(Slot, Result->From, Result->Bytes);
    synchronize();
  } catch (const DeviceError &E) {
    throw failedAfter(E, Before ? std::string(Before->Name) + " or " + Name
                                : std::string(Name));
  }
  if (Before)
    finish(*Before);
  if (Result)
    std::memcpy(Result->To, readback(Slot), Result->Bytes);
}

void Device::queue(GpuProgram::Schedule S, const char *Name, void *CallArg,
                   int64_t CallRows, const Readback &Result) {
  markInputsTaken();
  launchSchedule(S, Name, CallArg, CallRows);
  int Slot = NextSlot;
  NextSlot ^= 1;
  std::optional<Pending> Before = std::exchange(Queued, std::nullopt);
  try {
    startReadback(Slot, Result.From, Result.Bytes);
    waitInputsTaken();
  } catch (const DeviceError &E) {
    throw failedAfter(E, Before ? Before->Name : Name);
  }
  Queued = Pending{Result, Slot, Name};
  if (Before)
    finish(*Before);
}

void Device::finishQueued() {
  std::optional<Pending> Last = std::exchange(Queued, std::nullopt);
  if (!Last)
    return;
  try {
    synchronize();
  } catch (const DeviceError &E) {
    throw failedAfter(E, Last->Name);
  }
  finish(*Last);
}

void Device::finish(const Pending &P) {
  std::memcpy(P.Result.To, readback(P.Slot), P.Result.Bytes);
}

void Device::startReadback(int Slot, const void *From, size_t Bytes) {
  synchronize();
  Readbacks[Slot].resize(Bytes);
  download(Readbacks[Slot].data(), From, Bytes);
}

void Device::launch(int32_t Kernel, int32_t Blocks) noexcept {
  if (!Failure.empty())
    return;
  size_t Count = Program.kernelCount();
  if (!Call) {
    Failure = "nnc_gpu_launch called outside a launch schedule";
    return;
  }
  if (Kernel < 0 || size_t(Kernel) >= Count) {
    Failure = "nnc_gpu_launch: kernel " + std::to_string(Kernel) +
              " does not exist (the trainer has " + std::to_string(Count) + ")";
    return;
  }
  if (Blocks < 0) {
    Failure = "nnc_gpu_launch: " + std::to_string(Blocks) + " blocks for " +
              Program.Kernels[Kernel];
    return;
  }
  if (Trace) {
    if (Blocks == 0)
      std::fprintf(stderr, "gpu: %s wide\n", Program.Kernels[Kernel]);
    else if (Blocks == 1)
      std::fprintf(stderr, "gpu: %s block\n", Program.Kernels[Kernel]);
    else
      std::fprintf(stderr, "gpu: %s %d blocks\n", Program.Kernels[Kernel],
                   Blocks);
  }
  try {
    if (Profiling)
      beginTiming();
    launchKernel(Kernel, Blocks, Call);
    if (Profiling)
      endTiming(Kernel);
  } catch (const DeviceError &E) {
    Failure =
        std::string(E.what()) + " (kernel " + Program.Kernels[Kernel] + ")";
  }
}

void Device::addKernelTime(int32_t Kernel, double Seconds) {
  if (Times.empty())
    Times.resize(Program.kernelCount());
  Times[size_t(Kernel)].Launches++;
  Times[size_t(Kernel)].Seconds += Seconds;
}

std::string Device::profileReport() {
  synchronize();
  collectTimings();
  std::vector<size_t> Order;
  double Total = 0;
  int64_t Launches = 0;
  for (size_t K = 0; K < Times.size(); ++K)
    if (Times[K].Launches) {
      Order.push_back(K);
      Total += Times[K].Seconds;
      Launches += Times[K].Launches;
    }
  std::stable_sort(Order.begin(), Order.end(), [&](size_t A, size_t B) {
    return Times[A].Seconds > Times[B].Seconds;
  });
  char Line[512];
  std::snprintf(Line, sizeof(Line),
                "gpu profile: %.3f ms in %lld launches of %zu kernels, each "
                "launch timed by %s\n",
                Total * 1e3, (long long)Launches, Order.size(), timedBy());
  std::string Report = Line;
  Report += "gpu profile:   share    total ms   launches     mean us  kernel\n";
  for (size_t K : Order) {
    const KernelTime &T = Times[K];
    std::snprintf(Line, sizeof(Line),
                  "gpu profile: %6.1f%% %11.3f %10lld %11.2f  %s\n",
                  Total > 0 ? 100 * T.Seconds / Total : 0.0, T.Seconds * 1e3,
                  (long long)T.Launches, T.Seconds * 1e6 / double(T.Launches),
                  Program.Kernels[K]);
    Report += Line;
  }
  return Report;
}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&Other) noexcept {
  if (this != &Other) {
    reset();
    Dev = Other.Dev;
    Ptr = Other.Ptr;
    Other.Ptr = nullptr;
  }
  return *this;
}

void DeviceBuffer::allocate(Device &D, size_t Bytes) {
  reset();
  Ptr = D.allocate(Bytes);
  Dev = &D;
}

void DeviceBuffer::reset() noexcept {
  if (Ptr)
    Dev->release(Ptr);
  Ptr = nullptr;
}

std::unique_ptr<Device> nnc::openGpu(const GpuProgram &P, std::string &Why) {
  if (P.SimKernels) {
    try {
      return openSimulator(P);
    } catch (const DeviceError &E) {
      Why = E.what();
      return nullptr;
    }
  }
  if (P.Ptx)
    return openCuda(P, Why);
  Why = "the trainer's GPU code has neither PTX nor simulator kernels";
  return nullptr;
}

extern "C" void nnc_gpu_launch(void *Dev, int32_t Kernel, int32_t Blocks) {
  static_cast<Device *>(Dev)->launch(Kernel, Blocks);
}

extern "C" int64_t nnc_gpu_rows(void *Dev) {
  return static_cast<Device *>(Dev)->rows();
}
