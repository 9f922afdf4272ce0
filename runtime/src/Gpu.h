//===- Gpu.h - Devices that run a GPU trainer's kernels ---------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// A trainer built with `nnc --target=cuda` (or `--target=cuda-sim`) carries,
/// beside its CPU code, kernels and the launch schedules that call them
/// (runtime.h, "GPU trainers"). A Device runs them: a GPU through the CUDA
/// driver (CudaDevice.cpp), or the simulator, on the host (SimDevice.cpp).
/// Both address device memory with `void *`: the values that go into the
/// device's nnc_call.
///
/// A device operation that fails throws DeviceError. main() catches it, so
/// that a GPU failing in the middle of a run (a kernel fault, memory
/// exhausted) stops the trainer with a message and exit status 3, however
/// deep in the runtime it happened.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_GPU_H
#define NNC_RUNTIME_GPU_H

#include "nnc/runtime.h"

#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nnc {

/// The GPU half of the generated object: the symbols of runtime.h's "GPU
/// trainers", all null in a CPU-only trainer.
struct GpuProgram {
  using Schedule = void (*)(void *Device);
  using SimKernel = void (*)(nnc_call *);

  const char *const *Kernels = nullptr; ///< nnc_gpu_kernels, null-terminated.
  const int64_t *Workspace = nullptr;   ///< nnc_gpu_workspace: fixed, per row.
  Schedule TrainStep = nullptr, LossGrad = nullptr, Eval = nullptr,
           Predict = nullptr, Gather = nullptr;
  const Schedule *Probes = nullptr;
  const char *Ptx = nullptr;              ///< --target=cuda
  const SimKernel *SimKernels = nullptr;  ///< --target=cuda-sim

  bool hasGpuCode() const { return Kernels != nullptr; }
  /// The entries of Kernels before its null.
  size_t kernelCount() const;
};

/// This trainer's GPU code (weak symbols: null members when there is none).
GpuProgram trainerGpuProgram();

/// A failed device operation; what() names it and says why, e.g.
/// "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
class DeviceError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Memory, copies and launches on one device, done in the order they are
/// asked for. An upload returns at once, its source free to change (but
/// for pinned memory, see pin): the host need not wait for a batch to
/// reach the device before launching the step that reads it. Everything
/// else waits until it is done: run() until its launches are, so that a
/// step's loss is read with one wait; but queue() only until the calls
/// before it are, so that the host prepares the next training step while
/// the device runs this one, and launchOnly() not at all.
class Device {
public:
  explicit Device(const GpuProgram &P) : Program(P) {}
  virtual ~Device() = default;
  Device(const Device &) = delete;
  Device &operator=(const Device &) = delete;

  const GpuProgram &program() const { return Program; }
  /// For the run's header line: "CUDA: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)",
  /// "simulated GPU".
  virtual std::string name() const = 0;

  /// Zeroed memory of \p Bytes (at least one byte is allocated).
  virtual void *allocate(size_t Bytes) = 0;
  /// Never fails: at the end of a run there is nothing left to do about it.
  virtual void release(void *Ptr) noexcept = 0;
  virtual void upload(void *To, const void *From, size_t Bytes) = 0;
  /// Host memory that batches are uploaded from (the input slots): a device
  /// may lock it in memory and copy from it with no copy of its own, so it
  /// must not change between an upload from it and the next wait (run(),
  /// download()). unpin() before it is freed. Where the device cannot,
  /// nothing changes.
  virtual void pin(void * /*Host*/, size_t /*Bytes*/) {}
  virtual void unpin(void * /*Host*/) noexcept {}
  virtual void download(void *To, const void *From, size_t Bytes) = 0;
  /// From device memory to device memory.
  virtual void copy(void *To, const void *From, size_t Bytes) = 0;

  /// A copy from device memory to the host, made when a schedule's launches
  /// are done (a step's loss).
  struct Readback {
    void *To;
    const void *From;
    size_t Bytes;
  };
  /// Runs the launch schedule \p S (named \p Name, for messages), whose
  /// kernels all take \p Call (an nnc_call in device memory, of \p Rows
  /// rows), and waits for its last kernel; then copies \p Result, if any,
  /// with no wait of its own (and finishes a queued call's readback).
  void run(GpuProgram::Schedule S, const char *Name, void *Call, int64_t Rows,
           const Readback *Result = nullptr);
  /// run() that returns before the launches are done: once the device has
  /// taken the uploads made for them (pinned memory is free to change
  /// again), which is once every call before them is done. By then the
  /// readback of the call queued before this one, if any, is finished, and
  /// this one's is pending, until the next queue(), run() or finishQueued().
  void queue(GpuProgram::Schedule S, const char *Name, void *Call, int64_t Rows,
             const Readback &Result);
  /// Waits for the call queued last and finishes its readback; nothing when
  /// none is pending.
  void finishQueued();
  /// Launches schedule \p S on \p Call and goes on: the calls after it see
  /// its results, and a fault in it shows at the next wait.
  void launchOnly(GpuProgram::Schedule S, const char *Name, void *Call,
                  int64_t Rows) {
    launchSchedule(S, Name, Call, Rows);
  }
  /// Waits for everything asked of the device so far.
  void wait() { synchronize(); }
  /// nnc_gpu_rows: the rows of the call under way.
  int64_t rows() const { return Rows; }
  /// --gpu-trace: each launch prints a line to stderr, the kernel's name
  /// and its blocks ("wide": as many as keep the device busy).
  void traceLaunches(bool On) { Trace = On; }
  /// --cuda-graphs: the first call of a schedule on given arguments (the
  /// call and its rows) records its launches, and every call replays the
  /// recording as one launch (a CUDA graph), which saves the driver's work
  /// per kernel. A schedule's launches depend on nothing else.
  void recordSchedules(bool On) { Recording = On; }
  /// --gpu-profile: each launch is timed where it runs (see beginTiming),
  /// and the times are summed by kernel.
  void profileLaunches(bool On) { Profiling = On; }
  /// The kernels' launches and times so far, the longest first: lines
  /// "gpu profile: ..." for stderr. Waits for the device.
  std::string profileReport();

