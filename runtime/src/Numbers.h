//===- Numbers.h - Strict, locale-independent number parsing ----*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// Parsers that accept a number only if it is the whole text: "1.5x", "" and
/// "1e999" are errors, never a silent prefix or infinity. std::from_chars is
/// used because strtod follows the C locale, which a host program may change.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_NUMBERS_H
#define NNC_RUNTIME_NUMBERS_H

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace nnc {

/// \p S without leading and trailing spaces and tabs.
inline std::string_view trimSpaces(std::string_view S) {
  while (!S.empty() && (S.front() == ' ' || S.front() == '\t'))
    S.remove_prefix(1);
  while (!S.empty() && (S.back() == ' ' || S.back() == '\t'))
    S.remove_suffix(1);
  return S;
}

/// from_chars accepts neither a leading '+' nor the empty string; a '+'
/// followed by a digit or a point is accepted here because CSV writers emit it.
inline std::string_view dropPlus(std::string_view S) {
  if (S.size() >= 2 && S[0] == '+' &&
      (S[1] == '.' || (S[1] >= '0' && S[1] <= '9')))
    S.remove_prefix(1);
  return S;
}

/// A finite double that is all of \p S.
inline bool parseDouble(std::string_view S, double &Out) {
  S = dropPlus(S);
  if (S.empty())
    return false;
  double V;
  auto [End, Ec] = std::from_chars(S.data(), S.data() + S.size(), V);
  if (Ec != std::errc() || End != S.data() + S.size() || !std::isfinite(V))
    return false;
  Out = V;
  return true;
}

/// A decimal int64_t that is all of \p S.
inline bool parseInt64(std::string_view S, int64_t &Out) {
  S = dropPlus(S);
  if (S.empty())
    return false;
  int64_t V;
  auto [End, Ec] = std::from_chars(S.data(), S.data() + S.size(), V);
  if (Ec != std::errc() || End != S.data() + S.size())
    return false;
  Out = V;
  return true;
}

/// A decimal uint64_t that is all of \p S (no sign).
inline bool parseUInt64(std::string_view S, uint64_t &Out) {
  if (S.empty() || S[0] < '0' || S[0] > '9')
    return false;
  uint64_t V;
  auto [End, Ec] = std::from_chars(S.data(), S.data() + S.size(), V);
  if (Ec != std::errc() || End != S.data() + S.size())
    return false;
  Out = V;
  return true;
}

} // namespace nnc

#endif // NNC_RUNTIME_NUMBERS_H
