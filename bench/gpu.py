#!/usr/bin/python3
"""Times nnc's trainers on a CUDA GPU against the same models in PyTorch on that GPU.

bench/README.md ("GPU") says what is measured. For each model of run.py's list, the trainer
built with `nnc --target=cuda` runs with `--device cuda --speed`, alternately with its PyTorch
twin (torch_models.py --device cuda). Then a sweep of batch sizes on a 64-wide MLP of 3 hidden
layers (bench/specs/mlp64.nn) runs three trainers of it, built with --gpu-fuse graph, rows and node,
alternately with its twin. Every run lasts about --seconds in its training steps: a trainer's
epochs come from its first run at that batch size, the twin measures its own beforehand.

The trainers can be built where nnc runs (--build-only) and timed where the GPU is (--prebuilt).
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import make_tagged
import run
from run import REPO, Bench, Run, RunFailed, si

SWEEP = Bench("mlp64", "bench/specs/mlp64.nn", 4, "1024")  # 4 epochs: a first guess
SWEEP_ROWS = 2 ** 18  # mlp64.nn's rows: one batch of the largest size
FUSIONS = ("graph", "rows", "node")  # nnc --gpu-fuse, a trainer and a column each in the sweep
BUILD_INFO = "build.json"  # in the trainers' folder: how they were built
EXIT_NO_GPU = 3  # as the trainers' status for --device cuda without a usable GPU

# What the issue asks of nnc's rate over PyTorch's on the GPU; the sweep's MLP: 5.
TARGETS = {"iris": 5, "regression": 5, "autoencoder": 5, "mnist_mlp": 2, "mnist_cnn": 1}
SWEEP_TARGET = 5

# Prints what PyTorch sees, as JSON, or fails to import.
TORCH_PROBE = """
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({"version": torch.__version__, "cuda": torch.version.cuda, "available": cuda,
                  "name": torch.cuda.get_device_name(0) if cuda else None}))
"""


def fail(message: str, status: int = 1) -> None:
    print(f"bench/gpu.py: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


class SideFailed(Exception):
    """A run of one side that failed: its model (or its column of the sweep) is reported as
    failed, and the others are still timed."""

    def __init__(self, side: str, argv: list[str], done: subprocess.CompletedProcess):
        said = [line for line in done.stderr.splitlines() if line.strip()]
        what = (f"exited with status {done.returncode}" if done.returncode != 0
                else "printed no speed line")
        super().__init__(f"{side} {what}: {shlex.join(argv)}\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        # For a table's cell: what failed, and the last line it wrote on stderr.
        self.summary = (f"{side} {what}" + (f" ({said[-1].strip()[:100]})" if said else "")
                        ).replace("|", "/")


def took(result: Run) -> float:
    """Seconds in the training steps, with more digits than the speed line's."""
    return result.epochs * result.rows / result.rate if result.rate > 0 else result.seconds


# --- Building the trainers --------------------------------------------------------------------

@dataclass(frozen=True)
class Build:
    name: str  # the trainer's file name
    spec: str  # relative to the repository root
    fuse: str | None = None  # nnc --gpu-fuse, or nnc's default (auto)


def builds(args: argparse.Namespace) -> list[Build]:
    wanted = [Build(b.name, b.spec) for b in args.models]
    if args.sweep:
        wanted += [Build(f"{SWEEP.name}-{fuse}", SWEEP.spec, fuse) for fuse in FUSIONS]
    return wanted


