#!/usr/bin/env bash
# Install PyTorch for `make demo` / `make test`, saying what is installed.
#
#   bash scripts/install_torch.sh [PYTHON] [VERSION]     # defaults: python3, 2.13.0
#
# - A torch that is already importable is kept as it is (GPU pods ship their own CUDA build).
# - With a working NVIDIA GPU (nvidia-smi -L succeeds): torch==VERSION from the default index (the
#   CUDA build on Linux).
# - Without one: the CPU build from PyTorch's CPU wheel index (about 200 MB instead of several GB of
#   nvidia-* packages). When that index cannot be reached (an offline mirror, a proxy), pip gives up
#   within seconds (--timeout 10 --retries 0) and the plain `pip install torch==VERSION` is used.
set -euo pipefail

PYTHON="${1:-python3}"
VERSION="${2:-2.13.0}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

if installed="$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
  echo "torch $installed is installed: kept"
  exit 0
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing torch==$VERSION from the default index (CUDA build, several GB)"
  exec "$PYTHON" -m pip install -q "torch==$VERSION"
fi

echo "no NVIDIA GPU: installing torch==$VERSION, CPU build, from $CPU_INDEX"
if "$PYTHON" -m pip install -q --timeout 10 --retries 0 --index-url "$CPU_INDEX" "torch==$VERSION"; then
  exit 0
fi
echo "$CPU_INDEX could not be used: installing torch==$VERSION from the default index instead"
exec "$PYTHON" -m pip install -q "torch==$VERSION"
