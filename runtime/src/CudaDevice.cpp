//===- CudaDevice.cpp - A GPU through the CUDA driver API -----------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// The driver is opened with dlopen("libcuda.so.1") when a GPU trainer starts,
// not linked, so that the same binary runs where there is no CUDA at all.
// The few types and constants of cuda.h it needs are declared here, so that
// the runtime builds without the CUDA toolkit. Every call's status is
// checked; a failure names the call and the driver's name and description
// of the error.
//
//===----------------------------------------------------------------------===//

#include "Gpu.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <type_traits>
#include <utility>
#include <vector>

using namespace nnc;

namespace {

// From cuda.h (the driver API, stable since CUDA 4.0; the _v2 entry points
// are the 64-bit ones that cuda.h maps the plain names to).
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUgraph = struct CUgraph_st *;
using CUgraphExec = struct CUgraphExec_st *;
using CUevent = struct CUevent_st *;
using CUjit_option = int;
constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
constexpr unsigned CU_STREAM_DEFAULT = 0;
constexpr unsigned CU_EVENT_DISABLE_TIMING = 2;
constexpr int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;

/// Names of the errors that a driver may be unable to name itself: the
/// stub library that the CUDA toolkit ships for linking answers every
/// call, cuGetErrorName included, with CUDA_ERROR_STUB_LIBRARY.
struct KnownError {
  CUresult Code;
  const char *Name;
  const char *Description;
};
constexpr KnownError KnownErrors[] = {
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {34, "CUDA_ERROR_STUB_LIBRARY",
     "CUDA driver is a stub library: no NVIDIA driver is installed"},
    {35, "CUDA_ERROR_INSUFFICIENT_DRIVER",
     "the driver is older than the CUDA runtime"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
};

/// The driver functions used, looked up by name.
struct Driver {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuGetErrorName)(CUresult, const char **);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *, unsigned,
                                 CUjit_option *, void **);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
  CUresult (*cuMemFree_v2)(CUdeviceptr);
  CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr, const void *, size_t);
  CUresult (*cuMemcpyDtoH_v2)(void *, CUdeviceptr, size_t);
  CUresult (*cuMemAllocHost_v2)(void **, size_t);
  CUresult (*cuMemFreeHost)(void *);
  CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*cuMemcpyDtoHAsync_v2)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*cuMemHostRegister_v2)(void *, size_t, unsigned);
  CUresult (*cuMemHostUnregister)(void *);
  CUresult (*cuMemcpyDtoD_v2)(CUdeviceptr, CUdeviceptr, size_t);
  CUresult (*cuMemsetD8_v2)(CUdeviceptr, unsigned char, size_t);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, unsigned, CUstream,
                             void **, void **);
  CUresult (*cuEventCreate)(CUevent *, unsigned);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventDestroy_v2)(CUevent);
  CUresult (*cuEventQuery)(CUevent);
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
  // CUDA graphs (--cuda-graphs), of CUDA 11.4 on: null where the driver is
  // older, which only --cuda-graphs needs.
  CUresult (*cuStreamCreate)(CUstream *, unsigned);
  CUresult (*cuStreamDestroy_v2)(CUstream);
  CUresult (*cuStreamBeginCapture_v2)(CUstream, int);
  CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
  CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph,
                                          unsigned long long);
  CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
  CUresult (*cuGraphExecDestroy)(CUgraphExec);
  CUresult (*cuGraphDestroy)(CUgraph);

  /// Opens libcuda.so.1 and finds every function; false with Why.
  bool load(std::string &Why);
  /// "CUDA_ERROR_X (description)" for \p R.
  std::string describe(CUresult R) const;
  /// Throws DeviceError naming \p Call unless \p R is success.
  void check(CUresult R, const char *Call) const {
    if (R != CUDA_SUCCESS)
      throw DeviceError(std::string(Call) + " failed: " + describe(R));
  }
};