def compile_trainers(args: argparse.Namespace) -> None:
    """Builds every trainer the run needs into args.trainers, and says how in BUILD_INFO."""
    flags = ["--cpu", args.cpu] + shlex.split(args.nnc_flags)
    if args.device == "cuda":
        flags.append("--target=cuda")
    args.trainers.mkdir(parents=True, exist_ok=True)
    for build in builds(args):
        argv = [str(args.nnc), str(REPO / build.spec), "-o", str(args.trainers / build.name)]
        argv += flags + (["--gpu-fuse", build.fuse] if build.fuse else [])
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            hint = ("\n(nnc_gpu_launch undefined: this runtime has no GPU support yet)"
                    if "nnc_gpu_launch" in done.stderr else "")
            fail(f"{shlex.join(argv)} failed:\n{done.stdout}{done.stderr}{hint}")
        print(f"built {build.name} ({time.perf_counter() - start:.1f} s): {shlex.join(argv)}",
              flush=True)
    info = {"device": args.device, "flags": flags, "commit": git_commit(),
            "trainers": sorted(b.name for b in builds(args))}
    (args.trainers / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n")


def check_prebuilt(args: argparse.Namespace) -> None:
    """The trainers of --prebuilt: all there, and built for this device."""
    info_path = args.trainers / BUILD_INFO
    if not info_path.exists():
        fail(f"--prebuilt: no {info_path}: build the trainers first with "
             f"`bench/gpu.py --build-only --trainers {args.trainers}` (with these --models and "
             f"--sweep, or the defaults: all of them)")
    info = json.loads(info_path.read_text())
    if info["device"] != args.device:
        fail(f"--prebuilt: the trainers in {args.trainers} were built for --device "
             f"{info['device']}, not {args.device}")
    missing = [b.name for b in builds(args) if not (args.trainers / b.name).exists()]
    if missing:
        fail(f"--prebuilt: {args.trainers} lacks the trainers {', '.join(missing)}: build "
             f"them with --build-only and these --models and --sweep")
    args.build_commit = info.get("commit")
    print(f"trainers from {args.trainers}, built at commit {info.get('commit') or '?'} with "
          f"nnc {shlex.join(info['flags'])}", flush=True)


def git_commit() -> str | None:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


# --- Checks before timing anything ------------------------------------------------------------

def data_path(bench: Bench, args: argparse.Namespace) -> Path | None:
    """What the trainer reads with --data: the spec's own data (or its slice with --quick),
    where this checkout has it, rather than where the trainer was built."""
    data = (args.quick and bench.quick_data) or bench.data
    return REPO / data if data else None


def check_data(args: argparse.Namespace) -> None:
    if any(b.data == "bench/data/tagged-bench.txt" for b in args.models) \
            and not make_tagged.DEFAULT_PATH.exists():
        make_tagged.write_corpus(make_tagged.DEFAULT_PATH)
    missing = [f"{b.name}: {data_path(b, args)}" for b in args.models
               if data_path(b, args) and not data_path(b, args).exists()]
    if missing:
        fail("data not found (scripts/setup.sh fetches MNIST and the polarity corpus; on "
             "another machine, bring specs/data/mnist and specs/data/pattern along), or leave "
             "those models out with --models:\n  " + "\n  ".join(missing))


def check_torch(args: argparse.Namespace) -> dict:
    """What PyTorch sees; fails now when it cannot run the twins on the device."""
    done = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{sys.executable} cannot import PyTorch: run this script with the Python that "
             f"has it\n{done.stderr[-2000:]}")
    torch = json.loads(done.stdout)
    if args.device == "cuda" and not torch["available"]:
        fail(f"PyTorch {torch['version']} ({sys.executable}) sees no CUDA device: "
             f"torch.cuda.is_available() is False (PyTorch built with CUDA {torch['cuda']})",
             EXIT_NO_GPU)
    return torch


def check_nnc_exit(argv: list[str], done: subprocess.CompletedProcess) -> None:
    """A trainer's failure, said plainly. No GPU, or a runtime without one, stops the whole
    run: every other trainer would fail likewise. A failure on the GPU (status 3 too) is
    this trainer's."""
    if done.returncode == EXIT_NO_GPU and "no usable CUDA device" in done.stderr:
        fail(f"the nnc trainer could not use the GPU (with --device auto it would have "
             f"trained on the CPU): {shlex.join(argv)}\n{done.stderr.strip()}", EXIT_NO_GPU)
    if "unknown option '--device'" in done.stderr:
        fail(f"{argv[0]} has no --device option: its runtime predates the GPU runtime; "
             f"rebuild nnc and the trainers\n{done.stderr.strip()}")
    raise SideFailed(Path(argv[0]).name, argv, done)


def check_where(side: str, result: Run, args: argparse.Namespace) -> None:
    """On the GPU the speed line names the device, not a thread count."""
    if args.device == "cuda" and result.where.endswith(" threads"):
        fail(f"{side} trained on the CPU ({result.where}), not on the GPU", EXIT_NO_GPU)


# --- Running one side -------------------------------------------------------------------------

def run_nnc(trainer: Path, bench: Bench, batch: str, epochs: int, args: argparse.Namespace,
            workdir: Path) -> Run:
    argv = [str(trainer), "--epochs", str(epochs), "--batch", batch, "--threads",
            str(args.threads), "--speed", "--quiet", "--save", str(workdir / "bench.weights")]
    if args.device == "cuda":
        argv += ["--device", "cuda"]
    argv += shlex.split(args.trainer_flags)
    if data_path(bench, args):
        argv += ["--data", str(data_path(bench, args))]
    try:
        result = run.run_measured(argv, args.threads)
    except RunFailed as failure:
        check_nnc_exit(failure.argv, failure.done)
    check_where(trainer.name, result, args)
    return result


