"""Imported by the sandbox's fork server (alprobe.sandbox.PRELOAD) before it forks children.

Importing this module imports PySCF and runs one tiny H2 HF/STO-3G energy and gradient, with
one OpenMP thread, so that every forked child starts with PySCF's lazy imports and first-call
set-up done (about 70 ms per label otherwise) and without an OpenMP thread pool (GNU libgomp
deadlocks in a forked child once its parent ran a multi-thread pool).

It then imports mace-torch's trainer (through :mod:`alprobe.backbone`, which silences its
import noise), so that a MACE training forked from the server starts at once instead of
spending about 8 s importing torch, e3nn and mace (measured on 2 cores). Nothing runs a torch
operation here, so no torch thread pool exists before the fork.
"""

from __future__ import annotations


def warm_up() -> None:
    try:
        import pyscf.dft  # noqa: F401
        import pyscf.soscf.newton_ah  # noqa: F401
        from pyscf import gto, lib, scf

        lib.num_threads(1)
        mol = gto.M(atom="H 0 0 0; H 0 0 1.4", unit="Bohr", basis="sto-3g", verbose=0,
                    output=None)
        mf = scf.RHF(mol)
        mf.verbose = 0
        mf.kernel()
        g = mf.nuc_grad_method()
        g.verbose = 0
        g.kernel()
    except Exception:  # noqa: BLE001, S110 - an optimisation only
        pass


def warm_trainer() -> None:
    try:
        import alprobe.backbone  # noqa: F401
        import mace.cli.run_train  # noqa: F401
    except Exception:  # noqa: BLE001, S110 - an optimisation only
        pass


warm_up()
warm_trainer()
