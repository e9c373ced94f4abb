"""The campaign-file reference (docs/CAMPAIGN_FILE.md), generated from the pydantic schema in
:mod:`alprobe.config`. Every key gets its type, default, bounds, unit and description, so the
reference cannot drift from the code (a test compares the file with :func:`reference_markdown`).

Regenerate with ``python -m alprobe.reference > docs/CAMPAIGN_FILE.md``.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import CampaignConfig

__all__ = ["reference_markdown"]

#: Units read from a key's suffix (the config's naming convention).
_UNITS = (("_eV_A", "eV/Å"), ("_per_fs", "1/fs"), ("_fs", "fs"), ("_K", "K"), ("_A", "Å"),
          ("_s", "s"))


def _unit(key: str) -> str:
    return next((u for suffix, u in _UNITS if key.endswith(suffix)), "")


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic sections inside an annotation (``X | None``, ``Annotated[...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def _type_name(annotation: Any) -> str:
    """A short, readable type: ``int``, ``float or None``, ``one of 'top', 'power'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(a) for a in args))
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return f"`{field.default_factory()!r}`"
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return "(section)"
    return f"`{field.default!r}`"


def _bounds(field: Any) -> str:
    parts = []
    for m in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"),
                           ("min_length", "length >="), ("max_length", "length <=")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sign} {v:g}" if isinstance(v, float) else f"{sign} {v}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _section(model: type[BaseModel], path: str, out: list[str], seen: set[type]) -> None:
    doc = inspect.getdoc(model) or ""
    out += [f"## `{path}`" if path else "## top level", "", doc, "",
            "| key | type | default | bounds | unit | description |", "|---|---|---|---|---|---|"]
    subs = []
    for key, field in model.model_fields.items():
        if key == "source_dir":  # set by the loader, not by the file
            continue
        full = f"{path}.{key}" if path else key
        inner = _models(field.annotation)
        described = field.description or (
            f"section: see `{full}` below" if inner else "")
        out.append(f"| `{full}` | {_cell(_type_name(field.annotation))} | {_default(field)} | "
                   f"{_bounds(field)} | {_unit(key)} | {_cell(described)} |")
        subs += [(m, full) for m in inner if m not in seen]
        seen.update(inner)
    out.append("")
    for m, full in subs:
        _section(m, full, out, seen)


def reference_markdown() -> str:
    """The whole reference as markdown: one table per section, in the schema's order."""
    out = ["# Campaign file reference", "",
           "Generated from `alprobe/config.py` by `python -m alprobe.reference` (a test checks "
           "it is current). Every key of a campaign YAML file, with its type, default, bounds "
           "and unit (eV, Å, fs, K, s). Unknown keys, wrong types and values out of bounds are "
           "errors that name the key; `alprobe validate FILE` lists them all at once. A "
           "comparison file holds a campaign under `shared` plus `arms` (see the README).", ""]
    _section(CampaignConfig, "", out, {CampaignConfig})
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
