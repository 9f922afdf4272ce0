//===- ThreadPool.h - The workers of generated parallel loops ---*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// Generated code runs a loop in parallel by calling nnc_parallel_for
/// (runtime.h): the range is cut into one contiguous chunk per thread, the
/// calling thread takes the first, and the call returns when all are done.
/// Which thread computes what depends only on the range and the thread
/// count, never on timing, and generated code splits only loops whose
/// iterations write disjoint outputs, so results do not depend on the
/// number of threads.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_THREADPOOL_H
#define NNC_RUNTIME_THREADPOOL_H

namespace nnc {

/// Starts \p Threads - 1 workers (stopping any earlier ones); 1 runs every
/// loop on the calling thread.
void setThreadCount(int Threads);

/// The threads nnc_parallel_for uses.
int threadCount();

/// The processors this process may run on.
int availableCores();

} // namespace nnc

#endif // NNC_RUNTIME_THREADPOOL_H
