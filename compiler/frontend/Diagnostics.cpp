//===- Diagnostics.cpp - Clang-style diagnostics for spec files -----------===//

#include "frontend/Diagnostics.h"

#include <algorithm>
#include <ostream>

namespace nnc {

SourceFile::SourceFile(std::string path, std::string text)
    : Path(std::move(path)), Text(std::move(text)) {
  // A UTF-8 byte order mark is no character of the first line: without it
  // here, carets on that line would stand one column to the left.
  if (Text.compare(0, 3, "\xEF\xBB\xBF") == 0)
    Text.erase(0, 3);
  LineStarts.push_back(0);
  for (size_t i = 0; i < Text.size(); ++i)
    if (Text[i] == '\n')
      LineStarts.push_back(i + 1);
}

std::string_view SourceFile::line(uint32_t lineNo) const {
  if (lineNo == 0 || lineNo > LineStarts.size())
    return {};
  size_t begin = LineStarts[lineNo - 1];
  size_t end = Text.find('\n', begin);
  if (end == std::string::npos)
    end = Text.size();
  if (end > begin && Text[end - 1] == '\r')
    --end;
  return std::string_view(Text).substr(begin, end - begin);
}

/// Byte offset of the 1-based character column `col` in a UTF-8 line.
static size_t byteOffsetOfColumn(std::string_view line, uint32_t col) {
  size_t offset = 0;
  for (uint32_t c = 1; c < col && offset < line.size(); ++c) {
    ++offset;
    while (offset < line.size() && (line[offset] & 0xC0) == 0x80)
      ++offset;
  }
  return offset;
}

void DiagnosticEngine::report(Severity severity, SourceLoc loc,
                              const std::string &message) {
  if (severity == Severity::Error)
    ++Errors;
  if (Errors > MaxErrors) {
    if (!Truncated)
      OS << File.path() << ": note: too many errors, stopping here\n";
    Truncated = true;
    return;
  }
  const char *label = severity == Severity::Error     ? "error"
                      : severity == Severity::Warning ? "warning"
                                                      : "note";
  OS << File.path();
  if (loc.valid())
    OS << ':' << loc.line << ':' << loc.col;
  OS << ": " << label << ": " << message << '\n';
  if (!loc.valid())
    return;

  std::string_view text = File.line(loc.line);
  OS << text << '\n';
  // Keep tabs so that the caret lines up under the source line.
  size_t prefix = byteOffsetOfColumn(text, loc.col);
  std::string caret;
  for (size_t i = 0; i < prefix; ++i) {
    unsigned char ch = text[i];
    if (ch == '\t')
      caret += '\t';
    else if ((ch & 0xC0) != 0x80)
      caret += ' ';
  }
  caret += '^';
  size_t width = std::max<uint32_t>(loc.length, 1);
  size_t room = text.size() > prefix ? text.size() - prefix : 1;
  caret.append(std::min(width, room) - 1, '~');
  OS << caret << '\n';
}

/// Optimal string alignment distance: edits, with a swap of two neighbouring
/// characters counted as one ("rleu" is one edit from "relu").
static size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1,
                                     std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i)
    d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j)
    d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string closestMatch(std::string_view name,
                         const std::vector<std::string> &candidates) {
  std::string best;
  // Names longer than any candidate are not worth a quadratic comparison.
  if (name.size() > 64)
    return best;
  size_t bestDistance = std::max<size_t>((name.size() + 2) / 3, 1) + 1;
  for (const std::string &candidate : candidates) {
    size_t d = editDistance(name, candidate);
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  return best;
}

std::string withSuggestion(std::string message, std::string_view name,
                           const std::vector<std::string> &candidates) {
  std::string best = closestMatch(name, candidates);
  if (!best.empty())
    message += "; did you mean '" + best + "'?";
  return message;
}

} // namespace nnc
