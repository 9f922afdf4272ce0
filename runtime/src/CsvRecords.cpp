//===- CsvRecords.cpp - CSV text split into records -----------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "CsvRecords.h"

using namespace nnc;

bool CsvRecordReader::next(std::vector<std::string> &Fields) {
  while (Pos < Text.size() && atLineEnd())
    skipLineEnd();
  if (Pos == Text.size())
    return false;
  RecordLine = Line;
  size_t N = 0;
  for (;;) {
    if (N == Fields.size())
      Fields.emplace_back();
    std::string &Field = Fields[N++];
    Field.clear();
    if (Pos < Text.size() && Text[Pos] == '"') {
      if (!quotedField(Field))
        return false;
    } else {
      size_t Start = Pos;
      while (Pos < Text.size() && Text[Pos] != ',' && !atLineEnd())
        ++Pos;
      Field.assign(Text.data() + Start, Pos - Start);
    }
    if (Pos < Text.size() && Text[Pos] == ',') {
      ++Pos;
      continue;
    }
    skipLineEnd();
    Fields.resize(N);
    return true;
  }
}

bool CsvRecordReader::quotedField(std::string &Field) {
  ++Pos; // The opening quote.
  for (;;) {
    if (Pos == Text.size()) {
      Error = "unterminated quoted field";
      return false;
    }
    char C = Text[Pos++];
    if (C == '"') {
      if (Pos < Text.size() && Text[Pos] == '"') {
        Field += '"';
        ++Pos;
        continue;
      }
      if (Pos < Text.size() && Text[Pos] != ',' && !atLineEnd()) {
        Error = "unexpected character after a closing quote";
        return false;
      }
      return true;
    }
    if (C == '\n')
      ++Line;
    Field += C;
  }
}