def run_torch(bench: Bench, batch: str, rows: int, args: argparse.Namespace) -> Run:
    argv = [sys.executable, str(run.TWINS), bench.name, "--rows", str(rows), "--seconds",
            str(args.seconds), "--batch", batch, "--threads", str(args.threads),
            "--device", args.device]
    try:
        result = run.run_measured(argv, args.threads)
    except RunFailed as failure:
        raise SideFailed(f"PyTorch's {bench.name}", failure.argv, failure.done) from None
    check_where(f"PyTorch's {bench.name}", result, args)
    return result


def rescale(epochs: int, seconds: float, target: float) -> int:
    """The epochs that would take about `target` seconds, at most a thousand times as many."""
    return max(1, min(epochs * 1000, round(epochs * target / max(seconds, 1e-6))))


@dataclass
class Trainer:
    """One nnc trainer at one batch size. Its first run, of `epochs` (a guess), is repeated
    with more epochs until it lasts a third of --seconds; that run counts, and the runs after
    it have the epochs that take about --seconds."""
    path: Path
    bench: Bench
    batch: str
    epochs: int
    calibrated: bool = False

    def run(self, args: argparse.Namespace, workdir: Path) -> Run:
        result = run_nnc(self.path, self.bench, self.batch, self.epochs, args, workdir)
        if self.calibrated:
            return result
        for _ in range(5):
            if took(result) >= args.seconds / 3:
                break
            epochs = rescale(self.epochs, took(result), args.seconds)
            print(f"    {self.path.name} batch {self.batch}: {self.epochs} epochs took "
                  f"{took(result):.3f} s; again with {epochs}", flush=True)
            self.epochs = epochs
            result = run_nnc(self.path, self.bench, self.batch, self.epochs, args, workdir)
        if took(result) > 3 * args.seconds:
            self.epochs = rescale(self.epochs, took(result), args.seconds)
        self.calibrated = True
        return result


def too_slow(runs: list[Run], args: argparse.Namespace) -> bool:
    """Whether a first repetition took so long that the others would not fit in the time."""
    slow = [r for r in runs if took(r) > 10 * args.seconds]
    if slow:
        print(f"    a run took {max(took(r) for r in slow):.1f} s (more than 10 x --seconds): "
              f"one repetition only", flush=True)
    return bool(slow)


def ratio(nnc: list[Run], torch: list[Run]) -> float:
    """The median, over the repetitions, of nnc's rate over PyTorch's in each: the two runs
    of a repetition are made one right after the other."""
    return statistics.median(n.rate / t.rate for n, t in zip(nnc, torch))


def epochs_text(runs: list[Run]) -> str:
    low, high = min(r.epochs for r in runs), max(r.epochs for r in runs)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


# --- The models of run.py ---------------------------------------------------------------------

@dataclass
class ModelResult:
    bench: Bench
    nnc: list[Run] = field(default_factory=list)
    torch: list[Run] = field(default_factory=list)
    failure: str | None = None  # SideFailed.summary of the run that failed

    def row(self) -> list[str]:
        target = TARGETS.get(self.bench.name)
        if self.failure:
            return [self.bench.name, self.bench.batch, "", "", "", "", "",
                    f"failed: {self.failure}", f"≥ {target}" if target else ""]
        return [self.bench.name, self.bench.batch, f"{self.nnc[0].rows:,}", str(len(self.nnc)),
                f"{epochs_text(self.nnc)} / {epochs_text(self.torch)}",
                si(statistics.median(r.rate for r in self.nnc)),
                si(statistics.median(r.rate for r in self.torch)),
                f"{ratio(self.nnc, self.torch):.2f}", f"≥ {target}" if target else ""]


MODEL_COLUMNS = ["model", "batch", "train rows", "reps", "epochs (nnc / PyTorch)",
                 "nnc rows/s", "PyTorch rows/s", "nnc / PyTorch", "target"]


