//===- Weights.cpp - The trained weights file -----------------------------===//
//
// Part of nnc. The format is described in docs/abi.md.
//
//===----------------------------------------------------------------------===//

#include "Weights.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "weights files are little-endian: add byte swapping for this host"
#endif

using namespace nnc;

uint64_t nnc::fnv1a64(std::string_view Bytes) {
  uint64_t H = 0xcbf29ce484222325ULL;
  for (unsigned char C : Bytes) {
    H ^= C;
    H *= 0x100000001b3ULL;
  }
  return H;
}

static void putLE(unsigned char *&P, uint64_t V, int Bytes) {
  for (int I = 0; I < Bytes; ++I)
    *P++ = static_cast<unsigned char>(V >> (8 * I));
}

/// Makes the rename durable; a failure here loses nothing that the rename
/// has not already published, so it is not reported.
static void syncDirectoryOf(const std::string &Path) {
  size_t Slash = Path.rfind('/');
  std::string Dir =
      Slash == std::string::npos ? "." : Path.substr(0, Slash + 1);
  int Fd = ::open(Dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (Fd >= 0) {
    ::fsync(Fd);
    ::close(Fd);
  }
}

bool nnc::writeWeights(const std::string &Path, const Manifest &M,
                       const void *Params, std::string &Err) {
  size_t Elem = elementSize(M.Type);
  unsigned char Header[28];
  unsigned char *P = Header;
  std::memcpy(P, "NNCW", 4);
  P += 4;
  putLE(P, 1, 4);    // Format version.
  putLE(P, Elem, 4); // Element size.
  putLE(P, uint64_t(M.ParamCount), 8);
  putLE(P, fnv1a64(M.Text), 8);

  std::string Temp = Path + ".tmp." + std::to_string(long(::getpid()));
  auto Fail = [&](const std::string &What) {
    Err = "cannot write weights file '" + Path + "': " + What + ": " +
          std::strerror(errno);
    return false;
  };

  FILE *F = std::fopen(Temp.c_str(), "wb");
  if (!F)
    return Fail("cannot create '" + Temp + "'");
  size_t Bytes = size_t(M.ParamCount) * Elem;
  bool Ok = std::fwrite(Header, 1, sizeof(Header), F) == sizeof(Header) &&
            std::fwrite(Params, 1, Bytes, F) == Bytes && std::fflush(F) == 0 &&
            ::fsync(::fileno(F)) == 0;
  int Saved = errno;
  if (std::fclose(F) != 0 && Ok) {
    Ok = false;
    Saved = errno;
  }
  if (Ok && std::rename(Temp.c_str(), Path.c_str()) != 0) {
    Saved = errno;
    std::remove(Temp.c_str());
    errno = Saved;
    return Fail("cannot rename '" + Temp + "' over it");
  }
  if (!Ok) {
    std::remove(Temp.c_str());
    errno = Saved;
    return Fail("writing '" + Temp + "'");
  }
  syncDirectoryOf(Path);
  return true;
}