bool Driver::load(std::string &Why) {
  // The driver stays loaded for the life of the process: unloading it at
  // exit gains nothing and races with its own threads.
  void *Lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!Lib) {
    Why = dlerror();
    return false;
  }
  bool Ok = true;
  auto Find = [&](auto &Fn, const char *Name) {
    Fn = reinterpret_cast<std::remove_reference_t<decltype(Fn)>>(
        dlsym(Lib, Name));
    if (!Fn && Ok) {
      Why = std::string("libcuda.so.1 has no ") + Name +
            " (a driver older than CUDA 6?)";
      Ok = false;
    }
  };
#define NNC_FIND(Name) Find(Name, #Name)
  NNC_FIND(cuInit);
  NNC_FIND(cuGetErrorName);
  NNC_FIND(cuGetErrorString);
  NNC_FIND(cuDeviceGetCount);
  NNC_FIND(cuDeviceGet);
  NNC_FIND(cuDeviceGetName);
  NNC_FIND(cuDeviceGetAttribute);
  NNC_FIND(cuDevicePrimaryCtxRetain);
  NNC_FIND(cuDevicePrimaryCtxRelease);
  NNC_FIND(cuCtxSetCurrent);
  NNC_FIND(cuCtxSynchronize);
  NNC_FIND(cuModuleLoadDataEx);
  NNC_FIND(cuModuleUnload);
  NNC_FIND(cuModuleGetFunction);
  NNC_FIND(cuMemAlloc_v2);
  NNC_FIND(cuMemFree_v2);
  NNC_FIND(cuMemcpyHtoD_v2);
  NNC_FIND(cuMemcpyDtoH_v2);
  NNC_FIND(cuMemAllocHost_v2);
  NNC_FIND(cuMemFreeHost);
  NNC_FIND(cuMemcpyHtoDAsync_v2);
  NNC_FIND(cuMemcpyDtoHAsync_v2);
  NNC_FIND(cuMemHostRegister_v2);
  NNC_FIND(cuMemHostUnregister);
  NNC_FIND(cuMemcpyDtoD_v2);
  NNC_FIND(cuMemsetD8_v2);
  NNC_FIND(cuLaunchKernel);
  NNC_FIND(cuEventCreate);
  NNC_FIND(cuEventRecord);
  NNC_FIND(cuEventSynchronize);
  NNC_FIND(cuEventDestroy_v2);
  NNC_FIND(cuEventQuery);
  NNC_FIND(cuEventElapsedTime);
#undef NNC_FIND
  auto FindOptional = [&](auto &Fn, const char *Name) {
    Fn = reinterpret_cast<std::remove_reference_t<decltype(Fn)>>(
        dlsym(Lib, Name));
  };
#define NNC_FIND_OPTIONAL(Name) FindOptional(Name, #Name)
  NNC_FIND_OPTIONAL(cuStreamCreate);
  NNC_FIND_OPTIONAL(cuStreamDestroy_v2);
  NNC_FIND_OPTIONAL(cuStreamBeginCapture_v2);
  NNC_FIND_OPTIONAL(cuStreamEndCapture);
  NNC_FIND_OPTIONAL(cuGraphInstantiateWithFlags);
  NNC_FIND_OPTIONAL(cuGraphLaunch);
  NNC_FIND_OPTIONAL(cuGraphExecDestroy);
  NNC_FIND_OPTIONAL(cuGraphDestroy);
#undef NNC_FIND_OPTIONAL
  return Ok;
}

std::string Driver::describe(CUresult R) const {
  const char *Name = nullptr, *Text = nullptr;
  if (cuGetErrorName(R, &Name) != CUDA_SUCCESS || !Name) {
    Name = nullptr;
    for (const KnownError &K : KnownErrors)
      if (K.Code == R) {
        Name = K.Name;
        Text = K.Description;
      }
  } else if (cuGetErrorString(R, &Text) != CUDA_SUCCESS) {
    Text = nullptr;
  }
  std::string S = Name ? Name : "CUDA error " + std::to_string(R);
  return Text ? S + " (" + Text + ")" : S;
}

CUdeviceptr devicePtr(const void *P) { return CUdeviceptr(uintptr_t(P)); }

class CudaDevice final : public Device {
public:
  CudaDevice(const GpuProgram &P, const Driver &D) : Device(P), Cu(D) {}
  ~CudaDevice() override;

