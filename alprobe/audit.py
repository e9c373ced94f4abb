"""The reliability audit: every trust signal against DFT truth on labeled frames.

``compute_signals`` runs the models (backbone, PROBE, its mean-pool ablation, a committee) and
the cheap baselines on labeled frames; ``write_audit`` turns confidences and true errors into
the table (bootstrap 95% CIs) and plots. Confidence convention: higher = more trusted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .frames import read_labeled, set_prediction, structure_errors

__all__ = ["compute_signals", "read_labeled", "write_audit"]



def compute_signals(frames: Sequence[Atoms], *, backbone: str, error: str,
                    probe: str | None = None, ablation: str | None = None,
                    committee: Sequence[str] = (), train_frames: Sequence[Atoms] = (),
                    n_importance: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Confidences of every available signal and the backbone's true errors on ``frames``.

    Returns {"errors" (n,), "signals": {name: (n,)}, "probabilities": [names], "tau_probe",
    "pred_energy" (n,), "importance": {index: (N_i,)} for the ``n_importance`` least trusted
    frames by the probe}. ``error`` is a frames.structure_errors kind.
    """
    from .backbone import load_model, predict
    from .baselines import energy_confidence, knn_confidence
    from .committee import energy_std_per_atom, max_force_deviation
    from .probe import load_probe

    model = load_model(backbone, device)
    preds = predict(model, frames, device=device)
    errors = []
    for a, p in zip(frames, preds):
        b = a.copy()
        set_prediction(b, p.energy, p.forces)
        errors.append(structure_errors(b, error))
    feats = [p.features for p in preds]
    energies = np.array([p.energy for p in preds])
    n_atoms = np.array([len(a) for a in frames])
    signals: dict[str, np.ndarray] = {}
    probabilities: list[str] = []
    out: dict[str, Any] = {"tau_probe": None, "importance": {}}
    if probe:
        pm = load_probe(probe)
        pfeats = [p.probe_features(pm.features) for p in preds]
        signals["probe"] = pm.score(pfeats, energies)
        probabilities.append("probe")
        out["tau_probe"] = float(pm.meta["threshold"])
        if n_importance:
            worst = np.argsort(signals["probe"])[:n_importance]
            imps = pm.importance([pfeats[i] for i in worst], energies[worst])
            out["importance"] = {int(i): imp for i, imp in zip(worst, imps)}
    if ablation:
        am = load_probe(ablation)
        signals["probe_meanpool"] = am.score([p.probe_features(am.features) for p in preds],
                                             energies)
        probabilities.append("probe_meanpool")
    if committee:
        member = [predict(load_model(path, device), frames, device=device) for path in committee]
        signals["ensemble_epsF"] = -np.array([max_force_deviation([m[i].forces for m in member])
                                              for i in range(len(frames))])
        signals["ensemble_Estd"] = -np.array([
            energy_std_per_atom([m[i].energy for m in member], n_atoms[i])
            for i in range(len(frames))])
    if train_frames:
        tp = predict(model, train_frames, device=device)
        signals["knn_max"] = knn_confidence([p.features for p in tp], feats, reduce="max")
        signals["knn_mean"] = knn_confidence([p.features for p in tp], feats, reduce="mean")
        e_train = float(np.mean([p.energy / len(a) for p, a in zip(tp, train_frames)]))
        signals["energy"] = energy_confidence(energies, n_atoms, e_train)
    out.update(errors=np.array(errors), signals=signals, probabilities=probabilities,
               pred_energy=energies)
    return out


def write_audit(out_dir: str | Path, prefix: str, signals: dict[str, np.ndarray],
                errors: np.ndarray, tau: float, probabilities: Sequence[str], *,
                rng: np.random.Generator, n_boot: int = 1000, plots: bool = True
                ) -> dict[str, Any]:
    """Write ``<prefix>_audit.txt`` / ``.json`` (+ PNG plots) into ``out_dir``; return the rows."""
    from .files import atomic_write
    from .metrics import audit_table, format_table
    from .plots import plot_audit

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = audit_table(signals, errors, tau, probabilities=set(probabilities), n_boot=n_boot,
                       rng=rng)
    best = max((r for r in rows if np.isfinite(r["auroc"])), key=lambda r: r["auroc"],
               default=None)
    verdict = (f"best AUROC: {best['signal']} ({best['auroc']:.3f})" if best else
               "AUROC undefined (one class only)")
    text = (f"reliability audit: {len(errors)} frames, tau = {tau:.4g}, "
            f"{int(np.sum(np.asarray(errors) > tau))} unreliable\n"
            + format_table(rows) + "\n" + verdict + "\n")
    atomic_write(out_dir / f"{prefix}_audit.txt", text)
    atomic_write(out_dir / f"{prefix}_audit.json", json.dumps(
        {"tau": tau, "n": int(len(errors)), "rows": rows, "verdict": verdict},
        indent=1, default=float))
    paths = []
    if plots and len(errors) >= 2:
        paths = plot_audit(signals, errors, tau, str(out_dir / prefix),
                           probabilities=set(probabilities))
    return {"rows": rows, "text": text, "plots": [str(p) for p in paths]}
