"""The ledger's bulk writer and readers against ASE's own: rows written in bulk are the rows
``ase.db``'s writer makes (same columns, keys and data), ``ase db`` reads them, and the fast
queries return what ASE's ``select`` returns."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from alprobe.ledger import Ledger
from alprobe.ledger.rows import _ASE_LAYOUT_OK


def _frames(n: int = 12) -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = molecule("CH3CH2OH") if i % 3 else bulk("Si", "diamond", a=5.43) * (1, 1, 2)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.info.update(walker=i % 4, sample=i, trust=float(rng.random()), note="x" if i else "y",
                      audit=bool(i % 2), weird=np.int64(i), nan_key=float("nan"))
        if i % 2:
            a.arrays["pred_forces"] = rng.normal(size=(len(a), 3))
        out.append(a)
    return out


def test_bulk_rows_are_the_rows_ase_writes(tmp_path):
    import ase.db

    frames = _frames()
    L = Ledger(tmp_path / "bulk", create=True)
    assert _ASE_LAYOUT_OK(L.db)
    fids = L.add(frames, generation=1, status="selected")  # picked frames are ASE rows
    assert len(set(fids)) == len(frames) and len(L) == len(frames)
    # the same rows through ASE's own writer, one by one
    ref = ase.db.connect(str(tmp_path / "ref.db"))
    for a, fid in zip(frames, fids):
        kvp = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in a.info.items()}
        kvp.update(generation=1, status="selected", fid=fid)
        data = {k: a.arrays[k] for k in ("pred_forces",) if k in a.arrays}
        ref.write(Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc),
                  key_value_pairs=kvp, data=data)
    got = list(ase.db.connect(str(L.path)).select())
    want = list(ref.select())
    assert len(got) == len(want) == len(frames)
    skip = {"unique_id", "ctime", "mtime", "user", "id", "key_value_pairs", "data"}
    for g, w in zip(got, want):
        assert g.id == w.id
        for k in set(w) | set(g):
            if k in skip:
                continue
            gv, wv = g.get(k), w.get(k)
            if isinstance(wv, np.ndarray):
                np.testing.assert_array_equal(gv, wv, err_msg=k)
            else:
                assert gv == pytest.approx(wv, nan_ok=True), k
        assert set(g.key_value_pairs) == set(w.key_value_pairs)
        for k, v in w.key_value_pairs.items():
            assert g.key_value_pairs[k] == pytest.approx(v, nan_ok=True), k
        assert set(g.data) == set(w.data)
        for k in w.data:
            np.testing.assert_array_equal(g.data[k], w.data[k])
        np.testing.assert_allclose(g.toatoms().positions, w.toatoms().positions)
    # column by column, as stored (blobs, volume, mass, charge, natoms...)
    import json
    import sqlite3

    cols = [r[1] for r in sqlite3.connect(ref.filename).execute("PRAGMA table_info(systems)")]
    raw = {}
    for name, path in (("got", L.path), ("want", ref.filename)):
        con = sqlite3.connect(str(path))
        raw[name] = con.execute("SELECT * FROM systems ORDER BY id").fetchall()
        for table in ("species", "keys", "text_key_values", "number_key_values"):
            raw[name, table] = sorted(con.execute(f"SELECT * FROM {table}").fetchall(),
                                      key=repr)
        con.close()
    for g, w in zip(raw["got"], raw["want"]):
        for c, gv, wv in zip(cols, g, w):
            if c in ("unique_id", "ctime", "mtime", "username"):
                continue
            if c == "key_value_pairs":
                assert json.loads(gv).keys() == json.loads(wv).keys()
            elif c == "data":
                assert ref.decode(gv).keys() == ref.decode(wv).keys()
            else:
                assert gv == pytest.approx(wv) if isinstance(wv, float) else gv == wv, c
    for table in ("species", "keys", "text_key_values", "number_key_values"):
        assert repr(raw["got", table]) == repr(raw["want", table]), table
    # ASE's queries find the bulk rows through its key tables
    db = ase.db.connect(str(L.path))
    assert db.count(status="selected") == len(frames)
    assert db.count(walker=1) == sum(a.info["walker"] == 1 for a in frames)
    assert db.count("Si") == sum("Si" in a.get_chemical_symbols() for a in frames)
    assert db.count(audit=True) == sum(a.info["audit"] for a in frames)


def test_candidates_table_reads_like_ase_rows_and_picks_move_into_ase(tmp_path):
    """Candidates live in the bulk table; the ledger's readers return exactly what the same
    frames give when every row is an ASE row (another ledger, read with ASE's select), in id
    order; a candidate whose status changes becomes an ASE row with the same id."""
    import ase.db

    frames = _frames()
    L = Ledger(tmp_path / "l", create=True)
    R = Ledger(tmp_path / "r", create=True)
    R._has_cand = False  # the reference: every frame an ASE row
    for led in (L, R):
        fids = led.add(frames[:8], generation=1, status="candidate")
        led.update(fids[2], status="labeled", split="train", data={"ref_forces": np.ones((9, 3))})
        led.update(fids[3], sigma_f=0.25)  # a key set on a candidate that stays one
        fids += led.add(frames[8:], generation=2, status="candidate")  # ids continue
        assert led.add(frames[:3], generation=5) == fids[:3] and len(led) == len(frames)
    with L.db:
        n_cand = L.db.connection.execute("SELECT COUNT(*) FROM alprobe_candidates").fetchone()[0]
    assert n_cand == len(frames) - 1
    L2 = Ledger(tmp_path / "l")  # reopened
    for query in ({}, {"status": "candidate"}, {"generation": 2}, {"audit": True},
                  {"generation": 1, "status": "candidate"}, {"status": "labeled"},
                  {"status": "none"}, {"fid": fids[5]}, {"walker": 1, "generation": 1}):
        fast = L2.frames(**query)
        with R.db:
            slow = list(R.db.select(**query))
        assert [a.info["fid"] for a in fast] == [r.fid for r in slow], query
        assert L2.keys(**query) == [dict(r.key_value_pairs) for r in slow], query
        assert L2.count(**query) == len(slow), query
        for a, r in zip(fast, slow):
            ref = r.toatoms()
            np.testing.assert_array_equal(a.numbers, ref.numbers)
            np.testing.assert_allclose(a.positions, ref.positions)
            np.testing.assert_allclose(a.cell.array, ref.cell.array)
            assert list(a.pbc) == list(ref.pbc)
            assert set(a.arrays) - {"numbers", "positions"} == set(r.data)
            for k in r.data:
                np.testing.assert_array_equal(a.arrays[k], r.data[k])
    lab = L2.frames(status="labeled")
    assert [a.info["fid"] for a in lab] == [fids[2]]
    np.testing.assert_array_equal(lab[0].arrays["ref_forces"], np.ones((9, 3)))
    assert lab[0].info["split"] == "train" and lab[0].info["generation"] == 1
    # the picked frame is an ASE row under its candidate id; ASE's writer goes above every id
    db = ase.db.connect(str(L2.path))
    assert [r.fid for r in db.select()] == [fids[2]]
    with R.db:
        assert db.get(fid=fids[2]).id == R.db.get(fid=fids[2]).id
    with L2.transaction():
        new = L2.db.write(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), fid="fextra")
    assert new > max(L2._cand.values())


def test_ase_db_command_line_reads_the_ledger(tmp_path):
    L = Ledger(tmp_path / "c", create=True)
    fids = L.add(_frames(4), generation=1, status="candidate")
    L.update_many(fids[:2], status="selected")
    out = subprocess.run([sys.executable, "-m", "ase", "db", str(L.path), "status=selected",
                          "-c", "id,formula,generation,status", "-L", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("selected") == 2 and "C2H6O" in out.stdout


def test_a_reader_of_a_ledger_being_created_gets_a_ledger_error(tmp_path):
    """ASE's tables exist but its version row is not written yet (a driver creating the file
    at this moment): a read-only open says the ledger is not ready, one line, no TypeError."""
    import sqlite3

    from alprobe.ledger import LedgerError

    con = sqlite3.connect(str(tmp_path / "ledger.db"))
    con.execute("CREATE TABLE systems (id INTEGER PRIMARY KEY)")
    con.execute("CREATE TABLE information (name TEXT, value TEXT)")
    con.commit()
    con.close()
    with pytest.raises(LedgerError, match="ledger.db"):
        Ledger(tmp_path, readonly=True)
