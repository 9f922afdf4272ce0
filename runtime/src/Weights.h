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

/// FNV-1a, 64-bit: the fingerprint of the manifest in a weights file, so
/// that weights are never loaded into a different model.
uint64_t fnv1a64(std::string_view Bytes);

/// Writes the weights file (format v1) for \p M with the parameters
/// \p Params. The file appears complete or not at all: it is written to
/// "<Path>.tmp.XXXXXX", synced, and renamed over \p Path. On failure the
/// temporary file is removed and \p Err says why.
bool writeWeights(const std::string &Path, const Manifest &M,
                  const void *Params, std::string &Err);

} // namespace nnc

#endif // NNC_RUNTIME_WEIGHTS_H