def profile_model(bench: Bench, epochs: int, args: argparse.Namespace, workdir: Path) -> None:
    """--profile: one more run of the trainer, with --gpu-profile, whose report (each kernel's
    launches and time on the device) goes to --profile's folder as MODEL.txt; its first rows
    are printed."""
    argv = [str(args.trainers / bench.name), "--epochs", str(epochs), "--batch", bench.batch,
            "--threads", str(args.threads), "--quiet", "--gpu-profile",
            "--save", str(workdir / "profile.weights")]
    if args.device == "cuda":
        argv += ["--device", "cuda"]
    if data_path(bench, args):
        argv += ["--data", str(data_path(bench, args))]
    done = subprocess.run(argv, capture_output=True, text=True)
    report = [line for line in done.stderr.splitlines() if line.startswith("gpu profile:")]
    args.profile.mkdir(parents=True, exist_ok=True)
    (args.profile / f"{bench.name}.txt").write_text("\n".join([shlex.join(argv)] + report) + "\n")
    if done.returncode != 0 or not report:
        print(f"  {bench.name} profile: the run failed (exit {done.returncode}): "
              f"{done.stderr.strip()[-500:]}", flush=True)
        return
    for line in report[:7]:
        print(f"  {bench.name} {line}", flush=True)


def bench_model(bench: Bench, args: argparse.Namespace, workdir: Path) -> ModelResult:
    trainer = Trainer(args.trainers / bench.name, bench, bench.batch,
                      bench.torch_epochs or bench.epochs)
    result = ModelResult(bench)
    for rep in range(args.reps):
        try:
            nnc = trainer.run(args, workdir)
            twin = run_torch(bench, bench.batch, nnc.rows, args)
        except SideFailed as failure:
            print(f"{bench.name}: FAILED: {failure}", flush=True)
            return ModelResult(bench, failure=failure.summary)
        result.nnc.append(nnc)
        result.torch.append(twin)
        print(f"  {bench.name} rep {rep + 1}/{args.reps}: nnc {si(nnc.rate)} rows/s "
              f"({nnc.epochs} epochs, {took(nnc):.2f} s), PyTorch {si(twin.rate)} rows/s "
              f"({twin.epochs} epochs, {took(twin):.2f} s)", flush=True)
        if rep == 0 and args.reps > 1 and too_slow([nnc, twin], args):
            break
    print(f"{bench.name}: nnc/PyTorch {ratio(result.nnc, result.torch):.2f}", flush=True)
    if args.profile:
        profile_model(bench, trainer.epochs, args, workdir)
    return result


# --- The sweep of batch sizes -----------------------------------------------------------------

@dataclass
class SweepResult:
    """One batch size. A fusion whose trainer failed is left out of the repetitions after
    the failure, and its columns say so; PyTorch's failure fails the whole batch size."""
    batch: int
    nnc: dict[str, list[Run]] = field(default_factory=lambda: {f: [] for f in FUSIONS})
    torch: list[Run] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # fusion or "PyTorch": summary

    def row(self) -> list[str]:
        name = f"2^{self.batch.bit_length() - 1} = {self.batch:,}"
        if "PyTorch" in self.failures or not self.torch:
            reason = self.failures.get("PyTorch", "every fusion failed")
            ratios = [f"failed: {reason}"] + [""] * (len(FUSIONS) - 1)
            return [name] + [""] * (len(SWEEP_COLUMNS) - 1 - len(FUSIONS)) + ratios
        # zip() in ratio() pairs each fusion's runs with PyTorch's of the same repetitions.
        epochs = " / ".join("–" if f in self.failures else epochs_text(self.nnc[f])
                            for f in FUSIONS)
        return ([name, str(len(self.torch)), f"{epochs} / {epochs_text(self.torch)}"]
                + ["failed" if f in self.failures
                   else si(statistics.median(r.rate for r in self.nnc[f])) for f in FUSIONS]
                + [si(statistics.median(r.rate for r in self.torch))]
                + [f"failed: {self.failures[f]}" if f in self.failures
                   else f"{ratio(self.nnc[f], self.torch):.2f}" for f in FUSIONS])


SWEEP_COLUMNS = (["batch", "reps", "epochs (" + " / ".join(FUSIONS) + " / PyTorch)"]
                 + [f"nnc {f} rows/s" for f in FUSIONS] + ["PyTorch rows/s"]
                 + [f"{f} / PyTorch" for f in FUSIONS])


