#!/usr/bin/env python3
"""Add toast_crab cosmic rays to an existing TOAST 3 simulation script.

The lines marked "toast_crab" are all that a TOAST pipeline needs: build the
InjectCRAB operator and apply it like any other simulation operator. It adds
cosmic-ray timestreams, converted to K_CMB with each detector's band, to
``det_data``. Everything else is a plain TOAST satellite simulation of 4 LiteBIRD
L4-140 detectors from the public instrument model.

Run from the repository root, in the environment that ``bash scripts/quickstart.sh``
or ``bash scripts/run_tests.sh`` creates:

    . .venv/bin/activate
    export OMP_NUM_THREADS=1
    mpiexec -n 2 python examples/add_to_your_script.py out/add_to_your_script

It writes ``mapmaker_map.fits`` and ``mapmaker_hits.fits`` (NESTED, K_CMB) to the
given folder.
"""

import os
import sys

import astropy.units as u
import toast
import toast.ops

from toast_crab.instrument import litebird_scanning, litebird_schedule, litebird_telescope
from toast_crab.ops import InjectCRAB  # toast_crab


def main(out_dir):
    comm, _, rank = toast.get_world()
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
    telescope = litebird_telescope("L4-140", n_detectors=4, comm=comm)
    scan = litebird_scanning("LFT")
    schedule = litebird_schedule(num_observations=2, observation_time=30 * u.minute)
    data = toast.Data(comm=toast.Comm(world=comm, groupsize=0))

    # An existing simulation: pointing with a rotating HWP and instrument noise.
    toast.ops.SimSatellite(
        telescope=telescope, schedule=schedule, detset_key="pixel",
        prec_angle=scan.prec_angle, spin_angle=scan.spin_angle,
        hwp_angle="hwp_angle", hwp_rpm=scan.hwp_rpm,
    ).apply(data)
    toast.ops.DefaultNoiseModel().apply(data)
    sim_noise = toast.ops.SimNoise()

    # toast_crab: add cosmic rays to the same timestreams. Its default det_mask
    # equals BinMap's, so it can share a Pipeline with map-making operators.
    inject_crab = InjectCRAB(det_data="signal", realization=0)

    toast.ops.Pipeline(operators=[sim_noise, inject_crab]).apply(data)

    # An existing map-maker: bin I, Q, U maps of noise + cosmic rays.
    det_pointing = toast.ops.PointingDetectorSimple()
    binner = toast.ops.BinMap(
        pixel_dist="pix_dist",
        pixel_pointing=toast.ops.PixelsHealpix(
            nside=64, nest=True, detector_pointing=det_pointing
        ),
        stokes_weights=toast.ops.StokesWeights(
            mode="IQU", hwp_angle="hwp_angle", detector_pointing=det_pointing
        ),
    )
    toast.ops.MapMaker(
        name="mapmaker", binning=binner, template_matrix=None, output_dir=out_dir,
        write_binmap=False, write_cov=False, write_rcond=False,
    ).apply(data)
    data.clear()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/add_to_your_script")