  /// Everything after the driver is loaded: the first device, its primary
  /// context, and the module with the kernels. Throws DeviceError.
  void open();

  std::string name() const override { return Name; }
  void *allocate(size_t Bytes) override;
  void release(void *Ptr) noexcept override {
    Cu.cuMemFree_v2(devicePtr(Ptr));
  }
  void upload(void *To, const void *From, size_t Bytes) override;
  void pin(void *Host, size_t Bytes) override {
    // Where the driver cannot lock it, uploads go through Staging.
    if (Bytes && Cu.cuMemHostRegister_v2(Host, Bytes, 0) == CUDA_SUCCESS)
      Pinned[static_cast<char *>(Host)] = Bytes;
  }
  void unpin(void *Host) noexcept override {
    if (Pinned.erase(static_cast<char *>(Host)))
      Cu.cuMemHostUnregister(Host);
  }
  void download(void *To, const void *From, size_t Bytes) override {
    Cu.check(Cu.cuMemcpyDtoH_v2(To, devicePtr(From), Bytes),
             "cuMemcpyDtoH_v2");
    StagingUsed = 0; // It waited for every copy before it.
  }
  void copy(void *To, const void *From, size_t Bytes) override {
    Cu.check(Cu.cuMemcpyDtoD_v2(devicePtr(To), devicePtr(From), Bytes),
             "cuMemcpyDtoD_v2");
  }

protected:
  void launchKernel(int32_t Kernel, int32_t Blocks, void *Call) override;
  void synchronize() override {
    Cu.check(Cu.cuCtxSynchronize(), "cuCtxSynchronize");
    StagingUsed = 0;
    if (!Timed.empty())
      collectTimings();
  }
  // A timed launch is between two events, whose times the device takes as
  // it passes them: the time of the kernel alone, whatever the host does.
  void beginTiming() override;
  void endTiming(int32_t Kernel) override;
  void collectTimings() override;
  const char *timedBy() const override { return "CUDA events"; }
  void markInputsTaken() override;
  void waitInputsTaken() override {
    Cu.check(Cu.cuEventSynchronize(InputsTaken), "cuEventSynchronize");
    StagingUsed = 0; // Every upload so far is before the mark.
  }
  void startReadback(int Slot, const void *From, size_t Bytes) override;
  const void *readback(int Slot) override { return Readbacks[Slot]; }
  // A recording is a CUDA graph, captured from the launches into a stream
  // of its own. The stream is a blocking one, so that a graph's launch
  // waits for the copies before it, as the default stream's launches do.
  void beginRecord() override;
  std::unique_ptr<Record> endRecord() override;
  void replay(Record &R) override {
    Cu.check(Cu.cuGraphLaunch(static_cast<Graph &>(R).Exec, Stream),
             "cuGraphLaunch");
  }

private:
  struct Graph final : Record {
    Graph(const Driver &Cu, CUgraphExec Exec) : Cu(Cu), Exec(Exec) {}
    ~Graph() override { Cu.cuGraphExecDestroy(Exec); }
    const Driver &Cu;
    CUgraphExec Exec;
  };

  Driver Cu;
  CUdevice Dev = 0;
  CUcontext Context = nullptr;
  CUmodule Module = nullptr;
  std::vector<CUfunction> Functions;
  unsigned WideBlocks = 1;
  std::string Name;
  CUstream Stream = nullptr; ///< For graphs, made by the first capture.
  bool Capturing = false;
  /// Page-locked host memory that uploads are copied into, so that the
  /// driver copies them to the device while the host goes on (an upload
  /// from pageable memory waits); reused from its start once the device
  /// has been waited for, since every copy from it is done by then.
  char *Staging = nullptr;
  size_t StagingSize = 0, StagingUsed = 0;
  /// Host memory locked by pin(), by its start: uploaded from directly.
  std::map<const char *, size_t> Pinned;
  /// Page-locked memory for the readbacks (see Device::run).
  void *Readbacks[2] = {};
  size_t ReadbackSizes[2] = {};
  /// Recorded between a queued call's uploads and its launches.
  CUevent InputsTaken = nullptr;
  /// --gpu-profile: the timed launches not yet collected, in order, and
  /// events free for reuse.
  struct TimedLaunch {
    int32_t Kernel;
    CUevent Start, End;
  };
  std::vector<TimedLaunch> Timed;
  std::vector<CUevent> FreeEvents;
  CUevent Started = nullptr; ///< Of the launch under way.
  CUevent takeEvent();
};

