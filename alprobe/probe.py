"""PROBE: an attention classifier on frozen per-atom embeddings that outputs P(reliable).

Architecture as in PROBE.md (arXiv 2605.00640): atom encoder MLP D->256->128->256, one
multi-head self-attention layer (32 heads x 8 dims, residual + LayerNorm), pooling of masked
mean || masked max || standardised predicted energy || standardised atom count -> 256, and a
head 256->128->32->2. Unlike the reference, all inputs are standardised with statistics of the
training set, and several heads with different seeds can be averaged (``members``).

Checkpoints hold only tensors and plain numbers, so they load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import AlprobeError

__all__ = ["ProbeError", "ProbeModel", "ProbeNet", "train_probe", "load_probe", "reliable_labels"]


class ProbeError(AlprobeError):
    """The probe cannot be trained on the data given (the message says why)."""


def _mlp(dims: Sequence[int], dropout: float, last_plain: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(a, b)]
        last = i == len(dims) - 2
        if last and last_plain:
            break
        layers += [nn.LayerNorm(b)]
        if not last:
            layers += [nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class ProbeNet(nn.Module):
    """One PROBE head. forward(x (B, L, D), mask (B, L) True=atom, extra (B, 2)) -> logits (B, 2).

    ``attention=False`` is the ablation: no attention layer, mean pooling only (a mean-pool MLP).
    ``temperature`` divides the logits (1 unless temperature scaling was fitted).
    """

    def __init__(self, n_features: int, dropout: float = 0.1, attention: bool = True):
        super().__init__()
        self.use_attention = attention
        self.encoder = _mlp([n_features, 256, 128, 256], dropout, last_plain=False)
        if attention:
            self.attention = nn.MultiheadAttention(256, 32, dropout=dropout, batch_first=True)
            self.norm = nn.LayerNorm(256)
        self.pool = nn.Linear((2 if attention else 1) * 256 + 2, 256)
        self.head = nn.Sequential(nn.GELU(), _mlp([256, 128, 32, 2], dropout, last_plain=True))
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor,
                return_attention: bool = False) -> Any:
        h = self.encoder(x)
        w = None
        m = mask.unsqueeze(-1).to(h.dtype)
        if self.use_attention:
            a, w = self.attention(h, h, h, key_padding_mask=~mask,
                                  need_weights=return_attention, average_attn_weights=True)
            h = self.norm(h + a)
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.use_attention:
            hmax = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
            pooled = torch.cat([mean, hmax, extra], dim=-1)
        else:
            pooled = torch.cat([mean, extra], dim=-1)
        logits = self.head(self.pool(pooled)) / self.temperature
        if return_attention:
            return logits, w
        return logits


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

    nets: list[ProbeNet]
    stats: dict[str, Any]  # feat_mean (D,), feat_std (D,), energy/n mean and std
    meta: dict[str, Any]  # error kind, threshold, training ids, history ...

    def _inputs(self, features: Sequence[np.ndarray], energies: Sequence[float]):
        s = self.stats
        feats = [(np.asarray(f, np.float32) - s["feat_mean"]) / s["feat_std"] for f in features]
        x, mask = _pad(feats)
        n = np.array([len(f) for f in features], dtype=np.float64)
        e = np.asarray(energies, dtype=np.float64)
        extra = np.stack([(e - s["energy_mean"]) / s["energy_std"],
                          (n - s["n_mean"]) / s["n_std"]], axis=1)
        return x, mask, torch.as_tensor(extra, dtype=torch.float32)

    @torch.no_grad()
    def score(self, features: Sequence[np.ndarray], energies: Sequence[float],
              batch_size: int = 256) -> np.ndarray:
        """P(reliable) per structure, (B,), averaged over the heads.

        features: per-structure (N_i, D) backbone embeddings; energies: predicted totals (eV).
        """
        out = []
        for i in range(0, len(features), batch_size):
            x, mask, extra = self._inputs(features[i : i + batch_size], energies[i : i + batch_size])
            p = torch.stack([torch.softmax(net(x, mask, extra), -1)[:, 1] for net in self.nets])
            out.append(p.mean(0).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    @torch.no_grad()
    def importance(self, features: Sequence[np.ndarray], energies: Sequence[float]) -> list[np.ndarray]:
        """Per-atom importance (attention received, averaged over heads and members), sum 1."""
        if not self.nets[0].use_attention:
            raise ProbeError("the mean-pool ablation has no attention, hence no atom importance")
        x, mask, extra = self._inputs(features, energies)
        total = torch.zeros(mask.shape, dtype=torch.float32)
        for net in self.nets:
            _, w = net(x, mask, extra, return_attention=True)  # (B, L queries, S keys)
            w = (w * mask.unsqueeze(-1)).sum(1) * mask
            total += w / w.sum(1, keepdim=True).clamp(min=1e-12)
        total /= len(self.nets)
        return [total[i, : int(mask[i].sum())].numpy() for i in range(len(features))]

    def save(self, path: str | Path) -> None:
        """Write a checkpoint atomically (tensors and plain values only)."""
        import os

        path = Path(path)
        blob = {
            "n_features": int(self.nets[0].encoder[0].in_features),
            "attention": bool(self.nets[0].use_attention),
            "states": [net.state_dict() for net in self.nets],
            "stats": {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v)
                      for k, v in self.stats.items()},
            "meta": json.loads(json.dumps(self.meta, default=_plain)),  # plain types only
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)


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
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(f"cannot read probe checkpoint {path}: {exc}") from None
    nets = []
    for state in blob["states"]:
        net = ProbeNet(blob["n_features"], attention=blob.get("attention", True))
        net.load_state_dict(state)
        net.eval()
        nets.append(net)
    stats = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in blob["stats"].items()}
    return ProbeModel(nets, stats, blob["meta"])


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


def _fit_one(net: ProbeNet, data: tuple, y: np.ndarray, n_atoms: np.ndarray, tr: np.ndarray,
             va: np.ndarray, cfg: Any, seed: int) -> dict[str, Any]:
    x, mask, extra = data
    yt = torch.as_tensor(y)
    counts = np.bincount(y[tr], minlength=2).astype(float)
    class_w = torch.as_tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)
    size_w = torch.as_tensor(1.0 / np.maximum(1.0, np.sqrt(n_atoms)), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.9, patience=5)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(idx: torch.Tensor, train: bool) -> torch.Tensor:
        net.train(train)
        logits = net(x[idx], mask[idx], extra[idx])
        ce = nn.functional.cross_entropy(logits, yt[idx], weight=class_w, reduction="none")
        return (ce * size_w[idx]).sum() / class_w[yt[idx]].sum()

    best, best_state, bad, history = float("inf"), None, 0, []
    tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
    for epoch in range(cfg.epochs):
        perm = tr_t[torch.randperm(len(tr_t), generator=gen)]
        for i in range(0, len(perm), cfg.batch_size):
            opt.zero_grad()
            loss = loss_of(perm[i : i + cfg.batch_size], True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        with torch.no_grad():
            val = float(loss_of(va_t, False))
        sched.step(val)
        history.append(val)
        if val < best - 1e-6:
            best, bad = val, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    out = {"best_val_loss": best, "epochs": epoch + 1, "temperature": 1.0}
    if cfg.temperature_scaling:
        out["temperature"] = _fit_temperature(net, x[va_t], mask[va_t], extra[va_t], yt[va_t])
    return out


def _fit_temperature(net: ProbeNet, x: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor,
                     y: torch.Tensor) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on a held-out split."""
    with torch.no_grad():
        logits = net(x, mask, extra) * net.temperature
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().clamp(0.05, 20.0))
    net.temperature.fill_(t)
    return t


