//===- JsonLog.h - The per-epoch JSON log -----------------------*- C++ -*-===//
//
// Part of nnc. The record is described in docs/abi.md.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// `--log-json FILE`: one JSON object per line and per epoch, appended to
/// FILE, so that a resumed run continues the log of the run it resumes.
/// Each line goes out in one write() on a file opened with O_APPEND, so a
/// reader never sees half a line from a live trainer.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_JSONLOG_H
#define NNC_RUNTIME_JSONLOG_H

#include <string>
#include <string_view>

namespace nnc {

/// \p S as a JSON string, quotes included.
std::string jsonString(std::string_view S);
/// \p V as a JSON number that reads back to the same double (17 significant
/// digits), or `null` when it is NaN or infinite: JSON has no such numbers.
std::string jsonNumber(double V);

class JsonLog {
public:
  JsonLog() = default;
  JsonLog(const JsonLog &) = delete;
  JsonLog &operator=(const JsonLog &) = delete;
  ~JsonLog();

  /// Opens \p Path for appending, creating it if needed.
  bool open(const std::string &Path, std::string &Err);
  bool isOpen() const { return Fd >= 0; }
  /// Appends \p Object and a newline.
  bool append(const std::string &Object, std::string &Err);

private:
  int Fd = -1;
  std::string Path;
};

} // namespace nnc

#endif // NNC_RUNTIME_JSONLOG_H
