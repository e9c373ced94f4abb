"""The shape of the code (docs/ARCHITECTURE.md): no import circles, no import up the layers,
one list of stage names and CPU accounts, config's rule names equal to the registered arms, and
no function or class past its size limit. Pure source reading: no heavy import."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "alprobe"

#: Each module's layer, lowest first; a module may import only its own layer and those below.
#: (A new module fails test_every_module_has_a_layer until it is placed here and in the doc.)
LAYERS: dict[str, int] = {}
for layer, names in enumerate([
    # 0 foundation: names, errors, files, statistics, terminal output
    ["errors", "files", "records", "version", "paired", "console"],
    # 1 data: frames and ASE, the sandbox for crashing libraries
    ["frames", "sandbox"],
    # 2 science and adapters: plain functions of data, heavy imports kept here
    ["dataset", "metrics", "acquire", "explore", "probe", "committee", "baselines", "backbone",
     "dft", "dft.level", "dft.scf", "dft.rescue", "pool", "plots", "audit", "_warm"],
    # 3 configuration and its checks, the public ASE calculator
    ["config", "validate", "trust"],
    # 4 running things: ledger, cluster, executor, worker tasks, the campaign folder
    ["ledger.base", "ledger.rows", "ledger.frames", "ledger.records", "ledger.migrate",
     "ledger", "cluster", "executor", "tasks", "folder"],
    # 5 acquisition strategies
    ["arms"],
    # 6 the steps of a generation
    ["stages", "stages.base", "stages.context", "stages.score", "stages.explore",
     "stages.select", "stages.label", "stages.train", "stages.probe", "stages.evaluate",
     "stages.metrics", "stages.initial", "stages.stability", "stages.plan"],
    # 7 schedules
    ["campaign", "streaming"],
    # 8 outputs and entry points (the report package below the comparison that writes with it)
    ["report.blocks", "report.fmt", "report.gather", "report.html", "report.status",
     "report.campaign", "report.summary", "report.comparison", "report", "comparison",
     "export", "reference", "cli", ""],
]):
    for n in names:
        LAYERS[f"alprobe.{n}" if n else "alprobe"] = layer


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _edges() -> dict[str, set[str]]:
    """Every import of one alprobe module by another: module level, inside functions, and
    under TYPE_CHECKING alike. ``from pkg import sub`` counts as an import of ``pkg.sub``."""
    mods = _modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t) if t.startswith("alprobe") else ""
                if r and r != m:
                    edges[m].add(r)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_has_a_layer():
    missing = sorted(set(_modules()) - set(LAYERS))
    assert not missing, f"place these modules in a layer (and docs/ARCHITECTURE.md): {missing}"
    gone = sorted(set(LAYERS) - set(_modules()))
    assert not gone, f"layers name modules that do not exist: {gone}"


def test_no_import_circles():
    assert _cycles(_edges()) == []


def test_no_import_runs_up_the_layers():
    up = [f"{m} (layer {LAYERS[m]}) imports {t} (layer {LAYERS[t]})"
          for m, ts in _edges().items() for t in sorted(ts)
          if m in LAYERS and t in LAYERS and LAYERS[t] > LAYERS[m]]
    assert up == []


def test_arms_import_no_stage():
    assert not any(t.startswith("alprobe.stages") for t in _edges()["alprobe.arms"])


def test_config_rules_are_the_registered_arms():
    from alprobe.arms import ARMS
    from alprobe.config import RULES

    assert list(RULES) == list(ARMS)


def test_every_arm_scoring_is_a_stage_and_every_task_account_is_listed():
    from alprobe.arms import ARMS
    from alprobe.records import ACCOUNTS, STAGES

    assert set(ACCOUNTS) <= set(STAGES)
    for arm in ARMS.values():
        assert arm.scoring == "" or arm.scoring in STAGES, arm.rule
    # every literal account a Job is given in the package is a listed account
    used = set()
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "account" \
                    and isinstance(node.value, ast.Constant) and node.value.value:
                used.add(node.value.value)
    assert used and used <= set(ACCOUNTS), sorted(used - set(ACCOUNTS))


def test_stage_keys_are_built_in_one_place():
    """No hand-built ``genNNN/<stage>`` keys outside alprobe.records."""
    pat = re.compile(r"gen\{[^}]*:03d\}/|gen%03d/")
    hits = [f"{p.relative_to(PKG)}:{i}" for p in PKG.rglob("*.py") if p.name != "records.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pat.search(line)]
    assert hits == []


def test_stage_key_round_trip():
    from alprobe.records import parse_stage_key, stage_key, stop_kind

    assert stage_key(7, "train") == "gen007/train"
    assert parse_stage_key(stage_key(1234, "probe")) == (1234, "probe")
    assert parse_stage_key("cpu_pending") is None
    assert stop_kind("low trust at step 40: P(reliable) < 0.2") == "low trust"
    assert stop_kind("walker task failed: KeyError") == "other"


@pytest.mark.parametrize("kind, limit", [("function", 80), ("class", 250)])
def test_no_function_or_class_past_its_size(kind, limit):
    types = ((ast.FunctionDef, ast.AsyncFunctionDef) if kind == "function" else (ast.ClassDef,))
    over = []
    for p in PKG.rglob("*.py"):
        mod = ".".join(p.relative_to(PKG).with_suffix("").parts)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, types):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                size = node.end_lineno - first + 1
                name = f"{mod}.{node.name}"
                if size > limit:
                    over.append(f"{name}: {size} lines")
    assert over == []


def test_the_streaming_class_is_only_the_schedule():
    """Stream under 200 lines, and no selection, labeling or walker code of its own: those
    come from the stages (the same code as the generations schedule)."""
    src = (PKG / "streaming.py").read_text()
    tree = ast.parse(src)
    stream = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Stream")
    assert stream.end_lineno - stream.lineno + 1 < 200
    for private in ("_record", "_crashed", "select_random", "label_task", "walker_task",
                    "scheduler_info", "CampaignPaused"):
        assert private not in src, private


def test_campaign_file_reference_is_current():
    """docs/CAMPAIGN_FILE.md is what the schema generates (regenerate it with
    ``python -m alprobe.reference > docs/CAMPAIGN_FILE.md``)."""
    from alprobe.reference import reference_markdown

    text = reference_markdown()
    assert (PKG.parent / "docs" / "CAMPAIGN_FILE.md").read_text() == text
    for key in ("`select.rule`", "`dft.basis`", "`cluster.resources`", "`probe.crossfit`"):
        assert key in text


def test_every_campaign_key_is_described():
    from pydantic import BaseModel

    from alprobe.config import CampaignConfig
    from alprobe.reference import _models

    bare = []

    def walk(model: type[BaseModel], path: str) -> None:
        for key, field in model.model_fields.items():
            inner = _models(field.annotation)
            if not inner and not field.description:
                bare.append(f"{path}{key}")
            for m in inner:
                walk(m, f"{path}{key}.")

    walk(CampaignConfig, "")
    assert bare == []


def test_ci_runs_the_readme_commands():
    """.ci/run installs as the README's quick start does and runs its test command."""
    readme = (PKG.parent / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    install, test = [line.strip() for line in block.strip().splitlines()]
    ci = [line.strip() for line in (PKG.parent / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == test
    for step in install.split(" && "):
        if "alprobe run" not in step:  # CI runs the tests, not the demo
            assert any(step.replace(" -q", "") == c.replace(" -q", "") for c in ci), step
