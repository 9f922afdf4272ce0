//===- Model.h - One model instance and the calls into it -------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The memory of one model (parameters, optimizer state, gradients,
/// workspace, the row buffers of its inputs and its output), allocated once
/// up front, and the entry points of the generated object called on it: its
/// CPU code, or its GPU code on a Device.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_MODEL_H
#define NNC_RUNTIME_MODEL_H

#include "Dataset.h"
#include "Gpu.h"
#include "Manifest.h"

#include "nnc/runtime.h"

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nnc {

/// Zero-initialised memory aligned to 64 bytes (a cache line, and the
/// widest vector register the generated code uses).
class AlignedBuffer {
public:
  /// False when the memory cannot be had.
  bool allocate(size_t Bytes);
  void *data() const { return Data.get(); }

private:
  struct Free {
    void operator()(void *P) const { std::free(P); }
  };
  std::unique_ptr<void, Free> Data;
};

/// An array on the host that, when the calls run on a device, has a copy
/// there too. Each side knows whether it holds the latest values, and a copy
/// moves only when the side about to be used is behind; so the parameters
/// and the optimizer state stay on the device while training, and come down
/// only when the host reads them.
class MirroredBuffer {
public:
  /// The host array, zeroed.
  bool allocate(size_t Bytes);
  /// The copy on \p D, zeroed too.
  void attach(Device &D);
  size_t bytes() const { return Bytes; }

  /// The latest values, on the host.
  const void *read();
  /// The host array, for the caller to rewrite whole.
  void *overwrite();
  /// Writes \p N bytes at \p Offset on the host, and on the device when its
  /// copy is otherwise current (so that it stays current).
  void writeBytes(size_t Offset, const void *From, size_t N);
  /// The latest values, on the device.
  void *device();
  /// The device changed the copy there.
  void deviceWrote() { HostCurrent = !Dev; }

private:
  AlignedBuffer Host;
  DeviceBuffer Copy;
  Device *Dev = nullptr;
  size_t Bytes = 0;
  bool HostCurrent = true, DeviceCurrent = true;
};

/// Loss and accuracy of the model over a set of rows.
struct EvalResult {
  double Loss = 0;     ///< Mean over the rows of each call's loss.
  /// Accuracy: labelled positions (rows, or tokens of sequences) whose
  /// output's argmax is the class label, out of Total.
  int64_t Correct = 0;
  int64_t Total = 0;
  /// The sum of squared differences of the output and the float label.
  double SquaredError = 0;
};

class Model {
public:
  explicit Model(const Manifest &M) : M(M) {}
  ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  /// Allocates every buffer for calls of up to \p MaxRows rows. With a
  /// device \p Dev, the calls run there (through the GPU code's launch
  /// schedules), on device copies of every buffer: the workspace is sized
  /// by nnc_gpu_workspace, and the host keeps what it reads and writes.
  /// Throws DeviceError when the device fails.
  bool allocate(size_t MaxRows, Device *Dev, std::string &Err);
  /// The device the calls run on; null for the CPU code.
  Device *device() const { return Dev; }

  /// Initialises the parameters per their `param` records, drawing from a
  /// generator seeded with \p Seed in record order, and zeroes the state.
  /// The dropout masks of the generated code derive from the same seed.
  void initParams(uint64_t Seed);

  /// Copies Rows[0, N) of \p T into the input buffers for the next call.
  void loadRows(const Table &T, const size_t *Rows, size_t N);
  /// On a device: copies every row of \p T there, once, so that
  /// selectRows() can take the place of loadRows(). False, changing
  /// nothing, without a device or a gather kernel, or when the rows would
  /// take more than MaxTableBytes or more than the device has free.
  bool placeTable(const Table &T);
  static constexpr size_t MaxTableBytes = size_t(2) << 30;
  /// loadRows() from the rows placeTable() put on the device: the next call
  /// uploads only their numbers, and gathers the rows there. The host's
  /// input buffers do not get them.
  void selectRows(const size_t *Rows, size_t N);
  /// How many times loadRows has run: while it is unchanged, the rows
  /// loaded last are still in the input buffers (calls do not write them),
  /// on the device too once a call has uploaded them.
  uint64_t loads() const { return Loads; }

  /// The calls into generated code on the rows loaded last; each returns
  /// the loss it computed.
  double trainStep(double Lr, int64_t Step);
  /// trainStep on a device, without waiting for the step: it is queued
  /// there, and the host may load the next rows while it runs. Returns the
  /// loss of the step queued before it, if that one is not finished yet (it
  /// is done by now).
  std::optional<double> queueTrainStep(double Lr, int64_t Step);
  /// Waits for the step queued last and returns its loss, if it is not
  /// finished yet.
  std::optional<double> finishTrainStep();
  double lossGrad();
  double eval();

  /// Evaluates \p Rows of \p T in chunks of at most maxRows() rows.
  EvalResult evaluate(const Table &T, const std::vector<size_t> &Rows);
  /// The output for each of \p Rows, in inference mode: Rows.size() x
  /// the output's width, row-major.
  std::vector<double> predict(const Table &T, const std::vector<size_t> &Rows);
  /// The same for probe \p Index (manifest order).
  std::vector<double> probe(int Index, const Table &T,
                            const std::vector<size_t> &Rows);

  size_t maxRows() const { return MaxRows; }
  /// The parameters and the optimizer state as the host sees them: read*()
  /// brings them up to date first (a download when the device has changed
  /// them); overwrite*() is for rewriting them whole, after which the next
  /// call on the device uploads them.
  const void *readParams() { return Params.read(); }
  void *overwriteParams() { return Params.overwrite(); }
  const void *readState() { return State.read(); }
  void *overwriteState() { return State.overwrite(); }
  size_t paramBytes() const { return Params.bytes(); }
  size_t stateBytes() const { return State.bytes(); }
  /// Parameter and gradient element I, as double whatever the dtype.
  double param(size_t I);
  /// Writes through to the device: the gradient check's perturbations move
  /// one element each.
  void setParam(size_t I, double V);
  double grad(size_t I);
  /// The seed of the dropout masks (initParams sets it).
  void setSeed(uint64_t Seed) { Call.seed = Seed; }

  /// --on-nan skip-batch: room for one copy of the parameters and the
  /// state (on the device when the calls run there, so that the copies never
  /// leave it), made before each step by saveUndo() and put back by
  /// restoreUndo().
  bool allocateUndo(std::string &Err);
  void saveUndo();
  void restoreUndo();

  /// The first parameter tensor, in `param` record order, holding a NaN or
  /// an infinity, as an index into M.Params; -1 when all are finite. One
  /// pass over the parameters when they are finite (on a device, after
  /// downloading them).
  int firstNonFiniteParam();

private:
  /// Runs \p Cpu on the host buffers, or \p Gpu (named \p GpuName, for
  /// messages) on the device's.
  double call(void (*Cpu)(nnc_call *), GpuProgram::Schedule Gpu,
              const char *GpuName);
  /// On a device: uploads what a call reads (the parameters and state when
  /// the host changed them, the rows when not there yet or their numbers to
  /// gather, the nnc_call), and returns the readback of its loss into \p Loss.
  Device::Readback uploadCall(double *Loss);
  /// From a device: the first \p Values elements of the output.
  void fetchOutput(size_t Values);
  /// Element I of the output buffer, as double.
  double outputAt(size_t I) const;
  /// Runs \p Fn (\p Gpu on a device) over \p Rows in chunks, gathering
  /// Width outputs per row.
  std::vector<double> collect(void (*Fn)(nnc_call *), GpuProgram::Schedule Gpu,
                              const char *GpuName, size_t Width, const Table &T,
                              const std::vector<size_t> &Rows);

  const Manifest &M;
  Device *Dev = nullptr;
  size_t MaxRows = 0;
  MirroredBuffer Params, State, Grads;
  AlignedBuffer Workspace, Output; ///< No host workspace with a device.
  std::vector<AlignedBuffer> SlotBuffers;
  std::vector<void *> SlotPtrs;     ///< SlotBuffers' memory, to write rows.
  std::vector<size_t> SlotRowBytes; ///< Bytes of one row of each slot.
  uint64_t Loads = 0;
  std::vector<const void *> Inputs; ///< The same, as nnc_call::inputs.
  nnc_call Call = {};
  /// --on-nan skip-batch on the CPU: the parameters and state before a step.
  AlignedBuffer UndoParams, UndoState;

  /// With a device: the buffers that only the device uses, its copy of each
  /// input slot, and DeviceCall, which is Call with their device addresses,
  /// uploaded to CallCopy before every call.
  DeviceBuffer DeviceWorkspace, DeviceOutput, DeviceInputs, CallCopy;
  DeviceBuffer DeviceUndoParams, DeviceUndoState;
  std::vector<DeviceBuffer> DeviceSlots;
  nnc_call DeviceCall = {};
  uint64_t UploadedLoads = 0; ///< loads() when the inputs went up last.
  /// placeTable: every row of each slot on the device, the array of their
  /// addresses, the batch's row numbers there, and the call of the gather
  /// kernel (GatherCall, with their addresses), uploaded before each gather.
  std::vector<DeviceBuffer> DeviceTable;
  DeviceBuffer DeviceTableSlots, DeviceRows, GatherCallCopy;
  nnc_call GatherCall = {};
  std::vector<int32_t> SelectedRows; ///< By selectRows, for the next call.
  bool Selected = false;             ///< The last load was selectRows.
  /// queueTrainStep: the steps queued so far, each one's loss in
  /// QueuedLosses[its number % 2], and whether the last is not finished.
  uint64_t QueuedSteps = 0;
  double QueuedLosses[2] = {};
  bool StepPending = false;
};

} // namespace nnc

#endif // NNC_RUNTIME_MODEL_H
