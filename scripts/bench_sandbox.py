"""Cost of the sandbox that runs time-limited DFT labels (alprobe.sandbox).

Measures, in one run on this machine: (a) starting the fork server (a fresh interpreter that
imports and warms up PySCF; once per worker process), (b) one sandboxed call of a function that
does nothing (the per-label overhead), (c) a fresh interpreter per label (the alternative, what
`spawn` would cost), and (d) an ethanol HF/STO-3G label in process vs with a time limit
(sandboxed). Prints a table and writes JSON.

    python scripts/bench_sandbox.py [--repeats 20] [--out runs/bench_sandbox.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _noop(emit):
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default="runs/bench_sandbox.json")
    args = ap.parse_args()

    from ase.build import molecule

    from alprobe.dft import DFTLevel, label_atoms
    from alprobe.sandbox import call

    from bench_sandbox import _noop as noop  # importable by name in the child

    t0 = time.perf_counter()
    out = call(noop)
    first = time.perf_counter() - t0
    assert out.status == "ok", out
    calls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        call(noop)
        calls.append(time.perf_counter() - t0)
    fresh = []
    for _ in range(max(3, args.repeats // 4)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pyscf.dft, pyscf.grad"], check=True)
        fresh.append(time.perf_counter() - t0)
    level = DFTLevel(method="hf", basis="sto-3g", density_fit=False)
    atoms = molecule("CH3CH2OH")
    label_atoms(atoms, level)
    inproc, boxed = [], []
    for _ in range(max(3, args.repeats // 4)):  # interleaved: A B A B ...
        t0 = time.perf_counter()
        assert label_atoms(atoms, level).ok
        inproc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert label_atoms(atoms, replace(level, timeout_s=60)).ok
        boxed.append(time.perf_counter() - t0)
    ratios = np.array(boxed) / np.array(inproc)
    res = {
        "server_start_and_first_call_s": first,
        "call_overhead_ms_median": 1000 * float(np.median(calls)),
        "fresh_interpreter_with_pyscf_s_median": float(np.median(fresh)),
        "ethanol_hf_sto3g_in_process_s_median": float(np.median(inproc)),
        "ethanol_hf_sto3g_sandboxed_s_median": float(np.median(boxed)),
        "sandboxed_over_in_process_median_ratio": float(np.median(ratios)),
        "repeats": args.repeats,
    }
    rows = [("fork server start + first call (once per worker)", f"{first:.2f} s"),
            ("sandboxed call, no work (per label)", f"{res['call_overhead_ms_median']:.1f} ms"),
            ("fresh interpreter importing PySCF (the alternative)",
             f"{res['fresh_interpreter_with_pyscf_s_median']:.2f} s"),
            ("ethanol HF/STO-3G label in process", f"{res['ethanol_hf_sto3g_in_process_s_median']:.3f} s"),
            ("same label with timeout_s (sandboxed)", f"{res['ethanol_hf_sto3g_sandboxed_s_median']:.3f} s"),
            ("sandboxed / in process (median of paired ratios)",
             f"{res['sandboxed_over_in_process_median_ratio']:.3f}")]
    w = max(len(r[0]) for r in rows)
    print("| what | time |\n|---|---|")
    for name, v in rows:
        print(f"| {name.ljust(w)} | {v} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
