"""The paper's claims on our data: does PROBE beat a committee, and does its margin grow with
the backbone's size? And which PROBE variant works where labels are scarce?

For each labeled pool (default: the repository's ethanol and acetamide pools, PBE/def2-SVP),
frames are split by MD temperature: backbones train on the coldest, probes on the middle
temperatures (errors the backbone never saw), and everything is tested on the hottest. For each
backbone size and seed, every PROBE variant, a 4-member committee (DP-GEN's eps_F), latent-space
kNN (mean / max over atoms), the energy-only baseline and random scores are audited on the test
frames: AUROC (unreliable = force RMSE above the median of the probe's training errors),
Spearman rho (trust vs error) and E-AURC (error as loss), with bootstrap 95% intervals per seed,
then the mean and spread over backbone seeds. The cost column is each signal's time per
single-frame call relative to one backbone energy + forces pass (paired A B timing, median).
A head committee per backbone seed (``committee.kind: heads``: the backbone and committee-1
readout-only fine-tunes of it with fresh readouts, ``--head-epochs``) is audited beside the
full committee, by its force deviation and its energy spread; its cost is one
``committee_predict`` call (energies of every head, the backbone's forces) per frame. A last
table gives every signal minus the full committee, paired over backbone seeds.

    python scripts/bench_probe_variants.py [--pools P1 P2] [--sizes 32x0e 64x0e+64x1o ...]
        [--seeds 3] [--epochs 60] [--workers 2] [--out runs/bench_probe_variants.json]
    python scripts/bench_probe_variants.py --sizes --epochs 30 \
        --foundations small=campaigns/data/foundation/foundation_small.model \
                      medium=campaigns/data/foundation/foundation_medium.model

With ``--foundations``, each pretrained model's backbones (and the committee members, its
fine-tuned copies with other seeds) are multihead replay fine-tunes on the cold frames
(replay: ``--replay``, ``--replay-samples`` frames per fine-tune), exactly as a campaign with
backbone.foundation trains them.

Backbone trainings run ``--workers`` at a time (one thread each); results are cached in
``--work`` so a rerun only redoes what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

SIZES = {"32x0e": (32, 0), "64x0e+64x1o": (64, 1), "128x0e+128x1o": (128, 1)}

#: name -> ProbeConfig overrides (members 5 everywhere: heads averaged in one batched pass)
VARIANTS = {
    "PROBE reference (width 256)": {"width": 256},
    "PROBE auto width": {},
    "PROBE auto width, no energy": {"use_energy": False},
    "PROBE atom target (min)": {"target": "atom", "atom_pool": "min"},
    "PROBE atom target (mean)": {"target": "atom", "atom_pool": "mean"},
    "PROBE atom target, no energy": {"target": "atom", "use_energy": False},
    "PROBE all layers": {"features": "all"},
    "PROBE all layers, atom target": {"features": "all", "target": "atom"},
    "PROBE mean-pool (no attention)": {"attention": False},
}


def _train(job: dict[str, Any]) -> str:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ase.io import read

    from alprobe.backbone import train_backbone
    from alprobe.config import BackboneConfig

    if Path(job["out"]).is_file():
        return job["out"]
    train, valid = read(job["train"], index=":"), read(job["valid"], index=":")
    if job.get("head_of"):  # a head-committee member: fresh readouts on the backbone's body
        from alprobe.tasks import train_task

        if job.get("foundation"):
            settings = BackboneConfig(foundation=job["foundation"], replay_file=job["replay"],
                                      finetune_epochs=job["epochs"])
        else:
            settings = BackboneConfig(channels=job["channels"], max_L=job["max_L"],
                                      finetune_epochs=job["epochs"])
        train_task(train, valid, job["out"], settings, job["seed"], None, job["epochs"],
                   None, job["head_of"])
        return job["out"]
    if job.get("foundation"):  # a multihead replay fine-tune of a pretrained model
        from alprobe.backbone import Replay

        settings = BackboneConfig(foundation=job["foundation"], replay_file=job["replay"],
                                  finetune_epochs=job["epochs"])
        train_backbone(train, valid, job["out"], settings, seed=job["seed"],
                       foundation=job["foundation"], epochs=job["epochs"],
                       replay=Replay(job["replay"]))
        return job["out"]
    settings = BackboneConfig(channels=job["channels"], max_L=job["max_L"],
                              epochs=job["epochs"])
    train_backbone(train, valid, job["out"], settings, seed=job["seed"])
    return job["out"]


def _foundations(specs: list[str], replay: str, samples: int, work: Path) -> dict[str, str]:
    """NAME=FILE pairs of pretrained models; writes ``samples`` random frames of the replay set
    in mace-torch's keys."""
    from alprobe.frames import read_labeled, write_extxyz
    from alprobe.stages.train import _mace_keys

    out = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path or not Path(path).is_file():
            raise SystemExit(f"--foundations: {spec!r} is not NAME=FILE of an existing file")
        out[f"pretrained {name}"] = path
    if out:
        frames = read_labeled(replay)
        pick = np.random.default_rng(0).permutation(len(frames))[:samples]
        write_extxyz(work / "replay.extxyz", [_mace_keys(frames[i]) for i in sorted(pick)])
    return out


