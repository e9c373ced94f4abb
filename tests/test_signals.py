"""Committee deviation, cheap baselines, probe ablation and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from alprobe.baselines import energy_confidence, knn_confidence
from alprobe.committee import energy_std_per_atom, max_force_deviation


def test_max_force_deviation_hand_computed():
    # 2 members, 2 atoms. Atom 0: forces (1,0,0) and (3,0,0): mean (2,0,0), deviations 1 and 1
    # -> sqrt(mean(|d|^2)) = 1. Atom 1: (0,0,0) and (0,4,0): mean (0,2,0), |d| = 2, 2 -> 2.
    f = np.array([[[1, 0, 0], [0, 0, 0]], [[3, 0, 0], [0, 4, 0]]], dtype=float)
    assert max_force_deviation(f) == pytest.approx(2.0)
    # identical members: zero
    assert max_force_deviation(np.stack([f[0], f[0], f[0]])) == 0.0


def test_energy_std_per_atom_hand_computed():
    # energies -10, -12 (eV): population std 1 eV, 4 atoms -> 0.25 eV/atom
    assert energy_std_per_atom(np.array([-10.0, -12.0]), 4) == pytest.approx(0.25)


def test_knn_confidence_ranks_outliers_last():
    rng = np.random.default_rng(0)
    train = [rng.normal(size=(5, 4)) for _ in range(30)]
    near = [rng.normal(size=(5, 4)) for _ in range(5)]
    far = [rng.normal(size=(5, 4)) + np.array([6.0, 0, 0, 0]) for _ in range(5)]
    for reduce in ("max", "mean"):
        s = knn_confidence(train, near + far, k=3, reduce=reduce)
        assert s.shape == (10,)
        assert s[:5].min() > s[5:].max()  # in-distribution structures are trusted more
    # one far atom among near ones: max-reduction notices it more than mean
    mixed = rng.normal(size=(5, 4))
    mixed[0] += 6.0
    smax = knn_confidence(train, [mixed], reduce="max")[0]
    smean = knn_confidence(train, [mixed], reduce="mean")[0]
    assert smax < smean


def test_energy_confidence_prefers_low_energy():
    s = energy_confidence(np.array([-90.0, -81.0]), np.array([9, 9]), -10.0)
    assert s[0] == pytest.approx(0.0) and s[1] == pytest.approx(-1.0)


def _synthetic(rng, n):
    feats = [rng.normal(size=(rng.integers(5, 12), 16)).astype(np.float32) for _ in range(n)]
    err = np.array([f[:, 0].mean() + 0.3 * f[:, 1].max() for f in feats])
    return feats, rng.normal(size=n), err


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_meanpool_ablation_and_temperature_scaling(tmp_path):
    from sklearn.metrics import roc_auc_score

    from alprobe.config import ProbeConfig
    from alprobe.probe import ProbeError, load_probe, train_probe

    rng = np.random.default_rng(1)
    f, e, err = _synthetic(rng, 240)
    ft, et, errt = _synthetic(rng, 200)
    cfg = ProbeConfig(members=1, epochs=60, patience=20, attention=False,
                      temperature_scaling=True, error="energy")
    m = train_probe(f, e, err, cfg, seed=0)
    assert not m.net.use_attention and not hasattr(m.net, "qkv")
    t = m.meta["members"][0]["temperature"]
    assert 0.05 <= t <= 20.0 and t != 1.0  # a temperature was fitted
    s = m.score(ft, et)
    y = (errt <= m.meta["threshold"]).astype(int)
    assert roc_auc_score(y, s) > 0.7  # the mean-pool signal is learnable too
    with pytest.raises(ProbeError, match="no attention"):
        m.importance(ft[:2], et[:2])
    m.save(tmp_path / "p.pt")
    again = load_probe(tmp_path / "p.pt")
    assert np.array_equal(again.score(ft, et), s)  # temperature and ablation survive a reload
    # temperature scaling changes confidence but not the ranking
    assert float(again.net.temperature[0]) == pytest.approx(t)
