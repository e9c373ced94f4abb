"""What a schema cannot check: seeds, elements, the DFT level, a pool, a model file; and every
problem of a campaign file at once (schema and these), for ``alprobe validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import CampaignConfig, ConfigError, clip, parse_campaign, short
from .frames import is_file, load_seeds

__all__ = ["campaign_problems", "check_campaign", "dft_level", "foundation_problems"]


def check_campaign(cfg: CampaignConfig) -> list[str]:
    """Problems a schema cannot see, one line each: seeds or a pool that cannot be read; seeds
    that PySCF cannot label (periodic, atoms closer than dft.min_distance_A, an electron count
    that does not fit system.charge and system.spin); elements, the DFT level; a pool too small
    for its splits; files named by backbone.model_file and cluster.tls that do not exist."""
    from .dft import check_level

    problems = []
    if cfg.pool is not None:
        problems += _pool_problems(cfg)
    if cfg.system is not None:
        elements: set[str] = set(cfg.system.elements or [])
        for spec in cfg.system.seeds:
            try:
                seeds = load_seeds([spec], cfg.source_dir)
            except ValueError as exc:
                problems.append(f"system.seeds: {exc}")
                continue
            elements |= {s for a in seeds for s in a.get_chemical_symbols()}
            if cfg.pool is None:  # a pool campaign runs no MD and no DFT on its seeds
                problems += seed_problems(spec, seeds, cfg)
        if cfg.pool is None:  # a pool campaign runs no DFT
            problems += [f"dft: {p}" for p in check_level(dft_level(cfg), sorted(elements))]
    if cfg.backbone.model_file and not is_file(cfg.resolve(cfg.backbone.model_file)):
        problems.append("backbone.model_file: file not found: "
                        f"{_cut(str(cfg.resolve(cfg.backbone.model_file)))}")
    if cfg.backbone.foundation:
        problems += foundation_problems(cfg, _elements(cfg, elements if cfg.system else set()))
    problems += tls_problems(cfg)
    return [clip(p) for p in problems]


def seed_problems(spec: str, seeds: list[Any], cfg: CampaignConfig) -> list[str]:
    """What keeps the structures read from seed ``spec`` from being labeled by alprobe's
    (molecular) PySCF labeler or simulated by its walkers, one line each: a periodic cell,
    a pair of atoms closer than dft.min_distance_A (or explore.min_distance_A, whichever is
    larger: a walker would stop at once), an electron count (sum of Z - system.charge) that is
    not positive, smaller than system.spin, or of another parity than system.spin (2S)."""
    import numpy as np

    from .frames import min_distance

    d_min, d_key = cfg.dft.min_distance_A, "dft.min_distance_A"
    if cfg.explore.min_distance_A > d_min:
        d_min, d_key = cfg.explore.min_distance_A, "explore.min_distance_A"
    charge, spin = cfg.system.charge, cfg.system.spin
    problems = []
    for k, a in enumerate(seeds):
        what = f"seed {short(spec)}" + (f" (structure {k})" if len(seeds) > 1 else "")
        if len(a) == 0:
            problems.append(f"system.seeds: {what} has no atoms")
            continue
        if np.any(a.pbc):
            problems.append(f"system.seeds: {what} is periodic (pbc {a.pbc.tolist()}): "
                            "alprobe's PySCF labels are molecular; write it without a cell "
                            "(pbc F F F)")
        if len(a) > 1 and min_distance(a) < d_min:
            d = a.get_all_distances()
            d[np.diag_indices(len(a))] = np.inf
            i, j = sorted(int(x) for x in np.unravel_index(np.argmin(d), d.shape))
            sym = a.get_chemical_symbols()
            problems.append(f"system.seeds: {what}: atoms {i} ({sym[i]}) and {j} ({sym[j]}) are "
                            f"{d[i, j]:.3f} A apart, closer than {d_key} ({d_min:g} A)")
        n_elec = int(np.sum(a.numbers)) - charge
        formula = a.get_chemical_formula()
        electrons = f"{n_elec} electron{'' if n_elec == 1 else 's'}"
        if n_elec <= 0:
            problems.append(f"system.charge: {charge} leaves {what} ({formula}) with "
                            f"{electrons}")
        elif spin > n_elec:
            problems.append(f"system.spin: {spin} unpaired electrons exceed the "
                            f"{electrons} of {what} ({formula}) at system.charge {charge}")
        elif (n_elec - spin) % 2:
            fits = " or ".join(str(x) for x in (spin - 1, spin + 1) if 0 <= x <= n_elec)
            problems.append(
                f"system.spin: {spin} does not fit the {electrons} of {what} ({formula}) "
                f"at system.charge {charge}: spin is 2S = N_alpha - N_beta, so N - spin must be "
                f"even (spin {fits}, or another charge)")
    return problems


def _elements(cfg: CampaignConfig, elements: set[str]) -> set[str]:
    """The elements a campaign's structures hold: its seeds' (given) or its pool's."""
    if cfg.pool is not None:
        from .pool import PoolError, read_pool

        try:
            pool = read_pool(cfg.pool, cfg.source_dir)
        except PoolError:
            return elements  # reported by the pool check
        elements = elements | {s for a in pool.frames + list(pool.test or []) + pool.stress
                               for s in a.get_chemical_symbols()}
    return elements


