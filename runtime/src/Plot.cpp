//===- Plot.cpp - Training plots as SVG -----------------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Each panel is a frame with a light grid at "nice" tick values (1, 2 or 5
// times a power of ten), numeric tick labels, axis names, a title and a
// legend placed in the emptiest corner. Coordinates are printed with one
// decimal, a tenth of a pixel, to keep files small.
//
//===----------------------------------------------------------------------===//

#include "Plot.h"

#include "Files.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>

using namespace nnc;

namespace {

// Geometry in pixels: each panel, and its plot area within it.
constexpr double PanelWidth = 480, PanelHeight = 360, TitleHeight = 30;
constexpr double Left = 70, Right = 20, Top = 34, Bottom = 50;
constexpr double AreaWidth = PanelWidth - Left - Right;
constexpr double AreaHeight = PanelHeight - Top - Bottom;

/// Scatter points kept at most; lines are thinned to the same count.
constexpr size_t MaxPoints = 2000;

/// \p V with \p Decimals digits after the point, locale-independent (unlike
/// printf), and never "-0".
std::string fixed(double V, int Decimals) {
  char Buf[400];
  auto [End, Ec] = std::to_chars(Buf, Buf + sizeof(Buf), V,
                                 std::chars_format::fixed, Decimals);
  if (Ec != std::errc())
    return "0";
  std::string S(Buf, End);
  if (S[0] == '-' && S.find_first_not_of("-0.") == std::string::npos)
    S.erase(0, 1);
  return S;
}

/// \p V in short scientific notation, at most \p Decimals digits after
/// the point: "3.05e7", "3e7", "1e-7".
std::string scientific(double V, int Decimals) {
  char Buf[64];
  auto [End, Ec] = std::to_chars(Buf, Buf + sizeof(Buf), V,
                                 std::chars_format::scientific, Decimals);
  if (Ec != std::errc())
    return "0";
  std::string S(Buf, End);
  size_t E = S.find('e');
  std::string Mantissa = S.substr(0, E), Exponent = S.substr(E + 1);
  if (Mantissa.find('.') != std::string::npos) {
    Mantissa.erase(Mantissa.find_last_not_of('0') + 1);
    if (Mantissa.back() == '.')
      Mantissa.pop_back();
  }
  bool Negative = Exponent[0] == '-';
  Exponent.erase(0, Exponent.find_first_not_of("+-0"));
  return Mantissa + "e" + (Negative ? "-" : "") +
         (Exponent.empty() ? "0" : Exponent);
}

/// A pixel coordinate: one decimal, without a trailing ".0".
std::string px(double V) {
  std::string S = fixed(V, 1);
  if (S.size() > 2 && S.compare(S.size() - 2, 2, ".0") == 0)
    S.resize(S.size() - 2);
  return S;
}

/// Text for XML character data and attribute values: markup characters
/// escaped, and control characters and bytes that are not UTF-8 (a CSV
/// header may hold anything) replaced by '?', which XML would reject.
std::string xmlText(std::string_view S) {
  std::string Out;
  for (size_t I = 0; I < S.size();) {
    unsigned char C = S[I];
    if (C < 0x80) {
      switch (C) {
      case '&':
        Out += "&amp;";
        break;
      case '<':
        Out += "&lt;";
        break;
      case '>':
        Out += "&gt;";
        break;
      case '"':
        Out += "&quot;";
        break;
      case '\'':
        Out += "&apos;";
        break;
      default:
        Out += C < 0x20 ? '?' : char(C);
      }
      ++I;
      continue;
    }
    size_t Len = C >= 0xf0 ? 4 : C >= 0xe0 ? 3 : C >= 0xc0 ? 2 : 0;
    uint32_t Cp = C & (0x7f >> Len);
    bool Valid = Len != 0 && I + Len <= S.size();
    for (size_t J = 1; Valid && J < Len; ++J) {
      unsigned char Next = S[I + J];
      Valid = (Next & 0xc0) == 0x80;
      Cp = Cp << 6 | (Next & 0x3f);
    }
    const uint32_t Least[] = {0, 0, 0x80, 0x800, 0x10000};
    Valid = Valid && Cp >= Least[Len] && Cp <= 0x10ffff &&
            !(Cp >= 0xd800 && Cp <= 0xdfff) && Cp != 0xfffe && Cp != 0xffff;
    if (Valid)
      Out.append(S.substr(I, Len));
    else
      Out += '?';
    I += Valid ? Len : 1;
  }
  return Out;
}

std::vector<PlotPoint> finitePoints(const std::vector<PlotPoint> &In) {
  std::vector<PlotPoint> Out;
  for (const PlotPoint &P : In)
    if (std::isfinite(P.X) && std::isfinite(P.Y))
      Out.push_back(P);
  return Out;
}

/// The finite points of \p In, thinned to every k-th when there are more
/// than MaxPoints; a line also keeps its last point, so that it ends where
/// the data do.
std::vector<PlotPoint> thin(const std::vector<PlotPoint> &In, bool KeepLast) {
  std::vector<PlotPoint> Finite = finitePoints(In);
  if (Finite.size() <= MaxPoints)
    return Finite;
  size_t Every = (Finite.size() + MaxPoints - 1) / MaxPoints;
  std::vector<PlotPoint> Out;
  for (size_t I = 0; I < Finite.size(); I += Every)
    Out.push_back(Finite[I]);
  if (KeepLast && (Finite.size() - 1) % Every != 0)
    Out.push_back(Finite.back());
  return Out;
}

/// 1, 2 or 5 times a power of ten, the least that is >= \p Raw.
double niceStep(double Raw) {
  double Power = std::pow(10.0, std::floor(std::log10(Raw)));
  double Fraction = Raw / Power;
  return (Fraction <= 1   ? 1
          : Fraction <= 2 ? 2
          : Fraction <= 5 ? 5
                          : 10) *
         Power;
}

/// An axis: the range shown (of log10 values when Log) and its ticks.
struct Axis {
  double Lo = 0, Hi = 1;
  bool Log = false;
  std::vector<double> Ticks; ///< In the units of Lo and Hi.
  std::vector<std::string> Labels;

