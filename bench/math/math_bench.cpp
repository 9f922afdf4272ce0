// math_bench: checks and times nnc's generated single-precision math
// (nnc --math-kernel OP, linked in as nnc_math) against double-precision
// libm.
//
// usage: math_bench OP check | math_bench OP time
// check: evaluates every 61st float bit pattern (all signs, exponents and
// mantissa bits, about 70 million values) plus the special values, and
// prints the largest error in units in the last place of the correctly
// rounded result. Results below FLT_MIN count by absolute error (nnc flushes
// them to zero). The exit status is 1 past the op's error bound or on a
// wrong special value.
// time: nanoseconds per element of nnc_math and of a loop calling libm's
// float function, over 4096 values in [-8, 8) (in cache), and the ratio.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

extern "C" void nnc_math(const float *X, float *Y, int64_t N);

namespace {

struct Op {
  const char *Name;
  double (*Reference)(double);
  float (*Libm)(float); ///< What the trainers called before: libm's float form.
  double MaxUlps;
};

double sigmoid(double X) { return 1 / (1 + std::exp(-X)); }
float sigmoidf(float X) { return 1 / (1 + std::exp(-X)); }
/// PyTorch's relu on the CPU: NaN and -0 come through.
double relu(double X) { return 0 > X ? 0 : X; }
float reluf(float X) { return 0 > X ? 0 : X; }

const Op Ops[] = {
    {"exp", [](double X) { return std::exp(X); }, [](float X) { return std::exp(X); }, 2},
    {"log", [](double X) { return std::log(X); }, [](float X) { return std::log(X); }, 2},
    {"tanh", [](double X) { return std::tanh(X); }, [](float X) { return std::tanh(X); }, 3},
    {"sigmoid", sigmoid, sigmoidf, 3},
    {"relu", relu, reluf, 0},
};

/// The error of Y against the exact value R, in units in the last place
/// of R rounded to float.
double ulps(float Y, double R) {
  float Rounded = float(R);
  float Next = std::nextafter(std::fabs(Rounded), std::numeric_limits<float>::infinity());
  double Ulp = double(Next) - double(std::fabs(Rounded));
  return std::fabs(double(Y) - R) / Ulp;
}

bool same(float A, double B) {
  if (std::isnan(B))
    return std::isnan(A);
  return double(A) == B && std::signbit(A) == std::signbit(B);
}

int check(const Op &O) {
  std::vector<float> X;
  for (uint64_t Bits = 0; Bits < (uint64_t(1) << 32); Bits += 61) {
    uint32_t B = uint32_t(Bits);
    float F;
    std::memcpy(&F, &B, 4);
    if (std::isfinite(F))
      X.push_back(F);
  }
  std::vector<float> Y(X.size());
  nnc_math(X.data(), Y.data(), int64_t(X.size()));
  double Worst = 0;
  float WorstAt = 0;
  size_t Wrong = 0;
  for (size_t I = 0; I < X.size(); ++I) {
    double R = O.Reference(double(X[I]));
    if (std::isnan(R) || std::isinf(R) || std::fabs(R) > std::numeric_limits<float>::max()) {
      // Outside float's range: the result must be the same special value.
      float Expected = float(R);
      if (!same(Y[I], double(Expected)) && ++Wrong <= 5)
        std::printf("%s(%a) = %a, expected %a\n", O.Name, X[I], Y[I], Expected);
      continue;
    }
    double E = std::fabs(R) < double(std::numeric_limits<float>::min())
                   ? (std::fabs(double(Y[I]) - R) <= double(std::numeric_limits<float>::min())
                          ? 0
                          : 1e9)
                   : ulps(Y[I], R);
    if (E > Worst) {
      Worst = E;
      WorstAt = X[I];
    }
  }
  const float Inf = std::numeric_limits<float>::infinity(), NaN = std::nanf("");
  const float Specials[] = {0.0f, -0.0f, Inf, -Inf, NaN, 1.0f, -1.0f, 1e-45f, -1e-45f,
                            100.0f, -100.0f, 1e30f, -1e30f};
  float SY[std::size(Specials)];
  nnc_math(Specials, SY, int64_t(std::size(Specials)));
  for (size_t I = 0; I < std::size(Specials); ++I) {
    double R = O.Reference(double(Specials[I]));
    float Expected = std::fabs(R) < double(std::numeric_limits<float>::min()) && R != 0
                         ? 0.0f
                         : float(R);
    bool Ok = same(SY[I], double(Expected)) ||
              (std::isfinite(R) && R != 0 && ulps(SY[I], R) <= O.MaxUlps);
    if (!Ok && ++Wrong <= 10)
      std::printf("%s(%a) = %a, expected %a\n", O.Name, Specials[I], SY[I], Expected);
  }
  bool Right = Worst <= O.MaxUlps && Wrong == 0;
  std::printf("%s: %zu values, max error %.2f ulp at %a (bound %.0f), %zu wrong special "
              "values: %s\n",
              O.Name, X.size() + std::size(Specials), Worst, WorstAt, O.MaxUlps, Wrong,
              Right ? "right" : "WRONG");
  return Right ? 0 : 1;
}

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int time(const Op &O) {
  constexpr int N = 4096, Reps = 20000;
  std::vector<float> X(N), Y(N);
  for (int I = 0; I < N; ++I)
    X[I] = -8.0f + 16.0f * float(I) / float(N);
  // The libm loop goes through a volatile function pointer so that the
  // compiler cannot substitute its own vector forms.
  float (*volatile Libm)(float) = O.Libm;
  auto Best = [&](auto &&Body) {
    double Min = 1e30;
    for (int Trial = 0; Trial < 5; ++Trial) {
      double Start = seconds();
      for (int R = 0; R < Reps / 5; ++R)
        Body();
      Min = std::min(Min, seconds() - Start);
    }
    return Min / (Reps / 5) / N * 1e9;
  };
  double Nnc = Best([&] { nnc_math(X.data(), Y.data(), N); });
  double Lib = Best([&] {
    for (int I = 0; I < N; ++I)
      Y[I] = Libm(X[I]);
  });
  std::printf("%s: nnc %.3f ns/element, libm %.3f ns/element, %.1fx\n", O.Name, Nnc, Lib,
              Lib / Nnc);
  return 0;
}

} // namespace

int main(int Argc, char **Argv) {
  if (Argc != 3) {
    std::fprintf(stderr, "usage: math_bench OP check|time\n");
    return 2;
  }
  for (const Op &O : Ops)
    if (std::string(Argv[1]) == O.Name)
      return std::string(Argv[2]) == "check" ? check(O) : time(O);
  std::fprintf(stderr, "math_bench: unknown op '%s'\n", Argv[1]);
  return 2;
}
