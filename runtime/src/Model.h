//===- Model.h - One model instance and the calls into it -------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The memory of one model (parameters, optimizer state, gradients,
/// workspace, the row buffers of its inputs and its output), allocated once
/// up front, and the four entry points of the generated object called on it.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_MODEL_H
#define NNC_RUNTIME_MODEL_H

#include "Dataset.h"
#include "Manifest.h"

#include "nnc/runtime.h"

#include <cstdlib>
#include <memory>
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

  /// Allocates every buffer for calls of up to \p MaxRows rows.
  bool allocate(size_t MaxRows, std::string &Err);

  /// Initialises the parameters per their `param` records, drawing from a
  /// generator seeded with \p Seed in record order, and zeroes the state.
  /// The dropout masks of the generated code derive from the same seed.
  void initParams(uint64_t Seed);

  /// Copies Rows[0, N) of \p T into the input buffers for the next call.
  void loadRows(const Table &T, const size_t *Rows, size_t N);
  /// How many times loadRows has run: while it is unchanged, the rows
  /// loaded last are still in the input buffers (calls do not write them).
  uint64_t loads() const { return Loads; }

  /// The calls into generated code on the rows loaded last; each returns
  /// the loss it computed.
  double trainStep(double Lr, int64_t Step);
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
  /// Parameter and gradient element I, as double whatever the dtype.
  double param(size_t I) const;
  void setParam(size_t I, double V);
  double grad(size_t I) const;
  const void *paramData() const { return Params.data(); }
  void *paramData() { return Params.data(); }
  void *stateData() { return State.data(); }
  size_t paramBytes() const { return size_t(M.ParamCount) * elementSize(M.Type); }
  size_t stateBytes() const { return size_t(M.StateCount) * elementSize(M.Type); }
  /// The seed of the dropout masks (initParams sets it).
  void setSeed(uint64_t Seed) { Call.seed = Seed; }

  /// The first parameter tensor, in `param` record order, holding a NaN or
  /// an infinity, as an index into M.Params; -1 when all are finite. One
  /// pass over the parameters when they are finite.
  int firstNonFiniteParam() const;

private:
  /// Element I of the output buffer, as double.
  double outputAt(size_t I) const;
  /// Runs \p Fn over \p Rows in chunks, gathering Width outputs per row.
  std::vector<double> collect(void (*Fn)(nnc_call *), size_t Width,
                              const Table &T, const std::vector<size_t> &Rows);

  const Manifest &M;
  size_t MaxRows = 0;
  AlignedBuffer Params, State, Grads, Workspace, Output;
  std::vector<AlignedBuffer> SlotBuffers;
  std::vector<void *> SlotPtrs;     ///< SlotBuffers' memory, to write rows.
  uint64_t Loads = 0;
  std::vector<const void *> Inputs; ///< The same, as nnc_call::inputs.
  nnc_call Call = {};
};

} // namespace nnc

#endif // NNC_RUNTIME_MODEL_H
