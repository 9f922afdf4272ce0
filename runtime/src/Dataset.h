//===- Dataset.h - Rows in memory, splits, batches --------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// A data set as the loaders produce it (one column group per manifest input
/// or label, values held as double whatever the model's dtype), and what the
/// trainer does with it: the train/test split, standardization, and the
/// gathering of rows into the dtype buffers that generated code reads.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_DATASET_H
#define NNC_RUNTIME_DATASET_H

#include "Manifest.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nnc {

/// The values of one manifest input or label, for every row.
struct SlotData {
  size_t Width = 0; ///< Values per row; the sequence length for integers.
  bool IsClass = false; ///< Integers: class labels or indices.
  std::vector<double> Values;   ///< Rows x Width, row-major; float slots.
  /// A float slot of few distinct values (IDX pixels) may instead hold a
  /// byte per value, standing for CodeValues[byte]: an eighth of the
  /// memory. Values is then empty.
  std::vector<uint8_t> Codes;
  std::vector<double> CodeValues;
  std::vector<int32_t> Classes; ///< Rows x Width; integer slots.
  /// What each integer stands for, when the source knows: a corpus's
  /// vocabulary (index 0 padding, 1 unknown) or its class names.
  std::vector<std::string> Names;

  /// Turns a coded slot (Codes) into a plain one (Values).
  void decode();
};

/// A whole data set, before splitting.
struct Table {
  size_t Rows = 0;
  std::vector<SlotData> Slots; ///< Parallel to Manifest::Slots.
  /// Set by a source whose files say which rows are for training (MNIST's
  /// train and t10k files): rows [0, FixedTrainRows) are the training split
  /// and the rest the test split, both in file order; the manifest's `split`
  /// fractions and seed are not used.
  bool FixedSplit = false;
  size_t FixedTrainRows = 0;
};

/// Row indices into a Table, in the order they are used.
struct Split {
  std::vector<size_t> Train;
  std::vector<size_t> Test;
};

/// Shuffles 0..Rows-1 with \p Seed, then takes the first
/// round(TrainFraction * Rows) indices for training and the next
/// round(TestFraction * Rows) (as many as are left) for testing.
Split splitRows(size_t Rows, double TrainFraction, double TestFraction,
                uint64_t Seed);

/// The split of a Table whose source fixed it (Table::FixedSplit).
Split fixedSplit(const Table &T);

/// Scales every value of every float input slot (not labels, not indices)
/// to zero mean and unit variance, with the mean and population standard
/// deviation of \p TrainRows. A constant feature (standard deviation 0) is
/// only centred.
void standardize(Table &T, const Manifest &M,
                 const std::vector<size_t> &TrainRows);

/// Copies rows Rows[0, N) of every slot into Dest (one buffer per slot, in
/// slot order, each holding at least N rows): class labels as int32, the
/// rest converted to \p Type.
void gatherRows(const Table &T, const size_t *Rows, size_t N, DType Type,
                void *const *Dest);

} // namespace nnc

#endif // NNC_RUNTIME_DATASET_H
