#!/usr/bin/env bash
# On a machine with a CUDA GPU, in the order of the device time worth spending: the GPU tests; the CIFAR-10
# speedrun with 3 seeds, beside airbench94's own code when AIRBENCH94 names a copy of its legacy/airbench94.py
# (scripts/compare/airbench.py); the throughput benchmark at batch 128 over 2,000 steps, eager and with the step
# replayed as CUDA graphs (trainer.compile_mode=reduce-overhead); JPEG decoding on the GPU (nvJPEG) against
# Pillow; then one summary table. About 10 minutes on one current GPU. SPEEDRUN names the recipes (default both:
# cifar10_speedrun, and cifar10_speedrun_muon: 8 epochs with Muon).
#
#   [AIRBENCH94=PATH] [SPEEDRUN=cifar10_speedrun_muon] bash scripts/checks/gpu_check.sh [OUT_DIR]
#       (OUT_DIR default: gpu_check/; needs ../shared/datasets for CIFAR-10)
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python}"

"$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible: nothing to check')" \
  || exit 2
"$py" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA',
torch.version.cuda, '| GPUs:', torch.cuda.device_count())" | tee "$out/gpu.txt"

start=$SECONDS
"$py" -m pytest -q -m cuda tests/ -p no:cacheprovider > "$out/cuda_tests.txt" 2>&1
tests_rc=$?
tests_s=$((SECONDS - start))

speed_rc=0
declare -A speed_s
for recipe in ${SPEEDRUN:-cifar10_speedrun cifar10_speedrun_muon}; do
  start=$SECONDS
  if [ -n "${AIRBENCH94:-}" ]; then
    "$py" -m scripts.compare.airbench --airbench94 "$(realpath "$AIRBENCH94")" --seeds 0,1,2 --device cuda \
      --experiment "$recipe" > "$out/$recipe.txt" 2>&1
  else
    "$py" -m scripts.compare.speedrun --seeds 0,1,2 --experiment "$recipe" trainer.device=cuda > "$out/$recipe.txt" 2>&1
  fi
  speed_rc=$((speed_rc || $?))
  speed_s[$recipe]=$((SECONDS - start))
done

start=$SECONDS
"$py" -m scripts.bench.throughput --device cuda --steps 2000 --warmup 50 --compile-mode reduce-overhead \
  > "$out/bench.txt" 2>&1
bench_rc=$?
bench_s=$((SECONDS - start))

start=$SECONDS
"$py" -m scripts.bench.decode --device cuda > "$out/decode.txt" 2>&1
decode_rc=$?
decode_s=$((SECONDS - start))

echo
echo "| check | result | seconds |"
echo "|---|---|---:|"
echo "| cuda-marked tests | $(tail -n 1 "$out/cuda_tests.txt") (exit $tests_rc) | $tests_s |"
for recipe in ${SPEEDRUN:-cifar10_speedrun cifar10_speedrun_muon}; do
  echo "| $recipe, 3 seeds | $(grep -m1 -E '^\| mean' "$out/$recipe.txt" || echo "failed") | ${speed_s[$recipe]} |"
done
echo "| scripts.bench.throughput, eager | $(grep -m1 '^(b) cnnbench' "$out/bench.txt" | tr -s ' ' || echo "exit $bench_rc") | $bench_s |"
echo "| scripts.bench.throughput, CUDA graphs | $(grep -m1 '^(b) with torch.compile' "$out/bench.txt" | tr -s ' ') | |"
echo "| scripts.bench.decode --device cuda | $(grep 'batched on' "$out/decode.txt" | tr -s ' ' | paste -sd ';' || echo "exit $decode_rc") | $decode_s |"
echo
cat "$out/gpu.txt"
grep -m1 '^machine' "$out/bench.txt" || true
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $speed_rc -eq 0 ] && [ $decode_rc -eq 0 ]
