//===- Csv.cpp - Load a data set from a CSV file --------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// The dialect is RFC 4180 with the usual leniencies: a header line is
// required, fields are separated by commas and may be double-quoted ("" is a
// quote inside a quoted field, which may span lines), lines end in LF or CRLF,
// blank lines are skipped, and a UTF-8 byte order mark is ignored. Numbers
// may have spaces around them but must otherwise be the whole field.
//
//===----------------------------------------------------------------------===//

#include "Csv.h"
#include "CsvRecords.h"
#include "Files.h"
#include "Numbers.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <string_view>

using namespace nnc;

namespace {

std::string quote(std::string_view S) { return "'" + std::string(S) + "'"; }

/// The values of one class label column as written, resolved to class
/// indices once the whole column is known.
struct ClassColumn {
  size_t Slot;   ///< Index into Table::Slots.
  size_t Column; ///< Index into the CSV record.
  std::vector<std::string> Values;
};

/// One CSV column that goes into a float slot.
struct FloatColumn {
  size_t Slot;
  size_t Column;
  size_t Offset; ///< Position of the value within the slot's row.
};

class Loader {
public:
  Loader(const std::string &Path, const Manifest &M, Table &T, LoadError &Err)
      : Path(Path), M(M), T(T), Err(Err) {}

  bool load();

private:
  bool fail(int Line, const std::string &Msg) {
    Err.Where = Line > 0 ? Path + ":" + std::to_string(Line) : Path;
    Err.Message = Msg;
    return false;
  }
  bool mapColumns(const std::vector<std::string> &Header, int Line);
  bool resolveClasses(ClassColumn &C);
  std::string columnName(size_t Column) const {
    return Names[Column].empty() ? "#" + std::to_string(Column) : Names[Column];
  }

