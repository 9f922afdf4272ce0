//===- Interrupt.h - Ctrl-C and SIGTERM during training ---------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// SIGINT and SIGTERM do not kill a training run at once: they set a flag
/// that the epoch loop reads after each step, so that the run can save a
/// checkpoint of a consistent state and exit. The handlers are one-shot: a
/// second signal kills the process as usual, and since checkpoints are
/// written atomically, loses nothing that was saved.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_INTERRUPT_H
#define NNC_RUNTIME_INTERRUPT_H

namespace nnc {

/// Installs the one-shot handlers of SIGINT and SIGTERM.
void catchInterrupts();

/// The signal caught since catchInterrupts(), or 0.
int interruptSignal();

/// Gives SIGINT and SIGTERM back their default action once training is
/// over, so that they stop the steps after it (evaluation, `after` steps) at
/// once; a signal caught and not yet acted on is raised again.
void releaseInterrupts();

} // namespace nnc

#endif // NNC_RUNTIME_INTERRUPT_H
