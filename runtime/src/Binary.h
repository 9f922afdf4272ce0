//===- Binary.h - Little-endian fields of the runtime's files ---*- C++ -*-===//
//
// Part of nnc. The formats are described in docs/abi.md.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The pieces shared by the weights and checkpoint files: FNV-1a 64 (the
/// model hash and the checksum), a writer that appends little-endian fields
/// to a buffer, and a reader over untrusted bytes that never reads past
/// their end: every read reports whether the field was there.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_BINARY_H
#define NNC_RUNTIME_BINARY_H

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the runtime's files are little-endian: add byte swapping for this host"
#endif

namespace nnc {

constexpr uint64_t Fnv1a64Start = 0xcbf29ce484222325ULL;

/// FNV-1a, 64-bit, continuing from \p H (a previous result, or the start).
inline uint64_t fnv1a64(std::string_view Bytes, uint64_t H = Fnv1a64Start) {
  for (unsigned char C : Bytes) {
    H ^= C;
    H *= 0x100000001b3ULL;
  }
  return H;
}

/// Appends little-endian fields to a byte string.
class ByteWriter {
public:
  void u32(uint32_t V) { put(V, 4); }
  void u64(uint64_t V) { put(V, 8); }
  void f64(double V) {
    uint64_t Bits;
    std::memcpy(&Bits, &V, 8);
    put(Bits, 8);
  }
  void bytes(std::string_view B) { Out.append(B); }
  /// Appends the checksum of everything written so far.
  void checksum() { u64(fnv1a64(Out)); }
  const std::string &data() const { return Out; }

private:
  void put(uint64_t V, int Bytes) {
    for (int I = 0; I < Bytes; ++I)
      Out.push_back(char(V >> (8 * I)));
  }
  std::string Out;
};

/// Reads little-endian fields from untrusted bytes; each read returns false,
/// leaving its output alone, when the bytes run out.
class ByteReader {
public:
  explicit ByteReader(std::string_view Bytes) : Bytes(Bytes) {}

  bool u32(uint32_t &V) {
    uint64_t W;
    if (!get(W, 4))
      return false;
    V = uint32_t(W);
    return true;
  }
  bool u64(uint64_t &V) { return get(V, 8); }
  bool f64(double &V) {
    uint64_t Bits;
    if (!get(Bits, 8))
      return false;
    std::memcpy(&V, &Bits, 8);
    return true;
  }
  /// The next \p N bytes, in place.
  bool bytes(size_t N, std::string_view &B) {
    if (N > remaining())
      return false;
    B = Bytes.substr(Pos, N);
    Pos += N;
    return true;
  }
  size_t remaining() const { return Bytes.size() - Pos; }
  size_t position() const { return Pos; }

private:
  bool get(uint64_t &V, int N) {
    if (size_t(N) > remaining())
      return false;
    V = 0;
    for (int I = 0; I < N; ++I)
      V |= uint64_t(static_cast<unsigned char>(Bytes[Pos + I])) << (8 * I);
    Pos += size_t(N);
    return true;
  }
  std::string_view Bytes;
  size_t Pos = 0;
};

/// Checks the trailing checksum of a whole file: false when the file is
/// shorter than one, or its last 8 bytes are not the FNV-1a 64 of the rest.
inline bool checksumMatches(std::string_view File) {
  if (File.size() < 8)
    return false;
  ByteReader Tail(File.substr(File.size() - 8));
  uint64_t Stored = 0;
  Tail.u64(Stored);
  return Stored == fnv1a64(File.substr(0, File.size() - 8));
}

} // namespace nnc

#endif // NNC_RUNTIME_BINARY_H
