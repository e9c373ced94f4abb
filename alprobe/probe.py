"""PROBE: a classifier on frozen per-atom embeddings of the backbone that outputs P(reliable).

After arXiv 2605.00640 (see PROBE.md): an atom encoder MLP, one multi-head self-attention
layer over the atoms of a structure (residual + LayerNorm), pooling of masked mean || masked
max || standardised predicted energy || standardised atom count, and a classification head.
What alprobe does differently, each an option measured in ``scripts/bench_probe_variants.py``:

* every input is standardised with statistics of the training set;
* ``members`` heads with different seeds are one module with stacked weights (an ensemble
  dimension M in every tensor), trained together with independent losses, gradient clipping and
  early stopping, and scored in one batched forward pass (cheap enough for every MD step);
* the width follows the data (``width: auto``, :func:`auto_width`) instead of a fixed 0.57 M
  parameters;
* ``target: atom`` trains an atom-level head on per-atom force errors (each atom one example;
  ten ethanol frames are ninety), and a structure's trust is pooled from its atoms' (``atom_pool``
  min or mean); its atom importance is then the model's own per-atom unreliability;
* ``use_energy: false`` leaves the predicted energy out of the pooling vector;
* ``features: all`` reads the invariant features of every interaction layer, not only the last
  (the caller passes them: see backbone.Prediction.features_all).

Checkpoints hold only tensors and plain numbers, so they load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import AlprobeError

__all__ = ["ProbeEnsemble", "ProbeError", "ProbeModel", "auto_width", "load_probe",
           "reliable_labels", "train_probe"]


class ProbeError(AlprobeError):
    """The probe cannot be trained on the data given (the message says why)."""


def auto_width(n_examples: int) -> int:
    """Hidden width for ``n_examples`` training examples (structures, or atoms for the atom
    target): the power of two nearest 8 sqrt(n), between 32 and 256 (about 15 k parameters at
    40 examples, 0.3 M at 1000 and more)."""
    w = 8.0 * math.sqrt(max(1, n_examples))
    return int(2 ** round(math.log2(min(256.0, max(32.0, w)))))


# ---------------------------------------------------------------------------- ensemble layers

class _Linear(nn.Module):
    """M independent linear maps: (N, d_in) shared or (M, N, d_in) -> (M, N, d_out)."""

    def __init__(self, m: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(m, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(m, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return torch.matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class _LayerNorm(nn.Module):
    """LayerNorm over the last dimension with per-member affine parameters: (M, N, d)."""

    def __init__(self, m: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(m, 1, d))
        self.bias = nn.Parameter(torch.zeros(m, 1, d))
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.d,)) * self.weight + self.bias


class ProbeEnsemble(nn.Module):
    """M PROBE heads with stacked weights.

    forward(x (B, L, D) or (M, B, L, D), mask (B, L) or (M, B, L) True = atom, extra (B, E) or
    (M, B, E)) -> logits: (M, B, 2) for ``target="structure"``, (M, B, L) for ``"atom"`` (the
    per-atom logit of "reliable"). ``temperature`` (M,) divides the logits (1 unless fitted).
    """

    def __init__(self, n_features: int, *, members: int = 3, width: int = 128,
                 attention: bool = True, n_extra: int = 2, target: str = "structure",
                 dropout: float = 0.1):
        super().__init__()
        if target not in ("structure", "atom"):
            raise ValueError(f"unknown probe target {target!r}")
        m, h = members, width
        self.members, self.width, self.use_attention = m, h, attention
        self.n_features, self.n_extra, self.target, self.dropout = n_features, n_extra, target, dropout
        self.heads = max(1, h // 8)
        self.enc1, self.norm1 = _Linear(m, n_features, h), _LayerNorm(m, h)
        self.enc2, self.norm2 = _Linear(m, h, h), _LayerNorm(m, h)
        if attention:
            self.qkv, self.out, self.norm3 = _Linear(m, h, 3 * h), _Linear(m, h, h), _LayerNorm(m, h)
        if target == "structure":  # mean || max pooling (mean only in the ablation)
            self.pool = _Linear(m, (2 if attention else 1) * h + n_extra, h)
            self.head1, self.head_norm = _Linear(m, h, h // 2), _LayerNorm(m, h // 2)
            self.head2 = _Linear(m, h // 2, 2)
        else:
            self.head1, self.head_norm = _Linear(m, h + n_extra, h // 2), _LayerNorm(m, h // 2)
            self.head2 = _Linear(m, h // 2, 1)
        self.register_buffer("temperature", torch.ones(m))

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "members": self.members, "width": self.width,
                "attention": self.use_attention, "n_extra": self.n_extra, "target": self.target,
                "dropout": self.dropout}

    def _encode(self, x: torch.Tensor, mask: torch.Tensor, want_attention: bool = False):
        m = self.members
        b, n_atoms = mask.shape[-2], mask.shape[-1]
        if mask.dim() == 2:
            mask = mask.expand(m, b, n_atoms)
        flat = x.reshape(-1, x.shape[-1]) if x.dim() == 3 else x.reshape(m, -1, x.shape[-1])
        h = F.dropout(F.gelu(self.norm1(self.enc1(flat))), self.dropout, self.training)
        h = self.norm2(self.enc2(h))  # (M, B*L, H)
        w = None
        if self.use_attention:
            q, k, v = self.qkv(h).reshape(m, b, n_atoms, 3, self.heads, -1).unbind(3)
            q, k, v = (t.transpose(2, 3) for t in (q, k, v))  # (M, B, heads, L, dh)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(~mask[:, :, None, None, :], float("-inf"))
            w = F.dropout(torch.softmax(scores, -1), self.dropout, self.training)
            a = torch.matmul(w, v).transpose(2, 3).reshape(m, b * n_atoms, self.width)
            h = self.norm3(h + self.out(a))
        return h.reshape(m, b, n_atoms, self.width), mask, (w if want_attention else None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor,
                return_attention: bool = False) -> Any:
        h, mask, w = self._encode(x, mask, return_attention)
        m, b = h.shape[0], h.shape[1]
        if extra.dim() == 2:
            extra = extra.expand(m, *extra.shape)
        if self.target == "structure":
            mk = mask.unsqueeze(-1).to(h.dtype)
            mean = (h * mk).sum(2) / mk.sum(2).clamp(min=1.0)
            parts = [mean, extra]
            if self.use_attention:
                parts.insert(1, h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(2).values)
            z = F.gelu(self.pool(torch.cat(parts, -1)))
            z = F.dropout(z, self.dropout, self.training)
            z = F.gelu(self.head_norm(self.head1(z)))
            logits = self.head2(z) / self.temperature[:, None, None]
        else:
            per_atom = torch.cat([h, extra[:, :, None, :].expand(-1, -1, h.shape[2], -1)], -1)
            z = F.gelu(self.head_norm(self.head1(per_atom.reshape(m, -1, per_atom.shape[-1]))))
            logits = self.head2(z).reshape(m, b, -1) / self.temperature[:, None, None]
        return (logits, w) if return_attention else logits


# ------------------------------------------------------------------------------ the model

def _pad(features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(f) for f in features)
    d = features[0].shape[1]
    x = torch.zeros(len(features), n, d)
    mask = torch.zeros(len(features), n, dtype=torch.bool)
    for i, f in enumerate(features):
        x[i, : len(f)] = torch.as_tensor(f, dtype=torch.float32)
        mask[i, : len(f)] = True
    return x, mask


@dataclass
class ProbeModel:
    """Trained PROBE heads plus the statistics that standardise their inputs."""

    net: ProbeEnsemble
    stats: dict[str, Any]  # feat_mean (D,), feat_std (D,), energy/n mean and std
    meta: dict[str, Any]  # error kind, threshold, options, training ids, history ...
    #: the heads traced and frozen by TorchScript for inference (built at the first score;
    #: False when tracing is not possible here): a walker scores one frame at a time, and
    #: the traced graph spends a third of the eager forward's Python overhead
    _traced: Any = field(default=None, repr=False, compare=False)

    def _p_reliable(self, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor
                    ) -> torch.Tensor:
        """P(reliable) per structure averaged over the heads, (B,)."""
        if self.net.training:
            self.net.eval()
        if self._traced is None:
            self._traced = _trace(_Scorer(self.net, self.meta.get("atom_pool", "min")).eval(),
                                  x, mask, extra)
        if self._traced is not False:
            return self._traced(x, mask, extra)
        return self._reliable(self.net(x, mask, extra), mask).mean(0)

    @property
    def nets(self) -> list[int]:
        """One entry per head (the heads live stacked in ``net``)."""
        return list(range(self.net.members))

    @property
    def features(self) -> str:
        """Which backbone features the probe reads: "last" (layer) or "all" (layers)."""
        return self.meta.get("features", "last")

    def _inputs(self, features: Sequence[np.ndarray], energies: Sequence[float]):
        s = self.stats
        feats = [(np.asarray(f, np.float32) - s["feat_mean"]) / s["feat_std"] for f in features]
        x, mask = _pad(feats)
        return x, mask, torch.as_tensor(_extra(features, energies, s, self.meta),
                                        dtype=torch.float32)

    def _reliable(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(reliable) per member and structure, (M, B)."""
        return _reliable(logits, mask, self.net.target, self.meta.get("atom_pool", "min"))

    @torch.inference_mode()
    def score(self, features: Sequence[np.ndarray], energies: Sequence[float],
              batch_size: int = 256) -> np.ndarray:
        """P(reliable) per structure, (B,), averaged over the heads (one batched pass).

        features: per-structure (N_i, D) backbone embeddings; energies: predicted totals (eV).
        """
        out = []
        for i in range(0, len(features), batch_size):
            x, mask, extra = self._inputs(features[i : i + batch_size], energies[i : i + batch_size])
            out.append(self._p_reliable(x, mask, extra).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    @torch.no_grad()
    def score_and_importance(self, features: Sequence[np.ndarray], energies: Sequence[float]
                             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """P(reliable) per structure (B,) and per-atom importance (summing to 1 per
        structure) from one forward pass: for the structure target the attention each atom
        receives (averaged over heads and members), for the atom target the model's own
        per-atom unreliability 1 - P(atom reliable)."""
        self.net.eval()
        x, mask, extra = self._inputs(features, energies)
        if self.net.target == "atom":
            logits = self.net(x, mask, extra)
            w = (1.0 - torch.sigmoid(logits)).mean(0) * mask
        else:
            if not self.net.use_attention:
                raise ProbeError("the mean-pool ablation has no attention, hence no atom "
                                 "importance")
            logits, att = self.net(x, mask, extra, return_attention=True)  # (M, B, h, L, L)
            w = (att.mean(2) * mask[None, :, :, None]).sum(2).mean(0) * mask
        w = w / w.sum(1, keepdim=True).clamp(min=1e-12)
        p = self._reliable(logits, mask).mean(0).numpy()
        return p, [w[i, : int(mask[i].sum())].numpy() for i in range(len(features))]

    def importance(self, features: Sequence[np.ndarray], energies: Sequence[float]) -> list[np.ndarray]:
        """Per-atom importance (see score_and_importance)."""
        return self.score_and_importance(features, energies)[1]

    def save(self, path: str | Path) -> None:
        """Write a checkpoint atomically (tensors and plain values only)."""
        from .files import atomic_path

        blob = {"config": self.net.config(), "state": self.net.state_dict(),
                "stats": {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v)
                          for k, v in self.stats.items()},
                "meta": json.loads(json.dumps(self.meta, default=_plain))}
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)


