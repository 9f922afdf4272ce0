//===- Progress.h - The live progress line ----------------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// While a trainer runs on a terminal, one line on stderr shows where it is
/// (epoch, step, the epoch's running loss, rows per second, time left),
/// redrawn in place with '\r' at most a few times a second. It goes to
/// stderr so that stdout keeps exactly the report lines, terminal or not;
/// it is drawn only when stderr is a terminal, and wiped before anything
/// else is printed.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_PROGRESS_H
#define NNC_RUNTIME_PROGRESS_H

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace nnc {

class Progress {
public:
  /// \p Enabled false (--quiet, or stderr not a terminal) draws nothing.
  /// \p RowsLeft: the rows this run will train, to estimate the time left.
  Progress(bool Enabled, uint64_t RowsLeft);

  /// After each step: \p Rows rows were trained; the epoch's loss so far.
  /// Redraws when the last drawing is old enough.
  void step(int64_t Epoch, int64_t Epochs, int64_t Step, size_t Rows,
            double EpochLoss);
  /// Wipes the line, if drawn, before other output.
  void clear();

private:
  using Clock = std::chrono::steady_clock;
  bool Enabled;
  bool Drawn = false;
  uint64_t RowsLeft;
  uint64_t RowsDone = 0;
  Clock::time_point Start, LastDraw;
};

/// Whether the live line is drawn: stderr is a terminal and TERM is not
/// "dumb".
bool progressWanted();

} // namespace nnc

#endif // NNC_RUNTIME_PROGRESS_H
