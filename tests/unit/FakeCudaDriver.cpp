//===- FakeCudaDriver.cpp - A CUDA driver without a GPU, for tests --------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// libcuda.so.1 for the tests of the runtime's CUDA device
/// (runtime/src/CudaDevice.cpp) on machines without a GPU: put first on
/// LD_LIBRARY_PATH, it is the driver that a --target=cuda trainer opens.
/// Device memory is host memory. A kernel computes nothing: its launch
/// writes the launch's number (1, 2, ...) into its nnc_call's loss, so that
/// a loss read back shows whether it was read after the launch. Launches
/// and asynchronous copies wait in one queue, in order, until something
/// waits for them (a synchronization, a synchronous copy, an event), as on
/// a GPU. With FAKE_CUDA_STATS set, it says at exit how many launches were
/// still queued after a wait, at the most: more than none when the host
/// queues work while the device is busy. FAKE_CUDA_NAN_LAUNCH=K makes
/// launch K write NaN; FAKE_CUDA_MEMORY=BYTES is the device's memory, which
/// an allocation fails to find room in (out of memory) beyond that.
///
/// It checks the calls against the driver's rules, and a call that breaks
/// one ends the process with "fake libcuda: ..." on stderr: memory it did
/// not allocate, an asynchronous copy from or to pageable host memory (the
/// real driver would make it wait), the host memory of an asynchronous
/// upload changed before the upload is done, a kernel that is not in the
/// module's PTX, a block of other than NNC_GPU_BLOCK threads. At exit it
/// reports device or page-locked memory never freed, and host memory left
/// registered.
///
//===----------------------------------------------------------------------===//

#include "nnc/runtime.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

using CUresult = int;
using CUdeviceptr = unsigned long long;
constexpr CUresult Success = 0, InvalidValue = 1, OutOfMemory = 2,
                   NotFound = 500, NotReady = 600;

[[noreturn]] void broken(const std::string &What) {
  std::fprintf(stderr, "fake libcuda: %s\n", What.c_str());
  std::fflush(stderr);
  std::abort();
}

/// Whether [P, P + Bytes) lies in one of \p Ranges (sizes by their start).
bool within(const std::map<uintptr_t, size_t> &Ranges, uintptr_t P,
            size_t Bytes) {
  auto Next = Ranges.upper_bound(P);
  return Next != Ranges.begin() &&
         P + Bytes <= std::prev(Next)->first + std::prev(Next)->second;
}

/// Allocations by their start: device memory, or page-locked host memory.
struct Allocations {
  std::map<uintptr_t, size_t> Blocks;
  const char *Kind;

  explicit Allocations(const char *K) : Kind(K) {}
  /// Whether [P, P + Bytes) lies in one allocation.
  bool holds(uintptr_t P, size_t Bytes) const {
    return within(Blocks, P, Bytes);
  }
  void check(uintptr_t P, size_t Bytes, const char *Call) const {
    if (holds(P, Bytes))
      return;
    char Where[64];
    std::snprintf(Where, sizeof(Where), "%zu bytes at %#zx", Bytes, size_t(P));
    broken(std::string(Call) + ": " + Where + " are not " + Kind +
           " memory that the driver allocated");
  }
  void *allocate(size_t Bytes) {
    void *P = std::calloc(1, Bytes ? Bytes : 1);
    Blocks[uintptr_t(P)] = Bytes;
    return P;
  }
  CUresult release(void *P, const char *Call) {
    if (!Blocks.erase(uintptr_t(P)))
      broken(std::string(Call) + ": not an allocation of the driver's");
    std::free(P);
    return Success;
  }
  ~Allocations() {
    if (!Blocks.empty())
      std::fprintf(stderr, "fake libcuda: %zu blocks of %s memory not freed\n",
                   Blocks.size(), Kind);
  }
};

struct Kernel {
  std::string Name;
};

struct Graph {
  std::vector<std::function<void()>> Launches;
};

struct Driver {
  Allocations Device{"device"}, Pinned{"page-locked host"};
  /// Host memory that cuMemHostRegister locked: page-locked too.
  std::map<uintptr_t, size_t> Registered;

  bool pageLocked(uintptr_t P, size_t Bytes) const {
    return Pinned.holds(P, Bytes) || within(Registered, P, Bytes);
  }
  std::string Ptx;
  std::vector<std::unique_ptr<Kernel>> Kernels;
  /// Operations not yet done, in order; whether each is a launch.
  std::deque<std::pair<std::function<void()>, bool>> Queue;
  uint64_t Done = 0;        ///< Operations done so far.
  Graph *Capture = nullptr; ///< The capture under way.
  uint64_t Launches = 0;
  size_t MostLeftQueued = 0; ///< Launches queued after a wait.

