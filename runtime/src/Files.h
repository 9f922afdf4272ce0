//===- Files.h - Files that appear complete or not at all -------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_FILES_H
#define NNC_RUNTIME_FILES_H

#include <initializer_list>
#include <string>
#include <string_view>

namespace nnc {

/// Reads the whole file \p Path into \p Out; false with errno set on
/// failure, and \p Opened saying whether the failure came after opening the
/// file (reading a folder does).
bool readFile(const std::string &Path, std::string &Out, bool &Opened);

/// Replaces \p Path by a file holding the concatenation of \p Parts. The
/// file appears complete or not at all: the bytes go to a new file
/// "<Path>.tmp.XXXXXX" in the same folder, which is synced, closed and
/// renamed over \p Path. On failure the temporary file is removed, \p Path
/// is untouched, and \p Err says which step failed and why, e.g.
/// "cannot create 'out.tmp.XXXXXX': No such file or directory"; it does not
/// name \p Path, so that the caller can say what the file was.
bool writeFileAtomically(const std::string &Path,
                         std::initializer_list<std::string_view> Parts,
                         std::string &Err);

} // namespace nnc

#endif // NNC_RUNTIME_FILES_H
