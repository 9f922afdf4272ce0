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
      case ParamTensor::InitKind::Normal:
        V = R.normal() * P.InitArg;
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
  ++Loads;
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

/// Scores the first \p N rows of \p Output, each Positions x Classes
/// values, against \p Labels (N x Positions): a position is right when its
/// first largest value is at its label; padding (label -1) is not counted.
template <typename T>
static void countCorrect(const T *Output, const int32_t *Labels, size_t N,
                         size_t Positions, size_t Classes, EvalResult &R) {
  for (size_t P = 0; P < N * Positions; ++P) {
    if (Labels[P] < 0)
      continue;
    const T *Scores = Output + P * Classes;
    size_t Best = 0;
    for (size_t J = 1; J < Classes; ++J)
      if (Scores[J] > Scores[Best])
        Best = J;
    R.Correct += int64_t(Best) == Labels[P];
    ++R.Total;
  }
}

EvalResult Model::evaluate(const Table &T, const std::vector<size_t> &Rows) {
  EvalResult Result;
  int Label = M.classLabelSlot();
  // Accuracy only means something when the output scores the classes.
  size_t Positions = Label >= 0 ? size_t(M.Slots[Label].width()) : 0;
  bool Scores = Label >= 0 && M.outputWidth() == M.Slots[Label].Classes *
                                                     int64_t(Positions);
  int Target = M.featureLabelSlot();
  size_t Width = size_t(M.outputWidth());
  bool Squares = Target >= 0 && M.Slots[Target].width() == M.outputWidth();
  std::vector<double> Values;
  double LossSum = 0;
  for (size_t Start = 0; Start < Rows.size(); Start += MaxRows) {
    size_t N = std::min(MaxRows, Rows.size() - Start);
    loadRows(T, &Rows[Start], N);
    LossSum += eval() * double(N);
    if (Squares) {
      const std::vector<double> &Y = T.Slots[size_t(Target)].Values;
      for (size_t I = 0; I < N * Width; ++I) {
        double D = outputAt(I) - Y[Rows[Start + I / Width] * Width + I % Width];
        Result.SquaredError += D * D;
      }
    }
    if (!Scores)
      continue;
    const auto *Labels = static_cast<const int32_t *>(SlotPtrs[Label]);
    size_t Classes = size_t(M.Slots[Label].Classes);
    if (M.Type == DType::F32)
      countCorrect(static_cast<const float *>(Output.data()), Labels, N,
                   Positions, Classes, Result);
    else
      countCorrect(static_cast<const double *>(Output.data()), Labels, N,
                   Positions, Classes, Result);
  }
  Result.Loss = Rows.empty() ? 0 : LossSum / double(Rows.size());
  return Result;
}

double Model::outputAt(size_t I) const {
  return M.Type == DType::F32 ? static_cast<const float *>(Output.data())[I]
                              : static_cast<const double *>(Output.data())[I];
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
      Values[Start * Width + I] = outputAt(I);
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

/// Whether Values[0, N) holds a NaN or an infinity: an exponent of all ones.
/// Integer tests, so that the loop vectorizes without fast-math.
template <typename Float, typename Bits, Bits ExponentMask>
static bool anyNonFinite(const void *Values, size_t N) {
  const auto *P = static_cast<const Float *>(Values);
  Bits Found = 0;
  for (size_t I = 0; I < N; ++I) {
    Bits B;
    std::memcpy(&B, &P[I], sizeof(B));
    Found |= (B & ExponentMask) == ExponentMask;
  }
  return Found != 0;
}

static bool anyNonFinite(DType Type, const void *Values, size_t N) {
  if (Type == DType::F32)
    return anyNonFinite<float, uint32_t, 0x7f800000u>(Values, N);
  return anyNonFinite<double, uint64_t, 0x7ff0000000000000ull>(Values, N);
}

int Model::firstNonFiniteParam() const {
  // Gaps between tensors are zeros, so one pass over the whole array tells
  // whether any tensor needs to be looked at.
  if (!anyNonFinite(M.Type, Params.data(), size_t(M.ParamCount)))
    return -1;
  size_t Elem = elementSize(M.Type);
  for (size_t I = 0; I < M.Params.size(); ++I) {
    const ParamTensor &P = M.Params[I];
    if (anyNonFinite(M.Type,
                     static_cast<const char *>(Params.data()) +
                         size_t(P.Offset) * Elem,
                     size_t(P.size())))
      return int(I);
  }
  return -1;
}
