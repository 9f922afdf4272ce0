//===- GpuUnitTest.cpp - Unit tests of the runtime's devices --------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// The simulator of cuda-sim trainers, with kernels written by hand: thread
// and block indices, wide launches, barriers (reused many times, missing,
// or not reached by every thread), the blocks' order, shared memory (and
// what a block did not write there), separate device memory,
// nnc_gpu_launch, a schedule's failed launch, recorded schedules
// (--cuda-graphs), and queued calls' readbacks. No framework: CHECK prints the
// failing condition and counts it; the exit status is 1 when any check failed.
//
// usage: nnc-gpu-unittest             the simulator's tests
//        nnc-gpu-unittest --open-cuda  opens the CUDA driver for a program of
//                                      one kernel and prints why it cannot,
//                                      or the device's name (for the lit
//                                      tests of the driver's error handling)
//
//===----------------------------------------------------------------------===//

#include "Gpu.h"
#include "Check.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nnc;

namespace {

constexpr int Block = NNC_GPU_BLOCK;
/// Elements of the grid-stride test: not a multiple of any grid's size.
constexpr int64_t GridElements = 3001;

int32_t *ints(nnc_call *C) { return static_cast<int32_t *>(C->output); }

/// Each thread writes its index into shared memory and, after a barrier,
/// reads its neighbour's: wrong without the barrier or with a shared memory
/// per thread.
void neighbourKernel(nnc_call *C) {
  auto *Shared = static_cast<int32_t *>(nnc_sim_shared());
  int32_t T = nnc_sim_thread();
  Shared[T] = T;
  nnc_sim_barrier();
  ints(C)[T] = Shared[(T + 1) % Block] + 1000 * nnc_sim_blocks();
}

/// A grid-stride loop over GridElements, each element written once with
/// the block that wrote it; the last slots record the grid's size.
void gridKernel(nnc_call *C) {
  int64_t Threads = int64_t(nnc_sim_blocks()) * Block;
  for (int64_t I = int64_t(nnc_sim_block()) * Block + nnc_sim_thread();
       I < GridElements; I += Threads)
    ints(C)[I] += 1 + 10 * nnc_sim_block();
  if (nnc_sim_thread() == 0)
    ints(C)[GridElements + nnc_sim_block()] = nnc_sim_blocks();
}

/// A tree sum of one value per thread in shared memory: eight barriers,
/// each reused; thread 0 writes the sum as the loss.
void sumKernel(nnc_call *C) {
  auto *Shared = static_cast<double *>(nnc_sim_shared());
  int32_t T = nnc_sim_thread();
  Shared[T] = double(T) * C->lr;
  for (int Stride = Block / 2; Stride > 0; Stride /= 2) {
    nnc_sim_barrier();
    if (T < Stride)
      Shared[T] += Shared[T + Stride];
  }
  if (T == 0)
    C->loss = Shared[0];
}

/// No barrier at all: every thread on its own, and the whole of shared
/// memory written, each thread its slice, at the promised alignment.
void squaresKernel(nnc_call *C) {
  int32_t T = nnc_sim_thread();
  auto *Shared = static_cast<unsigned char *>(nnc_sim_shared());
  constexpr size_t Slice = NNC_SIM_SHARED / Block;
  std::memset(Shared + size_t(T) * Slice, T & 0xff, Slice);
  bool Aligned = reinterpret_cast<uintptr_t>(Shared) % 64 == 0;
  ints(C)[T] = Aligned ? T * T : -1;
}

/// neighbourKernel with its barrier left out (after one that clears shared
/// memory): a thread reads its neighbour's slot before or after the
/// neighbour writes it, as the simulator runs them.
void raceKernel(nnc_call *C) {
  auto *Shared = static_cast<int32_t *>(nnc_sim_shared());
  int32_t T = nnc_sim_thread();
  Shared[T] = 0;
  nnc_sim_barrier();
  Shared[T] = T + 1;
  ints(C)[T] = Shared[(T + 1) % Block];
}

/// Thread 0 ends without the barrier that the others wait at.
void strayKernel(nnc_call *) {
  if (nnc_sim_thread() != 0)
    nnc_sim_barrier();
}

/// Thread 0 of each block writes the block's index into the next of the
/// output's slots, counting them in slot 0: the order the blocks ran in.
void orderKernel(nnc_call *C) {
  if (nnc_sim_thread() == 0) {
    int32_t *Out = ints(C);
    Out[1 + Out[0]++] = nnc_sim_block();
  }
}

/// Each thread reads its slot of shared memory before anyone in the block
/// writes it, then writes it.
void unwrittenKernel(nnc_call *C) {
  auto *Shared = static_cast<int32_t *>(nnc_sim_shared());
  int32_t T = nnc_sim_thread();
  ints(C)[nnc_sim_block() * Block + T] = Shared[T];
  nnc_sim_barrier();
  Shared[T] = T;
}

const char *const KernelNames[] = {"neighbour", "grid",      "sum",
                                   "squares",   "race",      "stray",
                                   "order",     "unwritten", nullptr};
const GpuProgram::SimKernel Kernels[] = {
    neighbourKernel, gridKernel,  sumKernel,   squaresKernel,
    raceKernel,      strayKernel, orderKernel, unwrittenKernel};

void neighbourNarrow(void *D) { nnc_gpu_launch(D, 0, 1); }
void neighbourWide(void *D) { nnc_gpu_launch(D, 0, 0); }
void gridNarrowThenWide(void *D) {
  nnc_gpu_launch(D, 1, 1);
  nnc_gpu_launch(D, 1, 0);
}
void gridThree(void *D) { nnc_gpu_launch(D, 1, 3); }
void gridNegative(void *D) { nnc_gpu_launch(D, 1, -2); }
void sum(void *D) { nnc_gpu_launch(D, 2, 1); }
void squares(void *D) { nnc_gpu_launch(D, 3, 1); }
/// What nnc_gpu_rows said to the schedule below.
int64_t RowsSeen = -1;
void recordRows(void *D) { RowsSeen = nnc_gpu_rows(D); }
void race(void *D) { nnc_gpu_launch(D, 4, 1); }
void stray(void *D) { nnc_gpu_launch(D, 5, 1); }
void orderTwice(void *D) {
  nnc_gpu_launch(D, 6, 3);
  nnc_gpu_launch(D, 6, 3);
}
void squaresThenUnwritten(void *D) {
  nnc_gpu_launch(D, 3, 1);
  nnc_gpu_launch(D, 7, 2);
}
/// How many times countedGrid ran.
int ScheduleRuns = 0;
void countedGrid(void *D) {
  ++ScheduleRuns;
  gridNarrowThenWide(D);
}
/// A launch of a kernel that does not exist, then one that must not run.
void badLaunch(void *D) {
  nnc_gpu_launch(D, 99, 1);
  nnc_gpu_launch(D, 1, 0);
}

GpuProgram testProgram() {
  GpuProgram P;
  P.Kernels = KernelNames;
  P.SimKernels = Kernels;
  return P;
}

/// A device nnc_call whose output is \p Output, with \p Lr as `lr`.
struct DeviceCall {
  DeviceBuffer Memory;
  DeviceCall(Device &D, void *Output, double Lr) {
    nnc_call C = {};
    C.output = Output;
    C.lr = Lr;
    C.loss = -1;
    Memory.allocate(D, sizeof(C));
    D.upload(Memory.get(), &C, sizeof(C));
  }
  double loss(Device &D) const {
    nnc_call C;
    D.download(&C, Memory.get(), sizeof(C));
    return C.loss;
  }
};

std::vector<int32_t> downloadInts(Device &D, const DeviceBuffer &B, size_t N) {
  std::vector<int32_t> V(N);
  D.download(V.data(), B.get(), N * sizeof(int32_t));
  return V;
}

/// What running schedule \p S on \p Call throws, or "" when it runs.
std::string failureOf(Device &D, GpuProgram::Schedule S, const char *Name,
                      DeviceCall &Call) {
  try {
    D.run(S, Name, Call.Memory.get(), 1);
  } catch (const DeviceError &E) {
    return E.what();
  }
  return "";
}

/// Whether V[I] is Expected(I) for every I below \p Count.
template <typename F>
bool allMatch(const std::vector<int32_t> &V, int64_t Count, F Expected) {
  for (int64_t I = 0; I < Count; ++I)
    if (V[size_t(I)] != Expected(I))
      return false;
  return true;
}

void testProgramFromSymbols() {
  // This program defines no GPU symbol: it reads as a CPU-only trainer.
  GpuProgram P = trainerGpuProgram();
  CHECK(!P.hasGpuCode());
  CHECK(P.kernelCount() == 0);
  CHECK(!P.Ptx && !P.SimKernels && !P.TrainStep && !P.Workspace);
  CHECK(testProgram().kernelCount() == 8);
}

void testMemory(Device &D) {
  // Device memory is zeroed, and separate from the host's.
  std::vector<int32_t> Host(100, 7);
  DeviceBuffer A, B;
  A.allocate(D, Host.size() * sizeof(int32_t));
  B.allocate(D, Host.size() * sizeof(int32_t));
  CHECK(downloadInts(D, A, 100) == std::vector<int32_t>(100, 0));
  D.upload(A.get(), Host.data(), Host.size() * sizeof(int32_t));
  Host.assign(100, 9);
  CHECK(downloadInts(D, A, 100) == std::vector<int32_t>(100, 7));
  D.copy(B.get(), A.get(), 50 * sizeof(int32_t));
  std::vector<int32_t> Copied = downloadInts(D, B, 100);
  CHECK(Copied[0] == 7 && Copied[49] == 7 && Copied[50] == 0);
  // Simulated device memory is aligned as cuMemAlloc's.
  CHECK(reinterpret_cast<uintptr_t>(A.get()) % 256 == 0);
  DeviceBuffer Empty;
  Empty.allocate(D, 0);
  CHECK(Empty.get() != nullptr);
}

void testNeighbours(Device &D) {
  DeviceBuffer Out;
  Out.allocate(D, Block * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.run(neighbourNarrow, "neighbourNarrow", Call.Memory.get(), 1);
  std::vector<int32_t> V = downloadInts(D, Out, Block);
  CHECK(allMatch(V, Block, [](int64_t T) { return (T + 1) % Block + 1000; }));
  // Wide: four blocks, one after another, each with the shared memory and
  // barrier of its own threads.
  D.run(neighbourWide, "neighbourWide", Call.Memory.get(), 1);
  V = downloadInts(D, Out, Block);
  CHECK(allMatch(V, Block, [](int64_t T) { return (T + 1) % Block + 4000; }));
}

void testGrid(Device &D) {
  DeviceBuffer Out;
  Out.allocate(D, (GridElements + 4) * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.run(gridNarrowThenWide, "gridNarrowThenWide", Call.Memory.get(), 1);
  std::vector<int32_t> V = downloadInts(D, Out, GridElements + 4);
  // Each element once by the one block, then once by block I / 256 % 4.
  CHECK(allMatch(V, GridElements, [](int64_t I) {
    return 1 + 1 + 10 * int32_t(I / Block % 4);
  }));
  CHECK(V[GridElements] == 4 && V[GridElements + 3] == 4);
  // Three blocks, as a schedule asks for a kernel whose blocks each take
  // their part of the rows: element I once more, by block I / 256 % 3.
  D.run(gridThree, "gridThree", Call.Memory.get(), 1);
  V = downloadInts(D, Out, GridElements + 4);
  CHECK(allMatch(V, GridElements, [](int64_t I) {
    return 2 + 10 * int32_t(I / Block % 4) + 1 + 10 * int32_t(I / Block % 3);
  }));
  CHECK(V[GridElements] == 3 && V[GridElements + 2] == 3);
  std::string Message = failureOf(D, gridNegative, "gridNegative", Call);
  CHECK(Message == "nnc_gpu_launch: -2 blocks for grid in gridNegative");
}

void testBarriers(Device &D) {
  DeviceBuffer Out;
  Out.allocate(D, sizeof(int32_t));
  // 255 * 256 / 2, scaled: exact in double.
  for (int Round = 1; Round <= 40; ++Round) {
    DeviceCall Call(D, Out.get(), Round);
    D.run(sum, "sum", Call.Memory.get(), 1);
    double Loss = Call.loss(D);
    CHECK(Loss == 32640.0 * Round);
    if (Loss != 32640.0 * Round)
      break;
  }
}

void testNoBarrier(Device &D) {
  DeviceBuffer Out;
  Out.allocate(D, Block * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.run(squares, "squares", Call.Memory.get(), 1);
  std::vector<int32_t> V = downloadInts(D, Out, Block);
  CHECK(allMatch(V, Block, [](int64_t T) { return T * T; }));
}

void testRows(Device &D) {
  // A schedule reads the rows of the call it runs for (to choose between
  // the whole graph on one block and a kernel per node).
  DeviceBuffer Out;
  Out.allocate(D, sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.run(recordRows, "recordRows", Call.Memory.get(), 37);
  CHECK(RowsSeen == 37);
}

void testBadLaunch(Device &D) {
  DeviceBuffer Out;
  Out.allocate(D, (GridElements + 4) * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  std::string Message = failureOf(D, badLaunch, "badLaunch", Call);
  CHECK(Message == "nnc_gpu_launch: kernel 99 does not exist (the trainer "
                   "has 8) in badLaunch");
  // The launch after the failed one did not run.
  CHECK(downloadInts(D, Out, 1)[0] == 0);
  // The device is usable again for the next schedule.
  D.run(gridNarrowThenWide, "gridNarrowThenWide", Call.Memory.get(), 1);
  CHECK(downloadInts(D, Out, 1)[0] == 2);
}

void testMissingBarrier(Device &D) {
  // Some thread reads its neighbour's slot at the wrong time: the
  // simulator shows a missing barrier as wrong results.
  DeviceBuffer Out;
  Out.allocate(D, Block * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.run(race, "race", Call.Memory.get(), 1);
  std::vector<int32_t> V = downloadInts(D, Out, Block);
  CHECK(!allMatch(V, Block, [](int64_t T) { return (T + 1) % Block + 1; }));
}

void testBlockOrder(Device &D) {
  // A GPU runs a launch's blocks in no set order. The simulator runs them
  // first to last, then last to first at the next launch, so that a block
  // reading what another writes in the same launch gives wrong results.
  DeviceBuffer Out;
  Out.allocate(D, 7 * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.run(orderTwice, "orderTwice", Call.Memory.get(), 1);
  std::vector<int32_t> V = downloadInts(D, Out, 7);
  std::vector<int32_t> Forward = {0, 1, 2}, Backward = {2, 1, 0};
  std::vector<int32_t> First(V.begin() + 1, V.begin() + 4),
      Second(V.begin() + 4, V.end());
  CHECK(V[0] == 6);
  CHECK((First == Forward && Second == Backward) ||
        (First == Backward && Second == Forward));
}

void testUnwrittenShared(Device &D) {
  // Shared memory holds no block's leftovers (here, squares' bytes): it
  // starts each block as NaNs, all bits set, so that a kernel reading what
  // its block did not write shows it in its results.
  DeviceBuffer Out;
  Out.allocate(D, 2 * Block * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.run(squaresThenUnwritten, "squaresThenUnwritten", Call.Memory.get(), 1);
  std::vector<int32_t> V = downloadInts(D, Out, 2 * Block);
  CHECK(allMatch(V, 2 * Block, [](int64_t) { return -1; }));
}

void testStrayBarrier(Device &D) {
  DeviceBuffer Out;
  Out.allocate(D, sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  std::string Message = failureOf(D, stray, "stray", Call);
  CHECK(Message == "simulated GPU: 255 of block 0's 256 threads wait at a "
                   "barrier that the others ended without (kernel stray) in "
                   "stray");
}

void testRecording(Device &D) {
  // The first call on given arguments records the launches; the others
  // replay them, without running the schedule. Each call adds 2 to
  // element 0 (grid's narrow launch, then its wide one).
  DeviceBuffer Out;
  Out.allocate(D, (GridElements + 4) * sizeof(int32_t));
  DeviceCall Call(D, Out.get(), 0);
  D.recordSchedules(true);
  for (int I = 0; I < 3; ++I)
    D.run(countedGrid, "countedGrid", Call.Memory.get(), 5);
  CHECK(ScheduleRuns == 1);
  CHECK(downloadInts(D, Out, 1)[0] == 6);
  // Other rows, another recording.
  D.run(countedGrid, "countedGrid", Call.Memory.get(), 6);
  CHECK(ScheduleRuns == 2);
  CHECK(downloadInts(D, Out, 1)[0] == 8);
  D.recordSchedules(false);
  D.run(countedGrid, "countedGrid", Call.Memory.get(), 5);
  CHECK(ScheduleRuns == 3);
}

void testQueue(Device &D) {
  // A queued call's readback is finished once the next call is queued, or
  // by finishQueued() or run(): each into its own place, from its own call.
  DeviceCall One(D, nullptr, 1), Two(D, nullptr, 2), Three(D, nullptr, 3);
  auto LossOf = [](DeviceCall &C, double &To) {
    return Device::Readback{
        &To, static_cast<char *>(C.Memory.get()) + offsetof(nnc_call, loss),
        sizeof(double)};
  };
  double First = -1, Second = -1, Third = -1;
  const double Sum = Block * (Block - 1) / 2; // The sum kernel's, for lr 1.
  D.queue(sum, "sum", One.Memory.get(), 1, LossOf(One, First));
  CHECK(First == -1);
  D.queue(sum, "sum", Two.Memory.get(), 1, LossOf(Two, Second));
  CHECK(First == Sum);
  CHECK(Second == -1);
  D.finishQueued();
  CHECK(Second == 2 * Sum);
  Second = -1;
  D.finishQueued(); // Nothing pending: nothing written.
  CHECK(Second == -1);
  D.queue(sum, "sum", Three.Memory.get(), 1, LossOf(Three, Third));
  double Again = -1;
  Device::Readback Readback = LossOf(One, Again);
  D.run(sum, "sum", One.Memory.get(), 1, &Readback);
  CHECK(Third == 3 * Sum);
  CHECK(Again == Sum);
}

int openCuda() {
  GpuProgram P = testProgram();
  P.SimKernels = nullptr;
  P.Ptx = "// not PTX\n";
  std::string Why;
  std::unique_ptr<Device> D = nnc::openCuda(P, Why);
  if (D)
    std::printf("opened: %s\n", D->name().c_str());
  else
    std::printf("no CUDA device: %s\n", Why.c_str());
  return 0;
}

} // namespace

int main(int Argc, char **Argv) {
  if (Argc == 2 && std::strcmp(Argv[1], "--open-cuda") == 0)
    return openCuda();
  if (Argc != 1) {
    std::fprintf(stderr, "usage: %s [--open-cuda]\n", Argv[0]);
    return 2;
  }
  testProgramFromSymbols();
  std::string Why;
  std::unique_ptr<Device> D = openGpu(testProgram(), Why);
  CHECK(D && D->name() == "simulated GPU");
  if (!D)
    return 1;
  testMemory(*D);
  testNeighbours(*D);
  testGrid(*D);
  testBarriers(*D);
  testNoBarrier(*D);
  testRows(*D);
  testBadLaunch(*D);
  testMissingBarrier(*D);
  testStrayBarrier(*D);
  testBlockOrder(*D);
  testUnwrittenShared(*D);
  testRecording(*D);
  testQueue(*D);
  if (Failures) {
    std::fprintf(stderr, "%d check(s) failed\n", Failures);
    return 1;
  }
  std::printf("all GPU unit tests passed\n");
  return 0;
}