  /// Where \p T, in the units of Lo and Hi, falls, as a fraction of the
  /// axis' length.
  double at(double T) const { return (T - Lo) / (Hi - Lo); }
  /// Where data value \p V falls.
  double fraction(double V) const { return at(Log ? std::log10(V) : V); }
};

/// Margin on each side of the data, as a fraction of their range (as
/// matplotlib's), so that no point sits on the frame.
constexpr double Margin = 0.05;

/// An axis over [Lo, Hi] plus the margins, with about five ticks inside.
Axis linearAxis(double Lo, double Hi, bool Integer) {
  if (!(Hi > Lo)) {
    double Pad = Lo == 0 ? 1 : std::fabs(Lo) * 0.1;
    Lo -= Pad;
    Hi += Pad;
  }
  Axis A;
  A.Lo = Lo - Margin * (Hi - Lo);
  A.Hi = Hi + Margin * (Hi - Lo);
  double Step = niceStep((Hi - Lo) / 5);
  if (Integer)
    Step = std::max(Step, 1.0);
  double First = std::ceil(A.Lo / Step), Last = std::floor(A.Hi / Step);
  // The decimal exponents of the step and of the largest label: fixed
  // notation with the digits the step needs (0.5 one, 0.05 two) while the
  // labels stay short, else scientific with the significant digits needed.
  int StepExp = int(std::floor(std::log10(Step) + 1e-9));
  double Largest = std::max(std::fabs(First * Step), std::fabs(Last * Step));
  int LargestExp =
      Largest > 0 ? int(std::floor(std::log10(Largest) + 1e-9)) : StepExp;
  bool Scientific = StepExp < -4 || LargestExp >= 6;
  int Digits = std::clamp(LargestExp - StepExp, 0, 15);
  // The count is bounded in case the range is too narrow for its magnitude
  // (K + 1 == K) or overflows.
  for (int I = 0; I <= 20 && First + I <= Last; ++I) {
    // (First + I) * Step rather than a running sum, so that 0.3 prints as
    // 0.3.
    double V = (First + I) * Step;
    A.Ticks.push_back(V);
    A.Labels.push_back(V == 0       ? "0"
                       : Scientific ? scientific(V, Digits)
                                    : fixed(V, std::max(0, -StepExp)));
  }
  return A;
}

/// A log axis over [Lo, Hi], 0 < Lo < Hi, plus the margins, with ticks at
/// the powers of ten inside; every second or further one when there are
/// many decades.
Axis logAxis(double Lo, double Hi) {
  double LogLo = std::log10(Lo), LogHi = std::log10(Hi);
  Axis A;
  A.Log = true;
  A.Lo = LogLo - Margin * (LogHi - LogLo);
  A.Hi = LogHi + Margin * (LogHi - LogLo);
  double Step = std::max(1.0, std::ceil((LogHi - LogLo) / 8));
  for (double E = std::ceil(A.Lo / Step) * Step; E <= A.Hi; E += Step) {
    A.Ticks.push_back(E);
    A.Labels.push_back(E >= -4 && E <= 5
                           ? fixed(std::pow(10.0, E), int(-std::min(E, 0.0)))
                           : scientific(std::pow(10.0, E), 0));
  }
  return A;
}

/// One thing drawn in a panel, with its legend entry.
struct Series {
  std::vector<PlotPoint> Points;
  std::string Name;
  const char *Colour;
  bool Line; ///< A line through the points, or dots.
};

/// Draws one panel with its top-left corner at (\p X0, \p Y0).
void drawPanel(std::string &Out, double X0, double Y0, const std::string &Title,
               const std::string &XLabel, std::string YLabel,
               const std::vector<Series> &All, bool LossPanel) {
  double XLo = INFINITY, XHi = -INFINITY, YLo = INFINITY, YHi = -INFINITY;
  for (const Series &S : All)
    for (const PlotPoint &P : S.Points) {
      XLo = std::min(XLo, P.X);
      XHi = std::max(XHi, P.X);
      YLo = std::min(YLo, P.Y);
      YHi = std::max(YHi, P.Y);
    }
  if (XLo > XHi) { // Nothing to draw: an empty frame.
    XLo = YLo = 0;
    XHi = YHi = 1;
  }
  Axis XAxis = linearAxis(XLo, XHi, /*Integer=*/LossPanel);
  // A loss that falls by more than two decades is seen better on a log scale.
  bool Log = LossPanel && YLo > 0 && YHi / YLo > 100;
  Axis YAxis = Log ? logAxis(YLo, YHi) : linearAxis(YLo, YHi, false);
  if (Log)
    YLabel += ", log scale";
  auto MapX = [&](double V) { return Left + XAxis.fraction(V) * AreaWidth; };
  auto MapY = [&](double V) {
    return Top + AreaHeight - YAxis.fraction(V) * AreaHeight;
  };

  Out += "<g transform=\"translate(" + px(X0) + "," + px(Y0) + ")\">\n";
  Out += "<text x=\"" + px(Left + AreaWidth / 2) + "\" y=\"" + px(Top - 12) +
         "\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">" +
         xmlText(Title) + "</text>\n";

  // Grid lines and tick marks, each as one path.
  std::string Grid, Marks, Labels;
  double AreaBottom = Top + AreaHeight;
  for (size_t I = 0; I < XAxis.Ticks.size(); ++I) {
    double X = Left + XAxis.at(XAxis.Ticks[I]) * AreaWidth;
    Grid += "M" + px(X) + " " + px(Top) + "V" + px(AreaBottom);
    Marks += "M" + px(X) + " " + px(AreaBottom) + "v5";
    Labels += "<text x=\"" + px(X) + "\" y=\"" + px(AreaBottom + 18) +
              "\" text-anchor=\"middle\">" + XAxis.Labels[I] + "</text>\n";
  }
  for (size_t I = 0; I < YAxis.Ticks.size(); ++I) {
    double Y = AreaBottom - YAxis.at(YAxis.Ticks[I]) * AreaHeight;
    Grid += "M" + px(Left) + " " + px(Y) + "H" + px(Left + AreaWidth);
    Marks += "M" + px(Left) + " " + px(Y) + "h-5";
    Labels += "<text x=\"" + px(Left - 8) + "\" y=\"" + px(Y + 4) +
              "\" text-anchor=\"end\">" + YAxis.Labels[I] + "</text>\n";
  }
  Out += "<path d=\"" + Grid + "\" stroke=\"#e4e4e4\"/>\n";
  Out += "<path d=\"" + Marks + "\" stroke=\"#333\"/>\n";
  Out += Labels;
  Out += "<text x=\"" + px(Left + AreaWidth / 2) + "\" y=\"" +
         px(PanelHeight - 10) + "\" text-anchor=\"middle\">" + xmlText(XLabel) +
         "</text>\n";
  Out += "<text transform=\"translate(16," + px(Top + AreaHeight / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + xmlText(YLabel) +
         "</text>\n";

  for (const Series &S : All) {
    // A line of few points gets dots at them too (a single point would not
    // show at all otherwise).
    if (!S.Points.empty() && (!S.Line || S.Points.size() <= 30)) {
      // Dots as zero-length round-capped strokes: a third of the bytes of
      // <circle> elements.
      const char *Style = S.Line ? "stroke-width=\"5\""
                                 : "stroke-width=\"4\" stroke-opacity=\"0.6\"";
      Out += "<path stroke=\"" + std::string(S.Colour) + "\" " + Style +
             " stroke-linecap=\"round\" d=\"";
      for (const PlotPoint &P : S.Points)
        Out += "M" + px(MapX(P.X)) + " " + px(MapY(P.Y)) + "h0";
      Out += "\"/>\n";
    }
    if (S.Line && S.Points.size() > 1) {
      Out += "<polyline fill=\"none\" stroke=\"" + std::string(S.Colour) +
             "\" stroke-width=\"1.5\" points=\"";
      for (const PlotPoint &P : S.Points)
        Out += px(MapX(P.X)) + "," + px(MapY(P.Y)) + " ";
      Out.pop_back();
      Out += "\"/>\n";
    }
  }
  Out += "<rect x=\"" + px(Left) + "\" y=\"" + px(Top) + "\" width=\"" +
         px(AreaWidth) + "\" height=\"" + px(AreaHeight) +
         "\" fill=\"none\" stroke=\"#333\"/>\n";

  // The legend goes in the corner of the plot area that covers the fewest
  // points; the names' width is estimated, as no font metrics are at hand.
  size_t Longest = 0;
  for (const Series &S : All)
    Longest = std::max(Longest, S.Name.size());
  double BoxW = 44 + 7.0 * double(Longest), BoxH = 8 + 18.0 * All.size();
  double BestX = 0, BestY = 0;
  size_t BestCount = SIZE_MAX;
  for (int Corner = 0; Corner < 4; ++Corner) {
    double BX = Corner & 1 ? Left + 8 : Left + AreaWidth - 8 - BoxW;
    double BY = Corner & 2 ? AreaBottom - 8 - BoxH : Top + 8;
    size_t Count = 0;
    for (const Series &S : All)
      for (const PlotPoint &P : S.Points) {
        double X = MapX(P.X), Y = MapY(P.Y);
        Count += X >= BX && X <= BX + BoxW && Y >= BY && Y <= BY + BoxH;
      }
    if (Count < BestCount) {
      BestCount = Count;
      BestX = BX;
      BestY = BY;
    }
  }
  Out += "<rect x=\"" + px(BestX) + "\" y=\"" + px(BestY) + "\" width=\"" +
         px(BoxW) + "\" height=\"" + px(BoxH) +
         "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n";
  for (size_t I = 0; I < All.size(); ++I) {
    const Series &S = All[I];
    double Y = BestY + 13 + 18.0 * I;
    std::string Colour = S.Colour;
    if (S.Line)
      Out += "<path d=\"M" + px(BestX + 8) + " " + px(Y) + "h22\" stroke=\"" +
             Colour + "\" stroke-width=\"1.5\"/>\n";
    else
      Out += "<path d=\"M" + px(BestX + 19) + " " + px(Y) + "h0\" stroke=\"" +
             Colour + "\" stroke-width=\"4\" stroke-linecap=\"round\"/>\n";
    Out += "<text x=\"" + px(BestX + 36) + "\" y=\"" + px(Y + 4) + "\">" +
           xmlText(S.Name) + "</text>\n";
  }
  Out += "</g>\n";
}

} // namespace

std::string nnc::renderTrainingPlot(const PlotData &D) {
  bool FitPanel = !D.FitData.empty() || !D.FitCurve.empty();
  double Width = PanelWidth * (FitPanel ? 2 : 1);
  double Height = TitleHeight + PanelHeight;
  std::string Out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    px(Width) + "\" height=\"" + px(Height) +
                    "\" viewBox=\"0 0 " + px(Width) + " " + px(Height) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  Out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  Out += "<text x=\"" + px(Width / 2) +
         "\" y=\"22\" text-anchor=\"middle\" font-size=\"16\">" +
         xmlText(D.Model) + "</text>\n";

  std::vector<Series> Loss;
  Loss.push_back({thin(D.TrainLoss, true), "training", "#1f77b4", true});
  if (!D.TestLoss.empty())
    Loss.push_back({thin(D.TestLoss, true), "test", "#ff7f0e", true});
  std::string LossLabel =
      D.LossName.empty() ? "loss" : "loss (" + D.LossName + ")";
  drawPanel(Out, 0, TitleHeight, "Loss", "epoch", LossLabel, Loss,
            /*LossPanel=*/true);

  if (FitPanel) {
    std::vector<PlotPoint> Curve = finitePoints(D.FitCurve);
    std::stable_sort(
        Curve.begin(), Curve.end(),
        [](const PlotPoint &L, const PlotPoint &R) { return L.X < R.X; });
    std::vector<Series> Fit;
    if (!D.FitData.empty())
      Fit.push_back({thin(D.FitData, false), "data", "#1f77b4", false});
    if (!Curve.empty())
      Fit.push_back({thin(Curve, true), "fit", "#d62728", true});
    drawPanel(Out, PanelWidth, TitleHeight, "Data and fitted curve", D.XLabel,
              D.YLabel, Fit, /*LossPanel=*/false);
  }
  Out += "</svg>\n";
  return Out;
}

bool nnc::writeTrainingPlot(const std::string &Path, const PlotData &D,
                            std::string &Err) {
  std::string What;
  if (writeFileAtomically(Path, {renderTrainingPlot(D)}, What))
    return true;
  Err = "cannot write plot '" + Path + "': " + What;
  return false;
}
