//===- Predict.h - The predict command --------------------------*- C++ -*-===//
//
// Part of nnc. The input and output formats are described in docs/abi.md.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// `trainer predict --input FILE`: the model's output for new rows, through
/// nnc_predict (inference mode, no gradients), written as CSV. The new rows
/// are appended to the training data set before it is standardized and its
/// vocabulary built, so that they go through exactly the transformations
/// the training rows went through (statistics from the training split).
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_PREDICT_H
#define NNC_RUNTIME_PREDICT_H

#include "Csv.h"
#include "Dataset.h"
#include "Manifest.h"
#include "Model.h"
#include "Text.h"

#include <string>

namespace nnc {

/// Reads the rows to predict from \p Path and appends them to \p T (and, for
/// a text source, their words to \p Words), labels unknown. A text source
/// reads one sentence per line; every other source a CSV with a header whose
/// columns are the training file's: label columns, when present, are
/// ignored.
bool appendPredictRows(const std::string &Path, const Manifest &M, Table &T,
                       TextRows &Words, LoadError &Err);

/// Predicts rows [First, T.Rows) of \p T with \p Mod and writes them as CSV
/// to \p Output (stdout when empty), with the rows' clusters for each
/// `after kmeans` step (k-means run again on rows [0, First)). \p Err says
/// why on failure.
bool writePredictions(const Manifest &M, Model &Mod, const Table &T,
                      const TextRows &Words, size_t First,
                      const std::string &Output, std::string &Err);

} // namespace nnc

#endif // NNC_RUNTIME_PREDICT_H
