#!/usr/bin/python3
"""Times nnc's generated trainers against the same models in PyTorch (bench/README.md).

For each model: compiles the trainer (nnc's compile time: median of 3), then runs the trainer
and its PyTorch twin (torch_models.py) alternately, each in a process of its own, for every
thread count. Both sides time only their training steps and print the same `speed:` line; the
peak resident memory of each process comes from wait4's rusage, read by peak_rss.py. The machine
may be shared: each run also measures how much CPU other processes took meanwhile.
"""

import argparse
import importlib.metadata
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import make_tagged

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NNC = REPO / "build" / "bin" / "nnc"
TWINS = BENCH / "torch_models.py"

# The line both sides print at the end of training (nnc trainers with --speed). `where` is
# "T threads" on the CPU, the device's name on a GPU.
SPEED = re.compile(r"^speed: (?P<rate>[0-9.]+) rows/s, (?P<seconds>[0-9.]+) s in training steps "
                   r"\((?P<epochs>\d+) epochs x (?P<rows>\d+) rows, (?P<where>.*)\)$", re.MULTILINE)
# The line peak_rss.py adds.
PEAK_RSS = re.compile(r"^peak_rss_kib (\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Bench:
    name: str  # also the name of the PyTorch twin in torch_models.py
    spec: str  # relative to the repository root
    epochs: int  # for both sides, unless torch_epochs is given
    batch: str  # "all" or rows per step, for both sides
    # Set where PyTorch would take minutes at nnc's epoch count: the rates stay comparable,
    # since every epoch of these full-batch models costs the same.
    torch_epochs: int | None = None
    # The spec's data file or folder, relative to the repository root, where it reads one (the
    # trainer stores its absolute path: bench/gpu.py passes it with --data, so that trainers built
    # in one checkout run in another).
    data: str | None = None
    quick_data: str | None = None  # a smaller data set of the same shapes, for --quick
    max_reps: int | None = None  # for the slow ones


POLARITY = "specs/data/pattern/polarity-en-pang-lee2.csv"

# Epochs are chosen so that the nnc trainer trains for 0.5 s or more at one thread, and the
# whole default run (--reps 3, --threads 1,2) takes about 17 minutes on 2 cores.
BENCHES = [
    Bench("simple", "specs/simple.nn", 3_000_000, "all", torch_epochs=10_000,
          data="specs/data/simple.csv"),
    Bench("iris", "specs/iris.nn", 10_000, "all", data="specs/data/iris.csv"),
    Bench("regression", "specs/regression.nn", 10_000, "all"),
    Bench("autoencoder", "specs/autoencoder.nn", 5_000, "all"),
    Bench("linreg", "specs/linreg.nn", 2_000, "all"),
    Bench("recommender", "bench/specs/recommender_100k.nn", 20, "256"),
    Bench("mnist_mlp", "specs/mnist_mlp.nn", 1, "64", data="specs/data/mnist",
          quick_data="specs/data/mnist-slice"),
    Bench("tagger", "bench/specs/tagger_bench.nn", 2, "64", data="bench/data/tagged-bench.txt"),
    Bench("text_classifier", "specs/text_classifier.nn", 10, "64", data=POLARITY,
          quick_data="specs/data/polarity-slice.csv"),
    Bench("text_classifier_lstm", "specs/text_classifier_lstm.nn", 2, "64", data=POLARITY,
          quick_data="specs/data/polarity-slice.csv"),
    Bench("mnist_cnn", "specs/mnist_cnn.nn", 1, "128", data="specs/data/mnist",
          quick_data="specs/data/mnist-slice", max_reps=1),
]


@dataclass
class Run:
    rate: float  # training rows per second, in the training steps only
    rows: int  # training rows per epoch
    peak_mib: float  # peak resident memory of the process
    others: float  # share of the machine's CPU time that other processes used meanwhile
    epochs: int = 0
    seconds: float = 0.0  # in the training steps
    where: str = ""  # "T threads", or the GPU's name


class RunFailed(Exception):
    """A run that exited with an error, or printed no speed line."""

    def __init__(self, argv: list[str], done: subprocess.CompletedProcess):
        super().__init__(f"failed: {shlex.join(argv)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        self.argv, self.done = argv, done


@dataclass
class Result:
    bench: Bench
    threads: int
    compile_s: float
    epochs: tuple[int, int]  # nnc's, PyTorch's
    nnc: list[Run] = field(default_factory=list)
    torch: list[Run] = field(default_factory=list)

    def ratio(self) -> float:
        """Median over the repetitions of nnc's rate over PyTorch's: each repetition pairs
        two runs made one after the other, so a slow spell of the machine hits both."""
        return statistics.median(n.rate / t.rate for n, t in zip(self.nnc, self.torch))


# --- Running one side -------------------------------------------------------------------------

def child_env(threads: int) -> dict[str, str]:
    """The environment of both sides: OMP_NUM_THREADS may not override the thread count, and
    OpenBLAS must pick its kernels for this CPU (AVX-512 where there is)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def busy_cpu_seconds() -> float:
    """The CPU time all processes have used since boot, over all cores (/proc/stat)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = \
            map(int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """The CPU time of this script and of the children it has waited for."""
    return sum(os.times()[:4])


def run_measured(argv: list[str], threads: int) -> Run:
    """Runs argv in a process of its own, through peak_rss.py, and reads its speed line, its
    peak memory, and the CPU time the rest of the machine used while it ran."""
    launcher = [sys.executable, "-S", str(BENCH / "peak_rss.py")]
    busy, own, start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    done = subprocess.run(launcher + argv, env=child_env(threads), capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    others = busy_cpu_seconds() - busy - (own_cpu_seconds() - own)
    speed, peak = SPEED.search(done.stdout), PEAK_RSS.search(done.stdout)
    if done.returncode != 0 or not speed:
        raise RunFailed(argv, done)
    return Run(float(speed["rate"]), int(speed["rows"]), int(peak[1]) / 1024,
               max(0.0, others) / (wall * os.cpu_count()), int(speed["epochs"]),
               float(speed["seconds"]), speed["where"])


def run_nnc(trainer: Path, bench: Bench, epochs: int, threads: int, data: str | None) -> Run:
    argv = [str(trainer), "--epochs", str(epochs), "--batch", bench.batch,
            "--threads", str(threads), "--speed", "--save", f"{trainer}.weights"]
    if data:
        argv += ["--data", str(REPO / data)]
    return run_measured(argv, threads)


def run_torch(bench: Bench, epochs: int, threads: int, rows: int) -> Run:
    argv = [sys.executable, str(TWINS), bench.name, "--rows", str(rows),
            "--epochs", str(epochs), "--batch", bench.batch, "--threads", str(threads)]
    return run_measured(argv, threads)


def compile_trainer(bench: Bench, trainer: Path) -> float:
    """Compiles the spec three times; returns the median wall time in seconds."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([str(NNC), str(REPO / bench.spec), "-o", str(trainer)], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- One model --------------------------------------------------------------------------------

def bench_model(bench: Bench, args: argparse.Namespace, workdir: Path) -> list[Result]:
    trainer = workdir / bench.name
    compile_s = compile_trainer(bench, trainer)
    nnc_epochs = bench.epochs
    torch_epochs = bench.torch_epochs or bench.epochs
    data = None
    if args.quick:
        nnc_epochs, torch_epochs = max(1, nnc_epochs // 10), max(1, torch_epochs // 10)
        data = bench.quick_data
    reps = min(args.reps, bench.max_reps or args.reps)
    results = []
    for threads in args.threads:
        result = Result(bench, threads, compile_s, (nnc_epochs, torch_epochs))
        for rep in range(reps):
            nnc = run_nnc(trainer, bench, nnc_epochs, threads, data)
            twin = run_torch(bench, torch_epochs, threads, nnc.rows)
            result.nnc.append(nnc)
            result.torch.append(twin)
            print(f"  {bench.name} threads {threads} rep {rep + 1}/{reps}: "
                  f"nnc {si(nnc.rate)} rows/s, PyTorch {si(twin.rate)} rows/s "
                  f"(other processes: {nnc.others:.0%}, {twin.others:.0%} of the CPU)",
                  flush=True)
        print(summary_line(result), flush=True)
        results.append(result)
    return results


# --- Reporting --------------------------------------------------------------------------------

def si(value: float) -> str:
    """Three significant digits with a k/M/G suffix: 1.52M, 293k, 754."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def medians(result: Result) -> tuple[float, float]:
    return (statistics.median(r.rate for r in result.nnc),
            statistics.median(r.rate for r in result.torch))


def peaks(result: Result) -> tuple[float, float]:
    return max(r.peak_mib for r in result.nnc), max(r.peak_mib for r in result.torch)


def others(result: Result) -> float:
    return max(r.others for r in result.nnc + result.torch)


def summary_line(result: Result) -> str:
    nnc_rate, torch_rate = medians(result)
    nnc_peak, torch_peak = peaks(result)
    return (f"{result.bench.name}, {result.threads} thread(s): nnc {si(nnc_rate)} rows/s, "
            f"PyTorch {si(torch_rate)} rows/s, nnc/PyTorch {result.ratio():.2f}; "
            f"peak memory nnc {nnc_peak:.1f} MiB, PyTorch {torch_peak:.1f} MiB; "
            f"other processes took up to {others(result):.0%} of the CPU")


COLUMNS = ["model", "threads", "epochs (nnc / PyTorch)", "batch", "train rows", "reps",
           "nnc compile s", "nnc rows/s", "PyTorch rows/s", "nnc / PyTorch",
           "nnc peak MiB", "PyTorch peak MiB", "others' CPU"]


def table_row(result: Result) -> list[str]:
    nnc_epochs, torch_epochs = result.epochs
    epochs = f"{nnc_epochs:,}" if nnc_epochs == torch_epochs else \
        f"{nnc_epochs:,} / {torch_epochs:,}"
    nnc_rate, torch_rate = medians(result)
    nnc_peak, torch_peak = peaks(result)
    return [result.bench.name, str(result.threads), epochs, result.bench.batch,
            f"{result.nnc[0].rows:,}", str(len(result.nnc)), f"{result.compile_s:.2f}",
            si(nnc_rate), si(torch_rate), f"{result.ratio():.2f}",
            f"{nnc_peak:.1f}", f"{torch_peak:.1f}", f"{others(result):.0%}"]


def markdown(results: list[Result]) -> str:
    command = shlex.join(["bench/run.py"] + sys.argv[1:])
    lines = [f"`{command}`: {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
             f"PyTorch {importlib.metadata.version('torch')}. rows/s and nnc/PyTorch: medians "
             "over the reps; peak memory: the maximum; others' CPU: the largest share of the "
             "machine's CPU time that other processes took during one of the row's runs.", "",
             "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_row(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"


# --- Command line -----------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    names = [b.name for b in BENCHES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(names),
                        help="comma-separated subset of: " + ", ".join(names))
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each side")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the epochs and the data slices: a smoke test")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.models = args.models.split(",")
    unknown = set(args.models) - set(names)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    args.threads = [int(t) for t in args.threads.split(",")]
    return args


def main() -> None:
    args = parse_args()
    if not make_tagged.DEFAULT_PATH.exists():
        make_tagged.write_corpus(make_tagged.DEFAULT_PATH)
    results = []
    with tempfile.TemporaryDirectory(prefix="nnc-bench-") as workdir:
        for bench in BENCHES:
            if bench.name in args.models:
                try:
                    results += bench_model(bench, args, Path(workdir))
                except RunFailed as failure:
                    sys.exit(str(failure))
    table = markdown(results)
    print("\n" + table, end="")
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
