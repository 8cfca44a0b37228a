#!/usr/bin/env bash
# Score every trained model family side by side with crab-validate on one held-out MC
# file that none of them was trained on (data/mc_heldout.h5 from
# scripts/make_training_sets.sh, phi = 0.35 GV), so all bundles face the same reference
# and the same MC-vs-MC noise floor. Conditioned bundles run at the file's phi.
#
# Usage: bash benchmarks/compare_families.sh OUT_DIR BUNDLE.keras [BUNDLE.keras ...]
# Extra crab-validate options go in CRAB_VALIDATE_OPTS, e.g. CRAB_VALIDATE_OPTS="--maps".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
if [ "$#" -lt 2 ]; then
    echo "usage: bash benchmarks/compare_families.sh OUT_DIR BUNDLE.keras [BUNDLE.keras ...]" >&2
    exit 2
fi
out="$1"; shift
mc="${CRAB_HELDOUT_MC:-data/mc_heldout.h5}"
if [ ! -f "$mc" ]; then
    echo "compare_families: $mc not found; run bash scripts/make_training_sets.sh first" >&2
    exit 2
fi
args=()
for bundle in "$@"; do args+=(--bundle "$bundle"); done
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# 1000-chunk sets: the reference and 3 calibration sets use all 20 runs of the file.
python -m toast_crab.validation.cli "${args[@]}" --mc "$mc" --out "$out" \
    --n-chunks 1000 --n-calibration 3 ${CRAB_VALIDATE_OPTS:-}
