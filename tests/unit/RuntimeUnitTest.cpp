//===- RuntimeUnitTest.cpp - Unit tests of runtime modules ----------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Tests of the runtime's pure modules (k-means, the adjusted Rand index, the
// SVG and PNG plots) that no trainer exercises on its own. No framework:
// CHECK prints the failing condition with its file and line and counts it;
// the exit status is 1 when any check failed.
//
// usage: nnc-runtime-unittest SVG-PATH
// Writes a two-panel plot to SVG-PATH, for the lit test to check as XML.
//
//===----------------------------------------------------------------------===//

#include "Cluster.h"
#include "Plot.h"
#include "Random.h"
#include "Check.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using namespace nnc;

namespace {

/// Points in 2-D around \p Centres, \p PerBlob each, with their blob index.
void blobs(const std::vector<double> &Centres, size_t PerBlob, double Spread,
           uint64_t Seed, std::vector<double> &X, std::vector<int32_t> &Truth) {
  Rng Gen(Seed);
  for (size_t B = 0; B < Centres.size() / 2; ++B)
    for (size_t I = 0; I < PerBlob; ++I) {
      X.push_back(Centres[2 * B] + Spread * Gen.normal());
      X.push_back(Centres[2 * B + 1] + Spread * Gen.normal());
      Truth.push_back(int32_t(B));
    }
}

double squaredDistance(const double *A, const double *B, size_t Dims) {
  double S = 0;
  for (size_t D = 0; D < Dims; ++D)
    S += (A[D] - B[D]) * (A[D] - B[D]);
  return S;
}

/// What any k-means result must satisfy: the shapes, sorted centres, every
/// row assigned to its nearest centre, and the inertia that this implies.
void checkConsistent(const KMeansResult &R, const std::vector<double> &X,
                     size_t Dims, int K) {
  size_t Rows = X.size() / Dims;
  CHECK(R.Centres.size() == size_t(K) * Dims);
  CHECK(R.Assign.size() == Rows);
  CHECK(R.Iterations >= 1 && R.Iterations <= 300);
  for (int C = 1; C < K; ++C)
    CHECK(!std::lexicographical_compare(
        R.Centres.begin() + C * Dims, R.Centres.begin() + (C + 1) * Dims,
        R.Centres.begin() + (C - 1) * Dims, R.Centres.begin() + C * Dims));
  double Inertia = 0;
  for (size_t I = 0; I < Rows; ++I) {
    int32_t A = R.Assign[I];
    CHECK(A >= 0 && A < K);
    if (A < 0 || A >= K)
      continue;
    double Own = squaredDistance(&X[I * Dims], &R.Centres[A * Dims], Dims);
    for (int C = 0; C < K; ++C)
      CHECK(Own <= squaredDistance(&X[I * Dims], &R.Centres[C * Dims], Dims));
    Inertia += Own;
  }
  CHECK(std::fabs(Inertia - R.Inertia) <= 1e-9 * (1 + Inertia));
}

bool sameResult(const KMeansResult &A, const KMeansResult &B) {
  return A.Centres.size() == B.Centres.size() &&
         std::memcmp(A.Centres.data(), B.Centres.data(),
                     A.Centres.size() * sizeof(double)) == 0 &&
         A.Assign == B.Assign && A.Inertia == B.Inertia &&
         A.Iterations == B.Iterations;
}

void testKMeansBlobs() {
  std::vector<double> Truth = {0, 0, 10, 0, 0, 10};
  std::vector<double> X;
  std::vector<int32_t> Labels;
  blobs(Truth, 60, 0.5, 7, X, Labels);
  KMeansResult R = kmeans(X.data(), Labels.size(), 2, 3, 1, 42);
  checkConsistent(R, X, 2, 3);
  CHECK(adjustedRandIndex(Labels.data(), R.Assign.data(), Labels.size()) ==
        1.0);
  // Each centre is near one of the blobs' centres, and all blobs are found.
  std::vector<bool> Found(3, false);
  for (int C = 0; C < 3; ++C)
    for (int B = 0; B < 3; ++B)
      if (squaredDistance(&R.Centres[2 * C], &Truth[2 * B], 2) < 0.1)
        Found[B] = true;
  CHECK(Found[0] && Found[1] && Found[2]);

  // The same seed gives the same bits; the restarts do not change a result
  // this clear-cut except in which run won.
  KMeansResult Again = kmeans(X.data(), Labels.size(), 2, 3, 1, 42);
  CHECK(sameResult(R, Again));
  KMeansResult Many = kmeans(X.data(), Labels.size(), 2, 3, 5, 1234);
  CHECK(Many.Assign == R.Assign);
  CHECK(std::fabs(Many.Inertia - R.Inertia) <= 1e-9 * R.Inertia);
}

void testKMeansRestarts() {
  // Uniform points have many local minima, so the restarts differ.
  Rng Gen(99);
  std::vector<double> X(2 * 300);
  for (double &V : X)
    V = Gen.uniform();
  const int K = 7, Restarts = 10;
  const uint64_t Seed = 5;
  double Lowest = std::numeric_limits<double>::infinity(), Highest = 0;
  KMeansResult Winner;
  for (int R = 0; R < Restarts; ++R) {
    KMeansResult One = kmeans(X.data(), 300, 2, K, 1, Seed + uint64_t(R));
    checkConsistent(One, X, 2, K);
    Highest = std::max(Highest, One.Inertia);
    if (One.Inertia < Lowest) {
      Lowest = One.Inertia;
      Winner = One;
    }
  }
  CHECK(Lowest < Highest); // Otherwise this test would show nothing.
  KMeansResult Best = kmeans(X.data(), 300, 2, K, Restarts, Seed);
  checkConsistent(Best, X, 2, K);
  CHECK(sameResult(Best, Winner));
}

void testKMeansDegenerate() {
  // Ten rows but three distinct points: K = 5 leaves clusters with no row.
  std::vector<double> X;
  for (int I = 0; I < 10; ++I) {
    X.push_back(double(I % 3));
    X.push_back(-double(I % 3));
  }
  KMeansResult R = kmeans(X.data(), 10, 2, 5, 3, 1);
  checkConsistent(R, X, 2, 5);
  CHECK(R.Inertia == 0);
  // More clusters than rows, one row, one dimension.
  KMeansResult Few = kmeans(X.data(), 2, 2, 5, 2, 1);
  checkConsistent(Few, std::vector<double>(X.begin(), X.begin() + 4), 2, 5);
  CHECK(Few.Inertia == 0);
  std::vector<double> One = {3.5};
  KMeansResult Single = kmeans(One.data(), 1, 1, 1, 1, 0);
  CHECK(Single.Centres == One && Single.Assign == std::vector<int32_t>{0});
  CHECK(kmeans(X.data(), 0, 2, 3, 1, 0).Centres.empty());
  CHECK(kmeans(X.data(), 10, 2, 0, 1, 0).Assign.empty());
}

double ari(std::vector<int32_t> A, std::vector<int32_t> B) {
  return adjustedRandIndex(A.data(), B.data(), A.size());
}

void testAdjustedRandIndex() {
  // The examples of scikit-learn's adjusted_rand_score documentation, with
  // the doubles it returns (0.5714... is 4/7 rounded).
  CHECK(ari({0, 0, 1, 1}, {0, 0, 1, 1}) == 1.0);
  CHECK(ari({0, 0, 1, 1}, {1, 1, 0, 0}) == 1.0);
  CHECK(ari({0, 0, 1, 2}, {0, 0, 1, 1}) == 4.0 / 7.0);
  CHECK(ari({0, 0, 1, 1}, {0, 0, 1, 2}) == 4.0 / 7.0);
  CHECK(ari({0, 0, 0, 0}, {0, 1, 2, 3}) == 0.0);
  CHECK(ari({0, 0, 1, 1}, {0, 1, 0, 1}) == -0.5);
  // By hand: {0,0,0,1,1,1} vs {0,0,1,1,2,2}: pairs together in both 2 of
  // 15, in the first only 4, in the second only 1, in neither 8; ordered,
  // twice that: ARI = 2 (4*16 - 8*2) / ((4+8)(8+16) + (4+2)(2+16)) = 96/396.
  CHECK(ari({0, 0, 0, 1, 1, 1}, {0, 0, 1, 1, 2, 2}) == 96.0 / 396.0);
  // Only the partition matters, not the label values.
  CHECK(ari({7, 7, -3, -3, 100}, {0, 0, 1, 1, 2}) == 1.0);
  // Nothing to disagree on: one cluster each, every point its own, N < 2.
  CHECK(ari({4, 4, 4}, {1, 1, 1}) == 1.0);
  CHECK(ari({0, 1, 2}, {2, 0, 1}) == 1.0);
  CHECK(ari({5}, {9}) == 1.0);
  CHECK(adjustedRandIndex(nullptr, nullptr, 0) == 1.0);
  // Random labelings agree by chance only: the index is near 0.
  Rng Gen(3);
  std::vector<int32_t> A(20000), B(20000);
  for (size_t I = 0; I < A.size(); ++I) {
    A[I] = int32_t(Gen.below(5));
    B[I] = int32_t(Gen.below(5));
  }
  double Chance = ari(A, B);
  CHECK(std::fabs(Chance) < 1e-3);
  CHECK(Chance == ari(B, A));
}

std::string readFile(const std::string &Path) {
  std::ifstream In(Path, std::ios::binary);
  std::stringstream S;
  S << In.rdbuf();
  return S.str();
}

size_t count(const std::string &Text, const std::string &What) {
  size_t N = 0;
  for (size_t At = Text.find(What); At != std::string::npos;
       At = Text.find(What, At + What.size()))
    ++N;
  return N;
}

/// Whether the folder of \p Path holds a file named "<name of Path>.tmp.*".
bool tempFileLeft(const std::string &Path) {
  size_t Slash = Path.rfind('/');
  std::string Dir = Slash == std::string::npos ? "." : Path.substr(0, Slash);
  std::string Prefix =
      (Slash == std::string::npos ? Path : Path.substr(Slash + 1)) + ".tmp.";
  DIR *D = opendir(Dir.c_str());
  if (!D)
    return false;
  bool Found = false;
  while (dirent *E = readdir(D))
    Found =
        Found || std::strncmp(E->d_name, Prefix.c_str(), Prefix.size()) == 0;
  closedir(D);
  return Found;
}

void testPlot(const std::string &Path) {
  PlotData D;
  D.Model = "fit <x & y> \"quoted\" \xff";
  D.LossName = "mse";
  // A loss that falls over four decades, with a hole, and a test loss
  // reported every tenth epoch.
  for (int E = 1; E <= 500; ++E) {
    double L = 10.0 * std::exp(-E / 50.0) + 1e-3;
    D.TrainLoss.push_back({double(E), E == 250 ? NAN : L});
    if (E % 10 == 0)
      D.TestLoss.push_back({double(E), 1.1 * L});
  }
  // 5000 data points, more than a plot keeps, around y = 2x + 1.
  Rng Gen(11);
  for (int I = 0; I < 5000; ++I) {
    double X = -3 + 6 * Gen.uniform();
    D.FitData.push_back({X, 2 * X + 1 + 0.3 * Gen.normal()});
    D.FitCurve.push_back({X, 2 * X + 1});
  }
  D.XLabel = "x";
  D.YLabel = "y";

  std::remove(Path.c_str());
  std::string Err;
  CHECK(writeTrainingPlot(Path, D, Err));
  CHECK(Err.empty());
  std::string Svg = readFile(Path);
  CHECK(Svg == renderTrainingPlot(D));
  CHECK(Svg.compare(0, 5, "<?xml") == 0);
  CHECK(Svg.find("width=\"960\"") != std::string::npos); // Two panels.
  CHECK(Svg.find("fit &lt;x &amp; y&gt; &quot;quoted&quot; ?") !=
        std::string::npos);
  CHECK(Svg.find("loss (mse), log scale") != std::string::npos);
  CHECK(Svg.find("nan") == std::string::npos);
  // The scatter is thinned: one dot per kept point, plus one in the legend.
  size_t Dots = count(Svg, "h0");
  CHECK(Dots > 1000 && Dots <= 2001);
  CHECK(Svg.size() < 200000);
  CHECK(!tempFileLeft(Path));

  // Rewriting replaces the file. A loss within two decades is on a linear
  // scale, and without a fit panel the figure is one panel wide.
  PlotData Small;
  Small.Model = "small";
  Small.TrainLoss = {{1, 0.9}, {2, 0.5}, {3, 0.3}};
  std::string SmallPath = Path + ".small.svg";
  CHECK(writeTrainingPlot(SmallPath, Small, Err));
  std::string SmallSvg = readFile(SmallPath);
  CHECK(SmallSvg.find("width=\"480\"") != std::string::npos);
  CHECK(SmallSvg.find("log scale") == std::string::npos);
  // Ticks at multiples of 0.2 within the data: 3 * 0.2 prints as 0.6.
  CHECK(SmallSvg.find(">0.4<") != std::string::npos);
  CHECK(SmallSvg.find(">0.6<") != std::string::npos);
  CHECK(SmallSvg.find(">epoch<") != std::string::npos);
  Small.Model = "rewritten";
  CHECK(writeTrainingPlot(SmallPath, Small, Err));
  CHECK(readFile(SmallPath).find(">rewritten<") != std::string::npos);
  CHECK(!tempFileLeft(SmallPath));
  std::remove(SmallPath.c_str());

  // No points at all still gives a figure.
  CHECK(renderTrainingPlot(PlotData()).find("</svg>") != std::string::npos);

  // PNG: the signature, then IHDR with the size, 8-bit RGB. The pixels are
  // checked by tests/e2e/linreg.test.
  std::string PngPath = Path + ".png";
  CHECK(writeTrainingPlot(PngPath, D, Err));
  std::string Png = readFile(PngPath);
  CHECK(Png == renderTrainingPlot(D, PlotFormat::Png));
  CHECK(Png.compare(0, 8, "\x89PNG\r\n\x1a\n", 8) == 0);
  CHECK(Png.compare(12, 4, "IHDR") == 0);
  auto BigEndian = [&](size_t At) {
    return uint32_t(uint8_t(Png[At])) << 24 | uint32_t(uint8_t(Png[At + 1])) << 16 |
           uint32_t(uint8_t(Png[At + 2])) << 8 | uint32_t(uint8_t(Png[At + 3]));
  };
  CHECK(BigEndian(16) == 960 && BigEndian(20) == 390);
  CHECK(Png[24] == 8 && Png[25] == 2);
  CHECK(!tempFileLeft(PngPath));
  std::remove(PngPath.c_str());
  CHECK(renderTrainingPlot(PlotData(), PlotFormat::Png).size() > 100);
  CHECK(plotFormatFor("a.PNG") == PlotFormat::Png);
  CHECK(plotFormatFor("dir/a.Svg") == PlotFormat::Svg);
  CHECK(!plotFormatFor("dir/.png") && !plotFormatFor("a.jpg") &&
        !plotFormatFor(".svg"));
  Err.clear();
  CHECK(!writeTrainingPlot(Path + ".jpg", Small, Err));
  CHECK(Err.find("*.svg or *.png") != std::string::npos);

  // A folder that does not exist: false, and a message with the path and
  // the reason.
  std::string Missing = Path + ".missing/plot.svg";
  Err.clear();
  CHECK(!writeTrainingPlot(Missing, Small, Err));
  CHECK(Err.find(Missing) != std::string::npos);
  CHECK(Err.find(std::strerror(ENOENT)) != std::string::npos);
}

} // namespace

int main(int Argc, char **Argv) {
  if (Argc != 2) {
    std::fprintf(stderr, "usage: %s SVG-PATH\n", Argv[0]);
    return 2;
  }
  testKMeansBlobs();
  testKMeansRestarts();
  testKMeansDegenerate();
  testAdjustedRandIndex();
  testPlot(Argv[1]);
  if (Failures) {
    std::fprintf(stderr, "%d check(s) failed\n", Failures);
    return 1;
  }
  std::printf("all runtime unit tests passed\n");
  return 0;
}
