// gemm_bench: times nnc's generated matrix product (nnc --gemm-kernel, one
// object per shape, linked in as nnc_gemm) on one thread against the fp32
// peak of this core, measured by a loop of independent fused multiply-adds
// at the same vector width.
//
// usage: gemm_bench M N K [ta] [tb] [bias] [relu] [mask] [sums] [check]
// Prints the peak, the product's GFLOP/s, its share of the peak and its
// largest difference from a double-precision reference; with `check`, only
// compares every element with the reference (tests/codegen/gemm.test).
// With `sums`, the product also sums C's columns, each in row order from
// 0: they must equal, bit for bit, those sums of the C it stored.
// The exit status is 1 when an element is off by more than rounding, or a
// column sum differs.

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

extern "C" void nnc_gemm(const void *A, const void *B, void *C, int64_t M,
                         int64_t K, const void *Bias, const void *Mask, void *Sums);

// The generated code splits large products over the runtime's threads; here
// they all run on the calling thread.
extern "C" void nnc_parallel_for(int64_t N,
                                 void (*Body)(void *, int64_t, int64_t),
                                 void *Ctx) {
  Body(Ctx, 0, N);
}

namespace {

double seconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// GFLOP/s of independent chains of fused multiply-adds on the widest
/// vectors this file was compiled for.
double peakGflops() {
#if defined(__AVX512F__)
  using Vec = __m512;
  constexpr int Lanes = 16;
  auto Fma = [](Vec A, Vec B, Vec C) { return _mm512_fmadd_ps(A, B, C); };
  auto Set = [](float X) { return _mm512_set1_ps(X); };
  auto Sum = [](Vec V) { return _mm512_reduce_add_ps(V); };
#else
  using Vec = __m256;
  constexpr int Lanes = 8;
  auto Fma = [](Vec A, Vec B, Vec C) { return _mm256_fmadd_ps(A, B, C); };
  auto Set = [](float X) { return _mm256_set1_ps(X); };
  auto Sum = [](Vec V) {
    float Out[8];
    _mm256_storeu_ps(Out, V);
    return Out[0] + Out[7];
  };
#endif
  // Sixteen chains, each variable its own register: enough to cover the
  // latency of two FMA pipes.
  constexpr int Chains = 16;
  const int64_t Iterations = 50000000;
  double Best = 0;
  for (int Rep = 0; Rep < 3; ++Rep) {
    Vec X = Set(0.999999f), Y = Set(1e-7f);
    asm volatile("" : "+v"(X), "+v"(Y)); // Not constants to fold.
    Vec A0 = Set(0), A1 = Set(1), A2 = Set(2), A3 = Set(3), A4 = Set(4),
        A5 = Set(5), A6 = Set(6), A7 = Set(7), A8 = Set(8), A9 = Set(9),
        A10 = Set(10), A11 = Set(11), A12 = Set(12), A13 = Set(13),
        A14 = Set(14), A15 = Set(15);
    double Start = seconds();
    for (int64_t It = 0; It < Iterations; ++It) {
      A0 = Fma(A0, X, Y), A1 = Fma(A1, X, Y), A2 = Fma(A2, X, Y);
      A3 = Fma(A3, X, Y), A4 = Fma(A4, X, Y), A5 = Fma(A5, X, Y);
      A6 = Fma(A6, X, Y), A7 = Fma(A7, X, Y), A8 = Fma(A8, X, Y);
      A9 = Fma(A9, X, Y), A10 = Fma(A10, X, Y), A11 = Fma(A11, X, Y);
      A12 = Fma(A12, X, Y), A13 = Fma(A13, X, Y), A14 = Fma(A14, X, Y);
      A15 = Fma(A15, X, Y);
    }
    double Elapsed = seconds() - Start;
    float Total = Sum(A0) + Sum(A1) + Sum(A2) + Sum(A3) + Sum(A4) + Sum(A5) +
                  Sum(A6) + Sum(A7) + Sum(A8) + Sum(A9) + Sum(A10) +
                  Sum(A11) + Sum(A12) + Sum(A13) + Sum(A14) + Sum(A15);
    if (Total == 12345.f) // Uses the sums, so the loop is not removed.
      std::puts("");
    Best = std::max(Best, 2.0 * Lanes * Chains * Iterations / Elapsed / 1e9);
  }
  return Best;
}

} // namespace

