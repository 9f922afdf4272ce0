//===- Check.h - The unit tests' CHECK ---------------------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// CHECK(Cond) reports a failed condition with its place and counts it in
/// Failures; a unit test's main returns non-zero when Failures is.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_TESTS_UNIT_CHECK_H
#define NNC_TESTS_UNIT_CHECK_H

#include <cstdio>

static int Failures = 0;

#define CHECK(Cond)                                                            \
  do {                                                                         \
    if (!(Cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,    \
                   #Cond);                                                     \
      ++Failures;                                                              \
    }                                                                          \
  } while (0)

#endif // NNC_TESTS_UNIT_CHECK_H
