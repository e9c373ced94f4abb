"""The only MACE / torch adapter for the backbone MLIP.

Training and fine-tuning run mace-torch's own trainer (``mace.cli.run_train``) in a sandboxed
child forked from a fork server that has mace-torch imported already (:mod:`alprobe.sandbox`,
:mod:`alprobe._warm`), so a training does not pay mace's ~8 s import each time; loading,
prediction (energy eV, forces eV/A) and per-atom invariant embeddings run in process.
Model files are pickles: loading one runs code. Load only files this campaign wrote or the user
named.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

import contextlib
import io
import warnings

# Library noise a user cannot act on, silenced here and nowhere else: e3nn's own torch.load of
# its constants (mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which makes torch warn about it),
# torch.jit's deprecation notice, and mace's bare print that cuequivariance (a GPU add-on) is
# not installed. alprobe's own warnings are untouched.
with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated.*")
    import mace  # noqa: F401  (mace must be imported before e3nn; it also relaxes torch.load)
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric, torch_tools, utils as mace_utils
    import mace.tools.cg  # noqa: F401  (prints the cuequivariance notice on import)

from .errors import AlprobeError

# TorchScript's profiling executor (used inside e3nn) makes the first forward pass of a process
# differ from later ones by one float32 rounding step, so a resumed campaign would not repeat
# an uninterrupted one bit for bit; without it the passes agree (and were faster here).
if hasattr(torch._C, "_jit_set_profiling_executor"):
    torch._C._jit_set_profiling_executor(False)
from .files import atomic_path
from . import sandbox
from .frames import REF_ENERGY, REF_FORCES, write_extxyz

__all__ = [
    "BackboneError",
    "MaceCalculator",
    "Prediction",
    "Replay",
    "campaign_head",
    "check_replay_on",
    "committee_predict",
    "fit_e0s",
    "head_start_model",
    "load_model",
    "model_heads",
    "model_info",
    "predict",
    "replay_errors",
    "shares_body",
    "train_backbone",
]


class BackboneError(AlprobeError):
    """A model file cannot be used, or training failed (the message says why)."""


@dataclass
class Prediction:
    """Backbone output for one structure (one forward pass)."""

    energy: float  # eV
    forces: np.ndarray  # (N, 3) eV/A
    features: np.ndarray  # (N, F) last-layer invariant per-atom embeddings
    features_all: np.ndarray | None = None  # (N, F_all) invariants of every interaction layer

    def probe_features(self, which: str = "last") -> np.ndarray:
        """The features a probe reads: "last" layer or "all" layers."""
        return self.features if which == "last" else self.features_all


def fit_e0s(frames: Sequence[Atoms]) -> dict[int, float]:
    """Per-element reference energies (eV) by least squares of total energy on composition.

    For a single composition the system is underdetermined; the minimum-norm solution still
    reproduces the mean total energy, which is all the model needs.
    """
    zs = sorted({int(z) for a in frames for z in a.numbers})
    counts = np.array([[np.sum(a.numbers == z) for z in zs] for a in frames], dtype=float)
    energies = np.array([a.info[REF_ENERGY] for a in frames], dtype=float)
    e0 = np.linalg.lstsq(counts, energies, rcond=None)[0]
    return {z: float(v) for z, v in zip(zs, e0)}


def _mace_frames(frames: Sequence[Atoms]) -> list[Atoms]:
    out = []
    for a in frames:
        b = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
        b.info["REF_energy"] = float(a.info[REF_ENERGY])
        b.arrays["REF_forces"] = np.asarray(a.arrays[REF_FORCES], dtype=float)
        out.append(b)
    return out


@dataclass(frozen=True)
class Replay:
    """Multihead replay of a fine-tune: mace-torch trains a second head (``pt_head``) on
    every frame of ``train_file`` (extxyz with REF_energy eV / REF_forces eV/A; with
    ``pseudolabel`` the foundation's own predictions replace its labels), so the shared body
    keeps what it knew. (mace-torch's num_samples_pt subsamples only its Materials Project
    replay data, so the caller writes the subset it wants.) ``holdout`` frames (never
    replayed, alprobe's reference keys) measure forgetting after the fine-tune."""

    train_file: str
    pseudolabel: bool = False
    holdout: tuple[Atoms, ...] = ()


def _trainer_args(work: Path, settings: Any, epochs: int, n_valid: int, seed: int,
                  train: Sequence[Atoms], foundation: str | Path | None,
                  replay: Replay | None = None) -> list[str]:
    """mace-torch's run_train arguments: from scratch (E0s fitted on ``train``), a plain
    fine-tune of ``foundation``, or a multihead replay fine-tune (``replay``: the new head's
    E0s estimated from the foundation's predictions, since it may cross a level of theory)."""
    args = [
        "--name", "model", "--work_dir", str(work),
        "--train_file", str(work / "train.xyz"), "--valid_file", str(work / "valid.xyz"),
        "--energy_key", "REF_energy", "--forces_key", "REF_forces",
        "--max_num_epochs", str(epochs), "--batch_size", str(settings.batch_size),
        "--valid_batch_size", str(max(1, min(32, n_valid))),
        "--lr", str(settings.lr),
        "--forces_weight", str(settings.forces_weight),
        "--energy_weight", str(settings.energy_weight),
        "--stage_two", "--start_stage_two", str(max(1, (2 * epochs) // 3)),
        "--stage_two_energy_weight", str(settings.stage_two_energy_weight),
        "--stage_two_forces_weight", str(settings.forces_weight),
        "--eval_interval", "1", "--patience", str(max(5, epochs // 3)),
        "--device", settings.device, "--default_dtype", settings.dtype,
        "--seed", str(seed), "--save_cpu",
    ]
    if getattr(settings, "ema", False):
        args += ["--ema", "--ema_decay", "0.99"]
    if foundation is None:
        e0s = fit_e0s(train)
        args += [
            "--model", "MACE", "--E0s", "{" + ", ".join(f"{z}: {v!r}" for z, v in e0s.items()) + "}",
            "--hidden_irreps", _hidden_irreps(settings.channels, settings.max_L),
            "--r_max", str(settings.r_max_A), "--num_interactions", str(settings.interactions),
            "--max_L", str(settings.max_L), "--correlation", str(settings.correlation),
        ]
    elif replay is None:
        args += ["--foundation_model", str(foundation), "--multiheads_finetuning", "False",
                 "--E0s", "foundation"]
    else:
        # mace's multihead default (lr 1e-4, EMA decay 0.99999) would leave a short fine-tune
        # at the foundation's weights: keep the campaign's learning rate and EMA setting.
        args += ["--foundation_model", str(foundation), "--multiheads_finetuning", "True",
                 "--pt_train_file", replay.train_file, "--pseudolabel_replay", str(replay.pseudolabel), "--E0s", "estimated",
                 "--force_mh_ft_lr", "True"]
        weight = float(getattr(settings, "replay_weight", 1.0))
        if weight != 1.0:  # mace's --weight_pt_head weighs only its own MP replay data
            args[args.index("--pt_train_file") + 1] = _weighted_copy(
                replay.train_file, work / "replay_weighted.extxyz", weight)
    if foundation is not None:
        lr = getattr(settings, "finetune_lr", None)
        if lr:
            args[args.index("--lr") + 1] = str(lr)
        if getattr(settings, "freeze", 0):
            # keep every element of the start model, so the frozen body stays the same body
            args += ["--freeze", str(settings.freeze), "--foundation_model_elements", "True"]
    return args


def _weighted_copy(src: str, dst: Path, weight: float) -> str:
    """``src`` (extxyz) rewritten to ``dst`` with every frame's energy and force loss weights
    (mace-torch's info ``config_energy_weight`` and ``config_forces_weight``, which its
    fine-tuning loss reads; it ignores ``config_weight``) set to ``weight``; the new path."""
    from ase.io import read, write

    frames = read(src, ":", format="extxyz")
    for a in frames:
        a.info["config_energy_weight"] = a.info["config_forces_weight"] = weight
    dst.parent.mkdir(parents=True, exist_ok=True)
    write(dst, frames, format="extxyz")
    return str(dst)


def train_backbone(
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    out_path: str | Path,
    settings: Any,
    *,
    seed: int,
    foundation: str | Path | None = None,
    epochs: int | None = None,
    replay: Replay | None = None,
) -> dict[str, Any]:
    """Train (or fine-tune from ``foundation``, with multihead ``replay`` if given) a MACE
    model with mace-torch's trainer.

    ``settings`` is a BackboneConfig. ``valid`` frames are used for early stopping only, but
    count as seen by the model. Writes ``out_path`` (atomically) and ``out_path``.log; returns
    {"path", "wall_s", "epochs", "n_train", "n_valid"} and, with replay, "replay" (the
    forgetting yardstick of :func:`replay_errors`). Raises BackboneError on failure, and
    when mace-torch turned replay off (the written model has no ``pt_head``).
    """
    t0 = time.perf_counter()
    out_path = Path(out_path).resolve()
    work = out_path.parent / f"{out_path.stem}_work_{os.getpid()}"  # one per attempt
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_extxyz(work / "train.xyz", _mace_frames(train))
    write_extxyz(work / "valid.xyz", _mace_frames(valid))
    epochs = int(epochs or settings.epochs)
    # the trainer runs in ``work``: paths relative to the caller's directory must not break
    foundation = None if foundation is None else Path(foundation).resolve()
    if replay is not None:
        replay = dataclasses.replace(replay, train_file=str(Path(replay.train_file).resolve()))
    args = _trainer_args(work, settings, epochs, len(valid), seed, train, foundation, replay)
    log_path = out_path.with_suffix(".log")
    # The trainer dies with its worker (no orphan writes) and at the time limit.
    outcome = sandbox.call(_train_child, args, str(log_path), str(work), torch.get_num_threads(),
                           timeout_s=getattr(settings, "train_timeout_s", None))
    if outcome.status == "timeout":
        raise BackboneError(f"mace training exceeded backbone.train_timeout_s "
                            f"({settings.train_timeout_s} s) and was killed; see {log_path}")
    failure = "" if outcome.status == "ok" else (outcome.detail or outcome.status)
    candidates = [work / "model_stagetwo.model", work / "model.model"]
    produced = next((p for p in candidates if p.is_file()), None)
    if failure or produced is None:
        tail = log_path.read_text().strip().splitlines()[-5:]
        raise BackboneError(
            f"mace training failed ({failure or 'no model written'}); see {log_path}: "
            + " | ".join(t.strip() for t in tail)
        )
    if replay is not None:
        check_replay_on(produced, log_path)
    with atomic_path(out_path) as tmp:
        shutil.copyfile(produced, tmp)
    shutil.rmtree(work, ignore_errors=True)
    info = {
        "path": str(out_path),
        "wall_s": time.perf_counter() - t0,
        "epochs": epochs,
        "cpu_s": outcome.cpu_s,  # the trainer child's CPU (not in this process's rusage)
        "n_train": len(train),
        "n_valid": len(valid),
    }
    if replay is not None and replay.holdout:
        info["replay"] = replay_errors(load_model(out_path), load_model(foundation),
                                       replay.holdout)
    return info


def check_replay_on(model_path: str | Path, log_path: str | Path) -> None:
    """Refuse a replay fine-tune whose model has no ``pt_head``: mace-torch turned multihead
    replay off (it does so silently, e.g. for a foundation model that is not MACE-MP)."""
    model = torch.load(model_path, map_location="cpu", weights_only=False)
    heads = list(getattr(model, "heads", None) or [])
    if "pt_head" not in heads:
        raise BackboneError(f"mace-torch trained without multihead replay (model heads: "
                            f"{heads or ['Default']}); refusing a fine-tune that may forget "
                            f"the foundation; see {log_path}")


def replay_errors(model: torch.nn.Module, foundation: torch.nn.Module,
                  holdout: Sequence[Atoms]) -> dict[str, float]:
    """Forgetting on the held-back replay frames (reference labels in ``holdout``): force MAE
    (eV/A) and energy MAE per atom (eV/atom) of the fine-tuned model's ``pt_head`` and of the
    foundation itself, and the relative growth of the force MAE (0.1 = 10% worse)."""
    ref_f = [np.asarray(a.arrays[REF_FORCES]) for a in holdout]
    ref_e = np.array([a.info[REF_ENERGY] for a in holdout])
    n = np.array([len(a) for a in holdout])

    def errors(preds: list[Prediction]) -> tuple[float, float]:
        f = float(np.mean(np.concatenate([np.abs(p.forces - r).ravel()
                                          for p, r in zip(preds, ref_f)])))
        e = float(np.mean(np.abs(np.array([p.energy for p in preds]) - ref_e) / n))
        return f, e

    f_new, e_new = errors(predict(model, holdout, head="pt_head"))
    f_old, e_old = errors(predict(foundation, holdout))
    return {"frames": len(holdout), "force_mae_eV_A": f_new, "energy_mae_eV_per_atom": e_new,
            "foundation_force_mae_eV_A": f_old, "foundation_energy_mae_eV_per_atom": e_old,
            "force_mae_growth": f_new / f_old - 1.0}


def _train_child(emit: Any, args: list[str], log: str, work: str, threads: int) -> None:
    """In the sandbox child: ``mace_run_train ARGS`` in ``work``, its output to ``log``, with
    the caller's torch thread count."""
    with open(log, "w") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    import sys

    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    warnings.simplefilter("ignore")
    os.chdir(work)
    torch.set_num_threads(max(1, int(threads)))
    from mace.cli import run_train
    from mace.tools import build_default_arg_parser

    if hasattr(run_train, "jit"):
        # The trainer also writes a TorchScript copy of each model (``*_compiled.model``, about
        # 1.3 s of compiling per stage); alprobe never reads it, and the trainer skips that copy
        # when compiling fails, so make compiling fail at once in this child.
        run_train.jit = _NoTorchScript()
    run_train.run(build_default_arg_parser().parse_args(args))


class _NoTorchScript:
    @staticmethod
    def compile(*_: Any, **__: Any) -> Any:
        raise RuntimeError("TorchScript copy not wanted")


def _hidden_irreps(channels: int, max_L: int) -> str:
    parity = ["0e", "1o", "2e", "3o"]
    return "+".join(f"{channels}x{parity[lv]}" for lv in range(max_L + 1))


_MODEL_CACHE: dict[tuple[str, float, str], torch.nn.Module] = {}


def load_model(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """Load a MACE model file (a pickled torch module) for inference.

    Raises BackboneError with a one-line reason for a missing, truncated or non-MACE file.
    Cached per process by (path, mtime, device).
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"model file not found: {path}")
    key = (str(path.resolve()), path.stat().st_mtime, device)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    try:
        model = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated pickles raise many kinds
        raise BackboneError(f"cannot load model file {path}: {type(exc).__name__}: {exc}") from None
    if not (isinstance(model, torch.nn.Module) and hasattr(model, "atomic_numbers")
            and hasattr(model, "r_max") and hasattr(model, "products")):
        raise BackboneError(f"{path} is not a MACE model file")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _MODEL_CACHE.clear()
    _MODEL_CACHE[key] = model
    return model


def model_info(model: torch.nn.Module) -> dict[str, Any]:
    """Elements (atomic numbers), cutoff (A), dtype and embedding width of a MACE model."""
    return {
        "atomic_numbers": [int(z) for z in model.atomic_numbers],
        "r_max": float(model.r_max),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "n_features": _n_invariant_features(model),
    }


def _n_invariant_features(model: torch.nn.Module) -> int:
    from e3nn import o3

    irreps = o3.Irreps(str(model.products[-1].linear.irreps_out))
    return int(sum(mul for mul, ir in irreps if ir.l == 0))


def _scalar_columns(model: torch.nn.Module) -> tuple[list[int], list[int]]:
    """Column indices of the invariant (0e) channels in ``node_feats``: of the last interaction
    layer, and of every layer (node_feats concatenates the layers' product outputs)."""
    from e3nn import o3

    key = id(model)
    if key in _COLUMNS:
        return _COLUMNS[key]
    last: list[int] = []
    every: list[int] = []
    offset = 0
    for k, prod in enumerate(model.products):
        cols = []
        for mul, ir in o3.Irreps(str(prod.linear.irreps_out)):
            if ir.l == 0 and ir.p == 1:
                cols += list(range(offset, offset + mul))
            offset += mul * ir.dim
        every += cols
        if k == len(model.products) - 1:
            last = cols
    _COLUMNS.clear()
    _COLUMNS[key] = (last, every)
    return last, every


_COLUMNS: dict[int, tuple[list[int], list[int]]] = {}


def _last_layer_invariants(model: torch.nn.Module, node_feats: torch.Tensor) -> torch.Tensor:
    """The scalar (0e) block of the last product layer: the last layer's own columns."""
    from e3nn import o3

    irreps = o3.Irreps(str(model.products[-1].linear.irreps_out))
    block = node_feats[:, node_feats.shape[1] - irreps.dim :]
    return block[:, : _n_invariant_features(model)]


def model_heads(model: torch.nn.Module) -> list[str]:
    """The readout heads of a MACE model (["Default"] for a single-head one)."""
    return list(getattr(model, "heads", None) or ["Default"])


def campaign_head(model: torch.nn.Module) -> str:
    """The head a campaign uses: the fine-tuned one of a multihead replay model (the last head
    that is not mace-torch's ``pt_head``), else the model's first."""
    heads = model_heads(model)
    own = [h for h in heads if h != "pt_head"]
    return own[-1] if own else heads[0]


def _batches(model: torch.nn.Module, frames: Sequence[Atoms], batch_size: int,
             head: str | None = None):
    z_table = mace_utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    heads = model_heads(model)
    head = head or campaign_head(model)
    if head not in heads:
        raise BackboneError(f"model has no head {head!r} (heads: {heads})")
    known = set(z_table.zs)
    keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={})
    data = []
    dtype = next(model.parameters()).dtype
    for i, atoms in enumerate(frames):
        missing = sorted(set(int(z) for z in atoms.numbers) - known)
        if missing:
            raise BackboneError(f"frame {i} has elements {missing} the model does not know")
        with torch_tools.default_dtype(dtype):  # positions at the model's precision
            config = mace_data.config_from_atoms(atoms, key_specification=keyspec,
                                                 head_name=head)
            data.append(mace_data.AtomicData.from_config(
                config, z_table=z_table, cutoff=float(model.r_max), heads=heads))
    return torch_geometric.dataloader.DataLoader(data, batch_size=batch_size, shuffle=False,
                                                 drop_last=False)


def predict(model: torch.nn.Module, frames: Sequence[Atoms], batch_size: int = 16,
            device: str = "cpu", head: str | None = None) -> list[Prediction]:
    """Energies (eV), forces (eV/A) and last-layer invariant embeddings for each frame, from
    readout ``head`` (default :func:`campaign_head`; the embeddings are the shared body's)."""
    dtype = next(model.parameters()).dtype
    out: list[Prediction] = []
    if not frames:
        return out
    for batch in _batches(model, frames, batch_size, head):
        batch = batch.to(device)
        d = batch.to_dict()
        for k, v in d.items():
            if torch.is_tensor(v) and v.is_floating_point():
                d[k] = v.to(dtype)
        res = model(d, compute_force=True, training=False)
        feats = _last_layer_invariants(model, res["node_feats"]).detach().cpu().numpy()
        every = res["node_feats"][:, _scalar_columns(model)[1]].detach().cpu().numpy()
        forces = res["forces"].detach().cpu().numpy()
        energy = res["energy"].detach().cpu().numpy()
        ptr = batch.ptr.cpu().numpy()
        for g in range(len(ptr) - 1):
            sl = slice(ptr[g], ptr[g + 1])
            out.append(Prediction(float(energy[g]), forces[sl].astype(np.float64),
                                  feats[sl].astype(np.float32), every[sl].astype(np.float32)))
    return out


class MaceCalculator(Calculator):
    """ASE calculator on a loaded MACE model; also keeps the last-layer embeddings.

    ``results["node_features"]`` is (N, F) after each calculation, from the same forward pass
    as energy (eV) and forces (eV/A), so scoring a frame with PROBE costs no extra pass.
    """

    implemented_properties = ["energy", "free_energy", "forces", "node_features",
                              "node_features_all"]

    def __init__(self, model: torch.nn.Module, device: str = "cpu", **kwargs: Any):
        super().__init__(**kwargs)
        self.model = model
        self.device = device

    def calculate(self, atoms: Atoms | None = None, properties: Any = None,
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        (p,) = predict(self.model, [self.atoms], batch_size=1, device=self.device)
        self.results = {"energy": p.energy, "free_energy": p.energy, "forces": p.forces,
                        "node_features": p.features, "node_features_all": p.features_all}


# ---- head committees: readout heads on one shared, frozen body --------------------------------

#: The body of a MACE model: what ``--freeze 6`` keeps fixed (embedding, interactions, products).
_BODY = ("node_embedding", "radial_embedding", "spherical_harmonics", "interactions",
         "products")


def head_start_model(backbone: str | Path, out_path: str | Path, seed: int) -> str:
    """The start file of one head-committee member: ``backbone`` reduced to its campaign head
    (mace-torch's ``remove_pt_head`` for a multihead replay model), readout weights drawn
    afresh from N(0, 1) with ``seed`` (e3nn's own initialisation), body untouched. A
    readout-only fine-tune (``freeze`` 6) from it trains a new head on the same body."""
    model = torch.load(backbone, map_location="cpu", weights_only=False)
    heads = model_heads(model)
    if len(heads) > 1:
        from mace.tools.scripts_utils import remove_pt_head

        model = remove_pt_head(model, campaign_head(model))
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in model.readouts.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    for p in model.parameters():
        p.requires_grad_(True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        torch.save(model, tmp)
    return str(out_path)


def shares_body(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """True if two MACE models have the same body weights (and elements, cutoff), so their
    heads can read one forward pass."""
    if (list(a.atomic_numbers) != list(b.atomic_numbers) or float(a.r_max) != float(b.r_max)
            or hasattr(a, "pair_repulsion") or hasattr(b, "pair_repulsion")
            or hasattr(a, "joint_embedding") or hasattr(b, "joint_embedding")):
        return False
    for name in _BODY:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        if sa.keys() != sb.keys() or any(not torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


def committee_predict(models: Sequence[torch.nn.Module], frames: Sequence[Atoms],
                      batch_size: int = 16, device: str = "cpu", forces: bool | str = True
                      ) -> list[list[tuple[float, np.ndarray | None]]]:
    """(energy eV, forces eV/A or None) of every member on every frame, [member][frame].

    Members that share the first member's body (:func:`shares_body`, a head committee) read
    one body pass, and all their readouts run as a few fused matrix products
    (:class:`FusedReadouts`); each member whose forces are wanted (``forces``: True every
    member's, False none, "first" the first member's only, as an MD step needs) adds one
    backward pass through the body. Other members run a pass of their own. Which members
    share, and their fused readouts, are worked out once per set of model objects (the
    weights are taken as fixed from then on)."""
    shared, fused = _committee_plan(models)
    out: list[list[Any]] = [[] for _ in models]
    for k, m in enumerate(models):
        if k not in shared:
            out[k] = [(p.energy, p.forces if forces is True else None) for p in
                      predict(m, frames, batch_size, device)]
    if not frames:
        return out
    body = models[0]
    dtype = next(body.parameters()).dtype
    wanted = [j for j, k in enumerate(shared) if forces is True or (forces == "first" and k == 0)]
    for batch in _batches(body, frames, batch_size):
        batch = batch.to(device)
        d = batch.to_dict()
        for key, v in d.items():
            if torch.is_tensor(v) and v.is_floating_point():
                d[key] = v.to(dtype)
        feats, n_graphs = _body_features(body, d)
        energies = fused(feats, d, n_graphs)  # (n_graphs, n_shared)
        pos = d["positions"]
        ptr = batch.ptr.cpu().numpy()
        grads = {}
        for j in wanted:
            (g,) = torch.autograd.grad(energies[:, j].sum(), pos, retain_graph=j != wanted[-1])
            grads[j] = (-g).detach().cpu().numpy().astype(np.float64)
        ev = energies.detach().cpu().numpy()
        for j, k in enumerate(shared):
            f = grads.get(j)
            for gi in range(len(ptr) - 1):
                out[k].append((float(ev[gi, j]),
                               None if f is None else f[ptr[gi]:ptr[gi + 1]]))
    return out


_PLANS: dict[tuple[int, ...], tuple[list[Any], tuple[list[int], FusedReadouts]]] = {}


def _committee_plan(models: Sequence[torch.nn.Module]) -> tuple[list[int], FusedReadouts]:
    """(indices of the members that read the first member's body, their fused readouts),
    cached per set of model objects."""
    import weakref

    key = tuple(id(m) for m in models)
    hit = _PLANS.get(key)
    if hit is not None and all(r() is m for r, m in zip(hit[0], models)):
        return hit[1]
    shared = [k for k, m in enumerate(models) if k == 0 or shares_body(models[0], m)]
    fused = FusedReadouts.build([models[k] for k in shared])
    if fused is None:  # a readout of a kind not fused: every member runs its own pass
        shared = [0]
        fused = FusedReadouts.build([models[0]], exact=False)
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[key] = ([weakref.ref(m) for m in models], (shared, fused))
    return shared, fused


def _body_features(body: torch.nn.Module, data: dict[str, Any]
                   ) -> tuple[list[torch.Tensor], int]:
    """(node features after each interaction of a MACE body, number of graphs): mace-torch's
    ScaleShiftMACE forward up to its readouts."""
    from mace.modules.utils import prepare_graph

    ctx = prepare_graph(data)
    node_feats = body.node_embedding(data["node_attrs"])
    edge_attrs = body.spherical_harmonics(ctx.vectors)
    edge_feats, cutoff = body.radial_embedding(ctx.lengths, data["node_attrs"],
                                               data["edge_index"], body.atomic_numbers)
    feats: list[torch.Tensor] = []
    for i, (interaction, product) in enumerate(zip(body.interactions, body.products)):
        node_feats, sc = interaction(node_attrs=data["node_attrs"], node_feats=node_feats,
                                     edge_attrs=edge_attrs, edge_feats=edge_feats,
                                     edge_index=data["edge_index"], cutoff=cutoff,
                                     first_layer=(i == 0), lammps_class=None,
                                     lammps_natoms=(0, 0))
        node_feats = product(node_feats=node_feats, sc=sc, node_attrs=data["node_attrs"])
        feats.append(node_feats)
    return feats, int(ctx.num_graphs)


class FusedReadouts:
    """The campaign-head energy readouts of M models on one shared body, as matrices: per
    body layer j, a linear part ``x_j @ L_j`` (d_j, M) and a hidden layer
    ``act(x_j @ W1_j + b1_j) @ W2_j`` with W2 block-diagonal (one block per member), then
    each member's scale, shift and atomic reference energies E0 (n_elements, M), eV.

    The matrices are read off mace-torch's readout modules by feeding them unit vectors, so
    they are exact for its ``LinearReadoutBlock`` and ``NonLinearReadoutBlock`` (whose hidden
    units are masked to the head, as mace-torch's ``mask_head`` does)."""

    def __init__(self) -> None:
        self.layers: dict[int, dict[str, Any]] = {}
        self.e0 = self.scale = self.shift = None

    @classmethod
    def build(cls, models: Sequence[torch.nn.Module], exact: bool = True
              ) -> FusedReadouts | None:
        """None if a readout is of a kind this does not know (``exact``), else the fusion."""
        from mace.modules.blocks import LinearReadoutBlock, NonLinearReadoutBlock

        self = cls()
        body = models[0]
        dtype = next(body.parameters()).dtype
        dev = next(body.parameters()).device
        n_layers = len(body.interactions)
        n_el = len(body.atomic_numbers)
        e0, scale, shift = [], [], []
        parts: dict[int, list[tuple[int, str, Any]]] = {}
        with torch.no_grad():
            for k, m in enumerate(models):
                heads = model_heads(m)
                h = heads.index(campaign_head(m))
                e0.append(m.atomic_energies_fn(torch.eye(n_el, dtype=dtype, device=dev))[:, h])
                scale.append(torch.atleast_1d(m.scale_shift.scale)[h])
                shift.append(torch.atleast_1d(m.scale_shift.shift)[h])
                for i, r in enumerate(m.readouts):
                    j = n_layers - 1 if len(m.readouts) == 1 else i
                    if isinstance(r, LinearReadoutBlock):
                        parts.setdefault(j, []).append((k, "lin", _affine(r.linear, dtype,
                                                                          dev)[h]))
                    elif isinstance(r, NonLinearReadoutBlock) and _scalar_act(r) is not None:
                        w1, b1 = _affine(r.linear_1, dtype, dev, full=True)
                        w2, b2 = _affine(r.linear_2, dtype, dev, full=True)
                        n_heads = getattr(r, "num_heads", 1)
                        width = w1.shape[1] // n_heads if n_heads > 1 else w1.shape[1]
                        cols = slice(h * width, (h + 1) * width) if n_heads > 1 else slice(None)
                        parts.setdefault(j, []).append(
                            (k, "mlp", (w1[:, cols], b1[cols], w2[cols, h], b2[h],
                                        _scalar_act(r))))
                    elif exact:
                        return None
        n = len(models)
        self.e0 = torch.stack(e0, dim=1)  # (n_elements, M)
        self.scale, self.shift = torch.stack(scale), torch.stack(shift)  # (M,)
        for j, items in parts.items():
            layer: dict[str, Any] = {"bias": torch.zeros(n, dtype=dtype, device=dev)}
            lin = [(k, v) for k, kind, v in items if kind == "lin"]
            if lin:
                d = lin[0][1][0].shape[0]
                lw = torch.zeros(d, n, dtype=dtype, device=dev)
                for k, (w, b) in lin:
                    lw[:, k] += w
                    layer["bias"][k] += b
                layer["lin"] = lw
            mlp = [(k, v) for k, kind, v in items if kind == "mlp"]
            if mlp:
                w1 = torch.cat([v[0] for _, v in mlp], dim=1)
                b1 = torch.cat([v[1] for _, v in mlp])
                w2 = torch.zeros(w1.shape[1], n, dtype=dtype, device=dev)
                acts, start = [], 0
                for k, (a, _, b2w, b2, act) in mlp:
                    w2[start:start + a.shape[1], k] = b2w
                    layer["bias"][k] += b2
                    acts.append((start, start + a.shape[1], act))
                    start += a.shape[1]
                layer["mlp"] = (w1, b1, w2, acts)
            self.layers[j] = layer
        return self

    def __call__(self, feats: list[torch.Tensor], data: dict[str, Any], n_graphs: int
                 ) -> torch.Tensor:
        """Total energies (n_graphs, M), eV, of every member from the body's features."""
        from mace.tools.scatter import scatter_sum

        node_e = 0.0
        for j, layer in self.layers.items():
            x = feats[j]
            e = layer["bias"]
            if "lin" in layer:
                e = e + x[:, :layer["lin"].shape[0]] @ layer["lin"]
            if "mlp" in layer:
                w1, b1, w2, acts = layer["mlp"]
                hidden = x[:, :w1.shape[0]] @ w1 + b1
                if len(acts) == 1 or all(a is acts[0][2] for _, _, a in acts):
                    hidden = acts[0][2](hidden)
                else:
                    hidden = torch.cat([a(hidden[:, s:t]) for s, t, a in acts], dim=1)
                e = e + hidden @ w2
            node_e = node_e + e
        inter = self.scale * node_e + self.shift  # (n_atoms, M)
        atom_e0 = data["node_attrs"] @ self.e0
        return scatter_sum(atom_e0 + inter, index=data["batch"], dim=0, dim_size=n_graphs)


def _affine(linear: torch.nn.Module, dtype: Any, device: Any, full: bool = False) -> Any:
    """(W (d_in, d_out), b (d_out,)) of an e3nn Linear whose outputs are scalars, read off by
    feeding it unit vectors; without ``full``, a list over outputs of (W[:, o], b[o])."""
    d_in = linear.irreps_in.dim
    b = linear(torch.zeros(1, d_in, dtype=dtype, device=device))[0]
    w = linear(torch.eye(d_in, dtype=dtype, device=device)) - b
    if full:
        return w, b
    return [(w[:, o], b[o]) for o in range(w.shape[1])]


def _scalar_act(readout: torch.nn.Module) -> Any:
    """The elementwise activation of a readout whose hidden units are all scalars, else None."""
    act = getattr(readout, "non_linearity", None)
    irreps = getattr(act, "irreps_in", None)
    if irreps is None or len(act.acts) != 1 or any(ir.l != 0 or ir.p != 1 for _, ir in irreps):
        return None
    return act.acts[0]
