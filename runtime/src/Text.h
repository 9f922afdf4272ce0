//===- Text.h - Text corpora as tables of token indices ---------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The `tagged` and `polarity` sources: sentences read by Corpus.h, laid out
/// for a model's `index[T, V]` input and its class label. The words stay text
/// until the split is known, because the vocabulary is built from the
/// training rows only; encodeWords() then writes the indices.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_TEXT_H
#define NNC_RUNTIME_TEXT_H

#include "Csv.h"
#include "Dataset.h"
#include "Manifest.h"

#include <string>
#include <vector>

namespace nnc {

/// Each row's words, for encodeWords().
using TextRows = std::vector<std::vector<std::string>>;

/// Reads the corpus at \p Path (M.SourceKind: "tagged" or "polarity") into
/// \p T and \p Words. Labels become classes numbered in the sorted order of
/// their names (T's label slot keeps the names); a tag sequence is cut or
/// padded to the label's length, padding with -1, which is not scored.
bool loadText(const std::string &Path, const Manifest &M, Table &T,
              TextRows &Words, LoadError &Err);

/// What encodeWords() found, for the trainer to report.
struct VocabularyInfo {
  size_t Seen = 0; ///< Distinct words of the training rows.
  size_t Kept = 0; ///< Entries of the vocabulary, padding and unknown included.
  size_t Cut = 0;  ///< Rows longer than the input's length, cut.
};

/// Builds the vocabulary of the input's size V from \p TrainRows (Corpus.h:
/// 0 padding, 1 unknown, the most frequent words first) and writes every
/// row's word indices into the input slot, cut or padded with 0 to its
/// length T. The slot's Names become the vocabulary.
VocabularyInfo encodeWords(const TextRows &Words, const Manifest &M,
                           const std::vector<size_t> &TrainRows, Table &T);

} // namespace nnc

#endif // NNC_RUNTIME_TEXT_H
