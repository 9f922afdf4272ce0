//===- Progress.cpp - The live progress line ------------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Progress.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

using namespace nnc;

/// Redraws at most this often: enough to look live, few enough that the
/// terminal costs nothing next to training.
constexpr double RedrawSeconds = 0.25;

bool nnc::progressWanted() {
  const char *Term = std::getenv("TERM");
  return ::isatty(STDERR_FILENO) && !(Term && std::strcmp(Term, "dumb") == 0);
}

Progress::Progress(bool Enabled, uint64_t RowsLeft)
    : Enabled(Enabled), RowsLeft(RowsLeft), Start(Clock::now()),
      LastDraw(Start) {}

/// Seconds as "1:05:09", "5:09" or "9s".
static void formatDuration(double Seconds, char *Out, size_t Size) {
  long S = Seconds > 0 && Seconds < 1e8 ? long(Seconds + 0.5) : 0;
  if (S >= 3600)
    std::snprintf(Out, Size, "%ld:%02ld:%02ld", S / 3600, S / 60 % 60, S % 60);
  else if (S >= 60)
    std::snprintf(Out, Size, "%ld:%02ld", S / 60, S % 60);
  else
    std::snprintf(Out, Size, "%lds", S);
}

void Progress::step(int64_t Epoch, int64_t Epochs, int64_t Step, size_t Rows,
                    double EpochLoss) {
  RowsDone += Rows;
  if (!Enabled)
    return;
  Clock::time_point Now = Clock::now();
  if (std::chrono::duration<double>(Now - LastDraw).count() < RedrawSeconds)
    return;
  LastDraw = Now;
  double Elapsed = std::chrono::duration<double>(Now - Start).count();
  double Speed = Elapsed > 0 ? double(RowsDone) / Elapsed : 0;
  char Left[32];
  formatDuration(Speed > 0 && RowsLeft > RowsDone
                     ? double(RowsLeft - RowsDone) / Speed
                     : 0,
                 Left, sizeof(Left));
  // \033[K erases what a longer previous line left to the right.
  std::fprintf(stderr,
               "\repoch %lld/%lld  step %lld  loss %.6f  %.0f rows/s  %s "
               "left\033[K",
               (long long)Epoch, (long long)Epochs, (long long)Step, EpochLoss,
               Speed, Left);
  std::fflush(stderr);
  Drawn = true;
}

void Progress::clear() {
  if (!Drawn)
    return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  Drawn = false;
}