CudaDevice::~CudaDevice() {
  dropRecords();
  if (Staging || Readbacks[0] || Readbacks[1] || !Pinned.empty())
    Cu.cuCtxSynchronize(); // no copy may still read or write them
  for (auto &[Host, Bytes] : Pinned) // the owner did not unpin them
    Cu.cuMemHostUnregister(const_cast<char *>(Host));
  if (Staging)
    Cu.cuMemFreeHost(Staging);
  for (void *Buffer : Readbacks)
    if (Buffer)
      Cu.cuMemFreeHost(Buffer);
  if (InputsTaken)
    Cu.cuEventDestroy_v2(InputsTaken);
  for (const TimedLaunch &T : Timed)
    FreeEvents.insert(FreeEvents.end(), {T.Start, T.End});
  if (Started)
    FreeEvents.push_back(Started);
  for (CUevent E : FreeEvents)
    Cu.cuEventDestroy_v2(E);
  if (Stream)
    Cu.cuStreamDestroy_v2(Stream);
  if (Module)
    Cu.cuModuleUnload(Module);
  if (Context)
    Cu.cuDevicePrimaryCtxRelease(Dev);
}

void CudaDevice::open() {
  Cu.check(Cu.cuInit(0), "cuInit");
  int Count = 0;
  Cu.check(Cu.cuDeviceGetCount(&Count), "cuDeviceGetCount");
  if (Count == 0)
    throw DeviceError("the driver sees no device (cuDeviceGetCount: 0)");
  Cu.check(Cu.cuDeviceGet(&Dev, 0), "cuDeviceGet");
  char Text[256] = {};
  Cu.check(Cu.cuDeviceGetName(Text, sizeof(Text) - 1, Dev), "cuDeviceGetName");
  int SMs = 0, Major = 0, Minor = 0;
  Cu.check(Cu.cuDeviceGetAttribute(
               &SMs, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, Dev),
           "cuDeviceGetAttribute");
  Cu.check(Cu.cuDeviceGetAttribute(
               &Major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, Dev),
           "cuDeviceGetAttribute");
  Cu.check(Cu.cuDeviceGetAttribute(
               &Minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, Dev),
           "cuDeviceGetAttribute");
  Name = std::string("CUDA: ") + Text + " (sm_" + std::to_string(Major) +
         std::to_string(Minor) + ", " + std::to_string(SMs) + " SMs)";
  // Grid-stride kernels: a few blocks per multiprocessor keep it busy.
  WideBlocks = unsigned(std::max(1, 4 * SMs));
  Cu.check(Cu.cuDevicePrimaryCtxRetain(&Context, Dev),
           "cuDevicePrimaryCtxRetain");
  Cu.check(Cu.cuCtxSetCurrent(Context), "cuCtxSetCurrent");

  // The PTX compiler's messages say which kernel and line it rejects.
  std::vector<char> Log(16384, '\0');
  CUjit_option Options[] = {CU_JIT_ERROR_LOG_BUFFER,
                            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *Values[] = {Log.data(), reinterpret_cast<void *>(Log.size() - 1)};
  CUresult R =
      Cu.cuModuleLoadDataEx(&Module, program().Ptx, 2, Options, Values);
  if (R != CUDA_SUCCESS) {
    Module = nullptr;
    std::string Msg = std::string(Text) + ": cuModuleLoadDataEx failed: " +
                      Cu.describe(R);
    if (Log[0])
      Msg += "\nPTX compiler log:\n" + std::string(Log.data());
    throw DeviceError(Msg);
  }
  for (size_t I = 0, N = program().kernelCount(); I < N; ++I) {
    CUfunction F = nullptr;
    CUresult R = Cu.cuModuleGetFunction(&F, Module, program().Kernels[I]);
    if (R != CUDA_SUCCESS)
      throw DeviceError(std::string("cuModuleGetFunction (kernel ") +
                        program().Kernels[I] + ") failed: " + Cu.describe(R));
    Functions.push_back(F);
  }
}

void *CudaDevice::allocate(size_t Bytes) {
  CUdeviceptr P = 0;
  // cuMemAlloc refuses 0 bytes; a buffer of nothing still gets an address.
  Bytes = std::max<size_t>(Bytes, 1);
  Cu.check(Cu.cuMemAlloc_v2(&P, Bytes), "cuMemAlloc_v2");
  CUresult R = Cu.cuMemsetD8_v2(P, 0, Bytes);
  if (R != CUDA_SUCCESS) {
    Cu.cuMemFree_v2(P);
    Cu.check(R, "cuMemsetD8_v2");
  }
  return reinterpret_cast<void *>(uintptr_t(P));
}

void CudaDevice::upload(void *To, const void *From, size_t Bytes) {
  // Bigger copies (whole parameter sets, a dataset's first batch) are rare:
  // they keep no page-locked memory of their size.
  constexpr size_t MaxStaged = size_t(64) << 20, Align = 256;
  if (Bytes == 0)
    return;
  const char *Source = static_cast<const char *>(From);
  auto Locked = Pinned.upper_bound(Source);
  if (Locked != Pinned.begin() &&
      Source + Bytes <= std::prev(Locked)->first + std::prev(Locked)->second) {
    Cu.check(Cu.cuMemcpyHtoDAsync_v2(devicePtr(To), From, Bytes, nullptr),
             "cuMemcpyHtoDAsync_v2");
    return;
  }
  if (Bytes > MaxStaged) {
    Cu.check(Cu.cuMemcpyHtoD_v2(devicePtr(To), From, Bytes), "cuMemcpyHtoD_v2");
    StagingUsed = 0;
    return;
  }
  if (StagingUsed + Bytes > StagingSize) {
    // Full: once the device is waited for, it is free from its start.
    synchronize();
    if (Bytes > StagingSize) {
      if (Staging)
        Cu.cuMemFreeHost(Staging);
      Staging = nullptr;
      StagingSize = 0;
      size_t Size = std::max<size_t>(Bytes, size_t(1) << 20);
      void *P = nullptr;
      Cu.check(Cu.cuMemAllocHost_v2(&P, Size), "cuMemAllocHost_v2");
      Staging = static_cast<char *>(P);
      StagingSize = Size;
    }
  }
  char *Copy = Staging + StagingUsed;
  std::memcpy(Copy, From, Bytes);
  Cu.check(Cu.cuMemcpyHtoDAsync_v2(devicePtr(To), Copy, Bytes, nullptr),
           "cuMemcpyHtoDAsync_v2");
  StagingUsed += (Bytes + Align - 1) / Align * Align;
}

void CudaDevice::startReadback(int Slot, const void *From, size_t Bytes) {
  if (Bytes > ReadbackSizes[Slot]) {
    // The slot's last copy is done: its readback was finished.
    if (Readbacks[Slot])
      Cu.cuMemFreeHost(Readbacks[Slot]);
    Readbacks[Slot] = nullptr;
    ReadbackSizes[Slot] = 0;
    Cu.check(Cu.cuMemAllocHost_v2(&Readbacks[Slot], Bytes),
             "cuMemAllocHost_v2");
    ReadbackSizes[Slot] = Bytes;
  }
  Cu.check(
      Cu.cuMemcpyDtoHAsync_v2(Readbacks[Slot], devicePtr(From), Bytes, nullptr),
      "cuMemcpyDtoHAsync_v2");
}

void CudaDevice::markInputsTaken() {
  if (!InputsTaken)
    Cu.check(Cu.cuEventCreate(&InputsTaken, CU_EVENT_DISABLE_TIMING),
             "cuEventCreate");
  // On the legacy default stream, which the copies use: its work waits for
  // what a blocking stream (a replayed graph's) was given before it.
  Cu.check(Cu.cuEventRecord(InputsTaken, nullptr), "cuEventRecord");
}

void CudaDevice::launchKernel(int32_t Kernel, int32_t Blocks, void *Call) {
  // The one kernel parameter: the device address of the nnc_call.
  CUdeviceptr Arg = devicePtr(Call);
  void *Params[] = {&Arg};
  Cu.check(Cu.cuLaunchKernel(Functions[size_t(Kernel)],
                             Blocks ? unsigned(Blocks) : WideBlocks, 1, 1,
                             NNC_GPU_BLOCK, 1, 1, 0,
                             Capturing ? Stream : nullptr, Params, nullptr),
           "cuLaunchKernel");
}

CUevent CudaDevice::takeEvent() {
  if (FreeEvents.empty()) {
    CUevent E = nullptr;
    Cu.check(Cu.cuEventCreate(&E, 0), "cuEventCreate");
    return E;
  }
  CUevent E = FreeEvents.back();
  FreeEvents.pop_back();
  return E;
}

void CudaDevice::beginTiming() {
  if (!Started)
    Started = takeEvent();
  Cu.check(Cu.cuEventRecord(Started, nullptr), "cuEventRecord");
}

void CudaDevice::endTiming(int32_t Kernel) {
  CUevent End = takeEvent();
  Timed.push_back({Kernel, std::exchange(Started, nullptr), End});
  Cu.check(Cu.cuEventRecord(End, nullptr), "cuEventRecord");
  // A run that seldom waits for the device (queued training steps) keeps
  // a bounded number of events.
  if (Timed.size() >= 4096)
    collectTimings();
}

void CudaDevice::collectTimings() {
  size_t Done = 0;
  for (; Done < Timed.size(); ++Done) {
    const TimedLaunch &T = Timed[Done];
    CUresult R = Cu.cuEventQuery(T.End);
    if (R == CUDA_ERROR_NOT_READY)
      break;
    Cu.check(R, "cuEventQuery");
    float Ms = 0;
    Cu.check(Cu.cuEventElapsedTime(&Ms, T.Start, T.End), "cuEventElapsedTime");
    addKernelTime(T.Kernel, double(Ms) / 1e3);
    FreeEvents.insert(FreeEvents.end(), {T.Start, T.End});
  }
  Timed.erase(Timed.begin(), Timed.begin() + std::ptrdiff_t(Done));
}

void CudaDevice::beginRecord() {
  if (!Cu.cuStreamCreate || !Cu.cuStreamDestroy_v2 ||
      !Cu.cuStreamBeginCapture_v2 || !Cu.cuStreamEndCapture ||
      !Cu.cuGraphInstantiateWithFlags || !Cu.cuGraphLaunch ||
      !Cu.cuGraphExecDestroy || !Cu.cuGraphDestroy)
    throw DeviceError("--cuda-graphs: the driver has no CUDA graphs "
                      "(cuGraphInstantiateWithFlags: CUDA 11.4 or later)");
  if (!Stream)
    Cu.check(Cu.cuStreamCreate(&Stream, CU_STREAM_DEFAULT), "cuStreamCreate");
  Cu.check(Cu.cuStreamBeginCapture_v2(Stream,
                                      CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
           "cuStreamBeginCapture_v2");
  Capturing = true;
}

std::unique_ptr<Device::Record> CudaDevice::endRecord() {
  Capturing = false;
  CUgraph Captured = nullptr;
  Cu.check(Cu.cuStreamEndCapture(Stream, &Captured), "cuStreamEndCapture");
  CUgraphExec Exec = nullptr;
  CUresult R = Cu.cuGraphInstantiateWithFlags(&Exec, Captured, 0);
  Cu.cuGraphDestroy(Captured);
  Cu.check(R, "cuGraphInstantiateWithFlags");
  return std::make_unique<Graph>(Cu, Exec);
}

} // namespace

std::unique_ptr<Device> nnc::openCuda(const GpuProgram &P, std::string &Why) {
  Driver Cu;
  if (!Cu.load(Why))
    return nullptr;
  auto Dev = std::make_unique<CudaDevice>(P, Cu);
  try {
    Dev->open();
  } catch (const DeviceError &E) {
    Why = E.what();
    return nullptr;
  }
  return Dev;
}
