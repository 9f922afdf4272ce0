//===- Format.h - Number formatting shared by the stages --------*- C++ -*-===//
#ifndef NNC_SUPPORT_FORMAT_H
#define NNC_SUPPORT_FORMAT_H

#include <charconv>
#include <string>

namespace nnc {

/// The shortest text that reads back as exactly `value` ("0.05", not
/// "0.050000000000000003"): what the manifest and diagnostics print.
inline std::string formatExact(double value) {
  char buffer[32];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

} // namespace nnc

#endif // NNC_SUPPORT_FORMAT_H
