//===- Weights.cpp - The trained weights file -----------------------------===//
//
// Part of nnc. The format is described in docs/abi.md.
//
//===----------------------------------------------------------------------===//

#include "Weights.h"

#include "Files.h"

#include <cstring>

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

  size_t Bytes = size_t(M.ParamCount) * Elem;
  std::string What;
  if (!writeFileAtomically(
          Path,
          {std::string_view(reinterpret_cast<const char *>(Header),
                            sizeof(Header)),
           std::string_view(static_cast<const char *>(Params), Bytes)},
          What)) {
    Err = "cannot write weights file '" + Path + "': " + What;
    return false;
  }
  return true;
}