  /// nnc_gpu_launch. The schedule is generated code, which an exception must
  /// not unwind through: the first failure is kept, the launches after it
  /// do nothing, and run() throws it when the schedule returns.
  void launch(int32_t Kernel, int32_t Blocks) noexcept;

protected:
  /// Starts kernel \p Kernel (a valid index) on \p Call, on \p Blocks
  /// blocks (at least 1), or as many as keep the device busy when 0.
  virtual void launchKernel(int32_t Kernel, int32_t Blocks, void *Call) = 0;
  /// Waits for every launch so far; throws what went wrong in them.
  virtual void synchronize() = 0;
  /// Marks where a queued call's launches start, after its uploads.
  virtual void markInputsTaken() {}
  /// Waits until the device has passed the last mark (and so everything
  /// before it); throws what went wrong there.
  virtual void waitInputsTaken() { synchronize(); }
  /// A readback: copies \p Bytes at \p From into the host buffer \p Slot (0
  /// or 1) once the launches before are done. readback(Slot) holds them once
  /// the device is waited for past that point. By default the copy is made
  /// at once, after a wait.
  virtual void startReadback(int Slot, const void *From, size_t Bytes);
  virtual const void *readback(int Slot) { return Readbacks[Slot].data(); }

  /// --gpu-profile: a launch between beginTiming() and endTiming(Kernel)
  /// is timed, and the time given to addKernelTime once known (at once,
  /// or by collectTimings).
  virtual void beginTiming() = 0;
  virtual void endTiming(int32_t Kernel) = 0;
  /// Gives addKernelTime the times of the timed launches that are done:
  /// all of them after synchronize().
  virtual void collectTimings() {}
  void addKernelTime(int32_t Kernel, double Seconds);
  /// How the launches are timed, for the report.
  virtual const char *timedBy() const = 0;

  /// A schedule's launches, recorded to be replayed.
  class Record {
  public:
    virtual ~Record() = default;
  };
  /// Launches from now on are recorded, not run, until endRecord.
  virtual void beginRecord() = 0;
  /// The launches since beginRecord, ready to replay.
  virtual std::unique_ptr<Record> endRecord() = 0;
  /// Runs the launches of \p R, in order.
  virtual void replay(Record &R) = 0;
  /// Frees the recordings, while the device that made them is open.
  void dropRecords() { Records.clear(); }

private:
  /// Runs (or records and replays) the launches of \p S; throws the first
  /// that failed.
  void launchSchedule(GpuProgram::Schedule S, const char *Name, void *Call,
                      int64_t Rows);

  GpuProgram Program;
  void *Call = nullptr;  ///< The argument of the schedule under way.
  int64_t Rows = 0;      ///< Its rows.
  std::string Failure;   ///< The first launch that failed in it.
  std::vector<char> Readbacks[2]; ///< For the default startReadback.
  /// The readback of the call queued last, until it is finished.
  struct Pending {
    Readback Result;
    int Slot;
    const char *Name;
  };
  std::optional<Pending> Queued;
  /// Copies \p P's readback to where it goes, once the device is past it.
  void finish(const Pending &P);
  int NextSlot = 0; ///< Of the next readback: never a pending one's.
  bool Trace = false;
  bool Recording = false;
  bool Profiling = false;
  /// --gpu-profile's sums, by kernel.
  struct KernelTime {
    int64_t Launches = 0;
    double Seconds = 0;
  };
  std::vector<KernelTime> Times;
  /// Recordings by what a schedule's launches depend on, the newest last.
  struct Recorded {
    GpuProgram::Schedule S;
    void *Call;
    int64_t Rows;
    std::unique_ptr<Record> Launches;
  };
  std::vector<Recorded> Records;
};

/// Device memory that frees itself.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&Other) noexcept { *this = std::move(Other); }
  DeviceBuffer &operator=(DeviceBuffer &&Other) noexcept;
  ~DeviceBuffer() { reset(); }

  void allocate(Device &D, size_t Bytes);
  void *get() const { return Ptr; }

private:
  void reset() noexcept;
  Device *Dev = nullptr;
  void *Ptr = nullptr;
};

/// The device for \p P's kernels: the simulator for --target=cuda-sim code,
/// the first CUDA GPU for PTX. Null when there is none, with \p Why saying
/// why in one line ("libcuda.so.1: cannot open shared object file: No such
/// file or directory", "cuInit failed: CUDA_ERROR_NO_DEVICE (no
/// CUDA-capable device is detected)"), and after it the PTX compiler's log
/// when the driver could not load the kernels.
std::unique_ptr<Device> openGpu(const GpuProgram &P, std::string &Why);

/// The back ends, for openGpu and the unit tests.
std::unique_ptr<Device> openCuda(const GpuProgram &P, std::string &Why);
std::unique_ptr<Device> openSimulator(const GpuProgram &P);

} // namespace nnc

#endif // NNC_RUNTIME_GPU_H
