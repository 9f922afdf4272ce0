//===- Model.cpp - One model instance and the calls into it ---------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Model.h"
#include "Random.h"

#include <algorithm>
#include <cstring>

using namespace nnc;

constexpr size_t Alignment = 64;

bool AlignedBuffer::allocate(size_t Bytes) {
  // aligned_alloc wants a multiple of the alignment, and a zero-sized
  // buffer still gets a valid, distinct pointer.
  size_t Rounded =
      (std::max<size_t>(Bytes, 1) + Alignment - 1) / Alignment * Alignment;
  if (Rounded < Bytes)
    return false;
  Data.reset(std::aligned_alloc(Alignment, Rounded));
  if (!Data)
    return false;
  std::memset(Data.get(), 0, Rounded);
  return true;
}

/// A * B * C, false on overflow.
static bool mulBytes(size_t A, size_t B, size_t C, size_t &Out) {
  return !__builtin_mul_overflow(A, B, &Out) &&
         !__builtin_mul_overflow(Out, C, &Out);
}

bool Model::allocate(size_t Rows, std::string &Err) {
  MaxRows = Rows;
  size_t Elem = elementSize(M.Type);
  size_t WorkspaceBytes, OutputBytes, ParamBytes, StateBytes;
  bool Ok = mulBytes(size_t(M.WorkspacePerRow), Rows, 1, WorkspaceBytes) &&
            !__builtin_add_overflow(WorkspaceBytes, size_t(M.WorkspaceFixed),
                                    &WorkspaceBytes) &&
            mulBytes(size_t(M.outputCapacity()), Rows, Elem, OutputBytes) &&
            mulBytes(size_t(M.ParamCount), Elem, 1, ParamBytes) &&
            mulBytes(size_t(M.StateCount), Elem, 1, StateBytes) &&
            Params.allocate(ParamBytes) && Grads.allocate(ParamBytes) &&
            State.allocate(StateBytes) && Workspace.allocate(WorkspaceBytes) &&
            Output.allocate(OutputBytes);
  SlotBuffers.resize(M.Slots.size());
  SlotPtrs.resize(M.Slots.size());
  Inputs.resize(M.Slots.size());
  for (size_t S = 0; Ok && S < M.Slots.size(); ++S) {
    size_t Bytes;
    Ok = mulBytes(size_t(M.Slots[S].width()), Rows,
                  M.Slots[S].IsClass ? sizeof(int32_t) : Elem, Bytes) &&
         SlotBuffers[S].allocate(Bytes);
    SlotPtrs[S] = SlotBuffers[S].data();
    Inputs[S] = SlotPtrs[S];
  }
  if (!Ok) {
    Err = "out of memory allocating the buffers for " + std::to_string(Rows) +
          " rows";
    return false;
  }
  Call.params = Params.data();
  Call.state = State.data();
  Call.grads = Grads.data();
  Call.workspace = Workspace.data();
  Call.inputs = Inputs.data();
  Call.output = Output.data();
  return true;
}

void Model::initParams(uint64_t Seed) {
  Rng R(Seed);
  Call.seed = Seed;
  std::memset(Params.data(), 0, size_t(M.ParamCount) * elementSize(M.Type));
  for (const ParamTensor &P : M.Params) {
    for (int64_t I = 0; I < P.size(); ++I) {
      double V = 0;
      switch (P.Init) {
      case ParamTensor::InitKind::Uniform:
        V = (2 * R.uniform() - 1) * P.InitArg;
        break;
      case ParamTensor::InitKind::Zeros:
        V = 0;
        break;
      case ParamTensor::InitKind::Ones:
        V = 1;
        break;
      }
      setParam(size_t(P.Offset + I), V);
    }
  }
  std::memset(State.data(), 0, size_t(M.StateCount) * elementSize(M.Type));
}

void Model::loadRows(const Table &T, const size_t *Rows, size_t N) {
  gatherRows(T, Rows, N, M.Type, SlotPtrs.data());
  Call.batch = int64_t(N);
}

