"""Benchmark the end-to-end loop: run a campaign (default: campaigns/quickstart.yaml) in a
fresh folder, then print time per stage per generation and the orchestration overhead.

Overhead = fraction of a generation's wall time during which no task (MD walker, DFT label,
training, probe fit, evaluation) was running on any worker, i.e. time spent in the driver,
the scheduler and data transfer. Writes the table as JSON next to the campaign folder.

    python scripts/bench_loop.py [campaign.yaml] [--dir runs/bench_loop]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

COLUMNS = [
    ("gen", "generation", "{:d}"),
    ("explore s", "explore_s", "{:.1f}"),
    ("(MD in walkers, sum)", "md_s", "{:.1f}"),
    ("score s (sum)", "score_s", "{:.2f}"),
    ("select s", "select_s", "{:.2f}"),
    ("label s", "label_s", "{:.1f}"),
    ("train s", "train_s", "{:.1f}"),
    ("probe s", "probe_s", "{:.1f}"),
    ("evaluate s", "evaluate_s", "{:.1f}"),
    ("wall s", "wall_s", "{:.1f}"),
    ("overhead", "overhead_fraction", "{:.1%}"),
    ("F MAE meV/A", "force_mae_eV_A", "{:.1f}"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("campaign", nargs="?", default="campaigns/quickstart.yaml")
    ap.add_argument("--dir", default="runs/bench_loop")
    args = ap.parse_args()

    import alprobe

    directory = Path(args.dir)
    if directory.exists():
        shutil.rmtree(directory)
    t0 = time.perf_counter()
    result = alprobe.run(alprobe.load_campaign(args.campaign), directory)
    total = time.perf_counter() - t0
    rows = []
    for m in result.metrics:
        r = dict(m)
        r["force_mae_eV_A"] = 1000 * r["force_mae_eV_A"]
        rows.append(r)
    head = [c[0] for c in COLUMNS]
    body = [[c[2].format(r[c[1]]) for c in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    print()
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for b in body:
        print("  ".join(v.rjust(w) for v, w in zip(b, widths)))
    print(f"total campaign wall time: {total:.1f} s "
          "(explore = walker stage wall time; MD and score sums are over walkers, in parallel; "
          "label wall time includes all DFT of the stage; probe and evaluate run concurrently)")
    out = directory.with_name(directory.name + "_bench.json")
    out.write_text(json.dumps({"campaign": args.campaign, "total_s": total, "generations": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