  ~Driver() {
    if (!Registered.empty())
      std::fprintf(stderr, "fake libcuda: %zu host ranges still registered\n",
                   Registered.size());
    if (std::getenv("FAKE_CUDA_STATS"))
      std::fprintf(stderr,
                   "fake libcuda: %llu launches, at most %zu still queued "
                   "after a wait\n",
                   (unsigned long long)Launches, MostLeftQueued);
  }

  void push(std::function<void()> Op, bool IsLaunch = false) {
    Queue.emplace_back(std::move(Op), IsLaunch);
  }
  /// The number of the operation queued next.
  uint64_t end() const { return Done + Queue.size(); }
  /// Runs the operations, in order, up to operation \p Until.
  void finish(uint64_t Until = UINT64_MAX) {
    while (!Queue.empty() && Done < Until) {
      // An operation may not add to the queue.
      std::function<void()> Op = std::move(Queue.front().first);
      Queue.pop_front();
      ++Done;
      Op();
    }
    size_t Left = 0;
    for (auto &Entry : Queue)
      Left += Entry.second;
    MostLeftQueued = std::max(MostLeftQueued, Left);
  }
};

Driver &driver() {
  static Driver D;
  return D;
}

uint64_t checksum(const void *P, size_t Bytes) {
  uint64_t H = 1469598103934665603ull;
  for (size_t I = 0; I < Bytes; ++I)
    H = (H ^ static_cast<const unsigned char *>(P)[I]) * 1099511628211ull;
  return H;
}

} // namespace

