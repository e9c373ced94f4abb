"""Are two campaign folders the same science? For a refactor's "behaviour identical" check:
run the same campaign file with the code before and after (same machine), then

    python scripts/same_science.py runs/before runs/after [--json out.json]

compares every frame's id, generation, status, split, audit mark and reference label, every
stage record's science keys, and every metrics column that is not a time, a CPU figure or a
timestamp. Prints one line per kind of difference and a verdict; exit 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

#: Metrics columns that are timings (never bit-identical between two runs).
_TIMING = ("_s", "_cpu_s", "overhead_fraction", "elapsed_s", "task_span_s")
#: Stage-record keys that are timings, paths or timestamps.
_RECORD_NOISE = ("wall_s", "t_start", "t_end", "t", "train_s", "cpu_s", "md_s", "score_s",
                 "dft_s", "label_s", "path", "members", "backbone_train_s")


def _frames(d: Path) -> dict[str, tuple]:
    from alprobe.ledger import Ledger

    L = Ledger(d, readonly=True)
    out = {}
    for k in L.keys():
        out[k["fid"]] = (k.get("generation"), k.get("status"), k.get("split"),
                         bool(k.get("audit")), k.get("ref_energy"))
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def compare(a: Path, b: Path) -> dict[str, list[str]]:
    from alprobe.ledger import Ledger

    diff: dict[str, list[str]] = {"frames": [], "records": [], "metrics": []}
    fa, fb = _frames(a), _frames(b)
    for fid in sorted(set(fa) | set(fb)):
        if fa.get(fid) != fb.get(fid):
            diff["frames"].append(f"{fid}: {fa.get(fid)} vs {fb.get(fid)}")
    sa, sb = Ledger(a, readonly=True).stages(), Ledger(b, readonly=True).stages()
    for key in sorted(set(sa) | set(sb)):
        ra = {k: v for k, v in sa.get(key, {}).items() if k not in _RECORD_NOISE}
        rb = {k: v for k, v in sb.get(key, {}).items() if k not in _RECORD_NOISE}
        if key == "cpu_pending":
            continue
        if not _same(ra, rb):
            keys = sorted(k for k in set(ra) | set(rb) if not _same(ra.get(k), rb.get(k)))
            diff["records"].append(f"{key}: {', '.join(keys)}")
    ma = {r["generation"]: r for r in json.loads((a / "metrics.json").read_text())}
    mb = {r["generation"]: r for r in json.loads((b / "metrics.json").read_text())}
    for g in sorted(set(ma) | set(mb)):
        ra, rb = ma.get(g, {}), mb.get(g, {})
        for k in sorted(set(ra) | set(rb)):
            if k.endswith(_TIMING) or k in _TIMING:
                continue
            if not _same(ra.get(k), rb.get(k)):
                diff["metrics"].append(f"gen {g} {k}: {ra.get(k)} vs {rb.get(k)}")
    return diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--json", type=Path, help="write the differences here")
    args = ap.parse_args()
    diff = compare(args.before, args.after)
    n_frames = len(_frames(args.before))
    print(f"| what | differences |\n|---|---|")
    for kind, items in diff.items():
        print(f"| {kind} | {len(items)} |")
    for kind, items in diff.items():
        for line in items[:20]:
            print(f"  {kind}: {line}")
    same = not any(diff.values())
    print(f"verdict: {'IDENTICAL' if same else 'DIFFERENT'} science ({n_frames} frames compared)")
    if args.json:
        args.json.write_text(json.dumps({"identical": same, "frames": n_frames, **diff},
                                        indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
