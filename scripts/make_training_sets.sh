#!/usr/bin/env bash
# Make the reference-MC training sets that the configs in configs/ and the
# learning-curve benchmark read, under data/ (about 10 minutes on 2 cores).
#   mc_train_v1.h5     20,000 chunks, 100 runs, phi = 0.35 GV: crab_bce, wgan_gp, vae
#   mc_lc_30k.h5       30,000 chunks, 150 runs: learning-curve training pool
#   mc_heldout.h5      4,000 chunks, 20 runs: fixed held-out set for scoring
#   mc_phi_<phi>.h5    4,000 chunks, 20 runs each at phi = 0.30 ... 0.75 GV: flux conditioning
# Existing files are kept; delete one to remake it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
mkdir -p data
workers="${CRAB_MC_WORKERS:-2}"
make_set() {
    local out="$1"; shift
    if [ -f "$out" ]; then echo "keep $out"; return; fi
    crab-mc --config examples/mc_default.toml --workers "$workers" --out "$out.part" "$@"
    mv "$out.part" "$out"
}
make_set data/mc_train_v1.h5 --n-chunks 20000 --n-runs 100 --seed 1
make_set data/mc_heldout.h5 --n-chunks 4000 --n-runs 20 --seed 3
seed=10
for phi in 0.30 0.40 0.50 0.60 0.75; do
    make_set "data/mc_phi_${phi}.h5" --n-chunks 4000 --n-runs 20 --seed "$seed" --phi-gv "$phi"
    seed=$((seed + 1))
done
make_set data/mc_lc_30k.h5 --n-chunks 30000 --n-runs 150 --seed 2
