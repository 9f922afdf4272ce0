//===- Interrupt.cpp - Ctrl-C and SIGTERM during training -----------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Interrupt.h"

#include <csignal>

using namespace nnc;

namespace {

volatile std::sig_atomic_t Caught = 0;

void onSignal(int Signal) { Caught = Signal; }

} // namespace

void nnc::catchInterrupts() {
  struct sigaction Action = {};
  Action.sa_handler = onSignal;
  sigemptyset(&Action.sa_mask);
  // SA_RESETHAND: the second signal takes the default action (death).
  // SA_RESTART: reads and writes in progress carry on.
  Action.sa_flags = SA_RESETHAND | SA_RESTART;
  sigaction(SIGINT, &Action, nullptr);
  sigaction(SIGTERM, &Action, nullptr);
}

int nnc::interruptSignal() { return Caught; }

void nnc::releaseInterrupts() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (Caught)
    std::raise(Caught);
}
