//===- Files.cpp - Files that appear complete or not at all ---------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Files.h"

#include "Random.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

using namespace nnc;

namespace {

/// Creates a new file "<Path>.tmp.XXXXXX" for writing, with the Xs replaced
/// by a fresh suffix; -1 with errno set on failure. This is mkstemp, except
/// that the file gets mode 0666 minus the umask, as fopen would give it,
/// rather than mkstemp's 0600: the file renamed over \p Path is the user's.
int createTemp(const std::string &Path, std::string &Temp) {
  static const char Alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  // Names need to be unlikely to collide, not reproducible: seed from the
  // clock, the process and a counter.
  static std::atomic<uint64_t> Calls{0};
  uint64_t Seed =
      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      (uint64_t(::getpid()) << 32) ^ ++Calls;
  Rng Gen(Seed);
  for (int Attempt = 0; Attempt < 100; ++Attempt) {
    Temp = Path + ".tmp.";
    for (int I = 0; I < 6; ++I)
      Temp += Alphabet[Gen.below(sizeof(Alphabet) - 1)];
    int Fd =
        ::open(Temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (Fd >= 0 || errno != EEXIST)
      return Fd;
  }
  return -1; // errno is EEXIST.
}

bool writeAll(int Fd, std::string_view Bytes) {
  while (!Bytes.empty()) {
    ssize_t N = ::write(Fd, Bytes.data(), Bytes.size());
    if (N < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    Bytes.remove_prefix(size_t(N));
  }
  return true;
}

/// Makes the rename durable; a failure here loses nothing that the rename
/// has not already published, so it is not reported.
void syncDirectoryOf(const std::string &Path) {
  size_t Slash = Path.rfind('/');
  std::string Dir =
      Slash == std::string::npos ? "." : Path.substr(0, Slash + 1);
  int Fd = ::open(Dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (Fd >= 0) {
    ::fsync(Fd);
    ::close(Fd);
  }
}

} // namespace

bool nnc::writeFileAtomically(const std::string &Path,
                              std::initializer_list<std::string_view> Parts,
                              std::string &Err) {
  std::string Temp;
  int Fd = createTemp(Path, Temp);
  if (Fd < 0) {
    const char *Why = std::strerror(errno);
    Err = "cannot create '" + Path + ".tmp.XXXXXX': " + Why;
    return false;
  }
  bool Ok = true;
  for (std::string_view Part : Parts)
    Ok = Ok && writeAll(Fd, Part);
  Ok = Ok && ::fsync(Fd) == 0;
  int Saved = errno;
  if (::close(Fd) != 0 && Ok) {
    Ok = false;
    Saved = errno;
  }
  if (!Ok) {
    std::remove(Temp.c_str());
    Err = "writing '" + Temp + "': " + std::strerror(Saved);
    return false;
  }
  if (std::rename(Temp.c_str(), Path.c_str()) != 0) {
    Saved = errno;
    std::remove(Temp.c_str());
    Err = "cannot rename '" + Temp + "' over it: " + std::strerror(Saved);
    return false;
  }
  syncDirectoryOf(Path);
  return true;
}

bool nnc::readFile(const std::string &Path, std::string &Out, bool &Opened) {
  FILE *F = std::fopen(Path.c_str(), "rb");
  Opened = F != nullptr;
  if (!F)
    return false;
  char Buf[1 << 16];
  size_t N;
  while ((N = std::fread(Buf, 1, sizeof(Buf), F)) > 0)
    Out.append(Buf, N);
  bool Ok = !std::ferror(F);
  int Saved = errno;
  std::fclose(F);
  errno = Saved;
  return Ok;
}
