"""What a schema cannot check: seeds, elements, the DFT level, a pool, a model file; and every
problem of a campaign file at once (schema and these), for ``alprobe validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import CampaignConfig, ConfigError, parse_campaign
from .frames import load_seeds

__all__ = ["campaign_problems", "check_campaign", "dft_level"]


def check_campaign(cfg: CampaignConfig) -> list[str]:
    """Problems a schema cannot see: seeds or a pool that cannot be read, elements, the DFT
    level, a pool too small for its splits."""
    from .dft import check_level

    problems = []
    if cfg.pool is not None:
        problems += _pool_problems(cfg)
    if cfg.system is not None:
        elements: set[str] = set(cfg.system.elements or [])
        try:
            seeds = load_seeds(cfg.system.seeds, cfg.source_dir)
            elements |= {s for a in seeds for s in a.get_chemical_symbols()}
        except ValueError as exc:
            problems.append(f"system.seeds: {exc}")
        if cfg.pool is None:  # a pool campaign runs no DFT
            problems += [f"dft: {p}" for p in check_level(dft_level(cfg), sorted(elements))]
    if cfg.backbone.model_file and not cfg.resolve(cfg.backbone.model_file).is_file():
        problems.append(f"backbone.model_file: file not found: {cfg.resolve(cfg.backbone.model_file)}")
    return problems


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
            extra = [p for p in extra if not p.startswith("system.seeds")]
        return schema + extra
    return check_campaign(cfg)


def _seeds_invalid(schema: list[str]) -> bool:
    return any(p.startswith(("system:", "system.seeds")) for p in schema)


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
