#!/usr/bin/env bash
# On a machine with a CUDA GPU, in the order of the device time worth spending: the GPU tests; the CIFAR-10
# speedrun recipes, seed by seed, beside each record holder's own code whose copy is named
# (scripts/compare/records.py, one comparison of every file and recipe; the records compiled as published,
# cnnbench compiled too): AIRBENCH94 (legacy/airbench94.py), AIRBENCH94_MUON (airbench94_muon.py), HIVERGE
# (hiverge's cifar10_speedrun.py), each file checked before any device time is spent; the throughput benchmark at
# batch 128 over 2,000 steps, eager and with the step replayed as CUDA graphs (trainer.compile_mode=reduce-overhead);
# JPEG decoding on the GPU (nvJPEG) against Pillow; with REFERENCE=1, experiment=cifar10_reference to the end (200
# epochs); then one summary table. SPEEDRUN names the recipes (default all three: cifar10_speedrun,
# cifar10_speedrun_muon, cifar10_speedrun_2s), SEEDS the seeds (default 0,1,2). Every compiled run compiles in a
# process of its own: with all three records, SEEDS=0 fits a 10-minute slot; each further seed adds about as much.
#
#   [AIRBENCH94=PATH] [AIRBENCH94_MUON=PATH] [HIVERGE=PATH] [SPEEDRUN="cifar10_speedrun_2s"] [SEEDS=0] \
#       bash scripts/checks/gpu_check.sh [OUT_DIR]
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

recipes="${SPEEDRUN:-cifar10_speedrun cifar10_speedrun_muon cifar10_speedrun_2s}"
seeds="${SEEDS:-0,1,2}"
records=()
for record in airbench94 airbench94_muon hiverge; do
  var="${record^^}"
  [ -n "${!var:-}" ] && records+=(--record "$record=$(realpath -m "${!var}")")
done
if [ ${#records[@]} -gt 0 ]; then  # a wrong path or file is said now, before any device time is spent
  "$py" -m scripts.compare.records "${records[@]}" --experiment "${recipes// /,}" --check | tee "$out/records.txt" \
    || exit 2
fi

start=$SECONDS
"$py" -m pytest -q -m cuda tests/ -p no:cacheprovider > "$out/cuda_tests.txt" 2>&1
tests_rc=$?
tests_s=$((SECONDS - start))

speed_rc=0
start=$SECONDS
if [ ${#records[@]} -gt 0 ]; then  # every record file beside every recipe, in one comparison
  "$py" -m scripts.compare.records "${records[@]}" --experiment "${recipes// /,}" --seeds "$seeds" --device cuda \
    --compile --work "$out/records" > "$out/speedrun.txt" 2>&1
  speed_rc=$?
else
  : > "$out/speedrun.txt"
  for recipe in $recipes; do
    "$py" -m scripts.compare.speedrun --seeds "$seeds" --experiment "$recipe" trainer.device=cuda \
      >> "$out/speedrun.txt" 2>&1
    speed_rc=$((speed_rc || $?))
  done
fi
speed_s=$((SECONDS - start))

start=$SECONDS
"$py" -m scripts.bench.throughput --device cuda --steps 2000 --warmup 50 --compile-mode reduce-overhead \
  > "$out/bench.txt" 2>&1
bench_rc=$?
bench_s=$((SECONDS - start))

start=$SECONDS
"$py" -m scripts.bench.decode --device cuda > "$out/decode.txt" 2>&1
decode_rc=$?
decode_s=$((SECONDS - start))

reference_rc=0
if [ "${REFERENCE:-0}" = 1 ]; then  # the tutorial recipe to the end: 200 epochs (about 93% expected)
  start=$SECONDS
  data=$("$py" -c "from pathlib import Path; from scripts.runs import CIFAR_TAR, extract_cifar10; \
print(extract_cifar10(CIFAR_TAR, Path('$out').resolve()))")
  "$py" -m cnnbench experiment=cifar10_reference data=imagefolder data.root="$data" trainer.device=cuda \
    logger.progress=false hydra.run.dir="$out/cifar10_reference" > "$out/reference.txt" 2>&1
  reference_rc=$?
  reference_s=$((SECONDS - start))
fi

echo
echo "| check | result | seconds |"
echo "|---|---|---:|"
echo "| cuda-marked tests | $(tail -n 1 "$out/cuda_tests.txt") (exit $tests_rc) | $tests_s |"
if [ ${#records[@]} -gt 0 ]; then
  echo "| ${recipes// /, } beside the records, seeds $seeds | table below (exit $speed_rc) | $speed_s |"
else
  echo "| ${recipes// /, }, seeds $seeds | $(grep -E '^\| mean' "$out/speedrun.txt" | paste -sd ';' || echo "failed") | $speed_s |"
fi
echo "| scripts.bench.throughput, eager | $(grep -m1 '^(b) cnnbench' "$out/bench.txt" | tr -s ' ' || echo "exit $bench_rc") | $bench_s |"
echo "| scripts.bench.throughput, CUDA graphs | $(grep -m1 '^(b) with torch.compile' "$out/bench.txt" | tr -s ' ') | |"
echo "| scripts.bench.decode --device cuda | $(grep 'batched on' "$out/decode.txt" | tr -s ' ' | paste -sd ';' || echo "exit $decode_rc") | $decode_s |"
if [ "${REFERENCE:-0}" = 1 ]; then
  echo "| experiment=cifar10_reference, 200 epochs | $(grep -m1 -E 'test/acc|test acc' "$out/reference.txt" | tr -s ' ' || echo "exit $reference_rc") | $reference_s |"
fi
echo
if [ ${#records[@]} -gt 0 ]; then  # the comparison's last table (it prints one a seed), else how it ended
  if grep -q '^| side' "$out/speedrun.txt"; then tac "$out/speedrun.txt" | sed '/^| side/q' | tac
  else tail -n 5 "$out/speedrun.txt"; fi
fi
cat "$out/gpu.txt"
grep -m1 '^machine' "$out/bench.txt" || true
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $speed_rc -eq 0 ] && [ $decode_rc -eq 0 ] && [ $reference_rc -eq 0 ]
