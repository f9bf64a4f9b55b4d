#!/usr/bin/env bash
# The GPU check (docs/devices.md): run once on a machine with an NVIDIA GPU, from the repository root.
#   bash bench/gpu_check.sh            # results in bench/out/gpu/ (RESULTS.txt sums them up)
# DEVICE=cpu QUICK=1 bash bench/gpu_check.sh   # the same steps on the CPU, small: a rehearsal
# Steps: the device and engine tests (bit-exactness included) on the GPU; BloodMNIST 4x2 with the
# default network timed on the GPU and on the CPU; the paper's protocol with --net vgg11 (VGG11_EPOCHS).
set -u
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/out/gpu}
BLOOD=${BLOOD:-../shared/data/medmnist/bloodmnist.npz}
VGG11_EPOCHS=${VGG11_EPOCHS:-5}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
SUMMARY="$OUT/RESULTS.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

say "gpu_check $(date -u +%FT%TZ) device=$DEVICE quick=$QUICK"
{ nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
say "$(tail -1 "$OUT/env.txt")"

# 1. device and engine tests; device=auto in these tests means the GPU where there is one
"$PY" -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_engine.py > "$OUT/tests.txt" 2>&1
say "tests: $(tail -1 "$OUT/tests.txt")"

# 2. BloodMNIST 4x2, default network, on the GPU and on the CPU
if [ "$QUICK" = 1 ]; then FAST="--epochs 1 --min-steps 0 --recognizer-samples 256 --trees 20"; else FAST=""; fi
for dev in "$DEVICE" cpu; do
  SECONDS=0
  "$PY" -m rerelrp.cli run --data "$BLOOD" --tasks 4 --device "$dev" $FAST --out "$OUT/blood-$dev" --quiet \
      > "$OUT/blood-$dev.txt" 2>&1
  rc=$?
  say "blood 4x2 on $dev: rc $rc, wall $SECONDS s, $(grep '^final' "$OUT/blood-$dev.txt")"
  [ "$DEVICE" = cpu ] && break
done

# 3. the paper's protocol: VGG11, BloodMNIST in 4 tasks of 2 classes (paper: TAg 59.76, TAw 93.71)
if [ "$QUICK" = 1 ]; then VGG="--epochs 1 --min-steps 0 --prune-samples 64 --relevance-samples 64 --recognizer-samples 128 --trees 10 --tasks 2"; else VGG="--epochs $VGG11_EPOCHS --tasks 4"; fi
SECONDS=0
"$PY" -m rerelrp.cli run --data "$BLOOD" --net vgg11 --device "$DEVICE" $VGG --out "$OUT/vgg11" --quiet > "$OUT/vgg11.txt" 2>&1
rc=$?
say "vgg11 paper protocol ($VGG): rc $rc, wall $SECONDS s, $(grep '^final' "$OUT/vgg11.txt")"
