//===- Diagnostics.h - Clang-style diagnostics for spec files ----*- C++ -*-===//
//
// Every user-facing error of the compiler goes through DiagnosticEngine:
// `file:line:col: error: message`, the source line, and a caret under the
// offending range. Errors never stop the engine; callers keep going so that
// one run reports every error of a file.
//
//===----------------------------------------------------------------------===//
#ifndef NNC_FRONTEND_DIAGNOSTICS_H
#define NNC_FRONTEND_DIAGNOSTICS_H

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

namespace nnc {

/// A position in a spec: 1-based line and column (in characters), and the
/// length of the range it starts. Line 0 means "no position".
struct SourceLoc {
  uint32_t line = 0;
  uint32_t col = 0;
  uint32_t length = 1;
  bool valid() const { return line != 0; }
};

/// The text of one spec file, with its lines indexed for diagnostics.
class SourceFile {
public:
  SourceFile(std::string path, std::string text);
  const std::string &path() const { return Path; }
  const std::string &text() const { return Text; }
  /// The text of a 1-based line, without its line terminator.
  std::string_view line(uint32_t lineNo) const;
  uint32_t lineCount() const { return LineStarts.size(); }

private:
  std::string Path;
  std::string Text;
  std::vector<size_t> LineStarts;
};

enum class Severity { Error, Warning, Note };

class DiagnosticEngine {
public:
  DiagnosticEngine(const SourceFile &file, std::ostream &os)
      : File(file), OS(os) {}

  void error(SourceLoc loc, const std::string &message) {
    report(Severity::Error, loc, message);
  }
  void warning(SourceLoc loc, const std::string &message) {
    report(Severity::Warning, loc, message);
  }
  void note(SourceLoc loc, const std::string &message) {
    report(Severity::Note, loc, message);
  }
  void report(Severity severity, SourceLoc loc, const std::string &message);

  unsigned errorCount() const { return Errors; }
  bool hasErrors() const { return Errors != 0; }
  const SourceFile &file() const { return File; }

  /// Stop printing after this many errors (a binary file would otherwise
  /// print one error per byte).
  static constexpr unsigned MaxErrors = 50;

private:
  const SourceFile &File;
  std::ostream &OS;
  unsigned Errors = 0;
  bool Truncated = false;
};

/// The candidate closest to `name` by edit distance, or "" when none is close
/// enough to be worth suggesting.
std::string closestMatch(std::string_view name,
                         const std::vector<std::string> &candidates);

/// `message` followed by "; did you mean 'x'?" when a close candidate exists.
std::string withSuggestion(std::string message, std::string_view name,
                           const std::vector<std::string> &candidates);

} // namespace nnc

#endif // NNC_FRONTEND_DIAGNOSTICS_H
