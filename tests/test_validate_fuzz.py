"""Fuzzing ``alprobe validate``: a few hundred mutated campaign and comparison files (types
swapped, keys deleted, values out of range, unknown keys, raw YAML damage such as duplicated
sections, aliases and truncation), each answered with "ok" or one line per problem: return code
0 or 1, no exception, no traceback, no line longer than 400 characters."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from alprobe.cli import main

from .conftest import TINY_CAMPAIGN

REPO = Path(__file__).resolve().parents[1]
CAMPAIGNS = REPO / "campaigns"
LONGEST_LINE = 400

#: Values swapped in for any value: every YAML type, non-finite and huge numbers, long text.
ODD_VALUES: list[Any] = [
    "text", "", 7, 0, -1, 2.5, True, None, [], [1, "a"], {}, {"k": 1}, float("nan"),
    float("inf"), float("-inf"), 1e12, 10**30, -(10**18), "x" * 500, "../../etc", "tpu9",
    "0.0.0.0:8787", [float("nan")], {"ca_file": "a"}, "auto", "1e12", [[[]]], "\t", "é∞",
]


def sources() -> list[tuple[str, dict[str, Any]]]:
    """The repository's campaign and comparison files (relative paths made absolute, since the
    mutated copies live elsewhere) and the test suite's tiny campaign."""
    out = []
    for path in [CAMPAIGNS / "quickstart.yaml", *sorted(CAMPAIGNS.glob("compare_*.yaml")),
                 *sorted(CAMPAIGNS.glob("foundation_*.yaml"))]:
        data = yaml.safe_load(path.read_text())
        for section in (data, data.get("shared") or {}):
            for key, names in (("pool", ("file",)), ("backbone", ("foundation", "replay_file"))):
                sub = section.get(key)
                for n in names:
                    if isinstance(sub, dict) and isinstance(sub.get(n), str):
                        sub[n] = str((path.parent / sub[n]).resolve())
        out.append((path.name, data))
    out.append(("TINY_CAMPAIGN", copy.deepcopy(TINY_CAMPAIGN)))
    return out


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested document (mappings and sequences), the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out += paths(v, (*prefix, k))
    return out


def parent_of(doc: Any, path: tuple) -> Any:
    for k in path[:-1]:
        doc = doc[k]
    return doc