def bench_sweep(args: argparse.Namespace, workdir: Path, results: list[SweepResult],
                report: Callable[[], None]) -> None:
    """Runs the sweep, adding a result to `results` and calling `report` after each batch
    size."""
    guesses = {fuse: SWEEP.epochs for fuse in FUSIONS}
    for exponent in args.sweep:
        batch = 2 ** exponent
        trainers = {fuse: Trainer(args.trainers / f"{SWEEP.name}-{fuse}", SWEEP, str(batch),
                                  guesses[fuse]) for fuse in FUSIONS}
        result = SweepResult(batch)
        for rep in range(args.reps):
            timed = [fuse for fuse in FUSIONS if fuse not in result.failures]
            for fuse in timed:
                try:
                    result.nnc[fuse].append(trainers[fuse].run(args, workdir))
                except SideFailed as failure:
                    print(f"  batch {batch}: {fuse} FAILED: {failure}", flush=True)
                    result.failures[fuse] = failure.summary
            timed = [fuse for fuse in FUSIONS if fuse not in result.failures]
            if not timed:
                break
            try:
                twin = run_torch(SWEEP, str(batch), SWEEP_ROWS, args)
            except SideFailed as failure:
                print(f"  batch {batch}: PyTorch FAILED: {failure}", flush=True)
                result.failures["PyTorch"] = failure.summary
                break
            result.torch.append(twin)
            print(f"  batch {batch} rep {rep + 1}/{args.reps}: "
                  + ", ".join(f"nnc {fuse} {si(result.nnc[fuse][-1].rate)} rows/s "
                              f"({result.nnc[fuse][-1].epochs} epochs, "
                              f"{took(result.nnc[fuse][-1]):.2f} s)" for fuse in timed)
                  + f", PyTorch {si(twin.rate)} rows/s ({twin.epochs} epochs, "
                    f"{took(twin):.2f} s)", flush=True)
            runs = [twin] + [result.nnc[fuse][-1] for fuse in timed]
            if rep == 0 and args.reps > 1 and too_slow(runs, args):
                break
        # The same epochs at the next batch size are the same rows, at least as fast.
        guesses = {fuse: trainers[fuse].epochs for fuse in FUSIONS}
        print(f"batch {batch}: " + " | ".join(result.row()), flush=True)
        results.append(result)
        report()


# --- Reporting --------------------------------------------------------------------------------

def table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def markdown(args: argparse.Namespace, models: list[ModelResult],
             sweep: list[SweepResult]) -> str:
    command = shlex.join(["bench/gpu.py"] + sys.argv[1:])
    device = args.torch["name"] or "the CPU"
    commit = args.build_commit or "?"
    lines = [f"`{command}`: {time.strftime('%Y-%m-%d %H:%M')}, {device}, "
             f"{os.cpu_count()} CPUs, PyTorch {args.torch['version']} (CUDA "
             f"{args.torch['cuda']}), trainers built at nnc commit {commit}. rows/s and "
             f"nnc / PyTorch: medians over the reps; every run about {args.seconds:g} s in its "
             "training steps.", ""]
    if models:
        lines += table(MODEL_COLUMNS, [m.row() for m in models]) + [""]
    if sweep:
        lines += [f"Batch sweep: `{SWEEP.spec}` (dense 32→64 relu → 64 relu → 64 relu "
                  f"→ 10; cross-entropy; Adam; {SWEEP_ROWS:,} rows), nnc built with "
                  + " and ".join(f"`--gpu-fuse {f}`" for f in FUSIONS)
                  + f"; target: ≥ {SWEEP_TARGET} times PyTorch.", ""]
        lines += table(SWEEP_COLUMNS, [s.row() for s in sweep]) + [""]
    return "\n".join(lines)


# --- Command line -----------------------------------------------------------------------------

def parse_sweep(text: str) -> list[int]:
    """'10-18', '10,12,18' or 'none': the base-2 logarithms of the batch sizes."""
    if text == "none":
        return []
    exponents = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        exponents += range(int(low), int(high or low) + 1)
    if any(not 0 <= e <= 18 for e in exponents):
        raise argparse.ArgumentTypeError(f"batch sizes 2^0 to 2^18 ({SWEEP_ROWS:,} rows)")
    return exponents


