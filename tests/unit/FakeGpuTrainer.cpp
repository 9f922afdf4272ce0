//===- FakeGpuTrainer.cpp - A GPU trainer written by hand, for tests ------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// What `nnc --target=cuda-sim` generates, written by hand for one small
// model: softmax regression of iris's four features on its three classes,
// in f64, trained with plain SGD. Linked with the runtime, it tests the
// runtime's side of GPU trainers (buffers on the device, what goes up and
// comes down, the NaN guard, the gradient check, checkpoints, predict,
// --device) without the compiler's GPU code generator.
//
// The CPU entry points compute the same sums in the same order as the
// kernels: the loss and gradient are reduced over a block's NNC_GPU_BLOCK
// partial sums by the same tree, so the CPU and the simulated GPU train to
// bitwise the same weights, and any difference is the runtime's fault.
//
// Built twice: as is, a cuda-sim trainer; with NNC_FAKE_CUDA, a cuda trainer
// whose "PTX" no driver loads, for the tests of the fallback to the CPU.
//
//===----------------------------------------------------------------------===//

#include "nnc/runtime.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

constexpr int Features = 4, Classes = 3;
constexpr int Bias = Features * Classes; ///< Offset of the bias in params.
/// Per row: the loss, then d(loss)/d(params) (weights, then bias).
constexpr int Terms = 1 + Bias + Classes;
constexpr int Block = NNC_GPU_BLOCK;

static_assert(sizeof(double) * Block * Terms <= NNC_SIM_SHARED,
              "the partial sums fit in a block's shared memory");

const double *features(const nnc_call *C) {
  return static_cast<const double *>(C->inputs[0]);
}
const int32_t *labels(const nnc_call *C) {
  return static_cast<const int32_t *>(C->inputs[1]);
}

/// Logit I (row I / Classes, class I % Classes) of the batch.
double logit(const nnc_call *C, int64_t I) {
  const double *W = static_cast<const double *>(C->params);
  const double *X = features(C) + I / Classes * Features;
  int64_t Class = I % Classes;
  double Z = W[Bias + Class];
  for (int J = 0; J < Features; ++J)
    Z += W[Class * Features + J] * X[J];
  return Z;
}

/// Adds the terms of the rows that thread \p T of a block owns (T, T +
/// Block, ...) to \p Sum, from the batch's logits \p Z.
void addRowTerms(const nnc_call *C, const double *Z, int T, double *Sum) {
  for (int K = 0; K < Terms; ++K)
    Sum[K] = 0;
  for (int64_t R = T; R < C->batch; R += Block) {
    const double *Row = Z + R * Classes;
    const double *X = features(C) + R * Features;
    int32_t Y = labels(C)[R];
    double Max = *std::max_element(Row, Row + Classes), Exps = 0;
    for (int Class = 0; Class < Classes; ++Class)
      Exps += std::exp(Row[Class] - Max);
    double LogSum = Max + std::log(Exps);
    Sum[0] += LogSum - Row[Y];
    for (int Class = 0; Class < Classes; ++Class) {
      double D = std::exp(Row[Class] - LogSum) - (Class == Y ? 1 : 0);
      for (int J = 0; J < Features; ++J)
        Sum[1 + Class * Features + J] += D * X[J];
      Sum[1 + Bias + Class] += D;
    }
  }
}

/// One step of the tree that sums the block's partial sums into Part[0].
void addPartials(double (*Part)[Terms], int T, int Stride) {
  for (int K = 0; K < Terms; ++K)
    Part[T][K] += Part[T + Stride][K];
}

/// Term K of the batch's mean, from the summed partials: the loss into
/// `loss`, the gradients into `grads` when \p Grads.
void storeMean(nnc_call *C, const double *Total, int K, bool Grads) {
  double Mean = Total[K] / double(C->batch);
  if (K == 0)
    C->loss = Mean;
  else if (Grads)
    static_cast<double *>(C->grads)[K - 1] = Mean;
}

void sgd(nnc_call *C, int64_t I) {
  static_cast<double *>(C->params)[I] -=
      C->lr * static_cast<const double *>(C->grads)[I];
}

//===--- The CPU code -----------------------------------------------------===//

void cpuLogits(nnc_call *C, double *Z) {
  for (int64_t I = 0; I < C->batch * Classes; ++I)
    Z[I] = logit(C, I);
}

/// The block's reduction, one thread after another.
void cpuReduce(nnc_call *C, const double *Z, bool Grads) {
  static double Part[Block][Terms];
  for (int T = 0; T < Block; ++T)
    addRowTerms(C, Z, T, Part[T]);
  for (int Stride = Block / 2; Stride > 0; Stride /= 2)
    for (int T = 0; T < Stride; ++T)
      addPartials(Part, T, Stride);
  for (int K = 0; K < Terms; ++K)
    storeMean(C, Part[0], K, Grads);
}

//===--- The kernels --------------------------------------------------------===//

#ifndef NNC_FAKE_CUDA
int64_t globalThread() {
  return int64_t(nnc_sim_block()) * Block + nnc_sim_thread();
}
int64_t gridThreads() { return int64_t(nnc_sim_blocks()) * Block; }

