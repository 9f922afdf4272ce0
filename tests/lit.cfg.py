# lit configuration of the nnc test suite.
import os
import shutil
import sys

import lit.formats

config.name = "nnc"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".nn", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = config.nnc_obj_root

config.environment["PATH"] = os.pathsep.join(
    [config.nnc_bin_dir, config.llvm_tools_dir, config.environment.get("PATH", "")])
config.substitutions.append(("%specs", os.path.join(config.nnc_source_dir, "specs")))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
config.substitutions.append(("%bench", os.path.join(config.nnc_source_dir, "bench")))
config.substitutions.append(("%scripts", os.path.join(config.nnc_source_dir, "scripts")))
config.substitutions.append(("%build", os.path.dirname(config.nnc_bin_dir)))
config.substitutions.append(
    ("%fake-cuda", os.path.join(os.path.dirname(config.nnc_bin_dir), "fake-cuda")))
config.substitutions.append(("%python", sys.executable))

# The full MNIST data, fetched by scripts/setup.sh (scripts/fetch-data.sh);
# tests that need them say `REQUIRES: mnist`.
if os.path.exists(os.path.join(config.nnc_source_dir, "specs", "data", "mnist",
                               "train-images-idx3-ubyte.gz")):
    config.available_features.add("mnist")
# The corpora of Debian's python3-pattern, fetched the same way; tests that
# need them say `REQUIRES: pattern`.
if os.path.exists(os.path.join(config.nnc_source_dir, "specs", "data", "pattern",
                               "tagged-en-oanc.txt")):
    config.available_features.add("pattern")

# The stub CUDA driver of the CUDA toolkit, whose every call fails with
# CUDA_ERROR_STUB_LIBRARY: the tests of the driver's error handling put it
# first on LD_LIBRARY_PATH as libcuda.so.1 and say `REQUIRES: cuda-stub`.
cuda_stub = "/usr/local/cuda/lib64/stubs/libcuda.so"
if os.path.exists(cuda_stub):
    config.available_features.add("cuda-stub")
    config.substitutions.append(("%cuda-stub", cuda_stub))

# The libFuzzer targets of tests/fuzz live in their own build (clang-19,
# instrumented), made by scripts/fuzz.sh --build, which scripts/test.sh runs
# when clang-19 is installed; tests/fuzz/*.test say `REQUIRES: fuzz`. Each
# runs its fuzzer for a few seconds; a finding is saved in the test's %t.
fuzz_targets = ["spec", "csv", "idx", "files", "tagged", "polarity"]
if all(os.path.exists(os.path.join(config.nnc_fuzz_bin_dir, "nnc-fuzz-" + t))
       for t in fuzz_targets):
    config.available_features.add("fuzz")
    config.environment["PATH"] = os.pathsep.join(
        [config.nnc_fuzz_bin_dir, config.environment["PATH"]])
    config.substitutions.append(
        ("%{fuzz-args}",
         "-max_total_time=5 -timeout=10 -rss_limit_mb=2048 "
         "-print_final_stats=1 -artifact_prefix=%t/"))
else:
    lit_config.note("the fuzz targets are not built in %s (scripts/fuzz.sh "
                    "--build makes them): tests/fuzz is skipped"
                    % config.nnc_fuzz_bin_dir)

# CUDA's PTX assembler checks the PTX of `nnc --target=cuda` where it is
# installed (/usr/local/cuda/bin on machines with the CUDA toolkit); tests
# that need it say `REQUIRES: ptxas`.
ptxas = shutil.which("ptxas") or "/usr/local/cuda/bin/ptxas"
if os.access(ptxas, os.X_OK):
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", ptxas))
else:
    lit_config.note("ptxas not found (neither on PATH nor in /usr/local/cuda/bin): "
                    "the PTX of the specs is not assembled (tests/codegen/ptxas.test)")
