"""Metrics (alprobe.metrics) and Atoms conventions (alprobe.frames), checked by hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from alprobe.frames import (
    PRED_ENERGY,
    PRED_FORCES,
    REF_ENERGY,
    REF_FORCES,
    bare_copy,
    frame_id,
    has_reference,
    load_seeds,
    min_distance,
    n_fragments,
    set_prediction,
    set_reference,
    structure_errors,
    write_extxyz,
)
from alprobe.metrics import auroc_unreliable, frame_errors
from alprobe.metrics import regression_errors as compute_test_errors

# ----------------------------------------------------------------------------- hand-made frames


def frame_a() -> Atoms:
    """2 atoms: dE = 0.4 eV; force errors (0.1, 0, 0) and (0, -0.2, 0.2)."""
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    set_reference(a, -10.0, np.zeros((2, 3)))
    set_prediction(a, -9.6, [[0.1, 0.0, 0.0], [0.0, -0.2, 0.2]])
    return a


def frame_b() -> Atoms:
    """3 atoms: dE = -0.3 eV; force errors (0.3, 0, 0), (0, 0, 0), (0, 0, -0.4)."""
    b = Atoms("H2O", positions=[[0, 0, 0], [0.76, 0.59, 0], [0, 0, 0.12]])
    ref_f = np.array([[1.0, 1.0, 1.0], [0.5, -0.5, 0.0], [0.0, 0.0, 2.0]])
    set_reference(b, 5.0, ref_f)
    set_prediction(b, 4.7, ref_f + np.array([[0.3, 0, 0], [0, 0, 0], [0, 0, -0.4]]))
    return b


# ----------------------------------------------------------------------------- metrics


def test_auroc_perfect_ranking_is_one():
    errors = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    trust = 1.0 - errors  # trust falls as the error rises
    assert auroc_unreliable(trust, errors, tau=0.35) == pytest.approx(1.0)


def test_auroc_reversed_ranking_is_zero():
    errors = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert auroc_unreliable(errors, errors, tau=0.35) == pytest.approx(0.0)


def test_auroc_hand_computed_partial():
    # reliable (e <= 0.25): items 0, 1 with trust 0.9, 0.3; unreliable: trust 0.5, 0.1
    # pairs (reliable above unreliable): 0.9>0.5, 0.9>0.1, 0.3>0.1 -> 3 of 4
    errors = np.array([0.1, 0.2, 0.3, 0.4])
    trust = np.array([0.9, 0.3, 0.5, 0.1])
    assert auroc_unreliable(trust, errors, tau=0.25) == pytest.approx(0.75)


def test_auroc_threshold_is_inclusive():
    errors = np.array([0.1, 0.2, 0.3])
    trust = np.array([0.9, 0.1, 0.5])  # 0.2 counts as reliable at tau 0.2
    assert auroc_unreliable(trust, errors, tau=0.2) == pytest.approx(0.5)
    assert auroc_unreliable(trust, errors, tau=0.1999) == pytest.approx(1.0)


def test_auroc_one_class_or_nan_is_nan():
    errors = np.array([0.1, 0.2, 0.3])
    assert math.isnan(auroc_unreliable(np.array([0.5, 0.4, 0.3]), errors, tau=1.0))
    assert math.isnan(auroc_unreliable(np.array([0.5, 0.4, 0.3]), errors, tau=0.01))
    assert math.isnan(auroc_unreliable(np.array([0.5, np.nan, 0.3]), errors, tau=0.15))
    assert math.isnan(auroc_unreliable(np.zeros(0), np.zeros(0), tau=0.1))


def test_test_errors_hand_computed():
    out = compute_test_errors([frame_a(), frame_b()])
    # energy per atom: 0.4 / 2 = 0.2 and 0.3 / 3 = 0.1 -> mean 0.15
    assert out["energy_mae_eV_per_atom"] == pytest.approx(0.15)
    # 15 force components; nonzero |errors| 0.1, 0.2, 0.2, 0.3, 0.4
    assert out["force_mae_eV_A"] == pytest.approx((0.1 + 0.2 + 0.2 + 0.3 + 0.4) / 15)
    assert out["force_rmse_eV_A"] == pytest.approx(
        math.sqrt((0.01 + 0.04 + 0.04 + 0.09 + 0.16) / 15))


def test_test_errors_empty_is_nan():
    out = compute_test_errors([])
    assert set(out) == {"energy_mae_eV_per_atom", "force_mae_eV_A", "force_rmse_eV_A"}
    assert all(math.isnan(v) for v in out.values())


# ----------------------------------------------------------------------------- structure_errors


def test_structure_errors_each_kind():
    a, b = frame_a(), frame_b()
    assert structure_errors(a, "energy") == pytest.approx(0.4)
    assert structure_errors(b, "energy") == pytest.approx(0.3)
    assert structure_errors(a, "energy_per_atom") == pytest.approx(0.2)
    assert structure_errors(b, "energy_per_atom") == pytest.approx(0.1)
    assert structure_errors(a, "force_rmse") == pytest.approx(math.sqrt((0.01 + 0.04 + 0.04) / 6))
    assert structure_errors(b, "force_rmse") == pytest.approx(math.sqrt((0.09 + 0.16) / 9))
    # largest atomic error vector: |(0, -0.2, 0.2)| = 0.2 sqrt 2 > 0.1
    assert structure_errors(a, "force_max") == pytest.approx(0.2 * math.sqrt(2))
    assert structure_errors(b, "force_max") == pytest.approx(0.4)
    with pytest.raises(ValueError, match="bogus"):
        structure_errors(a, "bogus")


def test_frame_errors_is_structure_errors_per_frame():
    frames = [frame_a(), frame_b()]
    np.testing.assert_allclose(frame_errors(frames, "force_max"), [0.2 * math.sqrt(2), 0.4])
    np.testing.assert_allclose(frame_errors(frames, "energy"), [0.4, 0.3])


def test_reference_and_prediction_storage():
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    assert not has_reference(a)
    set_reference(a, -1.5, [1, 2, 3, 4, 5, 6])
    assert has_reference(a)
    assert a.info[REF_ENERGY] == -1.5 and isinstance(a.info[REF_ENERGY], float)
    np.testing.assert_array_equal(a.arrays[REF_FORCES], [[1, 2, 3], [4, 5, 6]])
    set_prediction(a, np.float32(2.0), np.ones((2, 3)))
    assert type(a.info[PRED_ENERGY]) is float
    assert a.arrays[PRED_FORCES].dtype == np.float64


def test_labels_survive_an_extxyz_round_trip(tmp_path):
    from ase.io import read

    path = tmp_path / "f.extxyz"
    write_extxyz(path, [frame_a(), frame_b()])
    assert not (tmp_path / "f.extxyz.tmp").exists()
    back = read(path, index=":")
    assert len(back) == 2
    for orig, new in zip([frame_a(), frame_b()], back):
        assert has_reference(new)
        for kind in ("energy", "force_rmse", "force_max"):
            assert structure_errors(new, kind) == pytest.approx(structure_errors(orig, kind))


# ----------------------------------------------------------------------------- frame_id


def test_frame_id_format_and_stability():
    a = frame_a()
    fid = frame_id(a)
    assert fid.startswith("f") and len(fid) == 17
    int(fid[1:], 16)  # hex
    assert frame_id(a.copy()) == fid
    assert frame_id(bare_copy(a)) == fid
    # labels, info and calculators are not content
    c = a.copy()
    c.info["anything"] = 1
    set_reference(c, 123.0, np.ones((2, 3)))
    assert frame_id(c) == fid


def test_frame_id_changes_with_content():
    a = frame_a()
    fid = frame_id(a)
    moved = a.copy()
    moved.positions[1, 2] += 1e-3
    assert frame_id(moved) != fid
    other = a.copy()
    other.numbers = [1, 3]
    assert frame_id(other) != fid
    boxed = a.copy()
    boxed.cell = [10, 10, 10]
    assert frame_id(boxed) != fid
    periodic = boxed.copy()
    periodic.pbc = True
    assert frame_id(periodic) != frame_id(boxed)


def test_frame_id_ignores_noise_below_the_rounding():
    a = Atoms("H2", positions=[[0.1, 0.2, 0.3], [0.4, 0.5, 1.25]])
    b = a.copy()
    b.positions += 1e-9
    assert frame_id(a) == frame_id(b)


# ----------------------------------------------------------------------------- seeds, geometry


def test_load_seeds_by_name_and_alias():
    (ethanol,) = load_seeds(["ethanol"])
    assert len(ethanol) == 9
    assert ethanol.get_chemical_formula() == "C2H6O"
    assert ethanol.calc is None and ethanol.info == {}
    (water,) = load_seeds(["H2O"])
    assert water.get_chemical_formula() == "H2O"
    assert len(load_seeds(["water", "Methane"])) == 2


def test_load_seeds_unknown_name():
    with pytest.raises(ValueError, match="unobtainium"):
        load_seeds(["unobtainium"])


def test_load_seeds_missing_xyz(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_seeds(["nowhere.xyz"], base_dir=tmp_path)


def test_load_seeds_from_a_file_relative_to_base_dir(tmp_path):
    frames = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + 0.01 * i]]) for i in range(3)]
    write(tmp_path / "h2.xyz", frames)
    seeds = load_seeds(["h2.xyz"], base_dir=tmp_path)
    assert len(seeds) == 3
    np.testing.assert_allclose([s.get_distance(0, 1) for s in seeds], [0.70, 0.71, 0.72])


def test_min_distance_and_fragments():
    a = Atoms("H4", positions=[[0, 0, 0], [0, 0, 0.8], [5, 0, 0], [5, 0, 0.9]])
    assert min_distance(a) == pytest.approx(0.8)
    assert n_fragments(a, 1.5) == 2
    assert n_fragments(a, 6.0) == 1
    assert min_distance(Atoms("H")) == math.inf


def test_auroc_equals_sklearn_with_ties_on_random_data():
    from sklearn.metrics import roc_auc_score

    from alprobe.metrics import auroc_unreliable

    rng = np.random.default_rng(5)
    for n in (5, 40, 300):
        trust = np.round(rng.random(n), 1)  # many ties
        errors = rng.random(n)
        tau = 0.4
        reliable = (errors <= tau).astype(int)
        if reliable.min() == reliable.max():
            continue
        assert auroc_unreliable(trust, errors, tau) == pytest.approx(
            roc_auc_score(reliable, trust), abs=1e-12)
