//===- Random.h - Portable deterministic random numbers ---------*- C++ -*-===//
//
// Part of nnc. The runtime's only source of randomness.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// xoshiro256** seeded through splitmix64, with uniform doubles, unbiased
/// bounded integers and a Fisher-Yates shuffle. The standard library's
/// distributions are implementation-defined, so a trainer built with
/// libstdc++ and one built with libc++ would initialise and shuffle
/// differently; everything here is specified bit for bit.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_RANDOM_H
#define NNC_RUNTIME_RANDOM_H

#include <array>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <utility>

namespace nnc {

/// splitmix64 (Steele, Lea, Flood 2014): expands one 64-bit seed into the
/// four words of xoshiro's state, so that nearby seeds give unrelated streams.
inline uint64_t splitmix64(uint64_t &State) {
  uint64_t Z = (State += 0x9e3779b97f4a7c15ULL);
  Z = (Z ^ (Z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  Z = (Z ^ (Z >> 27)) * 0x94d049bb133111ebULL;
  return Z ^ (Z >> 31);
}

/// xoshiro256** 1.0 (Blackman, Vigna 2018).
class Rng {
public:
  explicit Rng(uint64_t Seed) {
    uint64_t SM = Seed;
    for (uint64_t &Word : S)
      Word = splitmix64(SM);
  }

  uint64_t next() {
    uint64_t Result = rotl(S[1] * 5, 7) * 9;
    uint64_t T = S[1] << 17;
    S[2] ^= S[0];
    S[3] ^= S[1];
    S[1] ^= S[2];
    S[0] ^= S[3];
    S[2] ^= T;
    S[3] = rotl(S[3], 45);
    return Result;
  }

  /// A double uniform in [0, 1): the top 53 bits of one draw.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// A draw from N(0, 1) by the Box-Muller transform (one draw per pair of
  /// uniforms: simple, and the same on every platform).
  double normal() {
    double U1 = 1.0 - uniform(); // in (0, 1], so the log is finite
    double U2 = uniform();
    return std::sqrt(-2.0 * std::log(U1)) * std::cos(6.283185307179586 * U2);
  }

  /// An integer uniform in [0, N), N > 0, without modulo bias: draws below
  /// 2^64 mod N are rejected so that every residue is equally likely.
  uint64_t below(uint64_t N) {
    uint64_t Threshold = (0 - N) % N;
    for (;;) {
      uint64_t R = next();
      if (R >= Threshold)
        return R % N;
    }
  }

  /// The generator's whole state, for checkpoints: a generator given back
  /// its state continues the same sequence.
  std::array<uint64_t, 4> state() const { return {S[0], S[1], S[2], S[3]}; }
  void setState(const std::array<uint64_t, 4> &State) {
    for (int I = 0; I < 4; ++I)
      S[I] = State[I];
  }

  /// Fisher-Yates shuffle of First[0, N).
  template <typename T> void shuffle(T *First, size_t N) {
    for (size_t I = N; I > 1; --I)
      std::swap(First[I - 1], First[below(I)]);
  }

private:
  static uint64_t rotl(uint64_t X, int K) { return (X << K) | (X >> (64 - K)); }

  uint64_t S[4];
};

} // namespace nnc

#endif // NNC_RUNTIME_RANDOM_H
