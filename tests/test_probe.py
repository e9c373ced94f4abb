"""The PROBE classifier (alprobe.probe) on synthetic per-atom features whose content sets the error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from alprobe.config import ProbeConfig
from alprobe.probe import ProbeError, ProbeModel, load_probe, reliable_labels, train_probe

D = 16
FAST = ProbeConfig(members=1, epochs=60, patience=20)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Two torch threads on a loaded 2-core machine are 20-50x slower than one: use one here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic(n: int, seed: int):
    """n structures of 5..12 atoms; error = mean of feature 0 + 0.3 * max of feature 1."""
    r = np.random.default_rng(seed)
    feats = [r.normal(size=(int(r.integers(5, 13)), D)).astype(np.float32) for _ in range(n)]
    errors = np.array([f[:, 0].mean() + 0.3 * f[:, 1].max() for f in feats])
    energies = np.array([-5.0 * len(f) + r.normal(0, 0.1) for f in feats])
    return feats, energies, errors


@pytest.fixture(scope="module")
def train_set():
    return synthetic(240, seed=0)


@pytest.fixture(scope="module")
def test_set():
    return synthetic(200, seed=1)


@pytest.fixture(scope="module")
def probe(train_set) -> ProbeModel:
    feats, energies, errors = train_set
    return train_probe(feats, energies, errors, FAST, seed=0, meta={"generation": 4})


def auroc(model: ProbeModel, data) -> float:
    feats, energies, errors = data
    reliable = errors <= model.meta["threshold"]
    return float(roc_auc_score(reliable, model.score(feats, energies)))


# ----------------------------------------------------------------------------- learning


def test_probe_learns_a_learnable_error(probe, test_set):
    scores = probe.score(test_set[0], test_set[1])
    assert scores.shape == (200,)
    assert np.all((scores >= 0) & (scores <= 1))
    assert auroc(probe, test_set) > 0.75


def test_probe_cannot_learn_shuffled_errors(train_set, test_set):
    feats, energies, errors = train_set
    shuffled = np.random.default_rng(5).permutation(errors)
    model = train_probe(feats, energies, shuffled, FAST, seed=0)
    assert auroc(model, test_set) < 0.7


def test_meta_records_threshold_split_and_caller_meta(probe, train_set):
    errors = train_set[2]
    m = probe.meta
    assert m["generation"] == 4
    assert m["error"] == FAST.error and m["threshold_rule"] == "quantile"
    assert m["threshold"] == pytest.approx(float(np.quantile(errors, 0.5)))
    assert m["n_train"] + m["n_val"] == len(errors)
    assert m["n_reliable"] == int((errors <= m["threshold"]).sum())
    assert len(m["members"]) == FAST.members == len(probe.nets)
    assert 1 <= m["members"][0]["epochs"] <= FAST.epochs


# ----------------------------------------------------------------------------- inference


def test_scores_do_not_depend_on_batching_or_padding(probe, test_set):
    feats, energies, _ = test_set
    whole = probe.score(feats, energies)
    small = probe.score(feats, energies, batch_size=7)
    np.testing.assert_allclose(small, whole, atol=1e-5)
    one = np.concatenate([probe.score(feats[i : i + 1], energies[i : i + 1]) for i in range(10)])
    np.testing.assert_allclose(one, whole[:10], atol=1e-5)


def test_scores_are_invariant_to_atom_order(probe, test_set):
    feats, energies, _ = test_set
    r = np.random.default_rng(3)
    permuted = [f[r.permutation(len(f))] for f in feats[:20]]
    np.testing.assert_allclose(probe.score(permuted, energies[:20]),
                               probe.score(feats[:20], energies[:20]), atol=1e-5)


def test_save_load_reproduces_scores_exactly(probe, test_set, tmp_path):
    path = tmp_path / "probe.pt"
    probe.save(path)
    assert path.is_file() and not (tmp_path / "probe.pt.tmp").exists()
    loaded = load_probe(path)
    feats, energies, _ = test_set
    np.testing.assert_array_equal(loaded.score(feats, energies), probe.score(feats, energies))
    assert loaded.meta["threshold"] == probe.meta["threshold"]
    assert loaded.meta["generation"] == 4
    assert len(loaded.nets) == len(probe.nets)
    for key, value in probe.stats.items():
        np.testing.assert_array_equal(np.asarray(loaded.stats[key]), np.asarray(value))


def test_load_probe_missing_or_damaged(tmp_path):
    with pytest.raises(ProbeError, match="not found"):
        load_probe(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ProbeError):
        load_probe(bad)


def test_importance_is_a_distribution_per_structure(probe, test_set):
    feats, energies, _ = test_set
    imp = probe.importance(feats[:15], energies[:15])
    assert len(imp) == 15
    for f, w in zip(feats[:15], imp):
        assert w.shape == (len(f),)
        assert np.all(w >= 0)
        assert w.sum() == pytest.approx(1.0, abs=1e-5)


# ----------------------------------------------------------------------------- training rules


def test_one_class_too_small_raises(train_set):
    feats, energies, errors = train_set
    cfg = ProbeConfig(members=1, epochs=2, threshold="absolute",
                      threshold_value=float(errors.max()) + 1.0)
    with pytest.raises(ProbeError, match="at least 2"):
        train_probe(feats[:30], energies[:30], errors[:30], cfg, seed=0)
    # one unreliable structure only is not enough either
    cfg = ProbeConfig(members=1, epochs=2, threshold="absolute",
                      threshold_value=float(np.sort(errors[:30])[-2]))
    with pytest.raises(ProbeError):
        train_probe(feats[:30], energies[:30], errors[:30], cfg, seed=0)


def test_reliable_labels_quantile_and_absolute():
    errors = np.random.default_rng(2).permutation(np.arange(1.0, 101.0))
    y, tau = reliable_labels(errors, "quantile", 0.5)
    assert tau == pytest.approx(50.5)
    assert y.sum() == 50 and len(y) == 100
    np.testing.assert_array_equal(y, (errors <= tau).astype(int))
    y, tau = reliable_labels(errors, "quantile", 0.2)
    assert y.sum() == 20
    y, tau = reliable_labels(errors, "absolute", 30.0)
    assert tau == 30.0 and y.sum() == 30 and y[errors == 30.0] == 1  # inclusive


def test_training_leaves_global_rng_alone_and_is_reproducible(train_set):
    feats, energies, errors = [x[:40] for x in train_set]
    cfg = ProbeConfig(members=2, epochs=3, patience=3)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state().clone()
    np_before = np.random.get_state()[1].copy()
    a = train_probe(feats, energies, errors, cfg, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    np.testing.assert_array_equal(np.random.get_state()[1], np_before)
    b = train_probe(feats, energies, errors, cfg, seed=7)
    c = train_probe(feats, energies, errors, cfg, seed=8)
    np.testing.assert_array_equal(a.score(feats, energies), b.score(feats, energies))
    assert not np.allclose(a.score(feats, energies), c.score(feats, energies))
    # members have different seeds, so different weights
    w = a.net.enc1.weight  # (members, D, width): one slice per head
    assert not torch.equal(w[0], w[1])


@pytest.mark.parametrize("over", [{}, {"target": "atom", "atom_pool": "mean"},
                                  {"attention": False}])
def test_traced_inference_gives_the_eager_scores(over):
    """Scoring runs a TorchScript-traced, frozen copy of the heads (the walker's hot path);
    its P(reliable) equals the eager forward's for batches and single frames of any size."""
    import copy

    from alprobe.config import ProbeConfig
    from alprobe.probe import train_probe

    rng = np.random.default_rng(1)
    feats = [rng.normal(size=(int(n), 16)).astype(np.float32) for n in rng.integers(3, 12, 30)]
    energies, errors = list(rng.normal(size=30)), rng.random(30)
    atom = [rng.random(len(f)) for f in feats]
    pm = train_probe(feats, energies, errors, ProbeConfig(members=3, width=32, epochs=3, **over),
                     seed=0, atom_errors=atom)
    eager = copy.copy(pm)
    eager._traced = False
    batch = pm.score(feats, energies)
    assert pm._traced not in (None, False)  # traced here
    np.testing.assert_allclose(batch, eager.score(feats, energies), atol=1e-6)
    for f, e in zip(feats[:5], energies[:5]):
        np.testing.assert_allclose(pm.score([f], [e]), eager.score([f], [e]), atol=1e-6)
    assert np.all((batch >= 0) & (batch <= 1))