def _split(path: Path) -> tuple[list, list, list]:
    from alprobe.frames import read_labeled

    frames = read_labeled(path, keep_info=True)
    temps = sorted({float(a.info["temperature_K"]) for a in frames})
    if len(temps) < 3:
        raise SystemExit(f"{path}: needs frames at >= 3 temperatures, has {temps}")
    cold = [a for a in frames if a.info["temperature_K"] == temps[0]]
    hot = [a for a in frames if a.info["temperature_K"] == temps[-1]]
    middle = [a for a in frames if temps[0] < a.info["temperature_K"] < temps[-1]]
    return cold, middle, hot


def _cost(model: Any, frame: Any, fn: Any, pairs: int = 60) -> float:
    """Median over paired timings of (backbone pass + fn(prediction)) / backbone pass."""
    from alprobe.backbone import predict

    def a() -> Any:
        return predict(model, [frame], batch_size=1)

    def b() -> Any:
        (p,) = predict(model, [frame], batch_size=1)
        return fn(p)

    return _ratio(a, b, pairs)


def _heads_for(size: str, chosen: list[str] | None) -> bool:
    """Whether backbone ``size`` ("32x0e", "pretrained small", ...) gets a head committee."""
    return not chosen or size in chosen or size.removeprefix("pretrained ") in chosen


def _ratio(a: Any, b: Any, pairs: int = 60) -> float:
    """Median over paired timings (A B A B ...) of time(b) / time(a)."""
    for _ in range(3):
        a(), b()
    ratios = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    return float(np.median(ratios))


