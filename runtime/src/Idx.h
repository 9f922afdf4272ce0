//===- Idx.h - Load MNIST's IDX files ---------------------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The IDX loader: a folder holding MNIST's four files, images and labels of
/// the training set and of the test set, each raw or gzip-compressed. The
/// files fix the split: the training rows come first, then the test rows.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_IDX_H
#define NNC_RUNTIME_IDX_H

#include "Csv.h"
#include "Dataset.h"
#include "Manifest.h"

#include <string>

namespace nnc {

/// Reads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` from the folder
/// \p Dir (each name, or failing that the name with `.gz`) into \p T, laid out
/// for \p M: one input as wide as an image, whose pixels 0..255 map linearly
/// onto [M.PixelLow, M.PixelHigh], and one class label. Sets T.FixedSplit.
/// On failure returns false and fills \p Err.
bool loadIdx(const std::string &Dir, const Manifest &M, Table &T,
             LoadError &Err);

} // namespace nnc

#endif // NNC_RUNTIME_IDX_H
