"""PROBE on its own, for any MACE model: fit a probe on labeled frames, score frames, and an ASE
calculator that returns trust with every energy and force.

    from alprobe import TrustCalculator
    atoms.calc = TrustCalculator("my.model", "probe.pt")
    atoms.get_forces(); atoms.calc.results["trust"]        # P(reliable) of this geometry

The backbone is never modified; the probe reads its frozen per-atom embeddings from the same
forward pass that gives energy (eV) and forces (eV/A). Fit the probe only on frames the
backbone never trained on (``fit_probe(..., train_frames=...)`` refuses any that it did).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .errors import AlprobeError

__all__ = ["LowTrustError", "TrustCalculator", "fit_probe", "score_frames"]


class LowTrustError(AlprobeError):
    """Trust stayed below the calculator's floor (raised when no stop callback is given)."""


def fit_probe(frames: Sequence[Atoms], backbone: str | Path, out: str | Path, cfg: Any = None, *,
              train_frames: Sequence[Atoms] = (), seed: int = 0,
              device: str = "cpu") -> dict[str, Any]:
    """Fit PROBE on the errors ``backbone`` makes on labeled ``frames`` (ref_energy eV,
    ref_forces eV/A) and write it to ``out``.

    ``train_frames``: the backbone's training set; a frame whose content hash appears there is
    refused (its error would be in-sample). ``cfg``: a ProbeConfig (default settings if None).
    Returns {"path", "threshold", "n_reliable", "n_unreliable", "n_frames", "meta"}.
    Raises AlprobeError (ProbeError) when the frames cannot train a probe.
    """
    from .backbone import load_model, predict
    from .config import ProbeConfig
    from .frames import frame_id, prediction_errors
    from .probe import train_probe

    cfg = cfg or ProbeConfig()
    seen = {frame_id(a) for a in train_frames}
    ids = [frame_id(a) for a in frames]
    clash = [i for i, f in enumerate(ids) if f in seen]
    if clash:
        raise AlprobeError(f"{len(clash)} of {len(frames)} frames are in the backbone's training "
                           f"set (first: frame {clash[0]}); the probe must learn errors on frames "
                           "the backbone never saw: remove them")
    model = load_model(backbone, device)
    preds = predict(model, frames, device=device)
    errors, atom_errors = prediction_errors(frames, [p.energy for p in preds],
                                            [p.forces for p in preds], cfg.error)
    probe = train_probe([p.probe_features(cfg.features) for p in preds],
                        [p.energy for p in preds], errors, cfg, seed=seed,
                        meta={"backbone": str(backbone), "train_ids": sorted(ids)},
                        atom_errors=atom_errors)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    probe.save(out)
    n_rel = int(probe.meta["n_reliable"])
    return {"path": str(out), "threshold": float(probe.meta["threshold"]), "n_reliable": n_rel,
            "n_unreliable": len(frames) - n_rel, "n_frames": len(frames), "meta": probe.meta}


def score_frames(frames: Sequence[Atoms], backbone: str | Path, probe: str | Path, *,
                 out: str | Path | None = None, csv_path: str | Path | None = None,
                 device: str = "cpu") -> list[Atoms]:
    """P(reliable) per frame (``info["trust"]``), each atom's importance
    (``arrays["atom_importance"]``, sums to 1) and the backbone's raw predictions
    (``pred_energy`` eV, ``pred_forces`` eV/A); written to ``out`` (extxyz) and ``csv_path``."""
    from .backbone import load_model, predict
    from .frames import bare_copy, set_prediction, write_extxyz
    from .probe import ProbeError, load_probe

    pm = load_probe(probe)
    preds = predict(load_model(backbone, device), frames, device=device)
    feats = [p.probe_features(pm.features) for p in preds]
    energies = [p.energy for p in preds]
    try:
        trust, imps = pm.score_and_importance(feats, energies)
    except ProbeError:  # the mean-pool ablation has no importance
        trust, imps = pm.score(feats, energies), [np.full(len(a), 1.0 / len(a)) for a in frames]
    scored = []
    for a, p, t, imp in zip(frames, preds, trust, imps):
        b = bare_copy(a)
        b.info.update({k: v for k, v in a.info.items() if isinstance(v, (str, int, float))})
        set_prediction(b, p.energy, p.forces)
        b.info["trust"] = float(t)
        b.arrays["atom_importance"] = np.asarray(imp, dtype=float)
        scored.append(b)
    if out is not None:
        write_extxyz(out, scored)
    if csv_path is not None:
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "n_atoms", "trust", "pred_energy_eV", "most_important_atom"])
            for i, b in enumerate(scored):
                w.writerow([i, len(b), f"{b.info['trust']:.6g}", f"{b.info['pred_energy']:.8g}",
                            int(np.argmax(b.arrays["atom_importance"]))])
    return scored


class TrustCalculator(Calculator):
    """An ASE calculator on a MACE model file and a PROBE checkpoint.

    ``results`` holds ``energy`` (eV), ``forces`` (eV/A), ``trust`` (P(reliable)) and
    ``atom_importance`` ((N,), sums to 1), all from one backbone forward pass. With
    ``floor``, every calculation whose trust is below it counts, and after ``patience``
    consecutive ones ``on_low_trust(atoms, trust)`` is called (or LowTrustError raised,
    which stops any ASE dynamics).
    """

    implemented_properties = ["energy", "free_energy", "forces", "trust", "atom_importance"]

    def __init__(self, model_file: str | Path, probe_file: str | Path, *, device: str = "cpu",
                 floor: float | None = None, patience: int = 1,
                 on_low_trust: Callable[[Atoms, float], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        from .backbone import load_model
        from .probe import load_probe

        self.model = load_model(model_file, device)
        self.probe = load_probe(probe_file)
        self.device, self.floor, self.patience = device, floor, max(1, int(patience))
        self.on_low_trust, self.low = on_low_trust, 0

    def calculate(self, atoms: Atoms | None = None, properties: Any = None,
                  system_changes: Any = all_changes) -> None:
        from .backbone import predict
        from .probe import ProbeError

        super().calculate(atoms, properties, system_changes)
        (p,) = predict(self.model, [self.atoms], batch_size=1, device=self.device)
        feats = [p.probe_features(self.probe.features)]
        try:
            t, (imp,) = self.probe.score_and_importance(feats, [p.energy])
        except ProbeError:  # the mean-pool ablation has no importance
            t, imp = self.probe.score(feats, [p.energy]), np.full(len(self.atoms),
                                                                   1.0 / len(self.atoms))
        trust = float(t[0])
        self.results = {"energy": p.energy, "free_energy": p.energy, "forces": p.forces,
                        "trust": trust, "atom_importance": imp}
        if self.floor is not None:
            self.low = self.low + 1 if trust < self.floor else 0
            if self.low >= self.patience:
                self.low = 0
                if self.on_low_trust is None:
                    raise LowTrustError(f"P(reliable) {trust:.3f} below {self.floor} for "
                                        f"{self.patience} consecutive step(s)")
                self.on_low_trust(self.atoms, trust)
