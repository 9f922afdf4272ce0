//===- Weights.h - The trained weights file ---------------------*- C++ -*-===//
//
// Part of nnc. The format is described in docs/abi.md.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_WEIGHTS_H
#define NNC_RUNTIME_WEIGHTS_H

#include "Manifest.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace nnc {

/// The fingerprint of a model in its weights and checkpoint files: FNV-1a 64
/// of the manifest lines that fix the parameter layout and the data's shapes
/// (`nnc-manifest`, `dtype`, `param`, `params`, `input`, `label`, `output`),
/// so that a file is never loaded into a different model while the spec's
/// training settings (epochs, data path, ...) may change. With
/// \p WithOptimizer, also the `state` and `optimizer` lines: a checkpoint's
/// optimizer state fits only the same optimizer.
uint64_t modelHash(const Manifest &M, bool WithOptimizer);

/// Writes the weights file (format v2) for \p M with the parameters
/// \p Params, atomically (Files.h). On failure \p Err says why.
bool writeWeights(const std::string &Path, const Manifest &M,
                  const void *Params, std::string &Err);

/// Checks the bytes of a weights file against \p M: magic, version,
/// element size, parameter count, model hash, length and checksum. On
/// success \p Params points into \p File at the parameter array; otherwise
/// \p Err says what is wrong, without the file's name.
bool parseWeights(std::string_view File, const Manifest &M,
                  std::string_view &Params, std::string &Err);

/// Reads and checks the weights file \p Path (parseWeights) into \p Params,
/// M.ParamCount elements of M's dtype. \p Err names the file.
bool loadWeights(const std::string &Path, const Manifest &M, void *Params,
                 std::string &Err);

} // namespace nnc

#endif // NNC_RUNTIME_WEIGHTS_H
