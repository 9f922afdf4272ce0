//===- Plot.cpp - Training plots as SVG or PNG ----------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Each panel is a frame with a light grid at "nice" tick values (1, 2 or 5
// times a power of ten), numeric tick labels, axis names, a title and a
// legend placed in the emptiest corner. The figure is drawn once, on a
// Canvas: SVG text (coordinates with one decimal, a tenth of a pixel, to
// keep files small) or an anti-aliased raster written as PNG by
// stb_image_write, with stb_easy_font's glyphs for text (Debian's
// libstb-dev, header-only).
//
//===----------------------------------------------------------------------===//

#include "Plot.h"

#include "Files.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#include <stb/stb_easy_font.h>
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

using namespace nnc;

namespace {

// Geometry in pixels: each panel, and its plot area within it.
constexpr double PanelWidth = 480, PanelHeight = 360, TitleHeight = 30;
constexpr double Left = 70, Right = 20, Top = 34, Bottom = 50;
constexpr double AreaWidth = PanelWidth - Left - Right;
constexpr double AreaHeight = PanelHeight - Top - Bottom;
constexpr double Height = TitleHeight + PanelHeight;

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

/// Whether the figure has the data panel beside the loss.
bool hasFitPanel(const PlotData &D) {
  return !D.FitData.empty() || !D.FitCurve.empty();
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

/// Where a text's anchor point sits along it.
enum class Anchor { Start, Middle, End };

struct TextStyle {
  double Size = 12;
  bool Bold = false;
  Anchor Align = Anchor::Start;
  bool Vertical = false; ///< Rotated a quarter turn counter-clockwise.
};

/// A line segment, in pixels.
struct Segment {
  double X0, Y0, X1, Y1;
};

/// What a figure is drawn on: the few primitives the panels need, in
/// pixels from the top-left corner of the current panel. Colours are
/// "#rrggbb"; a null fill or stroke is not drawn.
class Canvas {
public:
  virtual ~Canvas() = default;
  virtual void setOrigin(double X, double Y) = 0;
  /// \p S at (\p X, \p Y): the anchor point on the baseline.
  virtual void text(double X, double Y, std::string_view S,
                    const TextStyle &Style) = 0;
  /// Segments one pixel wide.
  virtual void segments(const std::vector<Segment> &All,
                        const char *Colour) = 0;
  virtual void polyline(const std::vector<PlotPoint> &Points,
                        const char *Colour, double Width) = 0;
  /// Round dots of \p Diameter at \p Points.
  virtual void dots(const std::vector<PlotPoint> &Points, const char *Colour,
                    double Diameter, double Opacity) = 0;
  virtual void rect(double X, double Y, double W, double H, const char *Fill,
                    double FillOpacity, const char *Stroke) = 0;
};

class SvgCanvas final : public Canvas {
public:
  SvgCanvas(double Width, double Height) {
    Out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
          px(Width) + "\" height=\"" + px(Height) + "\" viewBox=\"0 0 " +
          px(Width) + " " + px(Height) +
          "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  }

  std::string finish() {
    closeGroup();
    return std::move(Out) + "</svg>\n";
  }

  void setOrigin(double X, double Y) override {
    closeGroup();
    if (X != 0 || Y != 0) {
      Out += "<g transform=\"translate(" + px(X) + "," + px(Y) + ")\">\n";
      InGroup = true;
    }
  }

  void text(double X, double Y, std::string_view S,
            const TextStyle &Style) override {
    Out += "<text ";
    Out += Style.Vertical ? "transform=\"translate(" + px(X) + "," + px(Y) +
                                ") rotate(-90)\""
                          : "x=\"" + px(X) + "\" y=\"" + px(Y) + "\"";
    if (Style.Align != Anchor::Start)
      Out += Style.Align == Anchor::Middle ? " text-anchor=\"middle\""
                                           : " text-anchor=\"end\"";
    if (Style.Size != 12)
      Out += " font-size=\"" + px(Style.Size) + "\"";
    if (Style.Bold)
      Out += " font-weight=\"bold\"";
    Out += ">" + xmlText(S) + "</text>\n";
  }

  void segments(const std::vector<Segment> &All, const char *Colour) override {
    std::string D;
    for (const Segment &S : All) {
      D += "M" + px(S.X0) + " " + px(S.Y0);
      D += S.X0 == S.X1   ? "V" + px(S.Y1)
           : S.Y0 == S.Y1 ? "H" + px(S.X1)
                          : "L" + px(S.X1) + " " + px(S.Y1);
    }
    Out += "<path d=\"" + D + "\" stroke=\"" + Colour + "\"/>\n";
  }

  void polyline(const std::vector<PlotPoint> &Points, const char *Colour,
                double Width) override {
    Out += "<polyline fill=\"none\" stroke=\"" + std::string(Colour) +
           "\" stroke-width=\"" + px(Width) + "\" points=\"";
    for (const PlotPoint &P : Points)
      Out += px(P.X) + "," + px(P.Y) + " ";
    Out.pop_back();
    Out += "\"/>\n";
  }

  void dots(const std::vector<PlotPoint> &Points, const char *Colour,
            double Diameter, double Opacity) override {
    // Zero-length round-capped strokes: a third of the bytes of <circle>
    // elements.
    Out += "<path stroke=\"" + std::string(Colour) + "\" stroke-width=\"" +
           px(Diameter) + "\"";
    if (Opacity != 1)
      Out += " stroke-opacity=\"" + fixed(Opacity, 2) + "\"";
    Out += " stroke-linecap=\"round\" d=\"";
    for (const PlotPoint &P : Points)
      Out += "M" + px(P.X) + " " + px(P.Y) + "h0";
    Out += "\"/>\n";
  }

  void rect(double X, double Y, double W, double H, const char *Fill,
            double FillOpacity, const char *Stroke) override {
    Out += "<rect x=\"" + px(X) + "\" y=\"" + px(Y) + "\" width=\"" + px(W) +
           "\" height=\"" + px(H) + "\" fill=\"" + (Fill ? Fill : "none") +
           "\"";
    if (Fill && FillOpacity != 1)
      Out += " fill-opacity=\"" + fixed(FillOpacity, 2) + "\"";
    if (Stroke)
      Out += " stroke=\"" + std::string(Stroke) + "\"";
    Out += "/>\n";
  }

private:
  void closeGroup() {
    if (InGroup)
      Out += "</g>\n";
    InGroup = false;
  }

  std::string Out;
  bool InGroup = false;
};

/// An RGB image drawn with anti-aliasing: each shape's coverage of every
/// pixel is computed into a mask (the most of its parts, so that the joints
/// of a line are not drawn twice), then blended in its colour. Text is
/// stb_easy_font's segment font, scaled.
class RasterCanvas final : public Canvas {
public:
  RasterCanvas(int Width, int Height)
      : Width(Width), Height(Height), Pixels(size_t(Width) * Height * 3, 1.0f),
        Mask(size_t(Width) * Height, 0.0f) {}

  /// The image as a PNG file's bytes.
  std::string png() const {
    std::vector<unsigned char> Bytes(Pixels.size());
    for (size_t I = 0; I < Pixels.size(); ++I)
      Bytes[I] = (unsigned char)std::lround(
          255 * std::clamp(Pixels[I], 0.0f, 1.0f));
    int Len = 0;
    unsigned char *Png = stbi_write_png_to_mem(Bytes.data(), Width * 3, Width,
                                               Height, 3, &Len);
    std::string Out(reinterpret_cast<char *>(Png), size_t(Len));
    STBIW_FREE(Png);
    return Out;
  }

  void setOrigin(double X, double Y) override {
    OriginX = X;
    OriginY = Y;
  }

  void text(double X, double Y, std::string_view S,
            const TextStyle &Style) override {
    // The font's glyphs are 7 units from cap to baseline (descenders go 2
    // below); a 12-pixel font's capitals are about 9 pixels tall.
    std::string Ascii = printable(S);
    double Scale = Style.Size * 0.75 / 7;
    double Length = stb_easy_font_width(Ascii.data()) * Scale;
    double Shift = Style.Align == Anchor::Start    ? 0
                   : Style.Align == Anchor::Middle ? Length / 2
                                                   : Length;
    std::vector<char> Quads(Ascii.size() * 400 + 64);
    int Count = stb_easy_font_print(0, 0, Ascii.data(), nullptr, Quads.data(),
                                    int(Quads.size()));
    auto Corner = [&](int Quad, int Vertex, int Axis) {
      float V;
      std::memcpy(&V, Quads.data() + Quad * 64 + Vertex * 16 + Axis * 4, 4);
      return double(V);
    };
    for (int Q = 0; Q < Count; ++Q) {
      // Glyph units: x right, y down from the cap line (baseline at 7).
      double U0 = Corner(Q, 0, 0) * Scale - Shift, U1 = Corner(Q, 2, 0) * Scale - Shift;
      double V0 = (Corner(Q, 0, 1) - 7) * Scale, V1 = (Corner(Q, 2, 1) - 7) * Scale;
      if (Style.Bold)
        U1 += 0.5 * Scale;
      if (Style.Vertical) // (u, v) -> (v, -u): read bottom to top.
        coverBox(X + V0, Y - U1, X + V1, Y - U0);
      else
        coverBox(X + U0, Y + V0, X + U1, Y + V1);
    }
    blend("#000000", 1);
  }

  void segments(const std::vector<Segment> &All, const char *Colour) override {
    for (const Segment &S : All)
      coverSegment(S, 1);
    blend(Colour, 1);
  }

  void polyline(const std::vector<PlotPoint> &Points, const char *Colour,
                double Width) override {
    for (size_t I = 1; I < Points.size(); ++I)
      coverSegment({Points[I - 1].X, Points[I - 1].Y, Points[I].X,
                    Points[I].Y},
                   Width);
    blend(Colour, 1);
  }

  void dots(const std::vector<PlotPoint> &Points, const char *Colour,
            double Diameter, double Opacity) override {
    for (const PlotPoint &P : Points)
      coverSegment({P.X, P.Y, P.X, P.Y}, Diameter);
    blend(Colour, Opacity);
  }

  void rect(double X, double Y, double W, double H, const char *Fill,
            double FillOpacity, const char *Stroke) override {
    if (Fill) {
      coverBox(X, Y, X + W, Y + H);
      blend(Fill, FillOpacity);
    }
    if (Stroke)
      segments({{X, Y, X + W, Y},
                {X + W, Y, X + W, Y + H},
                {X + W, Y + H, X, Y + H},
                {X, Y + H, X, Y}},
               Stroke);
  }

private:
  /// \p S with what the font lacks (all but printable ASCII) as '?'.
  static std::string printable(std::string_view S) {
    std::string Out;
    for (size_t I = 0; I < S.size(); ++I) {
      unsigned char C = S[I];
      if (C >= 0x80) // One '?' per UTF-8 sequence, not per byte.
        while (I + 1 < S.size() && (S[I + 1] & 0xc0) == 0x80)
          ++I;
      Out += C >= 0x20 && C < 0x7f ? char(C) : '?';
    }
    return Out;
  }

  /// Raises the mask to the coverage of the axis-aligned box, in panel
  /// pixels: the area of each pixel it covers.
  void coverBox(double X0, double Y0, double X1, double Y1) {
    X0 += OriginX, X1 += OriginX, Y0 += OriginY, Y1 += OriginY;
    int C0 = std::max(0, int(std::floor(X0))),
        C1 = std::min(Width - 1, int(std::ceil(X1)));
    int R0 = std::max(0, int(std::floor(Y0))),
        R1 = std::min(Height - 1, int(std::ceil(Y1)));
    for (int R = R0; R <= R1; ++R) {
      double Dy = std::min(Y1, R + 1.0) - std::max(Y0, double(R));
      for (int C = C0; C <= C1 && Dy > 0; ++C) {
        double Dx = std::min(X1, C + 1.0) - std::max(X0, double(C));
        if (Dx > 0)
          raise(R, C, Dx * Dy);
      }
    }
  }

  /// Raises the mask to the coverage of a stroke of \p W pixels along \p S
  /// with round ends: full within W/2 of the segment, fading over a pixel.
  void coverSegment(Segment S, double W) {
    S.X0 += OriginX, S.X1 += OriginX, S.Y0 += OriginY, S.Y1 += OriginY;
    double Reach = W / 2 + 0.5;
    int C0 = std::max(0, int(std::floor(std::min(S.X0, S.X1) - Reach))),
        C1 = std::min(Width - 1, int(std::ceil(std::max(S.X0, S.X1) + Reach)));
    int R0 = std::max(0, int(std::floor(std::min(S.Y0, S.Y1) - Reach))),
        R1 = std::min(Height - 1, int(std::ceil(std::max(S.Y0, S.Y1) + Reach)));
    double Dx = S.X1 - S.X0, Dy = S.Y1 - S.Y0, Len2 = Dx * Dx + Dy * Dy;
    for (int R = R0; R <= R1; ++R)
      for (int C = C0; C <= C1; ++C) {
        double Px = C + 0.5 - S.X0, Py = R + 0.5 - S.Y0;
        double T = Len2 > 0 ? std::clamp((Px * Dx + Py * Dy) / Len2, 0.0, 1.0)
                            : 0;
        double Distance = std::hypot(Px - T * Dx, Py - T * Dy);
        raise(R, C, std::clamp(Reach - Distance, 0.0, 1.0));
      }
  }

  void raise(int R, int C, double Coverage) {
    float &M = Mask[size_t(R) * Width + C];
    M = std::max(M, float(std::min(Coverage, 1.0)));
  }

  /// Paints the mask in \p Colour at \p Opacity and clears it.
  void blend(const char *Colour, double Opacity) {
    float Rgb[3];
    for (int I = 0; I < 3; ++I)
      Rgb[I] = float(std::stoi(std::string(Colour + 1 + 2 * I, 2), nullptr,
                               16)) /
               255;
    for (size_t P = 0; P < Mask.size(); ++P) {
      float A = Mask[P] * float(Opacity);
      if (A == 0)
        continue;
      for (int I = 0; I < 3; ++I)
        Pixels[3 * P + I] += A * (Rgb[I] - Pixels[3 * P + I]);
      Mask[P] = 0;
    }
  }

  int Width, Height;
  double OriginX = 0, OriginY = 0;
  std::vector<float> Pixels; ///< RGB, row by row, in [0, 1].
  std::vector<float> Mask;
};

/// One thing drawn in a panel, with its legend entry.
struct Series {
  std::vector<PlotPoint> Points;
  std::string Name;
  const char *Colour;
  bool Line; ///< A line through the points, or dots.
};

/// Draws one panel with its top-left corner at (\p X0, \p Y0).
void drawPanel(Canvas &Out, double X0, double Y0, const std::string &Title,
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
  auto Map = [&](const PlotPoint &P) {
    return PlotPoint{Left + XAxis.fraction(P.X) * AreaWidth,
                     Top + AreaHeight - YAxis.fraction(P.Y) * AreaHeight};
  };

  Out.setOrigin(X0, Y0);
  TextStyle Heading{14, /*Bold=*/true, Anchor::Middle};
  Out.text(Left + AreaWidth / 2, Top - 12, Title, Heading);

  // Grid lines, tick marks and their labels.
  std::vector<Segment> Grid, Marks;
  double AreaBottom = Top + AreaHeight;
  TextStyle Centred{12, false, Anchor::Middle}, RightAligned{12, false,
                                                             Anchor::End};
  for (size_t I = 0; I < XAxis.Ticks.size(); ++I) {
    double X = Left + XAxis.at(XAxis.Ticks[I]) * AreaWidth;
    Grid.push_back({X, Top, X, AreaBottom});
    Marks.push_back({X, AreaBottom, X, AreaBottom + 5});
    Out.text(X, AreaBottom + 18, XAxis.Labels[I], Centred);
  }
  for (size_t I = 0; I < YAxis.Ticks.size(); ++I) {
    double Y = AreaBottom - YAxis.at(YAxis.Ticks[I]) * AreaHeight;
    Grid.push_back({Left, Y, Left + AreaWidth, Y});
    Marks.push_back({Left, Y, Left - 5, Y});
    Out.text(Left - 8, Y + 4, YAxis.Labels[I], RightAligned);
  }
  Out.segments(Grid, "#e4e4e4");
  Out.segments(Marks, "#333333");
  Out.text(Left + AreaWidth / 2, PanelHeight - 10, XLabel, Centred);
  Out.text(16, Top + AreaHeight / 2, YLabel,
           {12, false, Anchor::Middle, /*Vertical=*/true});

  for (const Series &S : All) {
    std::vector<PlotPoint> Pixels;
    for (const PlotPoint &P : S.Points)
      Pixels.push_back(Map(P));
    // A line of few points gets dots at them too (a single point would not
    // show at all otherwise).
    if (!Pixels.empty() && (!S.Line || Pixels.size() <= 30))
      Out.dots(Pixels, S.Colour, S.Line ? 5 : 4, S.Line ? 1 : 0.6);
    if (S.Line && Pixels.size() > 1)
      Out.polyline(Pixels, S.Colour, 1.5);
  }
  Out.rect(Left, Top, AreaWidth, AreaHeight, nullptr, 1, "#333333");

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
        PlotPoint Q = Map(P);
        Count += Q.X >= BX && Q.X <= BX + BoxW && Q.Y >= BY && Q.Y <= BY + BoxH;
      }
    if (Count < BestCount) {
      BestCount = Count;
      BestX = BX;
      BestY = BY;
    }
  }
  Out.rect(BestX, BestY, BoxW, BoxH, "#ffffff", 0.85, "#999999");
  for (size_t I = 0; I < All.size(); ++I) {
    const Series &S = All[I];
    double Y = BestY + 13 + 18.0 * I;
    if (S.Line)
      Out.polyline({{BestX + 8, Y}, {BestX + 30, Y}}, S.Colour, 1.5);
    else
      Out.dots({{BestX + 19, Y}}, S.Colour, 4, 1);
    Out.text(BestX + 36, Y + 4, S.Name, TextStyle());
  }
}

/// Draws the whole figure of \p D on \p Out, \p Width by Height pixels.
void drawFigure(Canvas &Out, const PlotData &D, double Width) {
  Out.rect(0, 0, Width, Height, "#ffffff", 1, nullptr);
  Out.text(Width / 2, 22, D.Model, {16, false, Anchor::Middle});

  std::vector<Series> Loss;
  Loss.push_back({thin(D.TrainLoss, true), "training", "#1f77b4", true});
  if (!D.TestLoss.empty())
    Loss.push_back({thin(D.TestLoss, true), "test", "#ff7f0e", true});
  std::string LossLabel =
      D.LossName.empty() ? "loss" : "loss (" + D.LossName + ")";
  drawPanel(Out, 0, TitleHeight, "Loss", "epoch", LossLabel, Loss,
            /*LossPanel=*/true);

  if (hasFitPanel(D)) {
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
}

} // namespace

std::optional<PlotFormat> nnc::plotFormatFor(std::string_view Path) {
  auto EndsWith = [&](const char *Suffix) {
    size_t N = std::strlen(Suffix);
    if (Path.size() <= N || Path[Path.size() - N - 1] == '/')
      return false;
    for (size_t I = 0; I < N; ++I) {
      char C = Path[Path.size() - N + I];
      if ((C >= 'A' && C <= 'Z' ? char(C - 'A' + 'a') : C) != Suffix[I])
        return false;
    }
    return true;
  };
  if (EndsWith(".svg"))
    return PlotFormat::Svg;
  if (EndsWith(".png"))
    return PlotFormat::Png;
  return std::nullopt;
}

std::string nnc::renderTrainingPlot(const PlotData &D, PlotFormat Format) {
  double Width = PanelWidth * (hasFitPanel(D) ? 2 : 1);
  if (Format == PlotFormat::Png) {
    RasterCanvas Image{int(Width), int(Height)};
    drawFigure(Image, D, Width);
    return Image.png();
  }
  SvgCanvas Svg(Width, Height);
  drawFigure(Svg, D, Width);
  return Svg.finish();
}

bool nnc::writeTrainingPlot(const std::string &Path, const PlotData &D,
                            std::string &Err) {
  std::string What;
  std::optional<PlotFormat> Format = plotFormatFor(Path);
  if (!Format) {
    Err = "cannot write plot '" + Path + "': name it *.svg or *.png";
    return false;
  }
  if (writeFileAtomically(Path, {renderTrainingPlot(D, *Format)}, What))
    return true;
  Err = "cannot write plot '" + Path + "': " + What;
  return false;
}
