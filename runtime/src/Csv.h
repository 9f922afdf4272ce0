//===- Csv.h - Load a data set from a CSV file ------------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The CSV loader. The file has a header line; the manifest's `csv_label`
/// columns are the labels and every other column, in file order, is a
/// feature of the model's single input.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CSV_H
#define NNC_RUNTIME_CSV_H

#include "Dataset.h"
#include "Manifest.h"

#include <string>

namespace nnc {

/// Why a file could not be loaded.
struct LoadError {
  /// "<path>:<line>" or "<path>" when the file's content is to blame, empty
  /// when the file could not be read at all (the message names it then).
  std::string Where;
  std::string Message;
};

/// Reads \p Path into \p T, laid out for \p M. On failure returns false and
/// fills \p Err.
bool loadCsv(const std::string &Path, const Manifest &M, Table &T,
             LoadError &Err);

} // namespace nnc

#endif // NNC_RUNTIME_CSV_H
