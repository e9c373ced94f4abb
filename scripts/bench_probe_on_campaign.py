"""PROBE variants on a finished campaign's own data, generation by generation.

For each generation g but the last: every variant is fitted (3 heads) on the frames probe g
could use (labeled calibration/training frames of generations <= g that no backbone up to g
trained on), with backbone g's raw errors (force RMSE, eV/A); it then scores generation g+1's
candidates (interquartile range of P(reliable): does it collapse to one value?) and generation
g+1's labeled frames (AUROC at generation 0's threshold and Spearman of trust and error, from
backbone g's raw predictions: frames neither the probe nor the backbone saw). Prints one line
per (generation, variant): g, variant, probe-pool size, IQR, AUROC, Spearman; then JSON.

    python scripts/bench_probe_on_campaign.py RUN_DIR [ts]    (ts: temperature-scaled variants)
"""
import sys, json, numpy as np
from alprobe.ledger import Ledger
from alprobe.config import ProbeConfig
from alprobe.frames import bare_with_ref
from alprobe.trust import fit_probe
from alprobe.backbone import load_model, predict
from alprobe.probe import load_probe
from alprobe.frames import prediction_errors
from alprobe.metrics import auroc_unreliable
from scipy.stats import spearmanr
run = sys.argv[1]
L = Ledger(run, readonly=True)
tau0 = L.stage_info("gen000/probe")["threshold"]
VAR = {"atom mean TS": {"target": "atom", "atom_pool": "mean", "temperature_scaling": True}, "default TS": {"temperature_scaling": True}, "atom min TS": {"target": "atom", "temperature_scaling": True}} if len(sys.argv) > 2 else {"default": {}, "atom min": {"target": "atom"}, "atom mean": {"target": "atom", "atom_pool": "mean"},
       "no energy": {"use_energy": False}, "all layers": {"features": "all"},
       "atom min, no energy": {"target": "atom", "use_energy": False}, "width 32": {"width": 32}}
gens = sorted({int(k[3:6]) for k in L.stages() if k.endswith("/train")})
res = {}
for g in gens[:-1]:
    seen = set()
    for k in range(g + 1): seen |= set(L.stage_info(f"gen{k:03d}/train").get("train_ids", []))
    labeled = L.frames(status="labeled")
    pool = [bare_with_ref(a) for a in labeled if a.info.get("split") in ("calib", "train") and a.info["fid"] not in seen and a.info["generation"] <= g]
    new = [bare_with_ref(a) for a in labeled if a.info["generation"] == g + 1]
    cands = L.frames(generation=g + 1)
    model_path = L.stage_info(f"gen{g:03d}/train")["path"]
    model = load_model(model_path)
    pn = predict(model, new)
    err, _ = prediction_errors(new, [p.energy for p in pn], [p.forces for p in pn], "force_rmse")
    pc = predict(model, cands)
    for name, kw in VAR.items():
        cfg = ProbeConfig(members=3, **kw)
        fit_probe(pool, model_path, "/tmp/pexp.pt", cfg, seed=g)
        pm = load_probe("/tmp/pexp.pt")
        tc = pm.score([p.probe_features(pm.features) for p in pc], [p.energy for p in pc])
        tn = pm.score([p.probe_features(pm.features) for p in pn], [p.energy for p in pn])
        q25, q75 = np.quantile(tc, [0.25, 0.75])
        au = auroc_unreliable(np.asarray(tn), np.asarray(err), tau0)
        rho = spearmanr(tn, err).statistic
        res.setdefault(name, []).append((len(pool), q75 - q25, au, rho))
        print(g, name, len(pool), round(q75 - q25, 3), round(au, 3), round(rho, 3), flush=True)
print(json.dumps(res))
