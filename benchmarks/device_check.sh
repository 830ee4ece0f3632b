#!/usr/bin/env bash
# The GPU check: one script for a lent GPU machine (fits in about 8 minutes on one H100/H200).
#
#   bash benchmarks/device_check.sh prepare   # HERE, once: wheels the GPU image lacks, and the
#                                             # real Fashion-MNIST, into .device/ (git-ignored)
#   bash benchmarks/device_check.sh run       # THERE (the device tool, carry: [".device"]):
#                                             # results under $OUT (or .device/out)
#
# `run` does, in this order, each step bounded by `timeout`:
# 1. installs the carried wheels into the image's Python (it has torch, no sacred/seml);
# 2. the tests that exercise CUDA paths when a GPU is present (noise operators, in-place
#    noise, fused ReLU, pool, the walk with batch_evals; the stacked network's step on cuda
#    in tests/test_cohort_vectorised.py runs only where CUDA is available);
# 3. the cohort benchmark on the GPU (benchmarks/bench_cohort.py --device cuda, real
#    Fashion-MNIST, LeNet5-BN K in {1, 16, 64, 256}, RL_TFC K in {1, 32, 128, 512});
# 4. the paper's setting as the baseline: 10 concurrent `train.py` processes, one model each,
#    on the same GPU (model-epochs per second over the wall time of all ten).
# The issue's target: the cohort at least 10x the model-epochs per second of step 4.
set -uo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
dev="$here/.device"

if [ "${1:-}" = "prepare" ]; then
  mkdir -p "$dev/wheels" "$dev/fashion-mnist"
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  # what the GPU image's Python (3.12) lacks (its numpy, pandas, torch, rich, typer, ... stay);
  # --no-deps keeps out the large wheels the image has (the carry limit is 64 MiB)
  for pkg in sacred seml 'setuptools<81' gitpython gitdb smmap munch docopt-ng jsonpickle \
      pymongo dnspython debugpy deepdiff orderly-set gitignore-parser omegaconf \
      antlr4-python3-runtime importlib-resources; do
    # a wheel for Python 3.12, else (a package published as source only) one built here
    .venv/bin/python -m pip download -q --no-deps -d "$dev/wheels" --python-version 3.12 \
        --only-binary=:all: "$pkg" >/dev/null 2>&1 \
      || .venv/bin/python -m pip wheel -q --no-deps -w "$dev/wheels" "$pkg" >/dev/null 2>&1 \
      || echo "could not get $pkg" >&2
  done
  cp /usr/share/datasets/fashion-mnist/*.gz "$dev/fashion-mnist/"
  du -sh "$dev"
  exit 0
fi
[ "${1:-}" = "run" ] || { echo "usage: $0 prepare|run" >&2; exit 2; }

out="${OUT:-$dev/out}"
mkdir -p "$out"
py=python3
log() { printf '[device_check] %s\n' "$*" | tee -a "$out/device_check.log"; }

log "1. wheels"
$py -m pip install -q --no-index --no-deps "$dev"/wheels/*.whl \
  >>"$out/device_check.log" 2>&1 || log "pip install failed (see the log)"
mkdir -p /usr/share/datasets/fashion-mnist && cp "$dev"/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/device_check.log"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$out/device_check.log"

log "2. CUDA-path tests"
timeout 180 $py -m pytest -q -x -p no:cacheprovider \
  tests/test_noise.py tests/test_noise_inplace.py tests/test_speed_switch.py \
  tests/test_walk.py tests/test_cohort_vectorised.py >"$out/tests.txt" 2>&1
log "tests exit $? ($(tail -n 1 "$out/tests.txt"))"

log "3. cohort benchmark on the GPU"
(cd benchmarks && timeout 240 $py bench_cohort.py --device cuda --data fashion --rounds 1 \
  --no-processes --lenet-members 1 16 64 256 --mlp-members 1 32 128 512) \
  >"$out/bench_cohort_cuda.json" 2>"$out/bench_cohort_cuda.log"
log "bench exit $?"

log "4. baseline: 10 concurrent train.py processes (3 epochs each)"
art=$(mktemp -d)
for conf in LeNet5-BN RL_TFC; do
  case $conf in LeNet5-BN) cls=LeNet;; *) cls=MLP;; esac
  t0=$(date +%s.%N)
  for site in 0 1 2 3 4 5 6 7 8 9; do
    timeout 200 $py train.py -u with data.dataset=FashionMNIST data.download=false \
      general.num_epochs=3 device=cuda artifact_root="$art/$conf" model.model_class=$cls \
      "model.$cls.conf_name=$conf" \
      "noise_settings.layer_wise={'layer_index': $site, 'noise_type': 'GaussAdd', 'GaussStd': 0.1}" \
      >"$out/proc_${conf}_$site.log" 2>&1 &
  done
  wait
  t1=$(date +%s.%N)
  python3 -c "print('$conf: 10 processes x 3 epochs in %.1f s: %.3f model-epochs/s' % ($t1-$t0, 30/($t1-$t0)))" \
    | tee -a "$out/device_check.log"
done
log "done; compare bench_cohort_cuda.json's model_epochs_per_s (vectorised) with step 4"
