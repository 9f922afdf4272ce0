//===- CsvRecords.h - CSV text split into records ---------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The record splitter shared by the CSV loader and the polarity reader:
/// RFC 4180 fields (double quotes, "" for a quote, quoted fields may span
/// lines), LF or CRLF line ends, blank lines skipped, a UTF-8 byte order
/// mark ignored.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_CSVRECORDS_H
#define NNC_RUNTIME_CSVRECORDS_H

#include <string>
#include <string_view>
#include <vector>

namespace nnc {

/// Splits a CSV text into records, one at a time.
class CsvRecordReader {
public:
  explicit CsvRecordReader(std::string_view Contents) : Text(Contents) {
    if (Text.substr(0, 3) == "\xEF\xBB\xBF")
      Pos = 3;
  }

  /// Reads the next non-blank record into \p Fields. Returns false at the end
  /// of the text or on a malformed record (then Error is set).
  bool next(std::vector<std::string> &Fields);

  /// The line on which the last record returned by next() starts.
  int line() const { return RecordLine; }
  const std::string &error() const { return Error; }

private:
  bool atLineEnd() const {
    return Pos == Text.size() || Text[Pos] == '\n' ||
           (Text[Pos] == '\r' &&
            (Pos + 1 == Text.size() || Text[Pos + 1] == '\n'));
  }
  void skipLineEnd() {
    if (Pos < Text.size() && Text[Pos] == '\r')
      ++Pos;
    if (Pos < Text.size() && Text[Pos] == '\n') {
      ++Pos;
      ++Line;
    }
  }
  bool quotedField(std::string &Field);

  std::string_view Text;
  size_t Pos = 0;
  int Line = 1;
  int RecordLine = 0;
  std::string Error;
};

} // namespace nnc

#endif // NNC_RUNTIME_CSVRECORDS_H