void gpuLogits(nnc_call *C, double *Z) {
  for (int64_t I = globalThread(); I < C->batch * Classes; I += gridThreads())
    Z[I] = logit(C, I);
}

void gpuReduce(nnc_call *C, const double *Z, bool Grads) {
  auto *Part = static_cast<double(*)[Terms]>(nnc_sim_shared());
  int T = nnc_sim_thread();
  addRowTerms(C, Z, T, Part[T]);
  for (int Stride = Block / 2; Stride > 0; Stride /= 2) {
    nnc_sim_barrier();
    if (T < Stride)
      addPartials(Part, T, Stride);
  }
  nnc_sim_barrier();
  if (T < Terms)
    storeMean(C, Part[0], T, Grads);
}

void logitsToWorkspace(nnc_call *C) {
  gpuLogits(C, static_cast<double *>(C->workspace));
}
void logitsToOutput(nnc_call *C) {
  gpuLogits(C, static_cast<double *>(C->output));
}
void lossGradKernel(nnc_call *C) {
  gpuReduce(C, static_cast<const double *>(C->workspace), true);
}
void sgdKernel(nnc_call *C) {
  for (int64_t I = globalThread(); I < Bias + Classes; I += gridThreads())
    sgd(C, I);
}
void evalLossKernel(nnc_call *C) {
  gpuReduce(C, static_cast<const double *>(C->output), false);
}
#endif

enum Kernel : int32_t {
  LogitsToWorkspace,
  LogitsToOutput,
  LossGrad,
  Sgd,
  EvalLoss
};

} // namespace

extern "C" {

// The manifest that nnc writes for this model (--dtype=f64), with a data
// path that the tests give with --data.
const char nnc_manifest[] =
    "nnc-manifest\t1\n"
    "model\tfake\n"
    "dtype\tf64\n"
    "param\tlogits.weight\t3x4\t0\tuniform\t0.5\n"
    "param\tlogits.bias\t3\t12\tuniform\t0.5\n"
    "params\t15\n"
    "state\t0\n"
    "workspace\t0\t24\n"
    "input\tx\tfeatures\t4\n"
    "label\ty\tclass\t3\n"
    "output\tlogits\t3\n"
    "layer\tlogits\tdense\t3\t15\n"
    "loss\tcross_entropy\n"
    "optimizer\tsgd\tlr=0.1\n"
    "lr\t0.1\n"
    "source\tcsv\tpath=iris.csv\tlabel=species\n"
    "split\t0.8\t0.2\t42\n"
    "standardize\t1\n"
    "epochs\t20\n"
    "batch\t16\n"
    "shuffle\t1\n"
    "seed\t0\n"
    "report_every\t5\n"
    "summary\t0\n"
    "metric\taccuracy\ttest\n";

void nnc_train_step(nnc_call *C) {
  double *Z = static_cast<double *>(C->workspace);
  cpuLogits(C, Z);
  cpuReduce(C, Z, true);
  for (int64_t I = 0; I < Bias + Classes; ++I)
    sgd(C, I);
}

void nnc_loss_grad(nnc_call *C) {
  double *Z = static_cast<double *>(C->workspace);
  cpuLogits(C, Z);
  cpuReduce(C, Z, true);
}

void nnc_eval(nnc_call *C) {
  cpuLogits(C, static_cast<double *>(C->output));
  cpuReduce(C, static_cast<const double *>(C->output), false);
}

void nnc_predict(nnc_call *C) {
  cpuLogits(C, static_cast<double *>(C->output));
}

void (*const nnc_probes[])(nnc_call *) = {nullptr};

const char *const nnc_gpu_kernels[] = {"logits_to_workspace", "logits_to_output",
                                       "loss_grad", "sgd", "eval_loss",
                                       nullptr};
const int64_t nnc_gpu_workspace[2] = {0, Classes * sizeof(double)};

void nnc_gpu_train_step(void *D) {
  nnc_gpu_launch(D, LogitsToWorkspace, 0);
  nnc_gpu_launch(D, LossGrad, 1);
  nnc_gpu_launch(D, Sgd, 0);
}

void nnc_gpu_loss_grad(void *D) {
  nnc_gpu_launch(D, LogitsToWorkspace, 0);
  nnc_gpu_launch(D, LossGrad, 1);
}

void nnc_gpu_eval(void *D) {
  nnc_gpu_launch(D, LogitsToOutput, 0);
  nnc_gpu_launch(D, EvalLoss, 1);
}

void nnc_gpu_predict(void *D) { nnc_gpu_launch(D, LogitsToOutput, 0); }

void (*const nnc_gpu_probes[])(void *) = {nullptr};

#ifdef NNC_FAKE_CUDA
const char nnc_cuda_ptx[] =
    "// Not PTX: a trainer for the tests of the fallback to the CPU code.\n";
#else
void (*const nnc_sim_kernels[])(nnc_call *) = {
    logitsToWorkspace, logitsToOutput, lossGradKernel, sgdKernel,
    evalLossKernel};
#endif

} // extern "C"
