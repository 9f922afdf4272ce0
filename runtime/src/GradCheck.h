//===- GradCheck.h - Gradients against finite differences ------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// `--gradcheck`: compares the gradients of the generated backward pass
/// (nnc_loss_grad) with central differences of the loss (nnc_eval), on a
/// few training rows and the initial parameters.
///
/// The error of one element with analytic gradient a and numeric gradient n
/// is |a - n| / max(|a|, |n|, 1e-3): relative for gradients of magnitude
/// 1e-3 and more, and absolute, scaled by 1e-3, below that, where a relative
/// error would only measure rounding noise. The check passes when the
/// largest error is at most the tolerance.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_GRADCHECK_H
#define NNC_RUNTIME_GRADCHECK_H

#include "Dataset.h"
#include "Manifest.h"
#include "Model.h"
#include "Options.h"

namespace nnc {

/// Runs the check for \p Mod (allocated for at least O.GradCheckRows rows),
/// printing one line per parameter tensor and a verdict on stdout. Returns
/// the exit status: 0 on pass, 1 on fail.
int runGradCheck(const char *Prog, const Manifest &M, Model &Mod,
                 const Table &T, const std::vector<size_t> &TrainRows,
                 const Options &O);

} // namespace nnc

#endif // NNC_RUNTIME_GRADCHECK_H