def train_probe(features: Sequence[np.ndarray], energies: Sequence[float], errors: Sequence[float],
                cfg: Any, *, seed: int, meta: dict[str, Any] | None = None) -> ProbeModel:
    """Train PROBE heads on out-of-sample backbone errors.

    features: per-structure (N_i, D) embeddings of the frozen backbone; energies: its predicted
    totals (eV); errors: its true errors on those structures (unit of ``cfg.error``). ``cfg`` is
    a ProbeConfig. Raises ProbeError when either class has fewer than two structures.
    """
    t0 = time.perf_counter()
    errors = np.asarray(errors, dtype=float)
    y, tau = reliable_labels(errors, cfg.threshold, cfg.threshold_value)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        raise ProbeError(f"need at least 2 reliable and 2 unreliable structures, got "
                         f"{counts[1]} reliable / {counts[0]} unreliable (tau={tau:.4g})")
    allf = np.concatenate([np.asarray(f, np.float32) for f in features])
    n = np.array([len(f) for f in features], dtype=np.float64)
    e = np.asarray(energies, dtype=np.float64)
    stats = {
        "feat_mean": allf.mean(0), "feat_std": allf.std(0) + 1e-6,
        "energy_mean": float(e.mean()), "energy_std": float(e.std() + 1e-6),
        "n_mean": float(n.mean()), "n_std": float(n.std() + 1.0),
    }
    model = ProbeModel([], stats, {})
    data = model._inputs(features, energies)
    rng = np.random.default_rng(seed)
    tr, va = _split(y, cfg.validation_fraction, rng)
    fits = []
    for m in range(cfg.members):
        with torch.random.fork_rng():  # seeded here, global RNG state left untouched
            torch.manual_seed(seed * 1000 + m)
            net = ProbeNet(len(stats["feat_mean"]), attention=cfg.attention)
            fits.append(_fit_one(net, data, y, n, tr, va, cfg, seed * 1000 + m))
        model.nets.append(net)
    model.meta = {
        **(meta or {}),
        "error": cfg.error, "threshold": tau, "threshold_rule": cfg.threshold,
        "n_train": int(len(tr)), "n_val": int(len(va)), "n_reliable": int(counts[1]),
        "members": fits, "wall_s": time.perf_counter() - t0,
    }
    return model
