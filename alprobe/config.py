"""Campaign files: strict, typed, frozen configuration.

A campaign file is YAML. Every section maps to one frozen pydantic model; unknown keys, wrong
types and impossible values are errors that name the key path (``explore.walkers: ...``).
Units are part of the key names (``_K``, ``_fs``, ``_A``, ``_eV``) so that a value is never
read in the wrong unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from .errors import AlprobeError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "BackboneConfig",
    "CampaignConfig",
    "ClusterConfig",
    "CommitteeConfig",
    "ConfigError",
    "DFTConfig",
    "ExploreConfig",
    "InitialConfig",
    "PoolConfig",
    "ProbeConfig",
    "SelectConfig",
    "StreamingConfig",
    "SystemConfig",
    "config_problems",
    "load_campaign",
    "parse_campaign",
]


class ConfigError(AlprobeError, ValueError):
    """A campaign file is invalid; ``problems`` lists one line per problem."""

    def __init__(self, problems: list[str], source: str = "campaign"):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: {len(self.problems)} problem(s)"
        super().__init__(head + "\n" + "\n".join("  " + p for p in self.problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SystemConfig(_Section):
    """What is simulated: seed structures, total charge and spin multiplicity."""

    seeds: tuple[str, ...] = Field(
        min_length=1,
        description="molecule names known to ase.build.molecule (or aliases such as 'ethanol'), "
        "or paths to xyz/extxyz files (relative to the campaign file)",
    )
    charge: int = 0
    spin: int = Field(0, ge=0, description="2S = N_alpha - N_beta (PySCF convention)")
    elements: tuple[str, ...] | None = Field(
        None, description="elements the campaign covers; default: those of the seeds"
    )

    @field_validator("seeds", mode="before")
    @classmethod
    def _one_seed(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("elements")
    @classmethod
    def _known_elements(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        from ase.data import chemical_symbols

        bad = [e for e in v if e not in chemical_symbols[1:]]
        if bad:
            raise ValueError(f"unknown element(s) {bad}")
        return v


class DFTConfig(_Section):
    """Reference level for labels (PySCF)."""

    method: Literal["dft", "hf"] = "dft"
    xc: str = "pbe"
    basis: str = "def2-svp"
    density_fit: bool = True
    grid_level: int = Field(1, ge=0, le=9)
    max_cycle: int = Field(100, gt=0)
    conv_tol: float = Field(1e-9, gt=0, description="Hartree")
    min_distance_A: float = Field(0.5, gt=0, description="refuse structures with a closer pair")
    rescue: bool = Field(True, description="on non-convergence, climb the SCF rescue ladder")
    timeout_s: float | None = Field(
        None, gt=0, description="wall-time limit per label (s); over it: status 'timeout'")


class InitialConfig(_Section):
    """Initial training set and the fixed held-out test set, built and labeled at the start.

    Training frames: ``n_rattle`` randomly displaced seeds and ``n_md`` frames of short MD
    walkers (``explore.walkers`` of them) on a bootstrap backbone trained on the rattled ones.
    Test frames: ``test_size`` frames spread over the trajectories of ``test_walkers`` separate
    walkers (same temperatures, other seeds), none of whose frames is ever trained on,
    selected or seen by the probe.
    """

    n_rattle: int = Field(24, ge=0, description="randomly displaced copies of the seeds")
    rattle_A: float = Field(0.08, gt=0, description="largest Gaussian displacement std (A)")
    n_md: int = Field(24, ge=0, description="frames from short MD of a bootstrap backbone")
    md_steps: int = Field(200, gt=0)
    test_size: int = Field(
        480, gt=0, description="held-out test frames; the default keeps the 95% bootstrap "
        "interval of the test force MAE within +-5% of the MAE when the test walkers stay in "
        "thermal geometries (ethanol: 160 frames up to +-5.7% at PBE; 480 up to +-3.1% at PBE "
        "and +-3.6% in the quick start); a comparison's summary reports it")
    test_walkers: int = Field(12, gt=0, description="walkers whose frames form the test set")
    test_md_steps: int | None = Field(
        None, gt=0, description="steps of each test walker (default: enough for test_size "
        "frames at explore.stride, at least md_steps)")
    calibration_fraction: float = Field(
        0.25, gt=0, lt=1, description="fraction of every labeled batch held out of backbone "
        "training, so that the probe sees only out-of-sample errors",
    )

    @model_validator(mode="after")
    def _enough(self) -> InitialConfig:
        if self.n_rattle + self.n_md < 4:
            raise ValueError(
                f"n_rattle + n_md ({self.n_rattle + self.n_md}) must be at least 4 to leave a "
                "training set")
        if self.n_md > 0 and self.n_rattle < 2:
            raise ValueError("n_md > 0 needs n_rattle >= 2 (the bootstrap backbone that drives "
                             "the first MD trains on the rattled frames)")
        return self


class PoolConfig(_Section):
    """Retrospective mode: a labeled pool replaces MD and DFT.

    Generation 0 draws ``initial_size`` labeled frames from the pool; every later generation's
    candidates are the pool's unlabeled, non-test frames (or a seeded random subset of
    ``candidates`` of them); "labeling" one looks its reference label up (counted as one DFT
    label). The test set is a separate ``test_file``, or whole groups (``group_key``, e.g. a
    trajectory id; else single frames) making up ``test_fraction`` of the pool.
    """

    file: str = Field(description="extxyz with reference energy (eV) and forces (eV/A) per "
                      "frame, relative to the campaign file")
    energy_key: str = "ref_energy"
    forces_key: str = "ref_forces"
    group_key: str | None = Field(
        None, description="info key of a frame's group: frames of one group never straddle "
        "test and training")
    test_fraction: float = Field(0.25, gt=0, lt=1)
    test_file: str | None = Field(None, description="a separate labeled test file instead")
    initial_size: int = Field(16, ge=4, description="generation 0's labels (train + calib)")
    candidates: int | None = Field(
        None, gt=0, description="per generation, a random subset of this many unlabeled "
        "frames are the candidates (default: all of them)")


class BackboneConfig(_Section):
    """The MACE backbone: trained from scratch, or a local model file the user supplies."""

    model_file: str | None = Field(
        None, description="local MACE model file to start from (loading runs pickled code)"
    )
    channels: int = Field(32, gt=0)
    max_L: int = Field(0, ge=0, le=3)
    r_max_A: float = Field(5.0, gt=0)
    interactions: int = Field(2, ge=1)
    correlation: int = Field(2, ge=1)
    epochs: int = Field(60, gt=0)
    finetune: bool = Field(True, description="fine-tune on all training labels every generation")
    finetune_epochs: int = Field(30, gt=0)
    batch_size: int = Field(4, gt=0)
    lr: float = Field(0.01, gt=0)
    forces_weight: float = Field(10.0, ge=0)
    energy_weight: float = Field(1.0, ge=0)
    stage_two_energy_weight: float = Field(100.0, ge=0)
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    refresh_every: int = Field(
        1, ge=1, description="train the backbone only every K generations; in between it is "
        "frozen, so every new label is out of sample for the probe")
    retrain: Literal["finetune", "scratch"] = Field(
        "finetune", description="every generation: fine-tune the previous backbone "
        "(finetune_epochs) or train a new one from scratch on all training labels (epochs)")
    ema: bool = Field(False, description="exponential moving average of the weights (mace)")
    train_timeout_s: float | None = Field(
        None, gt=0, description="wall-time limit of one training run (s); over it the "
        "trainer is killed and the stage stops with an error (resumable)")


class ProbeConfig(_Section):
    """The PROBE reliability classifier (see PROBE.md)."""

    error: Literal["energy", "energy_per_atom", "force_rmse", "force_max"] = "force_rmse"
    threshold: Literal["quantile", "absolute"] = "quantile"
    threshold_value: float = Field(
        0.5, gt=0, description="quantile in (0, 1), or eV / eV/A / eV per atom if absolute"
    )
    members: int = Field(3, ge=1, description="heads with different seeds, averaged (one "
                         "batched forward pass for all)")
    attention: bool = Field(True, description="False: mean-pool MLP ablation (no attention)")
    target: Literal["structure", "atom"] = Field(
        "structure", description="structure: one example per frame (its error against the "
        "threshold); atom: one example per atom (its force error), a frame's trust pooled "
        "from its atoms'")
    atom_pool: Literal["min", "mean"] = Field(
        "min", description="atom target: a frame's P(reliable) is the min or the mean of its "
        "atoms'")
    use_energy: bool = Field(True, description="the predicted energy in the pooling vector")
    features: Literal["last", "all"] = Field(
        "last", description="invariant features of the last interaction layer, or of all")
    width: int | Literal["auto"] = Field(
        "auto", description="hidden width; auto: probe.auto_width (grows with the training "
        "examples, 32..256)")
    lineage: int = Field(
        1, ge=1, description="backbones whose out-of-sample errors train the probe: 1 = the "
        "current backbone only; K = also the K-1 before it, each on the labeled frames none "
        "of its lineage trained on (frames labeled after it), errors scaled to the current "
        "backbone's median (more examples where each generation adds few)")
    temperature_scaling: bool = Field(
        False, description="fit a temperature on the validation split (calibrates P(reliable))")
    epochs: int = Field(300, gt=0)
    patience: int = Field(25, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    validation_fraction: float = Field(0.15, gt=0, lt=1)
    batch_size: int = Field(32, gt=0)
    device: str = "cpu"

    @model_validator(mode="after")
    def _quantile_range(self) -> ProbeConfig:
        if self.threshold == "quantile" and not 0 < self.threshold_value < 1:
            raise ValueError("threshold_value must lie in (0, 1) for a quantile threshold")
        return self


class ExploreConfig(_Section):
    """MD walkers (ASE Langevin) on the backbone."""

    walkers: int = Field(4, gt=0)
    temperatures_K: tuple[float, ...] = Field((300.0,), min_length=1)
    timestep_fs: float = Field(0.5, gt=0, le=5)
    steps: int = Field(400, gt=0)
    stride: int = Field(10, gt=0, description="MD steps between sampled frames")
    friction_per_fs: float = Field(0.01, gt=0)
    trust_floor: float = Field(0.1, ge=0, le=1, description="stop when P(reliable) stays below")
    patience: int = Field(3, gt=0, description="consecutive samples below the floor to stop")
    min_distance_A: float = Field(0.6, gt=0, description="closer pairs are unphysical")
    fragment_distance_A: float = Field(
        3.0, gt=0, description="an atom group farther than this from the rest has flown off"
    )
    keep_bonds: bool = Field(
        True, description="a walker whose bonds change is unphysical: a bond of its start "
        "structure stretched beyond 1.5x the two atoms' covalent radii, or two atoms not "
        "bonded at the start closer than 1.1x (thermal motion of molecules stays well inside "
        "both); false for reactive chemistry, where bonds may break and form")

    @field_validator("temperatures_K")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(t <= 0 for t in v):
            raise ValueError("temperatures must be > 0 K")
        return v


class SelectConfig(_Section):
    """Which frames go to DFT each generation, and by which rule (the arm's strategy).

    ``probe``: the least trusted by PROBE (lowest P(reliable)); ``ensemble``: the largest
    committee disagreement inside the committee's trust window (see CommitteeConfig);
    ``random``: uniform among the candidates (the control); ``latent``: the farthest from the
    training set in the backbone's embedding space. See alprobe.arms.
    """

    rule: str = Field("probe", description="the arm's strategy: probe, ensemble, random, "
                      "latent (any name registered in alprobe.arms.ARMS)")
    budget: int = Field(16, gt=0, description="labels per generation")
    sampling: Literal["top", "power"] = Field(
        "top", description="top: the rule's most wanted frames first; power: drawn at random "
        "with probability proportional to (wanted-ness)**select.power (stochastic batch "
        "acquisition: a batch that does not pile onto one kind of structure)")
    power: float = Field(1.0, ge=0, description="the exponent of sampling: power")
    min_spacing: int = Field(2, ge=0, description="samples between two picks of one walker")
    max_failed_fraction: float = Field(
        0.5, ge=0, le=1, description="pause before training when more labels of a generation "
        "failed than this fraction")
    audit_random: int = Field(
        0, ge=0, description="of the budget, this many labels go to candidates drawn at "
        "random (marked audit), which measure the trust signal without selection bias")
    hit_threshold_force_rmse_eV_A: float | None = Field(
        None, gt=0, description="absolute hit-rate threshold: a new label is a hit when the "
        "force RMSE of the model that picked it exceeds this (eV/A), from its raw predictions")


    @field_validator("rule")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        from .arms import ARMS

        if v not in ARMS:
            raise ValueError(f"Input should be {', '.join(repr(r) for r in ARMS)}")
        return v

    @model_validator(mode="after")
    def _audit_fits(self) -> SelectConfig:
        if self.audit_random > self.budget:
            raise ValueError(f"audit_random ({self.audit_random}) must not exceed the budget "
                             f"({self.budget})")
        return self


class CommitteeConfig(_Section):
    """The ensemble arm's committee (used when select.rule is ``ensemble``).

    Member 0 is the arm's backbone; members 1..M-1 are trained with other seeds (and, with
    ``bootstrap``, on resampled training sets) and fine-tuned every generation like it.
    ``signal``: ``force`` = DP-GEN's max atomic force deviation eps_F (eV/A); ``energy`` =
    energy std per atom (eV/atom). Frames with sigma_lo <= sigma < sigma_hi are eligible
    (largest first); frames at or above sigma_hi are treated as broken and never labeled.
    """

    members: int = Field(4, ge=2, description="committee size M, the backbone included")
    bootstrap: bool = Field(False, description="members 1..M-1 train on bootstrap resamples")
    signal: Literal["force", "energy"] = "force"
    sigma_lo: float = Field(0.0, ge=0, description="eV/A (force) or eV/atom (energy)")
    sigma_hi: float | None = Field(None, gt=0, description="eV/A or eV/atom; None: no ceiling")

    @model_validator(mode="after")
    def _window(self) -> CommitteeConfig:
        if self.sigma_hi is not None and self.sigma_hi <= self.sigma_lo:
            raise ValueError(f"sigma_hi ({self.sigma_hi}) must exceed sigma_lo ({self.sigma_lo})")
        return self


class StreamingConfig(_Section):
    """The streaming schedule (``schedule: streaming``): no generation barrier.

    Walkers run on in segments of ``segment_steps`` MD steps; the arm's rule picks frames of
    each segment as it returns (``picks_per_segment``, at least ``select.min_spacing`` samples
    apart); picked frames queue for DFT, and label tasks are kept running on every free
    worker; after every ``retrain_every`` new labels the backbone (and probe, or committee)
    retrains in the background while MD and labeling go on, and walkers switch to the new
    models at their next segment. The campaign ends after ``total_budget`` labels (and the
    training on all of them). Defaults reproduce the generations schedule's labels: the total
    is ``select.budget`` x ``generations``, a retrain every ``select.budget`` labels, and the
    same fraction of candidates picked.
    """

    total_budget: int | None = Field(
        None, gt=0, description="labels after generation 0, audit sample included (default: "
        "select.budget x generations)")
    retrain_every: int | None = Field(
        None, gt=0, description="new labels between two trainings (default: select.budget)")
    segment_steps: int | None = Field(
        None, gt=0, description="MD steps of one walker segment (default: explore.steps / 3, "
        "at least 2 strides)")
    picks_per_segment: int | None = Field(
        None, gt=0, description="frames the rule picks per segment (default: the generations "
        "schedule's fraction, select.budget of walkers x steps / stride candidates, at least 1)")
    max_labels_per_hour: float | None = Field(
        None, gt=0, description="optional rate limit of new label tasks")
    label_slots: int | None = Field(
        None, gt=0, description="label tasks kept in flight (default: every worker thread)")


TASK_KINDS = ("md", "label", "train", "probe", "evaluate")


class TLSConfig(_Section):
    """TLS files passed to distributed.security.Security (all paths)."""

    ca_file: str
    cert: str
    key: str


class ClusterConfig(_Section):
    """Where the tasks run. Default: a LocalCluster on this machine.

    ``local``: LocalCluster (n_workers x threads_per_worker). ``address``: an existing
    ``dask scheduler``. ``slurm`` / ``pbs`` / ``lsf``: dask-jobqueue (cores, memory, walltime,
    queue, account, job_extra_directives, job_script_prologue; ``jobs`` fixed jobs, or adaptive
    between adapt_minimum_jobs and adapt_maximum_jobs). ``resources`` asks Dask worker
    resources per task kind (md, label, train, probe, evaluate), e.g. {md: {GPU: 1}}; workers
    offer them with ``worker_resources`` (local / jobqueue) or ``dask worker --resources``.
    """

    kind: Literal["local", "address", "slurm", "pbs", "lsf"] = "local"
    address: str | None = None
    n_workers: int = Field(2, gt=0)
    threads_per_worker: int = Field(1, gt=0)
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:0"
    host: str = Field("127.0.0.1", description="scheduler bind address (local and jobqueue)")
    cores: int = Field(1, gt=0, description="jobqueue: cores per job")
    processes: int = Field(1, gt=0, description="jobqueue: worker processes per job")
    memory: str = Field("4GB", description="jobqueue: memory per job")
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    interface: str | None = None
    jobs: int = Field(1, ge=0, description="jobqueue: jobs to start when not adaptive")
    adaptive: bool = False
    adapt_minimum_jobs: int = Field(0, ge=0)
    adapt_maximum_jobs: int = Field(4, ge=1)
    worker_resources: dict[str, float] = Field(default_factory=dict)
    resources: dict[str, dict[str, float]] = Field(default_factory=dict)
    wait_for_resources_s: float = Field(
        60.0, ge=0, description="how long to wait for a worker offering a requested resource")
    tls: TLSConfig | Literal["auto"] | None = Field(
        None, description="TLS for every connection: 'auto' makes a throw-away CA and "
        "certificate in the campaign folder (tls/), or give {ca_file, cert, key}")

    @field_validator("resources")
    @classmethod
    def _kinds(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        bad = sorted(set(v) - set(TASK_KINDS))
        if bad:
            raise ValueError(f"unknown task kind(s) {bad}; known: {list(TASK_KINDS)}")
        return v

    @model_validator(mode="after")
    def _address(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs cluster.address (e.g. tcp://127.0.0.1:8786)")
        if self.adapt_minimum_jobs > self.adapt_maximum_jobs:
            raise ValueError("adapt_minimum_jobs must not exceed adapt_maximum_jobs")
        exposed = network_exposure(self)
        if exposed and self.tls is None:
            raise ValueError(
                f"{exposed} without TLS: anyone who reaches that port can run code as you; "
                + ("start the scheduler with TLS (`dask scheduler --tls-ca-file ... --tls-cert "
                   "... --tls-key ...`), use its tls:// address and set cluster.tls to those "
                   "files" if self.kind == "address" else
                   "set `cluster.tls: auto` (a throw-away CA and certificate in the campaign "
                   "folder, handed to the workers) or cluster.tls: {ca_file, cert, key}"))
        if self.kind == "address" and str(self.address).startswith("tls://") and not self.tls:
            raise ValueError(f"cluster.address {self.address} needs cluster.tls: "
                             "{ca_file, cert, key} (the files the scheduler trusts)")
        if self.kind == "address" and self.tls == "auto":
            raise ValueError("cluster.tls 'auto' makes certificates for a scheduler alprobe "
                             "starts; for kind 'address' give the files the scheduler uses")
        return self


def _is_loopback(host: str) -> bool:
    import ipaddress

    host = host.strip().strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost resolves to the network


def network_exposure(cfg: ClusterConfig) -> str:
    """'' when every listening or connecting address of ``cfg`` is loopback, else what is
    exposed (e.g. "cluster.host 0.0.0.0 binds the scheduler to the network")."""
    if cfg.kind == "address":
        addr = str(cfg.address or "")
        proto, _, rest = addr.rpartition("://")
        host = rest.rsplit(":", 1)[0] if ":" in rest else rest
        if (proto or "tcp") != "tls" and not _is_loopback(host):
            return f"cluster.address {addr} is an unencrypted scheduler on the network"
        return ""
    if not _is_loopback(cfg.host):
        return f"cluster.host {cfg.host} binds the scheduler to the network"
    return ""


class CampaignConfig(_Section):
    """A whole campaign; ``source_dir`` is where relative paths are resolved."""

    name: str = Field(min_length=1)
    seed: int = 0
    replica: int = Field(
        0, ge=0, description="a replica of an arm: mixes into the selection, training and "
        "probe seeds after generation 0 (walker seeds and generation 0 stay shared)")
    generations: int = Field(3, ge=0, description="generations (the streaming schedule: "
                             "its default number of retrain cycles)")
    schedule: Literal["generations", "streaming"] = Field(
        "generations", description="generations: explore, select, label, train in turn; "
        "streaming: all at once, no barrier (see StreamingConfig)")
    streaming: StreamingConfig = StreamingConfig()
    system: SystemConfig | None = Field(
        None, description="required unless `pool` is given (a pool brings its structures)")
    pool: PoolConfig | None = None
    dft: DFTConfig = DFTConfig()
    initial: InitialConfig = InitialConfig()
    backbone: BackboneConfig = BackboneConfig()
    probe: ProbeConfig = ProbeConfig()
    explore: ExploreConfig = ExploreConfig()
    select: SelectConfig = SelectConfig()
    committee: CommitteeConfig = CommitteeConfig()
    cluster: ClusterConfig = ClusterConfig()
    source_dir: str = Field(".", description="set by the loader: folder of the campaign file")

    @model_validator(mode="after")
    def _system_or_pool(self) -> CampaignConfig:
        if self.system is None and self.pool is None:
            raise ValueError("system: required key missing (seed structures for MD and DFT; "
                             "or give `pool`, a labeled pool, for a retrospective campaign)")
        return self

    @model_validator(mode="after")
    def _streaming_needs_walkers(self) -> CampaignConfig:
        if self.schedule == "streaming" and self.pool is not None:
            raise ValueError("schedule: streaming runs MD walkers and DFT; a pool campaign "
                             "(retrospective) uses schedule: generations")
        return self

    def resolve(self, path: str) -> Path:
        """A path from the campaign file, relative to the file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.source_dir) / p

    def science_dict(self) -> dict[str, Any]:
        """The settings that change results (everything but cluster and source_dir)."""
        return self.model_dump(mode="json", exclude={"cluster", "source_dir"})


