"""What embedding drift costs PROBE: a probe scoring through a backbone other than the one
whose embeddings and errors it learned from.

A PROBE arm without the data tax (``select.hold_out: false``) trains probe g on backbone g-1's
errors (through backbone g-1's embeddings) on the labels picked after it, then scores the next
candidates through backbone g, fine-tuned since. The hold-out arm trains probe g on backbone g's
own errors. This script measures, on each campaign's test frames (never trained on, never
picked), probe g through backbone b against backbone b's own errors, for b = g-1, g, g+1
(offset b - g = -1, 0, +1):

- AUROC of P(reliable) for frames above / below backbone b's median test error (each backbone's
  own scale: "relatively hard for this backbone", the probe's quantile target);
- Spearman correlation of 1 - P(reliable) with the error.

It prints per-offset means and the paired differences (offset 0 - offset -1: what scoring
through the newer backbone costs a probe trained on the older one's embeddings; offset +1 -
offset 0: one more generation of drift), with 95% bootstrap intervals over (run, generation)
pairs, and writes JSON.

    python scripts/probe_drift.py runs/conformers/arms/probe_notax-r* --json runs/drift.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml


def _path(folder: Path, p: str | None) -> str | None:
    if not p:
        return None
    q = Path(p)
    return str(q if q.is_absolute() else folder / q)


def measure(folder: Path) -> list[dict]:
    """One row per (probe generation g, backbone generation b) of a finished or running
    campaign folder: AUROC and Spearman on its test frames."""
    from alprobe import open_ledger
    from alprobe.audit import compute_signals
    from alprobe.ledger import read_stages
    from alprobe.metrics import auroc_unreliable, spearman

    cfg = yaml.safe_load((folder / "campaign.yaml").read_text())
    error = (cfg.get("probe") or {}).get("error", "force_rmse")
    st = read_stages(folder)
    L = open_ledger(folder)
    test = L.frames(status="labeled", split="test")
    models = {int(k[3:6]): _path(folder, v.get("path")) for k, v in st.items()
              if k.endswith("/train") and k.startswith("gen") and v.get("path")}
    probes = {int(k[3:6]): _path(folder, v.get("path")) for k, v in st.items()
              if k.endswith("/probe") and k.startswith("gen") and v.get("path")}
    rows = []
    cache: dict[tuple[int, int], dict] = {}
    for g, probe in sorted(probes.items()):
        for b in (g - 1, g, g + 1):
            if b not in models or (g, b) in cache:
                continue
            out = compute_signals(test, backbone=models[b], probe=probe, error=error)
            e, trust = np.asarray(out["errors"]), np.asarray(out["signals"]["probe"])
            rows.append({"run": str(folder), "probe_gen": g, "backbone_gen": b,
                         "offset": b - g, "n_test": len(test),
                         "auroc": auroc_unreliable(trust, e, float(np.median(e))),
                         "spearman": spearman(1.0 - trust, e)})
            cache[(g, b)] = rows[-1]
    return rows


def _boot(x: np.ndarray, rng: np.random.Generator, n: int = 4000) -> tuple[float, float, float]:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    means = rng.choice(x, size=(n, len(x))).mean(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(rows: list[dict], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out: dict = {"by_offset": {}, "differences": {}}
    for off in (-1, 0, 1):
        sel = [r for r in rows if r["offset"] == off]
        out["by_offset"][off] = {m: _boot(np.array([r[m] for r in sel], float), rng)
                                 for m in ("auroc", "spearman")} | {"n": len(sel)}
    key = {(r["run"], r["probe_gen"], r["offset"]): r for r in rows}
    for name, (a, b) in {"0 - (-1)": (0, -1), "(+1) - 0": (1, 0)}.items():
        pairs = [(key[(run, g, a)], key[(run, g, b)]) for (run, g, o) in key
                 if o == a and (run, g, b) in key]
        out["differences"][name] = {
            m: _boot(np.array([x[m] - y[m] for x, y in pairs], float), rng)
            for m in ("auroc", "spearman")} | {"n": len(pairs)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="campaign folders of probe arms")
    ap.add_argument("--json", type=Path, default=Path("runs/probe_drift.json"))
    args = ap.parse_args(argv)
    rows = []
    for f in args.folders:
        if not (f / "ledger.db").is_file():
            print(f"probe_drift: {f} is not a campaign folder (no ledger.db)", file=sys.stderr)
            return 2
        rows += measure(f)
    s = summarise(rows)
    print("| probe g through backbone | n | AUROC (own median) | Spearman(1-P, error) |")
    print("|---|---|---|---|")
    for off, name in ((-1, "g-1"), (0, "g"), (1, "g+1")):
        v = s["by_offset"][off]
        print(f"| {name} | {v['n']} | {v['auroc'][0]:.3f} [{v['auroc'][1]:.3f}, "
              f"{v['auroc'][2]:.3f}] | {v['spearman'][0]:.3f} [{v['spearman'][1]:.3f}, "
              f"{v['spearman'][2]:.3f}] |")
    for name, v in s["differences"].items():
        print(f"| paired {name} | {v['n']} | {v['auroc'][0]:+.3f} [{v['auroc'][1]:+.3f}, "
              f"{v['auroc'][2]:+.3f}] | {v['spearman'][0]:+.3f} [{v['spearman'][1]:+.3f}, "
              f"{v['spearman'][2]:+.3f}] |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "summary": s}, indent=1, default=str))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
