#!/usr/bin/env bash
# Create a separate venv with torch==2.13.0 (CPU) and the benchmark peer tools.
# Usage: bash benchmarks/install_peers.sh [VENV_DIR]   (default: .venv-peers)
# Never lets pip resolve torch: torch is installed first, the peers with --no-deps.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv-peers}"
py="${PYTHON:-python3.11}"

"$py" -m venv "$venv"
"$venv/bin/pip" install --disable-pip-version-check torch==2.13.0
"$venv/bin/pip" install --disable-pip-version-check --no-deps -r "$here/peers-requirements.txt"

"$venv/bin/python" - <<'PY'
import importlib, importlib.metadata as md, warnings
warnings.filterwarnings("ignore")
import torch
for mod in ["torch_pruning", "torchao", "nncf", "neural_compressor.torch.quantization",
            "onnx", "onnxruntime", "onnxruntime.quantization", "onnxscript", "accelerate"]:
    importlib.import_module(mod)
for dist in ["torch-pruning", "torchao", "nncf", "neural-compressor-pt", "onnxruntime", "onnx"]:
    print(f"{dist}=={md.version(dist)}")
assert torch.__version__ == "2.13.0+cpu", f"torch was replaced: {torch.__version__}"
print("torch", torch.__version__, "- peers OK")
PY
"$venv/bin/pip" check
