//===- Checkpoint.h - Training checkpoints ----------------------*- C++ -*-===//
//
// Part of nnc. The format is described in docs/abi.md.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// Everything a trainer needs to continue a run as if it had never stopped:
/// the parameters, the optimizer state, the shuffling generator, the
/// training order, and where in which epoch it stopped.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CHECKPOINT_H
#define NNC_RUNTIME_CHECKPOINT_H

#include "Manifest.h"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nnc {

struct Checkpoint {
  uint64_t Seed = 0;   ///< The run's --seed (the dropout masks' seed).
  uint64_t Epochs = 0; ///< Epochs completed.
  /// Rows of epoch Epochs + 1 already trained, in Order: 0 at an epoch's
  /// end; more when the run was interrupted within an epoch.
  uint64_t Offset = 0;
  uint64_t Steps = 0; ///< Optimizer steps taken.
  /// The running loss of the unfinished epoch: the sum of its batch losses
  /// weighted by their rows, and the rows counted (with --on-nan skip-batch,
  /// fewer than Offset).
  double LossSum = 0;
  uint64_t LossRows = 0;
  std::array<uint64_t, 4> Shuffler = {}; ///< The epoch shuffles' generator.
  std::vector<uint64_t> Order; ///< The training rows in their current order.
  std::string_view Params;     ///< M.ParamCount elements of M's dtype.
  std::string_view State;      ///< M.StateCount elements.
};

/// Writes \p C as a checkpoint file of \p M, atomically (Files.h).
bool writeCheckpoint(const std::string &Path, const Manifest &M,
                     const Checkpoint &C, std::string &Err);

/// Checks the bytes of a checkpoint file against \p M and reads them into
/// \p C, whose Params and State then point into \p File. On failure \p Err
/// says what is wrong, without the file's name. Never reads outside \p File
/// and allocates no more than \p File's size.
bool parseCheckpoint(std::string_view File, const Manifest &M, Checkpoint &C,
                     std::string &Err);

/// Reads the checkpoint file \p Path into \p Bytes and parses it into \p C
/// (pointing into \p Bytes). \p Err names the file.
bool loadCheckpoint(const std::string &Path, const Manifest &M,
                    std::string &Bytes, Checkpoint &C, std::string &Err);

} // namespace nnc

#endif // NNC_RUNTIME_CHECKPOINT_H
