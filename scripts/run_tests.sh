#!/usr/bin/env bash
# Run the whole test suite: the serial tests, then the MPI tests under mpiexec -n 2.
# Exits non-zero if either part fails or collects no tests.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root" || exit 1
source scripts/setup_env.sh || exit 1
# setup_env.sh turns on errexit; a failing serial part must not skip the MPI part.
set +e

echo "== serial tests =="
python -m pytest -q -p no:cacheprovider tests --ignore=tests/mpi "$@"
serial_status=$?

echo "== MPI tests (mpiexec -n 2) =="
timeout 1200 mpiexec -n 2 python -m pytest -q -p no:cacheprovider tests/mpi
mpi_status=$?

echo "serial tests exit status: $serial_status; MPI tests exit status: $mpi_status"
if [ "$serial_status" -ne 0 ] || [ "$mpi_status" -ne 0 ]; then
    exit 1
fi