def _format_error(err: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "<top>"
    msg = err["msg"].removeprefix("Value error, ")
    if path == "<top>" and msg.split(":")[0].replace(".", "").replace("_", "").isalnum():
        return msg  # a whole-campaign check that names its own key
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    if err["type"] == "missing":
        return f"{path}: required key missing"
    got = err.get("input")
    if err["type"] not in ("model_type",) and got is not None and not isinstance(got, dict):
        return f"{path}: {msg} (got {got!r})"
    return f"{path}: {msg}"


def parse_campaign(data: Any, source_dir: str | Path = ".", source: str = "campaign") -> CampaignConfig:
    """Validate a mapping (as read from YAML); raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"<top>: expected a mapping of sections, got {type(data).__name__}"], source)
    problems = ["source_dir: unknown key"] if "source_dir" in data else []
    if data.get("system") is None and data.get("pool") is None:  # pydantic would skip it
        problems.append("system: required key missing (seed structures for MD and DFT; or "
                        "give `pool`, a labeled pool, for a retrospective campaign)")
    data = {k: v for k, v in data.items() if k != "source_dir"}
    try:
        cfg = CampaignConfig.model_validate({**data, "source_dir": str(source_dir)})
    except ValidationError as exc:
        problems += [p for p in map(_format_error, exc.errors()) if p not in problems]
    if problems:
        raise ConfigError(problems, source) from None
    return cfg


def read_yaml(path: str | Path, kind: str = "campaign") -> Any:
    """The YAML document at ``path``; ConfigError if the ``kind`` file is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{kind} file not found: {path}"], str(path))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {' '.join(str(exc).split())}"], str(path)) from None


def load_campaign(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file; raise ConfigError (one line per problem)."""
    path = Path(path)
    return parse_campaign(read_yaml(path), path.resolve().parent, str(path))


def config_problems(path: str | Path) -> list[str]:
    """Every problem of a campaign file, or [] (schema only; see campaign.check_campaign)."""
    try:
        load_campaign(path)
    except ConfigError as exc:
        return exc.problems
    return []
