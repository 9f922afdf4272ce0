//===- Plot.h - Training plots as SVG or PNG --------------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The figure the textbooks draw with matplotlib after training, written as
/// a self-contained SVG or PNG file: the loss curve and, for a model of one input
/// and one output value, the data with the fitted curve beside it.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_PLOT_H
#define NNC_RUNTIME_PLOT_H

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nnc {

struct PlotPoint {
  double X = 0, Y = 0;
};

/// What writeTrainingPlot draws. Points that are not finite are skipped.
struct PlotData {
  std::string Model;                ///< The title.
  std::string LossName;             ///< E.g. "mse"; may be empty.
  std::vector<PlotPoint> TrainLoss; ///< (epoch, training loss).
  std::vector<PlotPoint> TestLoss;  ///< (epoch, test loss); may be empty.
  /// The second panel, drawn when either vector is not empty: the data
  /// points (thinned to at most about 2000, every k-th) and the model's
  /// curve through them (sorted by x here).
  std::vector<PlotPoint> FitData;
  std::vector<PlotPoint> FitCurve;
  std::string XLabel = "x", YLabel = "y"; ///< Axis names of the fit panel.
};

enum class PlotFormat { Svg, Png };

/// The format a plot file's name asks for: its extension, .svg or .png in
/// any case, after at least one character of name.
std::optional<PlotFormat> plotFormatFor(std::string_view Path);

/// Writes \p D to \p Path, atomically (see writeFileAtomically), in the
/// format its name asks for. On failure returns false and sets \p Err to a
/// message that names \p Path and the reason.
bool writeTrainingPlot(const std::string &Path, const PlotData &D,
                       std::string &Err);

/// The file's bytes that writeTrainingPlot writes.
std::string renderTrainingPlot(const PlotData &D,
                               PlotFormat Format = PlotFormat::Svg);

} // namespace nnc

#endif // NNC_RUNTIME_PLOT_H