extern "C" {

CUresult cuInit(unsigned) { return Success; }

CUresult cuGetErrorName(CUresult R, const char **Name) {
  *Name = R == InvalidValue  ? "CUDA_ERROR_INVALID_VALUE"
          : R == OutOfMemory ? "CUDA_ERROR_OUT_OF_MEMORY"
          : R == NotFound    ? "CUDA_ERROR_NOT_FOUND"
          : R == NotReady    ? "CUDA_ERROR_NOT_READY"
                             : "CUDA_ERROR_UNKNOWN";
  return Success;
}

CUresult cuGetErrorString(CUresult R, const char **Text) {
  *Text = R == NotFound ? "named symbol not found" : "fake error";
  return Success;
}

CUresult cuDeviceGetCount(int *Count) {
  *Count = 1;
  return Success;
}

CUresult cuDeviceGet(int *Device, int Ordinal) {
  if (Ordinal != 0)
    return InvalidValue;
  *Device = 0;
  return Success;
}

CUresult cuDeviceGetName(char *Name, int Length, int) {
  std::snprintf(Name, size_t(Length), "nnc fake CUDA device");
  return Success;
}

CUresult cuDeviceGetAttribute(int *Value, int Attribute, int) {
  switch (Attribute) {
  case 16: // multiprocessors
    *Value = 2;
    return Success;
  case 75: // compute capability
    *Value = 9;
    return Success;
  case 76:
    *Value = 0;
    return Success;
  }
  return InvalidValue;
}

CUresult cuDevicePrimaryCtxRetain(void **Context, int) {
  static int Primary;
  *Context = &Primary;
  return Success;
}
CUresult cuDevicePrimaryCtxRelease(int) { return Success; }
CUresult cuCtxSetCurrent(void *) { return Success; }

CUresult cuCtxSynchronize() {
  driver().finish();
  return Success;
}

CUresult cuModuleLoadDataEx(void **Module, const void *Image, unsigned, int *,
                            void **) {
  const char *Text = static_cast<const char *>(Image);
  if (!std::strstr(Text, ".version") || !std::strstr(Text, ".target"))
    broken("cuModuleLoadDataEx: the image is not PTX text");
  driver().Ptx = Text;
  *Module = &driver().Ptx;
  return Success;
}

CUresult cuModuleUnload(void *) { return Success; }

CUresult cuModuleGetFunction(void **Function, void *, const char *Name) {
  std::string Entry = std::string(".entry ") + Name + "(";
  if (driver().Ptx.find(Entry) == std::string::npos)
    return NotFound;
  driver().Kernels.push_back(std::make_unique<Kernel>(Kernel{Name}));
  *Function = driver().Kernels.back().get();
  return Success;
}

CUresult cuMemAlloc_v2(CUdeviceptr *P, size_t Bytes) {
  if (Bytes == 0)
    return InvalidValue;
  static const char *Memory = std::getenv("FAKE_CUDA_MEMORY");
  size_t Used = 0;
  for (auto &Block : driver().Device.Blocks)
    Used += Block.second;
  if (Memory && Used + Bytes > std::strtoull(Memory, nullptr, 10))
    return OutOfMemory;
  *P = CUdeviceptr(uintptr_t(driver().Device.allocate(Bytes)));
  return Success;
}

CUresult cuMemFree_v2(CUdeviceptr P) {
  driver().finish();
  return driver().Device.release(reinterpret_cast<void *>(uintptr_t(P)),
                                 "cuMemFree_v2");
}

CUresult cuMemAllocHost_v2(void **P, size_t Bytes) {
  *P = driver().Pinned.allocate(Bytes);
  return Success;
}

CUresult cuMemFreeHost(void *P) {
  driver().finish();
  return driver().Pinned.release(P, "cuMemFreeHost");
}

CUresult cuMemHostRegister_v2(void *P, size_t Bytes, unsigned) {
  if (!driver().Registered.emplace(uintptr_t(P), Bytes).second)
    broken("cuMemHostRegister_v2: already registered");
  return Success;
}

CUresult cuMemHostUnregister(void *P) {
  driver().finish();
  if (!driver().Registered.erase(uintptr_t(P)))
    broken("cuMemHostUnregister: not registered");
  return Success;
}

CUresult cuMemsetD8_v2(CUdeviceptr P, unsigned char Value, size_t Bytes) {
  driver().Device.check(uintptr_t(P), Bytes, "cuMemsetD8_v2");
  driver().finish();
  std::memset(reinterpret_cast<void *>(uintptr_t(P)), Value, Bytes);
  return Success;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr To, const void *From, size_t Bytes) {
  driver().Device.check(uintptr_t(To), Bytes, "cuMemcpyHtoD_v2");
  driver().finish();
  std::memcpy(reinterpret_cast<void *>(uintptr_t(To)), From, Bytes);
  return Success;
}

CUresult cuMemcpyDtoH_v2(void *To, CUdeviceptr From, size_t Bytes) {
  driver().Device.check(uintptr_t(From), Bytes, "cuMemcpyDtoH_v2");
  driver().finish();
  std::memcpy(To, reinterpret_cast<const void *>(uintptr_t(From)), Bytes);
  return Success;
}

CUresult cuMemcpyDtoD_v2(CUdeviceptr To, CUdeviceptr From, size_t Bytes) {
  driver().Device.check(uintptr_t(To), Bytes, "cuMemcpyDtoD_v2");
  driver().Device.check(uintptr_t(From), Bytes, "cuMemcpyDtoD_v2");
  driver().finish();
  std::memmove(reinterpret_cast<void *>(uintptr_t(To)),
               reinterpret_cast<const void *>(uintptr_t(From)), Bytes);
  return Success;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr To, const void *From, size_t Bytes,
                              void *) {
  driver().Device.check(uintptr_t(To), Bytes, "cuMemcpyHtoDAsync_v2");
  if (!driver().pageLocked(uintptr_t(From), Bytes))
    broken("cuMemcpyHtoDAsync_v2: from pageable host memory");
  uint64_t Sum = checksum(From, Bytes);
  driver().push([=] {
    if (checksum(From, Bytes) != Sum)
      broken("cuMemcpyHtoDAsync_v2: the host memory changed before the "
             "copy was done");
    std::memcpy(reinterpret_cast<void *>(uintptr_t(To)), From, Bytes);
  });
  return Success;
}

CUresult cuMemcpyDtoHAsync_v2(void *To, CUdeviceptr From, size_t Bytes,
                              void *) {
  driver().Device.check(uintptr_t(From), Bytes, "cuMemcpyDtoHAsync_v2");
  if (!driver().pageLocked(uintptr_t(To), Bytes))
    broken("cuMemcpyDtoHAsync_v2: to pageable host memory");
  // Read before the copy is done, it is NaN.
  std::memset(To, 0xff, Bytes);
  driver().push([=] {
    std::memcpy(To, reinterpret_cast<const void *>(uintptr_t(From)), Bytes);
  });
  return Success;
}

CUresult cuLaunchKernel(void *Function, unsigned GridX, unsigned GridY,
                        unsigned GridZ, unsigned BlockX, unsigned BlockY,
                        unsigned BlockZ, unsigned, void *, void **Params,
                        void **) {
  Driver &D = driver();
  bool Known = false;
  for (auto &K : D.Kernels)
    Known |= K.get() == Function;
  if (!Known)
    broken("cuLaunchKernel: not a function of cuModuleGetFunction");
  const std::string &Name = static_cast<Kernel *>(Function)->Name;
  if (GridX == 0 || GridY != 1 || GridZ != 1)
    broken("cuLaunchKernel: " + Name + ": a grid of " + std::to_string(GridX) +
           " x " + std::to_string(GridY) + " x " + std::to_string(GridZ));
  if (BlockX != NNC_GPU_BLOCK || BlockY != 1 || BlockZ != 1)
    broken("cuLaunchKernel: " + Name + ": a block of " +
           std::to_string(BlockX) + " x " + std::to_string(BlockY) + " x " +
           std::to_string(BlockZ) + " threads");
  CUdeviceptr Call = *static_cast<CUdeviceptr *>(Params[0]);
  D.Device.check(uintptr_t(Call), sizeof(nnc_call), "cuLaunchKernel");
  bool Gather = Name == "nnc_gpu_gather_rows";
  auto Run = [&D, Call, Gather] {
    const auto *C = reinterpret_cast<const nnc_call *>(uintptr_t(Call));
    // The gather's call: the table and the row numbers are device memory,
    // and the numbers are rows.
    if (Gather) {
      size_t Rows = size_t(C->batch);
      D.Device.check(uintptr_t(C->table), sizeof(void *),
                     "nnc_gpu_gather_rows");
      D.Device.check(uintptr_t(C->rows), Rows * sizeof(int32_t),
                     "nnc_gpu_gather_rows");
      for (size_t I = 0; I < Rows; ++I)
        if (C->rows[I] < 0)
          broken("nnc_gpu_gather_rows: row number " +
                 std::to_string(C->rows[I]));
    }
    static const char *NanLaunch = std::getenv("FAKE_CUDA_NAN_LAUNCH");
    double Loss = double(++D.Launches);
    if (NanLaunch && std::strtoull(NanLaunch, nullptr, 10) == D.Launches)
      Loss = std::nan("");
    reinterpret_cast<nnc_call *>(uintptr_t(Call))->loss = Loss;
  };
  if (D.Capture)
    D.Capture->Launches.push_back(Run);
  else
    D.push(Run, true);
  return Success;
}

// CUDA graphs: a capture records the launches, and a graph's launch queues
// them again.
CUresult cuStreamCreate(void **Stream, unsigned) {
  *Stream = new int(0);
  return Success;
}
CUresult cuStreamDestroy_v2(void *Stream) {
  delete static_cast<int *>(Stream);
  return Success;
}
CUresult cuStreamBeginCapture_v2(void *, int) {
  if (driver().Capture)
    broken("cuStreamBeginCapture_v2: a capture is under way");
  driver().Capture = new Graph;
  return Success;
}
CUresult cuStreamEndCapture(void *, void **Captured) {
  if (!driver().Capture)
    broken("cuStreamEndCapture: no capture is under way");
  *Captured = driver().Capture;
  driver().Capture = nullptr;
  return Success;
}
CUresult cuGraphInstantiateWithFlags(void **Exec, void *G, unsigned long long) {
  *Exec = new Graph(*static_cast<Graph *>(G));
  return Success;
}
CUresult cuGraphLaunch(void *Exec, void *) {
  for (auto &Launch : static_cast<Graph *>(Exec)->Launches)
    driver().push(Launch, true);
  return Success;
}
CUresult cuGraphExecDestroy(void *Exec) {
  delete static_cast<Graph *>(Exec);
  return Success;
}
CUresult cuGraphDestroy(void *G) {
  delete static_cast<Graph *>(G);
  return Success;
}

// An event is the queue's position after it was last recorded, and the
// device's clock when the queue passed it: the fake's clock moves 1 us a
// launch, so that a launch between two events takes 1 us exactly.
struct Event {
  uint64_t At;
  bool Recorded;
  float Ms;
};
CUresult cuEventCreate(void **E, unsigned) {
  *E = new Event{0, false, 0};
  return Success;
}
CUresult cuEventRecord(void *E, void *Stream) {
  if (Stream)
    broken("cuEventRecord: on a stream of its own, not the default one");
  Driver &D = driver();
  auto *Ev = static_cast<Event *>(E);
  D.push([Ev, &D] { Ev->Ms = float(D.Launches) / 1000; });
  *Ev = {D.end(), true, 0};
  return Success;
}
CUresult cuEventQuery(void *E) {
  return driver().Done >= static_cast<Event *>(E)->At ? Success : NotReady;
}
CUresult cuEventElapsedTime(float *Ms, void *Start, void *End) {
  const Event &S = *static_cast<Event *>(Start),
              &E = *static_cast<Event *>(End);
  if (!S.Recorded || !E.Recorded)
    broken("cuEventElapsedTime: an event was never recorded");
  if (driver().Done < S.At || driver().Done < E.At)
    return NotReady;
  *Ms = E.Ms - S.Ms;
  return Success;
}
CUresult cuEventSynchronize(void *E) {
  const Event &Ev = *static_cast<Event *>(E);
  if (!Ev.Recorded)
    broken("cuEventSynchronize: the event was never recorded");
  driver().finish(Ev.At);
  return Success;
}
CUresult cuEventDestroy_v2(void *E) {
  delete static_cast<Event *>(E);
  return Success;
}

} // extern "C"
