#!/usr/bin/env bash
# Set up everything, then run the LiteBIRD cosmic-ray workflow on the shipped default
# model under mpiexec -n 2. Outputs go to out/litebird_crab (override with OUT_DIR).
# Extra arguments are passed to the workflow, e.g. --inject_crab.realization 3.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/setup_env.sh

out_dir="${OUT_DIR:-out/litebird_crab}"
mpiexec -n "${NPROCS:-2}" python workflows/toast_crab_sim_satellite.py \
    --config workflows/litebird_small.toml --out_dir "$out_dir" "$@"

echo
echo "Done. Maps (FITS), plots (PNG), config_resolved.toml and summary.json are in $out_dir"
