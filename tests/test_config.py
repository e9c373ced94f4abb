"""Campaign files: strict parsing (alprobe.config) and ``alprobe validate`` (alprobe.cli)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from alprobe.cli import main
from alprobe.config import (
    BackboneConfig,
    CampaignConfig,
    ClusterConfig,
    ConfigError,
    DFTConfig,
    ExploreConfig,
    InitialConfig,
    ProbeConfig,
    SelectConfig,
    config_problems,
    load_campaign,
    parse_campaign,
)

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "campaigns" / "quickstart.yaml"


def minimal(**sections) -> dict:
    data = {"name": "x", "system": {"seeds": ["water"]}}
    data.update(sections)
    return data


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_campaign(data)
    return info.value.problems


def lines_starting(problems: list[str], prefix: str) -> list[str]:
    return [p for p in problems if p.startswith(prefix)]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------- parse_campaign


def test_minimal_campaign_parses_with_declared_defaults():
    cfg = parse_campaign(minimal(), source_dir="/some/where")
    assert isinstance(cfg, CampaignConfig)
    assert cfg.name == "x"
    assert cfg.system.seeds == ("water",)
    assert cfg.system.charge == 0 and cfg.system.spin == 0 and cfg.system.elements is None
    assert cfg.source_dir == "/some/where"
    # every section equals its class defaults, and the class defaults are the declared ones
    assert cfg.dft == DFTConfig()
    assert cfg.initial == InitialConfig()
    assert cfg.backbone == BackboneConfig()
    assert cfg.probe == ProbeConfig()
    assert cfg.explore == ExploreConfig()
    assert cfg.select == SelectConfig()
    assert cfg.cluster == ClusterConfig()
    for section in (cfg.dft, cfg.initial, cfg.backbone, cfg.probe, cfg.explore, cfg.select,
                    cfg.cluster):
        for name, field in type(section).model_fields.items():
            assert getattr(section, name) == field.get_default(call_default_factory=True), (
                type(section).__name__, name)
    for name in ("seed", "generations"):
        assert getattr(cfg, name) == CampaignConfig.model_fields[name].default
    # spot checks against the documented values
    assert cfg.generations == 3 and cfg.seed == 0
    assert cfg.select.budget == 16 and cfg.select.min_spacing == 2
    assert cfg.explore.walkers == 4 and cfg.explore.temperatures_K == (300.0,)
    assert cfg.dft.basis == "def2-svp" and cfg.dft.method == "dft"
    assert cfg.probe.threshold == "quantile" and cfg.probe.threshold_value == 0.5
    assert cfg.cluster.kind == "local"


def test_single_seed_string_becomes_a_list():
    cfg = parse_campaign({"name": "x", "system": {"seeds": "water"}})
    assert cfg.system.seeds == ("water",)


def test_resolve_is_relative_to_source_dir(tmp_path):
    cfg = parse_campaign(minimal(), source_dir=tmp_path)
    assert cfg.resolve("a/b.xyz") == tmp_path / "a" / "b.xyz"
    assert cfg.resolve("/abs/c.xyz") == Path("/abs/c.xyz")


def test_science_dict_leaves_out_cluster_and_source_dir():
    d = parse_campaign(minimal()).science_dict()
    assert "cluster" not in d and "source_dir" not in d
    assert d["select"]["budget"] == 16 and d["system"]["seeds"] == ["water"]


def test_unknown_top_level_key():
    problems = problems_of(minimal(generationz=3))
    assert lines_starting(problems, "generationz: unknown key"), problems


def test_unknown_key_in_a_section():
    problems = problems_of(minimal(explore={"walkrs": 4}))
    assert lines_starting(problems, "explore.walkrs: unknown key"), problems


def test_source_dir_may_not_be_set_in_the_file():
    problems = problems_of(minimal(source_dir="/tmp"))
    assert lines_starting(problems, "source_dir"), problems


def test_negative_budget_names_the_key_and_the_value():
    problems = problems_of(minimal(select={"budget": -5}))
    hits = lines_starting(problems, "select.budget")
    assert len(hits) == 1, problems
    assert "-5" in hits[0]


def test_zero_walkers():
    problems = problems_of(minimal(explore={"walkers": 0}))
    hits = lines_starting(problems, "explore.walkers")
    assert len(hits) == 1 and "0" in hits[0], problems


def test_unknown_element():
    problems = problems_of({"name": "x", "system": {"seeds": ["water"], "elements": ["H", "Xx"]}})
    hits = lines_starting(problems, "system.elements")
    assert len(hits) == 1 and "Xx" in hits[0], problems


def test_known_elements_pass():
    cfg = parse_campaign({"name": "x", "system": {"seeds": ["water"], "elements": ["H", "O", "C"]}})
    assert cfg.system.elements == ("H", "O", "C")


def test_wrong_type():
    problems = problems_of(minimal(generations="three"))
    hits = lines_starting(problems, "generations")
    assert len(hits) == 1 and "three" in hits[0], problems


def test_missing_required_keys():
    problems = problems_of({"explore": {}})
    assert lines_starting(problems, "name: required key missing"), problems
    assert lines_starting(problems, "system: required key missing"), problems


def test_non_mapping_document():
    problems = problems_of(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert len(problems) == 1 and "mapping" in problems[0]


@pytest.mark.parametrize(
    "section, values, key",
    [
        ("explore", {"temperatures_K": [300, -1]}, "explore.temperatures_K"),
        ("explore", {"timestep_fs": 10}, "explore.timestep_fs"),
        ("explore", {"trust_floor": 1.5}, "explore.trust_floor"),
        ("probe", {"threshold_value": 1.5}, "probe"),  # a quantile must lie in (0, 1)
        ("probe", {"error": "energy_squared"}, "probe.error"),
        ("initial", {"n_rattle": 1, "n_md": 2}, "initial"),  # no bootstrap set
        ("cluster", {"kind": "address"}, "cluster"),
        ("dft", {"grid_level": 12}, "dft.grid_level"),
        ("backbone", {"dtype": "float16"}, "backbone.dtype"),
    ],
)
def test_impossible_values_name_their_key(section, values, key):
    problems = problems_of(minimal(**{section: values}))
    assert lines_starting(problems, key), problems


def test_absolute_probe_threshold_may_exceed_one():
    cfg = parse_campaign(minimal(probe={"threshold": "absolute", "threshold_value": 2.5}))
    assert cfg.probe.threshold_value == 2.5


def test_all_problems_are_reported_at_once():
    data = {
        "name": "x",
        "generations": "three",
        "colour": "blue",
        "system": {"seeds": ["water"], "elements": ["Xx"]},
        "explore": {"walkrs": 4, "walkers": 0},
        "select": {"budget": -5},
    }
    with pytest.raises(ConfigError) as info:
        parse_campaign(data, source="camp.yaml")
    problems = info.value.problems
    expected = ["generations", "colour: unknown key", "system.elements",
                "explore.walkrs: unknown key", "explore.walkers", "select.budget"]
    for prefix in expected:
        assert len(lines_starting(problems, prefix)) == 1, (prefix, problems)
    assert len(problems) == len(expected), problems
    # the message heads with the source and the count, then one line per problem
    text = str(info.value)
    assert text.splitlines()[0] == f"camp.yaml: {len(expected)} problem(s)"
    assert len(text.splitlines()) == 1 + len(expected)


def test_config_objects_are_frozen():
    cfg = parse_campaign(minimal())
    with pytest.raises(pydantic.ValidationError):
        cfg.name = "y"
    with pytest.raises(pydantic.ValidationError):
        cfg.select.budget = 3
    with pytest.raises(pydantic.ValidationError):
        cfg.explore.walkers = 9
    assert cfg.name == "x" and cfg.select.budget == 16 and cfg.explore.walkers == 4


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_campaign(minimal(select={"budget": 0}))


# ----------------------------------------------------------------------------- load_campaign


def test_load_campaign_reads_a_file_and_sets_source_dir(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", minimal(select={"budget": 3}))
    cfg = load_campaign(path)
    assert cfg.select.budget == 3
    assert Path(cfg.source_dir) == tmp_path.resolve()
    assert config_problems(path) == []


def test_load_campaign_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    problems = info.value.problems
    assert len(problems) == 1
    assert "not found" in problems[0] and str(path) in problems[0]
    assert "\n" not in problems[0]


def test_load_campaign_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsystem: {seeds: [water\n  explore: : :\n")
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    problems = info.value.problems
    assert len(problems) == 1
    assert problems[0].startswith("not valid YAML")
    assert "\n" not in problems[0]


def test_config_problems_lists_problems_of_a_file(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", minimal(select={"budget": -5}))
    problems = config_problems(path)
    assert len(problems) == 1 and problems[0].startswith("select.budget")


def test_quickstart_parses():
    cfg = load_campaign(QUICKSTART)
    raw = yaml.safe_load(QUICKSTART.read_text())
    assert cfg.name == raw["name"]
    assert cfg.select.budget == raw["select"]["budget"]
    assert cfg.explore.temperatures_K == tuple(float(t) for t in raw["explore"]["temperatures_K"])


# ----------------------------------------------------------------------------- alprobe validate


def test_validate_reports_every_schema_problem(tmp_path, capsys):
    path = write_yaml(tmp_path / "bad.yaml",
                      minimal(explore={"walkrs": 4}, select={"budget": -5}))
    code = main(["validate", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    lines = [line.strip() for line in out.splitlines()]
    assert any(line.startswith("explore.walkrs: unknown key") for line in lines), out
    budget = [line for line in lines if line.startswith("select.budget")]
    assert len(budget) == 1 and "-5" in budget[0], out
    assert "2 problem(s)" in out


def test_validate_ok_on_quickstart(capsys):
    code = main(["validate", str(QUICKSTART)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok" in out


def test_validate_unknown_basis(tmp_path, capsys):
    path = write_yaml(tmp_path / "basis.yaml",
                      minimal(dft={"method": "hf", "basis": "def2-svvp"}))
    code = main(["validate", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert any("def2-svvp" in line for line in out.splitlines()), out


def test_validate_unknown_seed(tmp_path, capsys):
    data = {"name": "x", "system": {"seeds": ["unobtainium"]}, "dft": {"method": "hf",
                                                                       "basis": "sto-3g"}}
    path = write_yaml(tmp_path / "seed.yaml", data)
    code = main(["validate", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    hits = [line.strip() for line in out.splitlines() if line.strip().startswith("system.seeds")]
    assert len(hits) == 1 and "unobtainium" in hits[0], out


def test_validate_missing_file(tmp_path, capsys):
    code = main(["validate", str(tmp_path / "absent.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert "not found" in out


def test_committee_window_must_be_ordered():
    probs = problems_of(minimal(committee={"sigma_lo": 0.3, "sigma_hi": 0.2}))
    assert probs == ["committee: sigma_hi (0.2) must exceed sigma_lo (0.3)"]


def test_unknown_selection_rule_names_the_key():
    probs = problems_of(minimal(select={"rule": "uncertainty"}))
    assert len(probs) == 1 and probs[0].startswith("select.rule: Input should be 'probe'")


def test_committee_needs_two_members():
    probs = problems_of(minimal(committee={"members": 1}))
    assert len(probs) == 1 and probs[0].startswith("committee.members:")


def test_validate_reports_schema_and_chemistry_problems_in_one_run(tmp_path, capsys):
    """A typo'd key, a negative budget, an unknown seed and an unknown basis: all four at once
    (schema problems and the checks a schema cannot make), not two now and two after a fix."""
    data = {"name": "x", "system": {"seeds": ["ethanoll"]},
            "dft": {"method": "dft", "basis": "def2-svpx", "gird_level": 2},
            "select": {"budget": -3}}
    path = write_yaml(tmp_path / "four.yaml", data)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    assert "4 problem(s)" in out, out
    assert any(line.startswith("dft.gird_level: unknown key") for line in lines), out
    assert any(line.startswith("select.budget") and "-3" in line for line in lines), out
    assert any(line.startswith("system.seeds") and "ethanoll" in line for line in lines), out
    assert any(line.startswith("dft:") and "def2-svpx" in line for line in lines), out
    # `alprobe run` refuses the same file with the same four lines
    assert main(["run", str(path), "--dir", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s)" in err and not (tmp_path / "never").exists()
