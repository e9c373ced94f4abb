"""Functions that run on Dask workers: thin glue from data to the science and adapter modules.

They take and return plain data (Atoms, paths, configs, small results) and import the heavy
adapters (torch/mace, pyscf) only when called, on the worker. Each result carries its start
and end wall-clock times (``t0``/``t1``, seconds since the epoch) for overhead accounting and
its CPU time (``cpu_s``: user + system time of the worker process and its finished children
during the task; exact for workers with one thread, the default, an upper bound otherwise).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .explore import WalkerSettings

__all__ = ["audit_task", "environment_task", "fit_probe_task", "label_task",
           "latent_distance_task", "predict_task", "score_task", "train_task", "walker_task"]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def label_task(atoms: Atoms, level: Any, spool: str | None = None) -> dict[str, Any]:
    """PySCF label of one frame: {"status", "energy", "forces", "reason", "wall_s", t0, t1}.

    With ``spool`` (a folder), the result is also written there as ``<fid>.json`` (plain JSON,
    atomically) the moment it exists, so a driver that dies before recording it loses nothing.
    """
    import json

    from .frames import frame_id
    from .dft import label_atoms

    fid = frame_id(atoms)
    _fault_injection(fid)
    t0, c0 = time.time(), cpu_seconds()
    r = label_atoms(atoms, level)
    out = {"status": r.status, "energy": r.energy,
           "forces": None if r.forces is None else np.asarray(r.forces).tolist(),
           "reason": r.reason, "n_cycles": r.n_cycles, "wall_s": r.wall_s,
           "attempts": list(r.attempts), "t0": t0, "t1": time.time(),
            "cpu_s": cpu_seconds() - c0 + r.child_cpu_s}
    if spool is not None:
        from .files import atomic_write

        atomic_write(Path(spool) / f"{fid}.json", json.dumps(out))
    return out


def _fault_injection(fid: str) -> None:
    """Test hooks: ALPROBE_FAULT_KILL_LABEL=fid1,fid2 (or '*') kills the worker process;
    ALPROBE_FAULT_DELAY_LABEL_S=seconds makes every label that much slower."""
    import os
    import signal

    delay = float(os.environ.get("ALPROBE_FAULT_DELAY_LABEL_S") or 0)
    if delay > 0:
        time.sleep(delay)
    spec = os.environ.get("ALPROBE_FAULT_KILL_LABEL")
    if spec and (spec == "*" or fid in spec.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)


_PROBES: dict[str, Any] = {}
_PROBES_LOCK = __import__("threading").Lock()


def _probe(path: str | None) -> Any:
    """The probe at ``path``, loaded once per worker process (thread-safe; the last one kept)."""
    if path is None:
        return None
    with _PROBES_LOCK:
        probe = _PROBES.get(path)
        if probe is None:
            from .probe import load_probe

            probe = load_probe(path)
            _PROBES.clear()
            _PROBES[path] = probe
    return probe


def walker_task(start: Atoms, model_path: str, probe_path: str | None, settings: WalkerSettings,
                seed: list[int], walker: int, device: str = "cpu",
                momenta: np.ndarray | None = None, first_sample: int = 0) -> dict[str, Any]:
    """One MD walker on the backbone at ``model_path``, scored by the probe at ``probe_path``
    (``momenta``, ``first_sample``: continue a streaming walker, see explore.run_walker);
    the result's ``end`` is (positions, momenta) where a completed walker ended, else None."""
    from .backbone import MaceCalculator, load_model
    from .explore import run_walker

    t0, c0 = time.time(), cpu_seconds()
    calc = MaceCalculator(load_model(model_path, device), device=device)
    probe = _probe(probe_path)

    key = "node_features_all" if probe is not None and probe.features == "all" else "node_features"

    def score(atoms: Atoms) -> float:
        r = atoms.calc.results
        return float(probe.score([r[key]], [r["energy"]])[0])

    res = run_walker(start, calc, score if probe is not None else None, settings,
                     rng=np.random.default_rng(seed), walker=walker, momenta=momenta,
                     first_sample=first_sample)
    return {"frames": res.frames, "stop_reason": res.stop_reason, "steps": res.steps_done,
            "md_s": res.md_s, "score_s": res.score_s, "end": res.end,
            "t0": t0, "t1": time.time(),
            "cpu_s": cpu_seconds() - c0}