def mutate(doc: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One to three structural mutations of a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for _ in range(int(rng.integers(1, 4))):
        all_paths = paths(doc)
        if not all_paths:
            break
        path = all_paths[int(rng.integers(len(all_paths)))]
        parent, key = parent_of(doc, path), path[-1]
        op = int(rng.integers(5))
        if op == 0:  # type swap
            parent[key] = copy.deepcopy(ODD_VALUES[int(rng.integers(len(ODD_VALUES)))])
        elif op == 1:  # key deleted
            del parent[key]
        elif op == 2:  # value out of range
            v = parent[key]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                parent[key] = [-v, -1, 0, v * 10**9, v + 10**7, 2**63][int(rng.integers(6))]
            else:
                parent[key] = [-5, 10**9, 0.0][int(rng.integers(3))]
        elif op == 3:  # unknown key next to it
            if isinstance(parent, dict):
                parent[f"unknown_{int(rng.integers(100))}"] = 1
            else:
                parent.append({"stray": True})
        else:  # a section replaced by a copy of another one
            others = [p for p in all_paths if len(p) == 1]
            other = others[int(rng.integers(len(others)))]
            parent[key] = copy.deepcopy(doc[other[0]])
    return doc


def damage_text(text: str, rng: np.random.Generator) -> str:
    """Raw YAML damage that a mapping cannot express."""
    lines = text.splitlines()
    op = int(rng.integers(6))
    if op == 0:  # a top-level section written twice
        starts = [i for i, ln in enumerate(lines) if ln and not ln[0].isspace()]
        i = starts[int(rng.integers(len(starts)))]
        end = next((j for j in starts if j > i), len(lines))
        return "\n".join(lines + lines[i:end]) + "\n"
    if op == 1:  # a nested key written twice
        nested = [ln for ln in lines if ln.startswith("  ") and ":" in ln]
        if nested:
            k = int(rng.integers(len(nested)))
            i = lines.index(nested[k])
            return "\n".join(lines[: i + 1] + [nested[k]] + lines[i + 1:]) + "\n"
        return text + text
    if op == 2:  # cut anywhere
        return text[: int(rng.integers(len(text)))]
    if op == 3:  # an alias bomb next to the settings
        bomb = ["zz0: &z0 [x,x,x,x,x,x,x,x,x]"]
        bomb += [f"zz{i}: &z{i} [" + ",".join([f"*z{i - 1}"] * 9) + "]" for i in range(1, 8)]
        return text + "\n".join(bomb) + "\n"
    if op == 4:  # a stray character
        pos = int(rng.integers(len(text)))
        return text[:pos] + "\t:[{&*!|>%@`\x00"[int(rng.integers(13))] + text[pos:]
    return text.replace(":", ": &a", 1) + "extra: *a\n"  # an alias of a section


@pytest.fixture()
def cached_pools(monkeypatch):
    """read_pool memoized by its arguments: the repository's pools are read once, not once per
    mutated document (errors are cached and raised again)."""
    from alprobe import pool

    real = pool.read_pool

    @functools.lru_cache(maxsize=64)
    def cached(key: tuple, source_dir: str) -> Any:
        cfg = type("PoolCfg", (), dict(zip(("file", "energy_key", "forces_key", "group_key",
                                            "test_file"), key)))
        try:
            return real(cfg, source_dir)
        except pool.PoolError as exc:
            return exc

    def read_pool(cfg: Any, source_dir: Any = ".") -> Any:
        got = cached((cfg.file, cfg.energy_key, cfg.forces_key, cfg.group_key, cfg.test_file),
                     str(source_dir))
        if isinstance(got, Exception):
            raise got
        return got

    monkeypatch.setattr(pool, "read_pool", read_pool)


def check_answer(path: Path, capsys) -> int:
    """Run ``alprobe validate path`` in-process; assert the answer is "ok" or the problem lines."""
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code in (0, 1), (path.read_text()[:2000], out, err)
    assert "Traceback" not in out + err and not err.strip(), (path.read_text()[:2000], err)
    if code == 0:
        assert lines == [f"{path}: ok"], out
    else:
        n = len(lines) - 1
        assert n >= 1 and lines[0] == f"{path}: {n} problem(s)", out
        for line in lines[1:]:
            assert line.startswith("  ") and line.strip(), out
            assert len(line.strip()) <= LONGEST_LINE, line
    return code


def test_repository_files_validate_ok(tmp_path, capsys, cached_pools):
    for name, doc in sources():
        path = tmp_path / f"{Path(name).stem}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        assert check_answer(path, capsys) == 0, name


N_STRUCTURAL = 260
N_TEXT = 90


def test_mutated_documents_get_ok_or_problem_lines(tmp_path, capsys, cached_pools):
    rng = np.random.default_rng(23)
    docs = sources()
    codes = []
    for i in range(N_STRUCTURAL):
        name, doc = docs[i % len(docs)]
        path = tmp_path / f"m{i:03d}.yaml"
        path.write_text(yaml.safe_dump(mutate(doc, rng), sort_keys=False, allow_unicode=True))
        codes.append(check_answer(path, capsys))
    for i in range(N_TEXT):
        name, doc = docs[i % len(docs)]
        path = tmp_path / f"t{i:03d}.yaml"
        path.write_text(damage_text(yaml.safe_dump(doc, sort_keys=False), rng))
        codes.append(check_answer(path, capsys))
    # most mutations are refused, yet the generator is not so blunt that none passes
    assert 0 < codes.count(0) < codes.count(1), codes


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**30, "x" * 2000, None,
                                   [1, 2], {"a": {"b": 1}}])
def test_every_key_of_quickstart_swapped_for_an_odd_value(tmp_path, capsys, value):
    """Every single key path of the quick start, one at a time: refused or (rarely) fine."""
    doc = yaml.safe_load((CAMPAIGNS / "quickstart.yaml").read_text())
    for k, path in enumerate(paths(doc)):
        d = copy.deepcopy(doc)
        parent_of(d, path)[path[-1]] = value
        file = tmp_path / f"k{k:03d}.yaml"
        file.write_text(yaml.safe_dump(d))
        check_answer(file, capsys)
