"""Tests that FAIL on the current alprobe code (kept out of tests/; see the report)."""
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron

from alprobe.config import ConfigError, ProbeConfig, parse_campaign
from alprobe.explore import WalkerSettings, run_walker
from alprobe.frames import frame_id, load_seeds
from alprobe.probe import load_probe, train_probe


def test_frame_id_same_for_zero_and_negative_zero():
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    b = a.copy()
    b.positions[0, 0] = -0.0  # the same geometry
    assert frame_id(a) == frame_id(b)


def test_frame_id_same_for_plus_minus_tiny_noise():
    a = Atoms("H2", positions=[[1e-9, 0, 0], [0, 0, 0.74]])
    b = Atoms("H2", positions=[[-1e-9, 0, 0], [0, 0, 0.74]])
    assert frame_id(a) == frame_id(b)


def test_load_seeds_with_a_bare_string():
    seeds = load_seeds("CO")  # silently returns [C atom, O atom] today
    assert len(seeds) == 1 and len(seeds[0]) == 2


def test_frozen_config_lists_cannot_be_mutated():
    cfg = parse_campaign({"name": "x", "system": {"seeds": ["water"]}})
    with pytest.raises((TypeError, AttributeError, ValueError)):
        cfg.explore.temperatures_K.append(-5.0)


def test_source_dir_does_not_hide_other_problems():
    with pytest.raises(ConfigError) as info:
        parse_campaign({"name": "x", "system": {"seeds": ["water"]}, "source_dir": "/x",
                        "select": {"budget": -5}})
    assert any(p.startswith("select.budget") for p in info.value.problems), info.value.problems


def test_probe_checkpoint_with_numpy_meta_loads(tmp_path):
    torch.set_num_threads(1)
    r = np.random.default_rng(0)
    feats = [r.normal(size=(6, 4)).astype(np.float32) for _ in range(12)]
    errors = r.random(12)
    m = train_probe(feats, np.zeros(12), errors, ProbeConfig(members=1, epochs=2), seed=0,
                    meta={"generation": np.int64(3)})
    m.save(tmp_path / "p.pt")
    load_probe(tmp_path / "p.pt")  # ProbeError: weights-only load failed


def test_walker_uses_no_deprecated_fixcm():
    a = Icosahedron("Cu", 2)
    s = WalkerSettings(300.0, 2.0, 5, 5, 0.01, 0.1, 3, 1.5, 3.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        res = run_walker(a, EMT(), None, s, rng=np.random.default_rng(0))
    assert res.stop_reason == "completed", res.stop_reason


def test_missing_or_empty_ledger_with_progress_is_refused(tmp_path):
    """A folder whose state records progress never starts over with a fresh ledger."""
    from alprobe.ledger import Ledger, LedgerError

    (tmp_path / "state.json").write_text('{"stages": {"gen000/rattle": {}}}')
    with pytest.raises(LedgerError, match="ledger.db is missing or empty"):
        Ledger(tmp_path, create=True)
    (tmp_path / "ledger.db").write_bytes(b"")
    with pytest.raises(LedgerError, match="refusing to start over"):
        Ledger(tmp_path, create=True)
    assert (tmp_path / "ledger.db").stat().st_size == 0  # left as it was
    fresh = tmp_path / "new"
    assert len(Ledger(fresh, create=True)) == 0  # a new folder is fine