  const std::string &Path;
  const Manifest &M;
  Table &T;
  LoadError &Err;
  std::vector<std::string> Names; ///< Header, trimmed.
  std::vector<ClassColumn> ClassColumns;
  std::vector<FloatColumn> FloatColumns;
};

/// Decides which CSV column feeds which slot.
bool Loader::mapColumns(const std::vector<std::string> &Header, int Line) {
  for (const std::string &H : Header)
    Names.emplace_back(trimSpaces(H));

  std::vector<size_t> LabelColumns;
  for (const std::string &L : M.CsvLabels) {
    size_t Col = 0;
    int64_t Index;
    if (L.size() > 1 && L[0] == '#' &&
        parseInt64(std::string_view(L).substr(1), Index)) {
      if (Index < 0 || size_t(Index) >= Names.size())
        return fail(Line, "label column " + L +
                              " is out of range (the file has " +
                              std::to_string(Names.size()) + " columns)");
      Col = size_t(Index);
    } else {
      auto It = std::find(Names.begin(), Names.end(), L);
      if (It == Names.end())
        return fail(Line, "no label column " + quote(L) + " in the header");
      if (std::find(It + 1, Names.end(), L) != Names.end())
        return fail(Line, "the header has more than one column " + quote(L));
      Col = size_t(It - Names.begin());
    }
    if (std::find(LabelColumns.begin(), LabelColumns.end(), Col) !=
        LabelColumns.end())
      return fail(Line, "column " + quote(columnName(Col)) +
                            " is named twice as a label column");
    LabelColumns.push_back(Col);
  }

  // Labels take the listed columns in order: one per class label, width
  // many per float label.
  size_t Next = 0;
  size_t InputSlot = 0;
  for (size_t S = 0; S < M.Slots.size(); ++S) {
    const DataSlot &D = M.Slots[S];
    if (!D.IsLabel) {
      InputSlot = S;
      continue;
    }
    if (D.IsClass) {
      ClassColumns.push_back({S, LabelColumns[Next++], {}});
      continue;
    }
    for (int64_t J = 0; J < D.width(); ++J)
      FloatColumns.push_back({S, LabelColumns[Next++], size_t(J)});
  }

  size_t Features = 0;
  for (size_t Col = 0; Col < Names.size(); ++Col)
    if (std::find(LabelColumns.begin(), LabelColumns.end(), Col) ==
        LabelColumns.end())
      FloatColumns.push_back({InputSlot, Col, Features++});
  const DataSlot &Input = M.Slots[InputSlot];
  if (int64_t(Features) != Input.width())
    return fail(Line, "the file has " + std::to_string(Features) +
                          " feature column" + (Features == 1 ? "" : "s") +
                          " but input " + quote(Input.Name) + " takes " +
                          std::to_string(Input.width()) + " values per row");
  return true;
}

/// Class labels are indices when every value is an integer in range, and
/// names otherwise, numbered in byte order of the distinct names (so that
/// "setosa, versicolor, virginica" become 0, 1, 2 whatever the row order).
bool Loader::resolveClasses(ClassColumn &C) {
  SlotData &D = T.Slots[C.Slot];
  int64_t Classes = M.Slots[C.Slot].Classes;
  D.Classes.resize(T.Rows);

  bool AllIndices = true;
  for (size_t R = 0; R < T.Rows && AllIndices; ++R) {
    int64_t V;
    AllIndices = parseInt64(C.Values[R], V) && V >= 0 && V < Classes;
    if (AllIndices)
      D.Classes[R] = int32_t(V);
  }
  if (AllIndices)
    return true;

  std::map<std::string, int32_t> Index;
  for (const std::string &V : C.Values)
    Index.emplace(V, 0);
  if (int64_t(Index.size()) > Classes) {
    std::string Some;
    int Shown = 0;
    for (auto &[Name, Unused] : Index) {
      if (Shown++ == 8) {
        Some += ", ...";
        break;
      }
      Some += (Shown > 1 ? ", " : "") + quote(Name);
    }
    return fail(0, "label column " + quote(columnName(C.Column)) + " has " +
                       std::to_string(Index.size()) + " distinct values (" +
                       Some + ") but label " + quote(M.Slots[C.Slot].Name) +
                       " has " + std::to_string(Classes) + " classes");
  }
  int32_t Next = 0;
  for (auto &[Name, I] : Index) {
    I = Next++;
    D.Names.push_back(Name); // For predictions, which name the classes.
  }
  for (size_t R = 0; R < T.Rows; ++R)
    D.Classes[R] = Index[C.Values[R]];
  return true;
}

bool Loader::load() {
  if (M.numInputs() != 1) {
    Err.Message = "a CSV data source feeds exactly one input, and model " +
                  quote(M.Model) + " has " + std::to_string(M.numInputs());
    return false;
  }
  std::string Text;
  bool Opened;
  if (!readFile(Path, Text, Opened)) {
    Err.Message =
        (Opened ? "cannot read data file " : "cannot open data file ") +
        quote(Path) + ": " + std::strerror(errno);
    return false;
  }

  CsvRecordReader Reader(Text);
  std::vector<std::string> Fields;
  if (!Reader.next(Fields)) {
    if (!Reader.error().empty())
      return fail(Reader.line(), Reader.error());
    return fail(0, "the file is empty (a header line is required)");
  }
  if (!mapColumns(Fields, Reader.line()))
    return false;

  T = Table();
  for (const DataSlot &D : M.Slots) {
    SlotData S;
    S.Width = size_t(D.width());
    S.IsClass = D.IsClass;
    T.Slots.push_back(std::move(S));
  }

  size_t NumColumns = Names.size();
  while (Reader.next(Fields)) {
    int Line = Reader.line();
    if (Fields.size() != NumColumns)
      return fail(Line, "expected " + std::to_string(NumColumns) +
                            " fields, found " + std::to_string(Fields.size()));
    for (SlotData &S : T.Slots)
      if (!S.IsClass)
        S.Values.resize(S.Values.size() + S.Width);
    for (const FloatColumn &C : FloatColumns) {
      SlotData &S = T.Slots[C.Slot];
      double V;
      if (!parseDouble(trimSpaces(Fields[C.Column]), V))
        return fail(Line, "column " + quote(columnName(C.Column)) +
                              ": expected a number, found " +
                              quote(Fields[C.Column]));
      S.Values[T.Rows * S.Width + C.Offset] = V;
    }
    for (ClassColumn &C : ClassColumns)
      C.Values.emplace_back(trimSpaces(Fields[C.Column]));
    ++T.Rows;
  }
  if (!Reader.error().empty())
    return fail(Reader.line(), Reader.error());
  if (T.Rows == 0)
    return fail(0, "no data rows after the header");

  for (ClassColumn &C : ClassColumns)
    if (!resolveClasses(C))
      return false;
  return true;
}

} // namespace

bool nnc::loadCsv(const std::string &Path, const Manifest &M, Table &T,
                  LoadError &Err) {
  return Loader(Path, M, T, Err).load();
}