def _paired_table(rows: list[dict[str, Any]], variants: dict[str, Any], committee: int,
                  no_heads: bool) -> list[dict[str, Any]]:
    """Signal minus the full committee's AUROC, paired over backbone seeds (the same test
    frames and errors), with a 95% t-interval; printed as a table, returned as rows."""
    from scipy import stats

    ref = f"committee-{committee} eps_F"
    others = list(variants) + ([] if no_heads else [f"head committee-{committee} eps_F",
                                                    f"head committee-{committee} sigma_E"])
    by = {(r["pool"], r["backbone"], r["signal"]): r for r in rows}
    out = []
    print(f"\nPaired over backbone seeds: signal minus {ref} (AUROC), 95% t-interval")
    print(f"| pool | backbone | signal: AUROC | {ref} AUROC | difference [95% interval] | "
          "resolved |")
    print("|---|---|---|---|---|---|")
    for pool, backbone in dict.fromkeys((r["pool"], r["backbone"]) for r in rows):
        base = by.get((pool, backbone, ref))
        for sig in others:
            r = by.get((pool, backbone, sig))
            if base is None or r is None:
                continue
            d = np.array([a["auroc"] - b["auroc"] for a, b in zip(r["seeds"], base["seeds"])])
            half = (float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
                    if len(d) > 1 else float("nan"))
            lo, hi = float(d.mean()) - half, float(d.mean()) + half
            resolved = bool(lo > 0 or hi < 0)
            out.append({"pool": pool, "backbone": backbone, "signal": sig,
                        "auroc": r["auroc_mean"], "committee_auroc": base["auroc_mean"],
                        "diff": float(d.mean()), "lo": lo, "hi": hi, "resolved": resolved,
                        "seeds": len(d)})
            print(f"| {pool} | {backbone} | {sig}: {r['auroc_mean']:.3f} | "
                  f"{base['auroc_mean']:.3f} | {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                  f"{'yes' if resolved else 'no'} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", nargs="+", default=["campaigns/data/ethanol_pool.extxyz",
                                                   "campaigns/data/acetamide_pool.extxyz"])
    ap.add_argument("--sizes", nargs="*", default=list(SIZES))
    ap.add_argument("--foundations", nargs="*", default=[], metavar="NAME=FILE",
                    help="pretrained MACE models: their backbones are multihead replay "
                    "fine-tunes (--epochs) on the cold frames, the committee fine-tuned copies")
    ap.add_argument("--replay", default="campaigns/data/foundation/pretrain.extxyz",
                    help="the foundations' replay set (labeled extxyz, ref_energy/ref_forces)")
    ap.add_argument("--replay-samples", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3, help="backbone seeds (PROBE on each)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--members", type=int, default=5, help="PROBE heads averaged")
    ap.add_argument("--committee", type=int, default=4)
    ap.add_argument("--head-epochs", type=int, default=20,
                    help="epochs of each head-committee member (readouts only, body frozen)")
    ap.add_argument("--no-heads", action="store_true",
                    help="leave out the head committee (committee-1 heads per backbone seed)")
    ap.add_argument("--head-backbones", nargs="*",
                    help="backbones (sizes or 'pretrained NAME') that get a head committee "
                    "(default: all)")
    ap.add_argument("--variants", nargs="*", help="PROBE variants to run (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--work", default="runs/bench_probe_variants")
    ap.add_argument("--out", default="runs/bench_probe_variants.json")
    args = ap.parse_args()

    import torch
    from ase.io import write

    from alprobe.backbone import committee_predict, load_model, predict
    from alprobe.baselines import energy_confidence, knn_confidence
    from alprobe.committee import max_force_deviation
    from alprobe.config import ProbeConfig
    from alprobe.metrics import auroc, bootstrap_ci, e_aurc, spearman
    from alprobe.probe import train_probe

    torch.set_num_threads(1)
    t_start = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data, jobs = {}, []
    n_models = max(args.seeds, args.committee)
    pretrained = _foundations(args.foundations, args.replay, args.replay_samples, work)
    sizes = list(args.sizes) + list(pretrained)
    for pool in args.pools:
        name = Path(pool).stem.removesuffix("_pool")
        cold, middle, hot = _split(Path(pool))
        rng = np.random.default_rng(0)
        order = rng.permutation(len(cold))
        n_val = max(2, len(cold) // 10)
        files = {"train": work / f"{name}_cold_train.extxyz",
                 "valid": work / f"{name}_cold_valid.extxyz"}
        write(files["train"], [cold[i] for i in order[n_val:]], format="extxyz")
        write(files["valid"], [cold[i] for i in order[:n_val]], format="extxyz")
        data[name] = (cold, middle, hot)
        for size in sizes:
            ch, lmax = SIZES.get(size, (0, 0))
            for s in range(n_models):
                jobs.append({"channels": ch, "max_L": lmax, "epochs": args.epochs, "seed": s,
                             "train": str(files["train"]), "valid": str(files["valid"]),
                             "foundation": pretrained.get(size), "size": size,
                             "replay": str(work / "replay.extxyz"),
                             "out": str(work / f"{name}_{size.replace(' ', '_')}_s{s}.model")})
    head_jobs = [] if args.no_heads else [
        {**job, "epochs": args.head_epochs, "seed": 100 + k, "head_of": job["out"],
         "out": job["out"].removesuffix(".model") + f"_h{k}.model"}
        for job in jobs if int(job["out"].rsplit("_s", 1)[1].split(".")[0]) < args.seeds
        and _heads_for(job["size"], args.head_backbones) for k in range(1, args.committee)]
    for what, batch in (("backbones", jobs), ("head-committee members", head_jobs)):
        print(f"training {len(batch)} {what} ({args.workers} at a time) ...", flush=True)
        with ProcessPoolExecutor(args.workers) as ex:
            for job, _ in zip(batch, ex.map(_train, batch)):
                print(f"  {Path(job['out']).name} [{time.time() - t_start:.0f} s]", flush=True)

    rows: list[dict[str, Any]] = []
    variants = {k: v for k, v in VARIANTS.items() if not args.variants or k in args.variants}
    for name, (cold, middle, hot) in data.items():
        for size in sizes:
            paths = [work / f"{name}_{size.replace(' ', '_')}_s{s}.model"
                     for s in range(n_models)]
            models = [load_model(p) for p in paths]
            hot_preds = [predict(m, hot) for m in models[:args.committee]]
            per_signal: dict[str, list[dict[str, float]]] = {}
            costs: dict[str, float] = {}
            for s in range(args.seeds):
                model = models[s]
                mid = predict(model, middle)
                tr = predict(model, cold)
                test = hot_preds[s] if s < args.committee else predict(model, hot)

                def errors(preds, frames):
                    return np.array([np.sqrt(np.mean((p.forces - a.arrays["ref_forces"]) ** 2))
                                     for p, a in zip(preds, frames)])

                e_mid, e_test = errors(mid, middle), errors(test, hot)
                atom_mid = [np.linalg.norm(p.forces - a.arrays["ref_forces"], axis=1)
                            for p, a in zip(mid, middle)]
                tau = float(np.median(e_mid))
                signals: dict[str, np.ndarray] = {}
                rng = np.random.default_rng([s, 7])
                for vname, over in variants.items():
                    cfg = ProbeConfig(members=args.members, epochs=300, patience=25, **over)
                    pm = train_probe([p.probe_features(cfg.features) for p in mid],
                                     [p.energy for p in mid], e_mid, cfg, seed=s,
                                     atom_errors=atom_mid)
                    signals[vname] = pm.score([p.probe_features(cfg.features) for p in test],
                                              [p.energy for p in test])
                    if s == 0:
                        costs[vname] = _cost(model, hot[0], lambda p, pm=pm, f=cfg.features:
                                             pm.score([p.probe_features(f)], [p.energy]))
                if s == 0:
                    committee = [m for m in models[:args.committee]]
                    costs[f"committee-{args.committee} eps_F"] = _cost(
                        model, hot[0], lambda p: [predict(m, [hot[0]], batch_size=1)
                                                  for m in committee[1:]])
                if not args.no_heads and _heads_for(size, args.head_backbones):
                    heads = [model] + [load_model(str(paths[s]).removesuffix(".model")
                                                  + f"_h{k}.model")
                                       for k in range(1, args.committee)]
                    res = committee_predict(heads, hot)
                    signals[f"head committee-{args.committee} eps_F"] = -np.array([
                        max_force_deviation([r[i][1] for r in res]) for i in range(len(hot))])
                    signals[f"head committee-{args.committee} sigma_E"] = -np.array([
                        np.std([r[i][0] for r in res]) / len(hot[i]) for i in range(len(hot))])
                    if s == 0:
                        one = [hot[0]]
                        c = _ratio(lambda m=model, f=one: predict(m, f, batch_size=1),
                                   lambda h=heads, f=one: committee_predict(h, f, 1,
                                                                            forces="first"))
                        costs[f"head committee-{args.committee} sigma_E"] = c
                        costs[f"head committee-{args.committee} eps_F"] = _ratio(
                            lambda m=model, f=one: predict(m, f, batch_size=1),
                            lambda h=heads, f=one: committee_predict(h, f, 1, forces=True))
                feats_tr = [p.features for p in tr] + [p.features for p in mid]
                signals["latent kNN (mean)"] = knn_confidence(feats_tr, [p.features for p in test],
                                                              reduce="mean")
                signals["latent kNN (max)"] = knn_confidence(feats_tr, [p.features for p in test],
                                                             reduce="max")
                e_ref = float(np.mean([p.energy / len(a) for p, a in zip(tr, cold)]))
                signals["energy only"] = energy_confidence(
                    np.array([p.energy for p in test]), np.array([len(a) for a in hot]), e_ref)
                signals[f"committee-{args.committee} eps_F"] = -np.array([
                    max_force_deviation([hp[i].forces for hp in hot_preds])
                    for i in range(len(hot))])
                signals["random"] = rng.random(len(hot))
                for sig, conf in signals.items():
                    lo, hi = bootstrap_ci(lambda c, e, t=tau: auroc(c, e, t), conf, e_test,
                                          n_boot=args.n_boot, rng=np.random.default_rng(s))
                    s_lo, s_hi = bootstrap_ci(spearman, conf, e_test, n_boot=args.n_boot,
                                              rng=np.random.default_rng(s))
                    a_lo, a_hi = bootstrap_ci(e_aurc, conf, e_test, n_boot=args.n_boot,
                                              rng=np.random.default_rng(s))
                    per_signal.setdefault(sig, []).append({
                        "auroc": auroc(conf, e_test, tau), "auroc_lo": lo, "auroc_hi": hi,
                        "spearman": spearman(conf, e_test), "spearman_lo": s_lo,
                        "spearman_hi": s_hi, "e_aurc": e_aurc(conf, e_test), "e_aurc_lo": a_lo,
                        "e_aurc_hi": a_hi, "unreliable": float(np.mean(e_test > tau))})
                print(f"  {name} {size} seed {s}: test force RMSE median "
                      f"{1000 * np.median(e_test):.0f} meV/Å, tau {1000 * tau:.0f} meV/Å "
                      f"[{time.time() - t_start:.0f} s]", flush=True)
            for sig, vals in per_signal.items():
                au = np.array([v["auroc"] for v in vals])
                rows.append({"pool": name, "backbone": size, "signal": sig,
                             "auroc_mean": float(au.mean()),
                             "auroc_seed_sd": float(au.std(ddof=1)) if len(au) > 1 else 0.0,
                             "auroc_ci_seed0": (vals[0]["auroc_lo"], vals[0]["auroc_hi"]),
                             "spearman_mean": float(np.mean([v["spearman"] for v in vals])),
                             "e_aurc_mean": float(np.mean([v["e_aurc"] for v in vals])),
                             "cost": costs.get(sig, 1.0 if sig in ("energy only", "random")
                                               else float("nan")),
                             "seeds": vals})
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"rows": rows, "partial": True,
                                                 "wall_s": time.time() - t_start},
                                                indent=1, default=float))
    print(f"\nbackbone on the coldest temperature, probe on the middle ones, test on the hottest;"
          f" {args.seeds} backbone seeds; mean over seeds (AUROC ± seed sd) [bootstrap 95% CI "
          "of seed 0]; cost: per single-frame call, relative to one backbone energy+forces "
          "pass")
    print("| pool | backbone | signal | AUROC | Spearman | E-AURC | cost |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["auroc_ci_seed0"]
        s0 = r["seeds"][0]
        print(f"| {r['pool']} | {r['backbone']} | {r['signal']} | {r['auroc_mean']:.3f} ± "
              f"{r['auroc_seed_sd']:.3f} [{lo:.2f}, {hi:.2f}] | {r['spearman_mean']:+.2f} "
              f"[{s0['spearman_lo']:+.2f}, {s0['spearman_hi']:+.2f}] | {r['e_aurc_mean']:.4f} "
              f"[{s0['e_aurc_lo']:.4f}, {s0['e_aurc_hi']:.4f}] | {r['cost']:.3f}x |")
    paired = _paired_table(rows, variants, args.committee, args.no_heads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "paired": paired,
                                          "wall_s": time.time() - t_start},
                                         indent=1, default=float))
    print(f"wrote {args.out} [{time.time() - t_start:.0f} s]")


if __name__ == "__main__":
    main()
