//===- NumpyRandom.h - NumPy's legacy RandomState, draw for draw -*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The generator behind `numpy.random.RandomState(seed)` (MT19937 with the
/// legacy double, polar-method normal and bounded-integer shuffle), so that
/// the synthetic data sets the textbooks make with scikit-learn come out
/// the same here, value for value. Only what those generators draw is
/// provided. std::mt19937 seeds exactly as NumPy's legacy seeding does
/// (init_genrand) for seeds below 2^32.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_NUMPYRANDOM_H
#define NNC_RUNTIME_NUMPYRANDOM_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>

namespace nnc {

class NumpyRandomState {
public:
  /// NumPy takes seeds below 2^32; larger ones keep their low 32 bits.
  explicit NumpyRandomState(uint64_t Seed) : Mt(uint32_t(Seed)) {}

  /// random_sample(): 53 random bits from two 32-bit draws.
  double sample() {
    uint32_t A = uint32_t(Mt()) >> 5, B = uint32_t(Mt()) >> 6;
    return (A * 67108864.0 + B) / 9007199254740992.0;
  }

  double uniform(double Low, double High) { return Low + (High - Low) * sample(); }

  /// normal(loc, scale): the polar method, which makes normals in pairs and
  /// hands out the second on the next call.
  double normal(double Loc, double Scale) { return Loc + Scale * gauss(); }

  /// shuffle() of a 1-d array: Fisher-Yates from the end, with NumPy's
  /// masked rejection sampling of the index.
  template <typename T> void shuffle(T *First, size_t N) {
    for (size_t I = N; I-- > 1;)
      std::swap(First[I], First[interval(I)]);
  }

private:
  double gauss() {
    if (HasGauss) {
      HasGauss = false;
      return Gauss;
    }
    double X1, X2, R2;
    do {
      X1 = 2.0 * sample() - 1.0;
      X2 = 2.0 * sample() - 1.0;
      R2 = X1 * X1 + X2 * X2;
    } while (R2 >= 1.0 || R2 == 0.0);
    double F = std::sqrt(-2.0 * std::log(R2) / R2);
    Gauss = F * X1;
    HasGauss = true;
    return F * X2;
  }

  /// A uniform integer in [0, Max].
  uint64_t interval(uint64_t Max) {
    if (Max == 0)
      return 0;
    uint64_t Mask = Max;
    for (unsigned Shift = 1; Shift < 64; Shift *= 2)
      Mask |= Mask >> Shift;
    uint64_t Value;
    if (Max <= 0xffffffffULL) {
      do
        Value = uint32_t(Mt()) & Mask;
      while (Value > Max);
    } else {
      do
        Value = ((uint64_t(uint32_t(Mt())) << 32) | uint32_t(Mt())) & Mask;
      while (Value > Max);
    }
    return Value;
  }

  std::mt19937 Mt;
  bool HasGauss = false;
  double Gauss = 0;
};

} // namespace nnc

#endif // NNC_RUNTIME_NUMPYRANDOM_H