def train_task(train: list[Atoms], valid: list[Atoms], out_path: str, settings: Any, seed: int,
               foundation: str | None, epochs: int | None, replay: Any = None,
               head_of: str | None = None) -> dict[str, Any]:
    """Train or fine-tune the backbone with mace-torch (``replay``: a backbone.Replay, for a
    multihead replay fine-tune; ``head_of``: a head-committee member, a readout-only fine-tune
    of that backbone with fresh readouts); returns train_backbone's summary."""
    from .backbone import head_start_model, train_backbone

    t0, c0 = time.time(), cpu_seconds()
    if head_of is not None:
        foundation = head_start_model(head_of, str(out_path) + ".start", seed)
        settings = settings.model_copy(update={"freeze": 6})
    info = train_backbone(train, valid, out_path, settings, seed=seed, foundation=foundation,
                          epochs=epochs, replay=replay)
    if head_of is not None:
        Path(foundation).unlink(missing_ok=True)
    return {**info, "t0": t0, "t1": time.time(),
            "cpu_s": cpu_seconds() - c0 + info.pop("cpu_s", 0.0)}


def committee_task(paths: list[str], frames: list[Atoms], device: str = "cpu",
                   forces: bool = True) -> dict[str, Any]:
    """Members 1..M-1 of a committee (``paths[0]`` is the backbone) on frames, members that
    share the backbone's body from one body pass (a head committee): {"members": [{"energy":
    (n,), "forces": n x (N, 3) or None}, ...]}."""
    from .backbone import committee_predict, load_model

    t0, c0 = time.time(), cpu_seconds()
    models = [load_model(p, device) for p in paths]  # (the cache keeps one; each stays valid)
    res = committee_predict(models, frames, device=device, forces=forces)
    return {"members": [{"energy": [e for e, _ in r], "forces": [f for _, f in r]}
                        for r in res[1:]],
            "t0": t0, "t1": time.time(), "cpu_s": cpu_seconds() - c0}


def predict_task(model_path: str, frames: list[Atoms], device: str = "cpu") -> dict[str, Any]:
    """Backbone energies (eV) and forces (eV/A) on frames: {"energy": [...], "forces": [...]}."""
    from .backbone import load_model, predict

    t0, c0 = time.time(), cpu_seconds()
    preds = predict(load_model(model_path, device), frames, device=device)
    return {"energy": [p.energy for p in preds], "forces": [p.forces for p in preds],
            "t0": t0, "t1": time.time(),
            "cpu_s": cpu_seconds() - c0}


def score_task(model_path: str, probe_path: str | None, frames: list[Atoms],
               device: str = "cpu", embeddings: bool = False) -> dict[str, Any]:
    """Raw backbone predictions (energy eV, forces eV/A) and P(reliable) of the probe at
    ``probe_path`` (NaN without one) for frames, from one forward pass each; with
    ``embeddings`` also each frame's per-atom invariant embeddings (N, F) from that pass."""
    from .backbone import load_model, predict

    t0, c0 = time.time(), cpu_seconds()
    preds = predict(load_model(model_path, device), frames, device=device)
    probe = _probe(probe_path)
    trust = (probe.score([p.probe_features(probe.features) for p in preds],
                         [p.energy for p in preds])
             if probe is not None and preds else np.full(len(preds), np.nan))
    return {"energy": [p.energy for p in preds], "forces": [p.forces for p in preds],
            "trust": [float(t) for t in trust],
            "embedding": [p.features for p in preds] if embeddings else None,
            "t0": t0, "t1": time.time(), "cpu_s": cpu_seconds() - c0}


def latent_distance_task(model_path: str, train: list[Atoms], frames: list[Atoms],
                         device: str = "cpu") -> dict[str, Any]:
    """Each frame's distance to ``train`` in the backbone's embedding space (the latent arm's
    signal): {"distance": [...]} (standardised feature units, larger = farther)."""
    from .backbone import load_model, predict
    from .baselines import knn_confidence

    t0, c0 = time.time(), cpu_seconds()
    model = load_model(model_path, device)
    ref = [p.features for p in predict(model, train, device=device)]
    query = [p.features for p in predict(model, frames, device=device)]
    dist = -knn_confidence(ref, query, reduce="mean") if query else np.zeros(0)
    return {"distance": [float(d) for d in dist], "t0": t0, "t1": time.time(),
            "cpu_s": cpu_seconds() - c0}