def foundation_problems(cfg: CampaignConfig, elements: set[str]) -> list[str]:
    """What keeps backbone.foundation and its replay set from being used, one line each: a
    foundation file that is missing or not a MACE model, elements the campaign needs that the
    model lacks, a replay file that cannot be read with replay_energy_key / replay_forces_key,
    or whose elements the model lacks."""
    from ase.data import chemical_symbols

    from .backbone import BackboneError, load_model, model_info
    from .frames import read_labeled

    bb = cfg.backbone
    path = cfg.resolve(bb.foundation)
    if not is_file(path):
        return [f"backbone.foundation: file not found: {_cut(str(path))}"]
    try:
        known = {chemical_symbols[z] for z in model_info(load_model(path))["atomic_numbers"]}
    except BackboneError as exc:
        return [f"backbone.foundation: {exc}"]
    problems = []
    missing = sorted(elements - known)
    if missing:
        problems.append(f"backbone.foundation: {_cut(str(path))} knows {sorted(known)}, not "
                        f"{missing}, which the campaign's structures hold")
    replay = cfg.resolve(bb.replay_file)
    if not is_file(replay):
        return problems + [f"backbone.replay_file: file not found: {_cut(str(replay))}"]
    try:
        frames = read_labeled(replay, bb.replay_energy_key, bb.replay_forces_key)
    except ValueError as exc:
        return problems + [f"backbone.replay_file: {exc}"]
    extra = sorted({s for a in frames for s in a.get_chemical_symbols()} - known)
    if extra:
        problems.append(f"backbone.replay_file: holds {extra}, which the foundation does not "
                        "know: is it the foundation's own training data?")
    if len(frames) < 4:
        problems.append(f"backbone.replay_file: {len(frames)} frames; replay and its "
                        "held-back share need at least 4")
    return problems


def tls_problems(cfg: CampaignConfig) -> list[str]:
    """TLS files named by cluster.tls that are not files. Paths are checked as distributed
    uses them: as given (relative to the working directory, no ~ expansion)."""
    tls = cfg.cluster.tls
    if tls is None or isinstance(tls, str):
        return []
    return [f"cluster.tls.{key}: file not found: {_cut(getattr(tls, key))}"
            + (" (~ is not expanded: give the full path)" if "~" in getattr(tls, key) else "")
            for key in ("ca_file", "cert", "key") if not is_file(getattr(tls, key))]


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pool_problems(cfg: CampaignConfig) -> list[str]:
    from .pool import PoolError, read_pool

    try:
        pool = read_pool(cfg.pool, cfg.source_dir)
    except PoolError as exc:
        return [f"pool: {exc}"]
    n_groups = len(set(pool.groups))
    if pool.test is None and n_groups < 2:
        return [f"pool: {cfg.pool.file} has {n_groups} group(s) of pool.group_key; a held-out "
                "test split needs at least 2"]
    n_rest = len(pool.frames) if pool.test is not None else int(
        round(len(pool.frames) * (1 - cfg.pool.test_fraction)))
    need = cfg.pool.initial_size + cfg.select.budget
    if n_rest < need:
        return [f"pool: about {n_rest} frames outside the test set, fewer than pool.initial_size "
                f"+ select.budget ({need})"]
    return []


def campaign_problems(data: Any, source_dir: str | Path = ".", source: str = "campaign"
                      ) -> list[str]:
    """Every problem of a campaign mapping at once: schema problems (key path + reason) and the
    checks a schema cannot make (seeds, elements, basis, functional, model file), the latter on
    every value that passed the schema. [] if the campaign can run."""
    try:
        cfg = parse_campaign(data, source_dir, source)
    except ConfigError as exc:
        schema = list(exc.problems)
        cfg = _salvage(data, source_dir)
        if cfg is None:
            return schema
        extra = [p for p in check_campaign(cfg) if p not in schema]
        if _seeds_invalid(schema):  # placeholder seeds stood in: say nothing about them
            extra = [p for p in extra if not p.startswith(
                ("system.seeds", "system.charge", "system.spin"))]
        return schema + extra
    return check_campaign(cfg)


def _seeds_invalid(schema: list[str]) -> bool:
    return any(p.startswith(("system:", "system.seeds", "system.charge", "system.spin"))
               for p in schema)


def _salvage(data: Any, source_dir: str | Path) -> CampaignConfig | None:
    """The campaign with every key the schema refused dropped (defaults in their place), so
    that the remaining values can still be checked; None if nothing can be salvaged."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        return None
    import copy

    data = copy.deepcopy({k: v for k, v in data.items() if k != "source_dir"})
    for _ in range(8):
        try:
            return CampaignConfig.model_validate({**data, "source_dir": str(source_dir)})
        except ValidationError as exc:
            for err in exc.errors():
                loc = [p for p in err["loc"] if isinstance(p, str)]
                if loc == ["name"]:
                    data["name"] = "unnamed"
                elif loc[:2] == ["system", "seeds"] or loc == ["system"]:
                    data["system"] = {**(data.get("system") if isinstance(
                        data.get("system"), dict) else {}), "seeds": ["H2"]}
                    if loc == ["system"] and err["type"] != "missing":
                        data["system"] = {"seeds": ["H2"]}
                else:
                    _drop(data, loc)
    return None


def _drop(data: dict[str, Any], loc: list[str]) -> None:
    node: Any = data
    for key in loc[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if isinstance(node, dict) and loc:
        node.pop(loc[-1], None)


def dft_level(cfg: CampaignConfig) -> Any:
    """The campaign's DFT level (a dft.DFTLevel)."""
    from .dft import DFTLevel

    d = cfg.dft
    charge, spin = (cfg.system.charge, cfg.system.spin) if cfg.system else (0, 0)
    return DFTLevel(method=d.method, xc=d.xc, basis=d.basis, density_fit=d.density_fit,
                    grid_level=d.grid_level, charge=charge, spin=spin,
                    max_cycle=d.max_cycle, conv_tol=d.conv_tol, min_distance=d.min_distance_A,
                    rescue=d.rescue, timeout_s=d.timeout_s)
