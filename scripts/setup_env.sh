#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv and activate it.
# Source this file: it sets PATH and a few environment variables for TOAST and
# TensorFlow. Re-installs only when setup.cfg or pyproject.toml changed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TOAST_CRAB_VENV:-$repo_root/.venv}"
python_bin="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "toast_crab: creating virtual environment $venv with $($python_bin --version)"
    "$python_bin" -m venv "$venv"
fi

stamp="$venv/.toast_crab_install_stamp"
wanted="$(cat "$repo_root/setup.cfg" "$repo_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "toast_crab: installing toast_crab and its dependencies (a few minutes the first time)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$repo_root[mpich,litebird,test]"
    echo "$wanted" > "$stamp"
fi

# shellcheck disable=SC1091
source "$venv/bin/activate"
# One OpenMP thread per MPI rank unless the caller chose otherwise; TOAST warns
# when this is unset. TensorFlow's C++ start-up messages are hidden.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
