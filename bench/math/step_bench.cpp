// step_bench: checks and times the optimizer step of nnc's trainers,
// quotient_step: P[i] = P[i] - S * (A[i] / D[i]) (Adam's and RMSprop's
// update of a parameter), as generated (nnc --math-kernel quotient_step,
// linked in as nnc_quotient_step).
//
// usage: step_bench check | step_bench time
// check: compares the generated code bit for bit with the formula evaluated
// here in single precision, on every 7th subnormal numerator of both signs,
// on random mixes of zeros, subnormals, tiny and huge numbers, infinities
// and NaN in every operand, and on random operands around the bounds of the
// generated code's shortcut for numerators below 2^-100 and of its
// threshold's floor, special values among them. The exit status is 1 on any
// difference (any NaN matches any NaN).
// time: nanoseconds per element of the generated step and of the formula as
// a loop compiled here (with -O3, so that it is vectorized too: see
// bench/math/run.sh), over 2048 elements (in cache), with normal
// numerators and with one in eight subnormal (where Adam's first moments
// end: a few units of the smallest subnormal).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" void nnc_quotient_step(float *P, float S, const float *A, const float *D, int64_t N);

namespace {

float fromBits(uint32_t Bits) {
  float F;
  std::memcpy(&F, &Bits, 4);
  return F;
}

uint32_t bitsOf(float F) {
  uint32_t Bits;
  std::memcpy(&Bits, &F, 4);
  return Bits;
}

/// The formula as written, one rounding per operation (compiled without
/// contraction: see tests/codegen/math.test).
__attribute__((noinline)) void formula(float *__restrict P, float S, const float *__restrict A,
                                       const float *__restrict D,
                                       int64_t N) {
  for (int64_t I = 0; I < N; ++I)
    P[I] = P[I] - S * (A[I] / D[I]);
}

struct Case {
  std::vector<float> P, A, D;
  float S;
};

/// Runs the generated step and the formula on C; counts the differences.
size_t compare(const Case &C, const char *What) {
  std::vector<float> Got = C.P, Want = C.P;
  nnc_quotient_step(Got.data(), C.S, C.A.data(), C.D.data(), int64_t(Got.size()));
  formula(Want.data(), C.S, C.A.data(), C.D.data(), int64_t(Want.size()));
  size_t Wrong = 0;
  for (size_t I = 0; I < Got.size(); ++I) {
    bool Same = std::isnan(Got[I]) ? std::isnan(Want[I]) : bitsOf(Got[I]) == bitsOf(Want[I]);
    if (Same)
      continue;
    if (++Wrong <= 5)
      std::printf("%s: P %a S %a A %a D %a: got %a, want %a\n", What, C.P[I], C.S, C.A[I],
                  C.D[I], Got[I], Want[I]);
  }
  return Wrong;
}

int check() {
  std::mt19937 Rng(7);
  const float Inf = INFINITY, NaN = NAN;
  // Values of every kind, for every operand.
  const std::vector<float> Kinds = {
      0.0f,   -0.0f,   0x1p-149f, -0x1p-149f, 0x1.8p-147f, 0x1p-127f, -0x1.fffffcp-127f,
      0x1p-126f, 0x1p-120f, 0x1p-102f, 0x1p-101f, 0x1p-100f, -0x1p-99f, 0x1p-60f, 1e-30f,
      1e-20f, 1e-9f,  1e-8f,  1e-6f,  1e-3f,  0.05f,  -0.25f,  1.0f,    3.0f,   1e6f,
      1e20f,  1e30f,  0x1p100f, 0x1p127f, 3e38f, Inf,  -Inf,   NaN};
  auto anyKind = [&] { return Kinds[Rng() % Kinds.size()]; };
  auto subnormal = [&] {
    return fromBits((Rng() % 0x7fffff + 1) | (Rng() % 2 ? 0x80000000u : 0));
  };
  size_t Wrong = 0, Values = 0;
  // Every 7th subnormal numerator, against denominators, parameters and
  // step sizes around the bounds of the fast path.
  const std::vector<float> Steps = {1e-3f, 0.1f, 1.0f, 0x1p-20f, 1e20f, 0x1p80f, -1e-3f};
  for (float S : Steps) {
    Case C{{}, {}, {}, S};
    for (uint32_t M = 1; M < 0x800000; M += 7)
      for (uint32_t Sign : {0u, 0x80000000u}) {
        C.A.push_back(fromBits(M | Sign));
        C.D.push_back(Kinds[(M / 7 + Sign / 0x40000000u) % Kinds.size()] == 0
                          ? 1e-8f
                          : std::fabs(anyKind()));
        C.P.push_back(M % 3 == 0 ? anyKind() : 0.05f * float(M % 97) - 2.0f);
      }
    Wrong += compare(C, "subnormal numerators");
    Values += C.P.size();
  }
  // Random mixes: vectors of normal numbers with a few other values, and
  // vectors of anything.
  for (int Round = 0; Round < 200; ++Round) {
    Case C{{}, {}, {}, Round % 4 == 0 ? anyKind() : Steps[Round % Steps.size()]};
    std::uniform_real_distribution<float> Uniform(-1, 1);
    for (int I = 0; I < 4099; ++I) {
      bool Mixed = Round % 2;
      C.P.push_back(Mixed || Rng() % 16 == 0 ? anyKind() : Uniform(Rng));
      C.A.push_back(Rng() % 8 == 0 ? subnormal() : Mixed ? anyKind() : Uniform(Rng) * 1e-6f);
      C.D.push_back(Mixed || Rng() % 16 == 0 ? anyKind() : std::fabs(Uniform(Rng)) + 1e-8f);
    }
    Wrong += compare(C, "mixed values");
    Values += C.P.size();
  }
  // Around the bounds of the shortcut for small numerators: operands of
  // random signs, mantissas and exponents (numerators below and above
  // 2^-100, parameters around 2^-100 and up to the largest floats), step
  // sizes within a few powers of two of the bound |P| |D| 2^70.
  auto scaled = [&](int Low, int High) {
    float F = std::ldexp(1.0f + float(Rng() % 0x800000) / 0x800000,
                         Low + int(Rng() % uint32_t(High - Low + 1)));
    return Rng() % 2 ? -F : F;
  };
  for (int Round = 0; Round < 200; ++Round) {
    Case C{{}, {}, {}, 0};
    float P = scaled(-104, 127), D = scaled(-149, 127);
    C.S = std::fabs(P * D) * 0x1p70f * std::ldexp(1.0f, int(Rng() % 9) - 4);
    if (!std::isfinite(C.S) || C.S == 0)
      C.S = scaled(-149, 127);
    for (int I = 0; I < 4099; ++I) {
      C.P.push_back(I % 64 == 0 ? anyKind() : I % 2 ? P : scaled(-104, 127));
      C.D.push_back(I % 3 ? D : scaled(-149, 127));
      C.A.push_back(I % 5 == 0 ? subnormal() : scaled(-126, -96));
    }
    Wrong += compare(C, "near the bounds");
    Values += C.P.size();
  }
  // Around the threshold's floor and through the special values: step sizes
  // below 2^-56 (|S| 2^-70 under the smallest normal), normal, huge,
  // infinite and NaN; |P D| within a few powers of two of the threshold,
  // or D zero, subnormal, infinite or NaN; P also infinite, zero or NaN.
  const std::vector<float> Specials = {0.0f, -0.0f, 0x1p-149f, -0x1.8p-140f, Inf, -Inf, NaN};
  auto special = [&] { return Specials[Rng() % Specials.size()]; };
  for (int Round = 0; Round < 200; ++Round) {
    Case C{{}, {}, {}, 0};
    switch (Round % 5) {
    case 0: C.S = scaled(-149, -57); break;
    case 1: C.S = scaled(-56, 60); break;
    case 2: C.S = scaled(100, 127); break;
    case 3: C.S = Round % 2 ? Inf : -Inf; break;
    default: C.S = Round % 2 ? NaN : scaled(-149, 127);
    }
    float Threshold = std::max(std::fabs(C.S) * 0x1p-70f, 0x1p-126f);
    for (int I = 0; I < 4099; ++I) {
      float P = I % 16 == 0 ? special() : scaled(-100, 127);
      float D = Threshold / std::fabs(P) * std::ldexp(1.0f, int(Rng() % 7) - 3);
      if (I % 8 == 1 || !std::isfinite(D) || D == 0)
        D = I % 3 ? special() : scaled(-149, 127);
      C.P.push_back(P);
      C.D.push_back(Rng() % 2 ? -D : D);
      C.A.push_back(I % 4 == 0 ? subnormal() : I % 4 == 1 ? special() : scaled(-126, -96));
    }
    Wrong += compare(C, "near the floor, special values");
    Values += C.P.size();
  }
  std::printf("quotient_step: %zu values, %zu different from the formula: %s\n", Values, Wrong,
              Wrong ? "WRONG" : "right");
  return Wrong ? 1 : 0;
}

template <class F> double nanosecondsPerElement(F Step, size_t N) {
  double Best = 1e30;
  for (int Round = 0; Round < 50; ++Round) {
    auto Start = std::chrono::steady_clock::now();
    for (int I = 0; I < 200; ++I)
      Step();
    std::chrono::duration<double> Took = std::chrono::steady_clock::now() - Start;
    Best = std::min(Best, Took.count() / 200);
  }
  return Best * 1e9 / double(N);
}

int time() {
  const size_t N = 2048;
  std::mt19937 Rng(1);
  std::uniform_real_distribution<float> Uniform(0.5f, 1.5f);
  for (int Subnormal : {0, 8}) {
    std::vector<float> P(N), A(N), D(N);
    for (size_t I = 0; I < N; ++I) {
      P[I] = 0.05f * Uniform(Rng);
      A[I] = Subnormal && Rng() % Subnormal == 0 ? fromBits(4) : 1e-9f * Uniform(Rng);
      D[I] = 1e-5f * Uniform(Rng);
    }
    // A step of 0 keeps P as it is, round after round.
    std::vector<float> Q = P;
    double Nnc = nanosecondsPerElement(
        [&] { nnc_quotient_step(Q.data(), 0.0f, A.data(), D.data(), int64_t(N)); }, N);
    double Plain = nanosecondsPerElement(
        [&] { formula(Q.data(), 0.0f, A.data(), D.data(), int64_t(N)); }, N);
    std::printf("quotient_step, %s numerators: nnc %.3f ns, formula %.3f ns per element, "
                "%.2fx\n",
                Subnormal ? "1 in 8 subnormal" : "normal", Nnc, Plain, Plain / Nnc);
  }
  return 0;
}

} // namespace

int main(int Argc, char **Argv) {
  std::string Mode = Argc == 2 ? Argv[1] : "";
  if (Mode == "check")
    return check();
  if (Mode == "time")
    return time();
  std::fprintf(stderr, "usage: step_bench check | step_bench time\n");
  return 2;
}
