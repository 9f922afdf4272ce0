# lit configuration of the nnc test suite.
import os

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
