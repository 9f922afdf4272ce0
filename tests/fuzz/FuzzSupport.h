//===- FuzzSupport.h - What the runtime's fuzz targets share ----*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The runtime's readers take paths, as the trainer gives them; a fuzz
/// target writes each input to a file in a private scratch folder and calls
/// the reader on that. The readers lay data out for a Manifest, which a
/// target builds from the few records that matter to the reader.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_TESTS_FUZZ_FUZZSUPPORT_H
#define NNC_TESTS_FUZZ_FUZZSUPPORT_H

#include "Manifest.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nnc {
namespace fuzz {

/// The private scratch folder of this process, made on first use in
/// $TMPDIR (or /dev/shm, or /tmp) and removed with what it holds at exit.
const std::string &scratchDir();

/// Replaces the file \p Path by \p Bytes; aborts when it cannot, since a
/// fuzz target that cannot write its input tests nothing.
void writeFile(const std::string &Path, std::string_view Bytes);

/// The manifest of a model whose data records (`input` and `label`) are
/// \p Slots and whose data source is \p Source, both given as manifest lines
/// with tab-separated fields; every other record is a fixed, valid one.
/// Aborts when the result does not parse: that is a bug of the target.
Manifest makeManifest(const std::string &Slots, const std::string &Source);

} // namespace fuzz
} // namespace nnc

#endif // NNC_TESTS_FUZZ_FUZZSUPPORT_H
