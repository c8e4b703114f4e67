#!/usr/bin/env bash
# On a machine with a CUDA GPU: the GPU tests, the throughput benchmark and the CIFAR-10 speedrun with 3 seeds,
# then one summary table. Aims at under 10 minutes on one current GPU.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (OUT_DIR default: gpu_check/; needs ../shared/datasets for CIFAR-10)
set -uo pipefail
cd "$(dirname "$0")/.."
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

start=$SECONDS
(cd scripts && "$py" bench_throughput.py --device cuda --steps 200 --warmup 20) > "$out/bench.txt" 2>&1
bench_rc=$?
bench_s=$((SECONDS - start))

start=$SECONDS
(cd scripts && "$py" speedrun.py --seeds 0,1,2 trainer.device=cuda) > "$out/speedrun.txt" 2>&1
speed_rc=$?
speed_s=$((SECONDS - start))

echo
echo "| check | result | seconds |"
echo "|---|---|---:|"
echo "| cuda-marked tests | $(tail -n 1 "$out/cuda_tests.txt") (exit $tests_rc) | $tests_s |"
echo "| bench_throughput.py --device cuda | $(grep -m1 '^(b)' "$out/bench.txt" | tr -s ' ' || echo "exit $bench_rc") | $bench_s |"
echo "| speedrun, 3 seeds | $(grep -m1 'mean ± std' "$out/speedrun.txt" || echo "exit $speed_rc") | $speed_s |"
echo
cat "$out/gpu.txt"
grep -m1 '^machine' "$out/bench.txt" || true
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $speed_rc -eq 0 ]