def fit_probe_task(model_path: str, frames: list[Atoms], cfg: Any, seed: int, out_path: str,
                   meta: dict[str, Any],
                   earlier: list[tuple[str, list[Atoms]]] | tuple = ()) -> dict[str, Any]:
    """Errors of the backbone on ``frames`` (never trained on), then PROBE trained on them.

    ``earlier``: (model file, frames) of earlier backbones of the lineage with frames none of
    them trained on (probe.lineage): their features and errors join the training set, each
    backbone's errors scaled to the current one's median (a quantile threshold then splits
    every backbone's frames at its own median) so that the examples mean "relatively hard for
    a backbone of this lineage". Returns {"path": checkpoint or None, "reason", "meta"}; a
    probe that cannot be trained (too few frames of a class) is reported, not raised.
    """
    from .backbone import load_model, predict
    from .frames import prediction_errors
    from .probe import ProbeError, reliable_labels, train_probe

    t0, c0 = time.time(), cpu_seconds()
    feats, energies, errors, atom_errors, sizes = [], [], [], [], []
    for path, group in [(model_path, frames), *earlier]:
        if not group:
            sizes.append(0)
            continue
        preds = predict(load_model(path, cfg.device), group, device=cfg.device)
        e, ae = prediction_errors(group, [p.energy for p in preds], [p.forces for p in preds],
                                  cfg.error)
        if errors and cfg.threshold == "quantile":  # an earlier backbone: to the current scale
            scale = float(np.median(errors[0])) / max(float(np.median(e)), 1e-12)
            e, ae = [x * scale for x in e], [x * scale for x in ae]
        feats.append([p.probe_features(cfg.features) for p in preds])
        energies.append([p.energy for p in preds])
        errors.append(list(e))
        atom_errors.append(list(ae))
        sizes.append(len(group))
    meta = {**meta, "lineage_sizes": sizes}
    flat = lambda xs: [x for group in xs for x in group]  # noqa: E731
    feats, energies, errors, atom_errors = map(flat, (feats, energies, errors, atom_errors))
    if not errors:
        return {"path": None, "reason": "no labeled frame out of sample for any backbone of "
                "the lineage", "meta": {}, "t0": t0, "t1": time.time(),
                "cpu_s": cpu_seconds() - c0}
    try:
        probe = train_probe(feats, energies, errors, cfg, seed=seed, meta=meta,
                            atom_errors=atom_errors)
    except ProbeError as exc:
        # the threshold is still defined (every arm's hit rate and AUROC are measured at it)
        meta = {"threshold": reliable_labels(np.asarray(errors, float), cfg.threshold,
                                             cfg.threshold_value)[1]} if len(errors) else {}
        return {"path": None, "reason": str(exc), "meta": meta, "t0": t0, "t1": time.time(),
                "cpu_s": cpu_seconds() - c0}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    probe.save(out_path)
    return {"path": out_path, "reason": "", "meta": probe.meta, "t0": t0, "t1": time.time(),
            "cpu_s": cpu_seconds() - c0}


def audit_task(frames: list[Atoms], backbone: str, probe: str | None, train_frames: list[Atoms],
               error: str, n_importance: int, device: str = "cpu",
               committee: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """All trust signals and true errors on labeled frames (see audit.compute_signals)."""
    from .audit import compute_signals

    t0, c0 = time.time(), cpu_seconds()
    out = compute_signals(frames, backbone=backbone, probe=probe, train_frames=train_frames,
                          error=error, n_importance=n_importance, device=device,
                          committee=committee)
    return {**out, "t0": t0, "t1": time.time(),
            "cpu_s": cpu_seconds() - c0}


def environment_task() -> dict[str, Any]:
    """What a worker computes with, for reproducing a run: CPU model and vector extensions,
    logical CPUs, thread counts (torch, OpenMP/BLAS environment, PySCF), torch's CPU kernel
    level and the BLAS libraries loaded (threadpoolctl)."""
    import os
    import platform

    import torch
    from pyscf import lib
    from threadpoolctl import threadpool_info

    model, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    keep = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")
    return {
        "host": platform.node(), "machine": platform.machine(), "cpu": model,
        "cpu_flags": [f for f in keep if f in flags], "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "pyscf_threads": lib.num_threads(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                          "OPENBLAS_NUM_THREADS") if k in os.environ},
        "blas": [{k: d.get(k) for k in ("internal_api", "version", "architecture",
                                        "num_threads", "threading_layer")}
                 for d in threadpool_info()],
    }