double Model::trainStep(double Lr, int64_t Step) {
  Call.lr = Lr;
  Call.step = Step;
  nnc_train_step(&Call);
  return Call.loss;
}

double Model::lossGrad() {
  Call.lr = 0;
  Call.step = 0;
  nnc_loss_grad(&Call);
  return Call.loss;
}

double Model::eval() {
  Call.lr = 0;
  Call.step = 0;
  nnc_eval(&Call);
  return Call.loss;
}

/// Rows among the first \p N of \p Output (N x Width) whose first largest
/// value is at the index given by \p Labels.
template <typename T>
static int64_t countCorrect(const T *Output, const int32_t *Labels, size_t N,
                            size_t Width) {
  int64_t Correct = 0;
  for (size_t R = 0; R < N; ++R) {
    const T *Row = Output + R * Width;
    size_t Best = 0;
    for (size_t J = 1; J < Width; ++J)
      if (Row[J] > Row[Best])
        Best = J;
    Correct += int64_t(Best) == Labels[R];
  }
  return Correct;
}

EvalResult Model::evaluate(const Table &T, const std::vector<size_t> &Rows) {
  EvalResult Result;
  int Label = M.classLabelSlot();
  // Accuracy only means something when the output scores the classes.
  bool Scores = Label >= 0 && M.outputWidth() == M.Slots[Label].Classes;
  double LossSum = 0;
  for (size_t Start = 0; Start < Rows.size(); Start += MaxRows) {
    size_t N = std::min(MaxRows, Rows.size() - Start);
    loadRows(T, &Rows[Start], N);
    LossSum += eval() * double(N);
    if (!Scores)
      continue;
    const auto *Labels = static_cast<const int32_t *>(SlotPtrs[Label]);
    size_t Width = size_t(M.outputWidth());
    Result.Correct +=
        M.Type == DType::F32
            ? countCorrect(static_cast<const float *>(Output.data()), Labels, N,
                           Width)
            : countCorrect(static_cast<const double *>(Output.data()), Labels,
                           N, Width);
  }
  Result.Total = int64_t(Rows.size());
  Result.Loss = Rows.empty() ? 0 : LossSum / double(Rows.size());
  return Result;
}

std::vector<double> Model::collect(void (*Fn)(nnc_call *), size_t Width,
                                   const Table &T,
                                   const std::vector<size_t> &Rows) {
  std::vector<double> Values(Rows.size() * Width);
  Call.lr = 0;
  Call.step = 0;
  for (size_t Start = 0; Start < Rows.size(); Start += MaxRows) {
    size_t N = std::min(MaxRows, Rows.size() - Start);
    loadRows(T, &Rows[Start], N);
    Fn(&Call);
    for (size_t I = 0; I < N * Width; ++I)
      Values[Start * Width + I] =
          M.Type == DType::F32 ? static_cast<const float *>(Output.data())[I]
                               : static_cast<const double *>(Output.data())[I];
  }
  return Values;
}

std::vector<double> Model::predict(const Table &T,
                                   const std::vector<size_t> &Rows) {
  return collect(nnc_predict, size_t(M.outputWidth()), T, Rows);
}

std::vector<double> Model::probe(int Index, const Table &T,
                                 const std::vector<size_t> &Rows) {
  return collect(nnc_probes[Index], size_t(M.Probes[size_t(Index)].width()), T,
                 Rows);
}

double Model::param(size_t I) const {
  if (M.Type == DType::F32)
    return static_cast<const float *>(Params.data())[I];
  return static_cast<const double *>(Params.data())[I];
}

void Model::setParam(size_t I, double V) {
  if (M.Type == DType::F32)
    static_cast<float *>(Params.data())[I] = float(V);
  else
    static_cast<double *>(Params.data())[I] = V;
}

double Model::grad(size_t I) const {
  if (M.Type == DType::F32)
    return static_cast<const float *>(Grads.data())[I];
  return static_cast<const double *>(Grads.data())[I];
}
