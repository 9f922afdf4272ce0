//===- Corpus.h - Read text corpora: tagged sentences, polarity -*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// Readers of the two text formats of specs/data/ and the word vocabulary the
/// sequence models index their embeddings with:
///
/// - a tagged corpus (tagged-en-oanc.txt, oanc-slice.txt, toy-tagged.txt):
///   one sentence per line, tokens `word/TAG` separated by spaces;
/// - a sentence-polarity CSV (polarity-en-pang-lee2.csv, polarity-slice.csv):
///   records `label,text`, no header, the text tokenized by tokenize().
///
/// The readers report a problem by returning false and setting an error
/// message that starts with the file, and the line where one is to blame:
/// "PATH:LINE: message" or "PATH: message". They know nothing of manifests
/// or tables; the loaders that fill a table from them are elsewhere.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CORPUS_H
#define NNC_RUNTIME_CORPUS_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace nnc {

/// One sentence of a tagged corpus: parallel words and tags, never empty.
struct TaggedSentence {
  std::vector<std::string> Words;
  std::vector<std::string> Tags;
};

/// Reads a tagged corpus: one sentence per line, tokens `word/TAG` separated
/// by spaces or tabs. The tag is what follows the last '/' of a token, so a
/// word may contain '/' ("1/2/CD" is the word "1/2" tagged CD). Words and tags
/// are kept as written (case preserved). Blank lines are skipped; a UTF-8 byte
/// order mark, CRLF line ends and a last line without a line end are fine.
/// A token without '/', or with an empty word or tag, is an error naming the
/// line and the token, and so is a file without any sentence. Appends to
/// \p Out; on failure returns false, sets \p Err, and \p Out is unspecified.
bool readTaggedCorpus(const std::string &Path, std::vector<TaggedSentence> &Out,
                      std::string &Err);

/// One labelled text of a polarity file.
struct LabelledText {
  std::vector<std::string> Words; ///< tokenize() of the text, never empty.
  std::string Label;              ///< As written, spaces trimmed: "1", "-1".
};

/// Reads a polarity CSV such as Pattern's polarity-en-pang&lee2.csv: records
/// of two fields, the label and the text, with no header. Fields may be
/// double-quoted (as they all are there; "" is a quote, and a quoted field may
/// span lines: every text there ends in a line feed), records end in CRLF or
/// LF (the last may have no line end), blank lines are skipped and a UTF-8
/// byte order mark is ignored. The label is any non-empty text; the words are
/// tokenize(text). A record with other than two fields, an empty label, a
/// text without words, a malformed quoted field, and a file without records
/// are errors. Appends to \p Out; on failure returns false, sets \p Err, and
/// \p Out is unspecified.
bool readPolarityCsv(const std::string &Path, std::vector<LabelledText> &Out,
                     std::string &Err);

/// Splits \p Text into lower-case tokens, the same way for every caller:
/// - ASCII letters are lower-cased; every other byte is kept as it is;
/// - a word is a maximal run of word characters: ASCII letters and digits and
///   every byte >= 0x80 (so UTF-8 letters, but also UTF-8 punctuation such as
///   an em dash, are word characters), with an apostrophe that has a word
///   character on both sides inside the word: "don't" and "century's" are one
///   token each, "'hello'" is "'", "hello", "'";
/// - any other printable ASCII character is a token of its own: "co-writer"
///   is "co", "-", "writer" and "3.5" is "3", ".", "5";
/// - spaces and control characters separate tokens and are dropped.
std::vector<std::string> tokenize(const std::string &Text);

/// A word vocabulary built from training rows. Index 0 is the padding entry
/// "<pad>" and 1 the unknown word "<unk>"; then come the words of the rows by
/// descending count, ties broken by first appearance. The reserved entries
/// are not words: a row's literal "<pad>" is a word like any other, and
/// index("<pad>") is 1 unless the rows hold it.
class Vocabulary {
public:
  /// No cap on the size.
  static constexpr size_t NoCap = SIZE_MAX;

  /// Replaces the vocabulary by the words of \p Rows, keeping at most
  /// \p Capacity entries in all, the two reserved ones included (a capacity
  /// below 2 keeps just those); the words that do not fit map to unknown.
  void build(const std::vector<const std::vector<std::string> *> &Rows,
             size_t Capacity);

  /// The index of \p Word; 1 (unknown) when it is not in the vocabulary.
  int32_t index(const std::string &Word) const;
  /// The entry at \p Index, which must be below size().
  const std::string &word(int32_t Index) const { return Words[size_t(Index)]; }
  /// The number of entries, the two reserved ones included.
  size_t size() const { return Words.size(); }
  /// The number of distinct words in the rows, before the cap.
  size_t distinctSeen() const { return Distinct; }

  static constexpr int32_t Pad = 0;
  static constexpr int32_t Unknown = 1;

private:
  std::vector<std::string> Words{"<pad>", "<unk>"};
  std::unordered_map<std::string, int32_t> Indices;
  size_t Distinct = 0;
};

} // namespace nnc

#endif // NNC_RUNTIME_CORPUS_H