def _reliable(logits: torch.Tensor, mask: torch.Tensor, target: str, atom_pool: str
              ) -> torch.Tensor:
    """P(reliable) per member and structure, (M, B), from the heads' logits."""
    if target == "structure":
        return torch.softmax(logits, -1)[..., 1]
    p = torch.sigmoid(logits).masked_fill(~mask, float("nan"))
    if atom_pool == "min":
        return torch.nan_to_num(p, nan=1.0).min(-1).values
    return torch.nanmean(p, -1)


class _Scorer(nn.Module):
    """The heads' mean P(reliable) per structure, (B,): the whole inference path as one
    module, so that it can be traced."""

    def __init__(self, net: ProbeEnsemble, atom_pool: str):
        super().__init__()
        self.net, self.atom_pool = net, atom_pool

    def forward(self, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        logits = self.net(x, mask, extra)
        return _reliable(logits, mask, self.net.target, self.atom_pool).mean(0)


def _trace(net: nn.Module, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor) -> Any:
    """``net`` (in eval mode) traced on one example and frozen, if it gives the eager
    forward's output on that example and on a smaller one (any number of atoms and
    structures); else False (the eager forward is used)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(net, (x, mask, extra), check_trace=False))
        small = (x[:, : max(1, x.shape[1] - 1)].clone(),
                 mask[:, : max(1, x.shape[1] - 1)].clone(), extra)
        small[1][:, 0] = True
        for args in ((x, mask, extra), small):
            if not torch.allclose(traced(*args), net(*args), atol=1e-5, rtol=1e-4):
                return False
        return traced
    except Exception:  # noqa: BLE001 - an exotic torch build: the eager forward is fine
        return False


def _extra(features: Sequence[np.ndarray], energies: Sequence[float], s: dict[str, Any],
           meta: dict[str, Any]) -> np.ndarray:
    """The standardised structure-level inputs (B, E): predicted energy (unless
    use_energy is off) and atom count."""
    n = np.array([len(f) for f in features], dtype=np.float64)
    cols = [(n - s["n_mean"]) / s["n_std"]]
    if meta.get("use_energy", True):
        e = np.asarray(energies, dtype=np.float64)
        cols.insert(0, (e - s["energy_mean"]) / s["energy_std"])
    return np.stack(cols, axis=1)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic | np.ndarray):
        return v.tolist()
    raise TypeError(f"probe metadata value {v!r} is not JSON-like")


def load_probe(path: str | Path) -> ProbeModel:
    """Load a checkpoint written by ProbeModel.save (safe: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"probe checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds
        # never pass on torch's advice to retry with weights_only=False: that runs pickled code
        why = ("it holds Python objects other than tensors and numbers, which alprobe never "
               "unpickles" if "weights_only" in str(exc) or "Unsupported global" in str(exc)
               else f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
        raise ProbeError(f"{path} is not a probe checkpoint written by alprobe: {why}") from None
    missing = [k for k in ("config", "state", "stats", "meta")
               if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise ProbeError(f"{path} is not a probe checkpoint written by alprobe (no "
                         f"{', '.join(repr(k) for k in missing)} entr{'y' if len(missing) == 1 else 'ies'})")
    try:
        net = ProbeEnsemble(**blob["config"])
        net.load_state_dict(blob["state"])
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(f"{path} is a damaged probe checkpoint: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    net.eval()
    stats = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in blob["stats"].items()}
    return ProbeModel(net, stats, blob["meta"])


def reliable_labels(errors: np.ndarray, threshold: str, value: float) -> tuple[np.ndarray, float]:
    """1 = reliable (error <= tau), 0 = unreliable; tau is absolute or a quantile of ``errors``."""
    errors = np.asarray(errors, dtype=float)
    tau = float(np.quantile(errors, value)) if threshold == "quantile" else float(value)
    return (errors <= tau).astype(np.int64), tau


def _split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices; each class gives at least one validation item."""
    train, val = [], []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(fraction * len(idx))))
        val += list(idx[:k])
        train += list(idx[k:])
    return np.array(sorted(train)), np.array(sorted(val))


# ------------------------------------------------------------------------------- training

def _losses(net: ProbeEnsemble, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor,
            y: torch.Tensor, size_w: torch.Tensor, class_w: torch.Tensor) -> torch.Tensor:
    """Per-member loss (M,): class-weighted cross-entropy per structure divided by sqrt(N)
    (clamped at 1), or per-atom binary cross-entropy (atom target), over the batch."""
    logits = net(x, mask, extra)
    if net.target == "structure":
        ce = F.cross_entropy(logits.reshape(-1, 2), y.reshape(-1), reduction="none")
        w = class_w[y] * size_w
        return (ce.reshape(y.shape) * w).sum(-1) / class_w[y].sum(-1)
    m = mask if mask.dim() == 3 else mask.expand(net.members, *mask.shape)
    bce = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")
    w = class_w[y] * m
    return (bce * w).sum((-1, -2)) / w.sum((-1, -2)).clamp(min=1e-12)


def _clip_per_member(net: ProbeEnsemble, max_norm: float = 1.0) -> None:
    """Gradient clipping to ``max_norm`` for each member separately (members never interact)."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.reshape(-1, *([1] * (g.dim() - 1))))


def _fit(net: ProbeEnsemble, data: tuple, y: np.ndarray, n_atoms: np.ndarray, tr: np.ndarray,
         va: np.ndarray, cfg: Any, seed: int) -> list[dict[str, Any]]:
    """Train every member on ``tr`` with early stopping on its own validation loss (``va``);
    each member keeps its best-validation weights. Returns one summary per member."""
    x, mask, extra = data
    m = net.members
    yt = torch.as_tensor(y)
    pos = y[tr] if net.target == "structure" else y[tr][mask[tr].numpy()]
    counts = np.bincount(pos.ravel(), minlength=2).astype(float)
    class_w = torch.as_tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)
    size_w = torch.as_tensor(1.0 / np.maximum(1.0, np.sqrt(n_atoms)), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.9, patience=5)
    gen = torch.Generator().manual_seed(seed)
    tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
    best = torch.full((m,), float("inf"))
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    bad = torch.zeros(m, dtype=torch.long)
    stopped_at = [cfg.epochs] * m
    epoch = 0
    for epoch in range(cfg.epochs):
        net.train()
        # each member sees its own order of the training structures
        perms = torch.stack([tr_t[torch.randperm(len(tr_t), generator=gen)] for _ in range(m)])
        for i in range(0, len(tr_t), cfg.batch_size):
            idx = perms[:, i : i + cfg.batch_size]  # (M, b)
            opt.zero_grad()
            loss = _losses(net, x[idx], mask[idx], extra[idx], yt[idx], size_w[idx], class_w)
            loss.sum().backward()
            _clip_per_member(net)
            opt.step()
        net.eval()
        with torch.no_grad():
            val = _losses(net, x[va_t], mask[va_t], extra[va_t], yt[va_t].expand(m, *yt[va_t].shape),
                          size_w[va_t].expand(m, -1), class_w)
        sched.step(float(val.mean()))
        improved = val < best - 1e-6
        if improved.any():
            state = net.state_dict()
            for k, v in state.items():
                if v.dim() and v.shape[0] == m:
                    best_state[k][improved] = v[improved]
        best = torch.where(improved, val, best)
        bad = torch.where(improved, torch.zeros_like(bad), bad + 1)
        for k in range(m):
            if bad[k] == cfg.patience and stopped_at[k] == cfg.epochs:
                stopped_at[k] = epoch + 1
        if bool((bad >= cfg.patience).all()):
            break
    net.load_state_dict(best_state)
    net.eval()
    return [{"best_val_loss": float(best[k]), "epochs": min(stopped_at[k], epoch + 1),
             "temperature": 1.0} for k in range(m)]


def _fit_temperature(net: ProbeEnsemble, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor,
                     y: torch.Tensor) -> list[float]:
    """Per member, the temperature T > 0 minimising the NLL of its logits / T on held-out
    structures (structure target)."""
    with torch.no_grad():
        logits = net(x, mask, extra) * net.temperature[:, None, None]
    temps = []
    for k in range(net.members):
        log_t = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

        def closure(k: int = k) -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(logits[k] / log_t.exp(), y)
            loss.backward()
            return loss

        opt.step(closure)
        temps.append(float(log_t.detach().exp().clamp(0.05, 20.0)))
    net.temperature.copy_(torch.tensor(temps))
    return temps


def train_probe(features: Sequence[np.ndarray], energies: Sequence[float], errors: Sequence[float],
                cfg: Any, *, seed: int, meta: dict[str, Any] | None = None,
                atom_errors: Sequence[np.ndarray] | None = None) -> ProbeModel:
    """Train PROBE heads on out-of-sample backbone errors.

    features: per-structure (N_i, D) embeddings of the frozen backbone; energies: its predicted
    totals (eV); errors: its true errors on those structures (unit of ``cfg.error``);
    atom_errors: per structure, each atom's force-error norm |F_pred - F_ref| (eV/A), needed for
    ``cfg.target == "atom"``. ``cfg`` is a ProbeConfig. Raises ProbeError when either class has
    fewer than two structures (atoms, for the atom target).
    """
    t0 = time.perf_counter()
    errors = np.asarray(errors, dtype=float)
    target = getattr(cfg, "target", "structure")
    y_struct, tau = reliable_labels(errors, cfg.threshold, cfg.threshold_value)
    counts = np.bincount(y_struct, minlength=2)
    n = np.array([len(f) for f in features], dtype=np.float64)
    if target == "atom":
        if atom_errors is None:
            raise ProbeError("the atom target needs each atom's force error")
        flat = np.concatenate([np.asarray(a, dtype=float) for a in atom_errors])
        # an atom is reliable when its error norm / sqrt(3) (its share of a force RMSE) is at
        # most the structure threshold; a quantile threshold is taken over the atoms
        tau_atom = (float(np.quantile(flat, cfg.threshold_value)) if cfg.threshold == "quantile"
                    else float(cfg.threshold_value) * math.sqrt(3.0))
        atom_counts = np.bincount((flat <= tau_atom).astype(int), minlength=2)
        if atom_counts.min() < 2:
            raise ProbeError(f"need at least 2 reliable and 2 unreliable atoms, got "
                             f"{atom_counts[1]} / {atom_counts[0]} (atom tau={tau_atom:.4g})")
    elif counts.min() < 2:
        raise ProbeError(f"need at least 2 reliable and 2 unreliable structures, got "
                         f"{counts[1]} reliable / {counts[0]} unreliable (tau={tau:.4g})")
    allf = np.concatenate([np.asarray(f, np.float32) for f in features])
    e = np.asarray(energies, dtype=np.float64)
    stats = {"feat_mean": allf.mean(0), "feat_std": allf.std(0) + 1e-6,
             "energy_mean": float(e.mean()), "energy_std": float(e.std() + 1e-6),
             "n_mean": float(n.mean()), "n_std": float(n.std() + 1.0)}
    opts = {"target": target, "use_energy": bool(getattr(cfg, "use_energy", True)),
            "atom_pool": getattr(cfg, "atom_pool", "min"),
            "features": getattr(cfg, "features", "last")}
    model = ProbeModel(None, stats, opts)  # type: ignore[arg-type]
    x, mask, extra = model._inputs(features, energies)
    rng = np.random.default_rng(seed)
    tr, va = _split(y_struct, cfg.validation_fraction, rng) if counts.min() >= 2 else \
        _random_split(len(errors), cfg.validation_fraction, rng)
    if target == "atom":
        y = np.zeros(mask.shape, dtype=np.int64)
        for i, a in enumerate(atom_errors):
            y[i, : len(a)] = (np.asarray(a) <= tau_atom).astype(int)
        n_examples = int(mask[tr].sum())
    else:
        y = y_struct
        n_examples = len(tr)
    width = auto_width(n_examples) if getattr(cfg, "width", "auto") == "auto" else int(cfg.width)
    with torch.random.fork_rng():  # seeded here, global RNG state left untouched
        torch.manual_seed(seed)
        net = ProbeEnsemble(x.shape[-1], members=cfg.members, width=width,
                            attention=cfg.attention, n_extra=extra.shape[1], target=target)
        fits = _fit(net, (x, mask, extra), y, n, tr, va, cfg, seed)
    if cfg.temperature_scaling and target == "structure":
        for f, t in zip(fits, _fit_temperature(net, x[va], mask[va], extra[va],
                                               torch.as_tensor(y[va]))):
            f["temperature"] = t
    model.net = net
    model.meta = {
        **(meta or {}), **opts,
        "error": cfg.error, "threshold": tau, "threshold_rule": cfg.threshold,
        "n_train": int(len(tr)), "n_val": int(len(va)), "n_reliable": int(counts[1]),
        "n_examples": n_examples, "width": width,
        "n_parameters": int(sum(p.numel() for p in net.parameters()) // cfg.members),
        "members": fits, "wall_s": time.perf_counter() - t0,
    }
    if target == "atom":
        model.meta["atom_threshold"] = tau_atom
    return model


def _random_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.permutation(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(idx[k:]), np.sort(idx[:k])