def parse_args() -> argparse.Namespace:
    names = [b.name for b in run.BENCHES]
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 done, 1 a failure, 2 usage, 3 no usable GPU (PyTorch's or the "
               "trainer's). bench/README.md, section GPU, says more.")
    parser.add_argument("--models", default=",".join(names),
                        help="comma-separated subset of: " + ", ".join(names) + "; or none")
    parser.add_argument("--sweep", type=parse_sweep, default="10-18",
                        help="the batch sizes of the sweep, as base-2 logarithms: a range "
                             "(10-18, the default), a list (10,14,18) or none")
    parser.add_argument("--reps", type=int, help="repetitions of each side (default 3; "
                                                  "--quick: 1)")
    parser.add_argument("--seconds", type=float,
                        help="about how long each run trains (default 1; --quick: 0.25)")
    parser.add_argument("--threads", type=int, default=1,
                        help="the trainers' --threads and PyTorch's set_num_threads (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="the MNIST and polarity slices, 1 rep, 0.25 s runs: a smoke test")
    parser.add_argument("--markdown", type=Path,
                        help="also write the tables to this file (after every row)")
    parser.add_argument("--trainers", type=Path,
                        help="the folder of the trainers (default: a temporary one)")
    parser.add_argument("--build-only", action="store_true",
                        help="build the trainers into --trainers and stop: on a machine that "
                             "runs nnc, for --prebuilt on the GPU machine")
    parser.add_argument("--prebuilt", action="store_true",
                        help="build nothing: time the trainers that --build-only left in "
                             "--trainers (no nnc needed)")
    parser.add_argument("--nnc", type=Path, default=run.NNC,
                        help="the compiler (default: build/bin/nnc)")
    parser.add_argument("--cpu", default="x86-64-v3",
                        help="nnc --cpu, for the trainers' CPU code (default x86-64-v3, which "
                             "runs on any recent x86-64 machine)")
    parser.add_argument("--nnc-flags", default="",
                        help="more nnc options for every trainer, e.g. '--gpu-arch sm_90'")
    parser.add_argument("--trainer-flags", default="",
                        help="more options for every run of a trainer, e.g. '--cuda-graphs'")
    parser.add_argument("--profile", type=Path,
                        help="after each model's runs, one more of its trainer with "
                             "--gpu-profile, whose report goes to this folder as MODEL.txt")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda (the default); cpu: a check of this script without a GPU, "
                             "with CPU trainers (nnc --target=cpu) and PyTorch on the CPU")
    args = parser.parse_args()
    args.models = [] if args.models == "none" else args.models.split(",")
    unknown = set(args.models) - set(names)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    args.models = [b for b in run.BENCHES if b.name in args.models]
    if not args.models and not args.sweep:
        parser.error("nothing to do: --models none and --sweep none")
    if args.build_only and args.prebuilt:
        parser.error("--build-only and --prebuilt exclude each other")
    if (args.build_only or args.prebuilt) and not args.trainers:
        parser.error("--build-only and --prebuilt need --trainers DIR")
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 0.25 if args.quick else 1.0
    if args.reps < 1 or args.seconds <= 0 or args.threads < 1:
        parser.error("--reps and --threads must be at least 1, --seconds above 0")
    if args.profile and "--cuda-graphs" in shlex.split(args.trainer_flags):
        parser.error("--profile times each launch, which --cuda-graphs replays as one")
    if args.trainers:
        args.trainers = args.trainers.resolve()
    args.build_commit = None
    return args


def main() -> None:
    args = parse_args()
    if args.build_only:
        compile_trainers(args)
        print(f"trainers in {args.trainers}; time them on the GPU machine with the same "
              f"--models and --sweep and --prebuilt --trainers {args.trainers}")
        return
    if args.prebuilt:
        check_prebuilt(args)
    check_data(args)
    args.torch = check_torch(args)
    print(f"PyTorch {args.torch['version']} ({sys.executable}): "
          f"{args.torch['name'] or 'CPU'}", flush=True)
    models: list[ModelResult] = []
    sweep: list[SweepResult] = []

    def report() -> None:
        if args.markdown:
            args.markdown.write_text(markdown(args, models, sweep))

    with tempfile.TemporaryDirectory(prefix="nnc-gpu-bench-") as workdir:
        if not args.prebuilt:
            args.trainers = args.trainers or Path(workdir) / "trainers"
            compile_trainers(args)
            args.build_commit = git_commit()
        for bench in args.models:
            models.append(bench_model(bench, args, Path(workdir)))
            report()
        if args.sweep:
            bench_sweep(args, Path(workdir), sweep, report)
    print("\n" + markdown(args, models, sweep), end="")
    failed = [m.bench.name for m in models if m.failure] + \
        [f"batch {s.batch} ({', '.join(s.failures)})" for s in sweep if s.failures]
    if failed:
        fail(f"some runs failed (their rows above say how): {'; '.join(failed)}")


if __name__ == "__main__":
    main()