int main(int Argc, char **Argv) {
  if (Argc < 4) {
    std::fprintf(stderr, "usage: %s M N K [ta] [tb] [bias] [relu] [mask] [sums] [check]\n",
                 Argv[0]);
    return 2;
  }
  int64_t M = std::atoll(Argv[1]), N = std::atoll(Argv[2]),
          K = std::atoll(Argv[3]);
  bool TransA = false, TransB = false, HasBias = false, Relu = false, Masked = false,
       Summed = false, CheckOnly = false;
  for (int I = 4; I < Argc; ++I) {
    TransA |= std::strcmp(Argv[I], "ta") == 0;
    TransB |= std::strcmp(Argv[I], "tb") == 0;
    HasBias |= std::strcmp(Argv[I], "bias") == 0;
    Relu |= std::strcmp(Argv[I], "relu") == 0;
    Masked |= std::strcmp(Argv[I], "mask") == 0;
    Summed |= std::strcmp(Argv[I], "sums") == 0;
    CheckOnly |= std::strcmp(Argv[I], "check") == 0;
  }
  std::mt19937 Gen(1);
  std::uniform_real_distribution<float> Dist(-1, 1);
  std::vector<float> A(M * K), B(K * N), C(M * N), Bias(N, 0.0f), Mask(M * N, 1.0f),
      Sums(N, NAN);
  for (float &V : A)
    V = Dist(Gen);
  for (float &V : B)
    V = Dist(Gen);
  if (HasBias)
    for (float &V : Bias)
      V = Dist(Gen);
  if (Masked) // about half of C is masked off
    for (float &V : Mask)
      V = Dist(Gen);

  // Correctness first: the largest difference from a double reference, on
  // a C that starts as NaN, so that an element never written shows.
  std::fill(C.begin(), C.end(), NAN);
  nnc_gemm(A.data(), B.data(), C.data(), M, K, Bias.data(), Mask.data(), Sums.data());
  int64_t WrongSums = 0;
  for (int64_t J = 0; Summed && J < N; ++J) {
    float Sum = 0;
    for (int64_t I = 0; I < M; ++I)
      Sum += C[I * N + J];
    WrongSums += std::memcmp(&Sum, &Sums[J], sizeof Sum) != 0;
  }
  double WorstError = 0;
  int64_t RowStep = CheckOnly ? 1 : std::max<int64_t>(1, M / 17);
  for (int64_t I = 0; I < M; I += RowStep)
    for (int64_t J = 0; J < N; ++J) {
      double Sum = Bias[J];
      for (int64_t P = 0; P < K; ++P)
        Sum += double(TransA ? A[P * M + I] : A[I * K + P]) *
               double(TransB ? B[J * K + P] : B[P * N + J]);
      if (Relu)
        Sum = std::max(Sum, 0.0);
      if (Mask[I * N + J] <= 0)
        Sum = 0;
      double Error = std::fabs(Sum - C[I * N + J]);
      WorstError = std::isnan(Error) ? INFINITY : std::max(WorstError, Error);
    }
  bool Right = WorstError < 1e-5 * std::sqrt(double(K)) && WrongSums == 0;
  if (CheckOnly) {
    std::printf("gemm %lldx%lldx%lld%s%s%s%s%s: max error %.2g", (long long)M, (long long)N,
                (long long)K, TransA ? " ta" : "", TransB ? " tb" : "", HasBias ? " bias" : "",
                Relu ? " relu" : "", Masked ? " mask" : "", WorstError);
    if (Summed)
      std::printf(", %lld of %lld column sums wrong", (long long)WrongSums, (long long)N);
    std::printf(", %s\n", Right ? "right" : "WRONG");
    return Right ? 0 : 1;
  }

  double Flops = 2.0 * double(M) * double(N) * double(K);
  int Reps = int(std::clamp(2e10 / Flops, 3.0, 20000.0));
  double Best = 1e30;
  for (int Trial = 0; Trial < 5; ++Trial) {
    double Start = seconds();
    for (int R = 0; R < Reps; ++R)
      nnc_gemm(A.data(), B.data(), C.data(), M, K, Bias.data(), Mask.data(), Sums.data());
    Best = std::min(Best, (seconds() - Start) / Reps);
  }
  double Peak = peakGflops(), Gflops = Flops / Best / 1e9;
  std::printf("gemm %lldx%lldx%lld%s%s: %.1f GFLOP/s, peak %.1f GFLOP/s, "
              "%.0f%% of peak, max error %.2g\n",
              (long long)M, (long long)N, (long long)K, TransA ? " ta" : "",
              TransB ? " tb" : "", Gflops, Peak, 100 * Gflops / Peak,
              WorstError);
  return Right ? 0 : 1;
}
