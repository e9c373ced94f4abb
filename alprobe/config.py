"""Campaign files: strict, typed, frozen configuration.

A campaign file is YAML. Every section maps to one frozen pydantic model; unknown keys, wrong
types and impossible values are errors that name the key path (``explore.walkers: ...``).
Units are part of the key names (``_K``, ``_fs``, ``_A``, ``_eV``) so that a value is never
read in the wrong unit.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from .errors import AlprobeError
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError,
                      field_validator, model_validator)

__all__ = [
    "BackboneConfig",
    "CampaignConfig",
    "ClusterConfig",
    "CommitteeConfig",
    "ConfigError",
    "DFTConfig",
    "ExploreConfig",
    "InitialConfig",
    "RULES",
    "PoolConfig",
    "ProbeConfig",
    "SelectConfig",
    "StabilityConfig",
    "StreamingConfig",
    "SystemConfig",
    "clip",
    "config_problems",
    "load_campaign",
    "parse_campaign",
    "read_yaml",
    "short",
]

#: Upper bounds of counts and sizes. Far beyond anything alprobe can run (a DFT label costs
#: seconds to minutes, an MD step of a walker milliseconds), low enough that a typo such as
#: ``budget: 1e12`` is refused before any work instead of exhausting memory or the queue.
MAX_LABELS = 100_000  #: labels per generation, initial frames, test frames
MAX_WALKERS = 10_000  #: MD walkers (training or test)
MAX_STEPS = 10_000_000  #: MD steps of one walker
MAX_EPOCHS = 100_000  #: training epochs (backbone, probe)
MAX_GENERATIONS = 10_000
MAX_MEMBERS = 64  #: committee members, probe heads
MAX_WORKERS = 4_096  #: Dask workers of a LocalCluster, jobs of a jobqueue cluster
MAX_THREADS = 1_024  #: threads per worker, cores / processes per job
MAX_TEMPERATURE_K = 1e6  #: far beyond any molecule (walkers at 1e5 K break bonds)
MAX_SECONDS = 30 * 24 * 3600.0  #: any time limit: 30 days

#: Longest echo of a value in a problem line, and longest problem line.
SHORT_VALUE = 80
LONGEST_LINE = 400

#: A YAML document may expand (aliases repeating their anchor's content) to at most this many
#: nodes: a campaign file has a few hundred; an "alias bomb" of nine lines has millions.
MAX_YAML_NODES = 100_000
#: Largest campaign / comparison file read (bytes).
MAX_YAML_BYTES = 1_000_000


def short(value: Any, limit: int = SHORT_VALUE) -> str:
    """``repr(value)`` cut to ``limit`` characters (ending in "...") for echoing in a message;
    bounded work however large the value (reprlib: a few items of a sequence or mapping, a
    few levels deep)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 8, 8, 4, 4
    r.maxstring, r.maxlong, r.maxother = limit + 2, limit, limit
    try:
        text = r.repr(value)
    except Exception:  # noqa: BLE001 - e.g. a repr that fails
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def clip(line: str, limit: int = LONGEST_LINE) -> str:
    """One problem line: line breaks folded into spaces, cut to ``limit`` characters."""
    line = str(line)
    if "\n" in line or "\r" in line:
        line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ConfigError(AlprobeError, ValueError):
    """A campaign file is invalid; ``problems`` lists one line per problem."""

    def __init__(self, problems: list[str], source: str = "campaign"):
        self.problems = [clip(p) for p in problems]
        self.source = clip(source)
        head = f"{source}: {len(self.problems)} problem(s)"
        super().__init__(head + "\n" + "\n".join("  " + p for p in self.problems))


class _Section(BaseModel):
    # allow_inf_nan: every float setting (and every float inside a tuple or mapping) must be
    # finite: inf or nan is refused with the key path
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              allow_inf_nan=False)


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,3})?|mps)$")
_BYTES = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*([kKmMgGtTpP][iI]?[bB]?|[bB])?\s*$")
_PORT_TAIL = re.compile(r":(\d{1,5})$")


def _device(v: str) -> str:
    if not _DEVICE.match(v):
        raise ValueError("expected a torch device: cpu, cuda, cuda:N or mps")
    return v


def _memory(v: Any, auto: bool) -> Any:
    """A Dask memory size as dask.utils.parse_bytes reads it ("4GB", "4 GiB", "500MB", a number
    of bytes), with ``auto`` (a LocalCluster's memory_limit) also "auto", 0 (no limit) or a
    fraction of the machine's memory (0 < x <= 1, as distributed reads a number <= 1)."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return v  # the str type refuses it
    if isinstance(v, (int, float)):
        v = repr(v) if isinstance(v, float) else str(v)
    if auto and v.strip() == "auto":
        return v.strip()
    m = _BYTES.match(v)
    what = ("a memory size such as '4GB', '4 GiB', '500MB' or a number of bytes"
            + (", 'auto', 0 (no limit) or a fraction of the machine's memory (0.5)"
               if auto else ""))
    if not m:
        raise ValueError(f"expected {what}")
    number = float(m.group(1) + (m.group(3) or ""))
    unit = (m.group(4) or "").lower()
    scale = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}[unit[:1]]
    if "i" in unit:
        scale = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}[unit[0]]
    if not math.isfinite(number * scale):
        raise ValueError(f"expected {what}")
    if auto and (number == 0 or (not unit and number <= 1)):
        return v  # no limit, or a fraction of the machine's memory
    if number * scale < 1e8:
        raise ValueError("less than 100MB, too little for a worker that runs PySCF or MACE")
    return v


class SystemConfig(_Section):
    """What is simulated: seed structures, total charge and spin multiplicity."""

    seeds: tuple[str, ...] = Field(
        min_length=1, max_length=1000,
        description="molecule names known to ase.build.molecule (or aliases such as 'ethanol'), "
        "or paths to xyz/extxyz files (relative to the campaign file); molecular (no periodic "
        "cell), no two atoms closer than dft.min_distance_A, an electron count that fits "
        "system.charge and system.spin (checked by alprobe validate)",
    )
    charge: int = Field(0, ge=-1000, le=1000, description="total charge (e)")
    spin: int = Field(0, ge=0, le=1000, description="2S = N_alpha - N_beta (PySCF convention); "
                      "N_electrons - spin must be even and spin <= N_electrons")
    elements: tuple[str, ...] | None = Field(
        None, max_length=118, description="elements the campaign covers; default: those of "
        "the seeds"
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
            raise ValueError(f"unknown element(s) {short(bad)}")
        return v


class DFTConfig(_Section):
    """Reference level for labels (PySCF)."""

    method: Literal["dft", "hf"] = Field("dft", description="dft (Kohn-Sham with functional "
        "dft.xc) or hf (Hartree-Fock)")
    xc: str = Field("pbe", description="exchange-correlation functional, PySCF's name (not used "
        "by hf)")
    basis: str = Field("def2-svp", description="basis set, PySCF's name")
    density_fit: bool = Field(True, description="density fitting of the two-electron integrals: "
        "faster, slightly approximate")
    grid_level: int = Field(1, ge=0, le=9, description="PySCF's DFT integration grid level (0 "
        "coarse to 9 fine)")
    max_cycle: int = Field(100, gt=0, le=100_000, description="SCF iterations before an attempt "
        "counts as not converged")
    conv_tol: float = Field(1e-9, gt=0, le=1e-2, description="Hartree (at most 1e-2)")
    min_distance_A: float = Field(0.5, gt=0, le=3.0, description="refuse structures with a "
                                  "closer pair (at most 3 A: longer than any bond)")
    rescue: bool = Field(True, description="on non-convergence, climb the SCF rescue ladder")
    timeout_s: float | None = Field(
        None, gt=0, le=MAX_SECONDS, description="wall-time limit per label (s, at most 30 "
        "days); over it: status 'timeout'")


class InitialConfig(_Section):
    """Initial training set and the fixed held-out test set, built and labeled at the start.

    Training frames: ``n_rattle`` randomly displaced seeds and ``n_md`` frames of short MD
    walkers (``explore.walkers`` of them) on a bootstrap backbone trained on the rattled ones.
    Test frames: ``test_size`` frames spread over the trajectories of ``test_walkers`` separate
    walkers (same temperatures, other seeds), none of whose frames is ever trained on,
    selected or seen by the probe. Stress frames: ``stress_size`` more from as many walkers at
    ``stress_temperature_K`` (conditions beyond the exploration's), kept apart the same way.
    """

    n_rattle: int = Field(24, ge=0, le=MAX_LABELS, description="randomly displaced copies of "
                          "the seeds (at most 100000)")
    rattle_A: float = Field(0.08, gt=0, le=1.0, description="largest Gaussian displacement std "
                            "(A, at most 1)")
    n_md: int = Field(24, ge=0, le=MAX_LABELS, description="frames from short MD of a "
                      "bootstrap backbone (at most 100000)")
    md_steps: int = Field(200, gt=0, le=MAX_STEPS, description="steps of each bootstrap "
                          "walker (at most 1e7; at least explore.stride when n_md > 0)")
    test_size: int = Field(
        480, gt=0, le=MAX_LABELS,
        description="held-out test frames (1..100000); the default keeps the 95% bootstrap "
        "interval of the test force MAE within +-5% of the MAE when the test walkers stay in "
        "thermal geometries (ethanol: 160 frames up to +-5.7% at PBE; 480 up to +-3.1% at PBE "
        "and +-3.6% in the quick start); a comparison's summary reports it")
    test_walkers: int = Field(12, gt=0, le=MAX_WALKERS, description="walkers whose frames "
                              "form the test set (at most 10000)")
    test_md_steps: int | None = Field(
        None, gt=0, le=MAX_STEPS, description="steps of each test walker (default: enough for "
        "test_size frames at explore.stride, at least md_steps); must leave room for "
        "test_size frames (one every explore.stride steps)")
    calibration_fraction: float = Field(
        0.25, gt=0, lt=1, description="fraction of every labeled batch held out of backbone "
        "training, so that the probe sees only out-of-sample errors",
    )
    stress_size: int = Field(
        120, ge=0, le=MAX_LABELS, description="stress-set frames: walkers of their own "
        "(initial.test_walkers of them) at stress_temperature_K, beyond the exploration's "
        "temperatures; labeled like the test set, never trained on, selected or seen by a "
        "probe (0: no stress set)")
    stress_temperature_K: float | None = Field(
        None, gt=0, le=MAX_TEMPERATURE_K, description="the stress walkers' temperature "
        "(default: 1.5x the hottest of explore.temperatures_K)")

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
    trajectory id; else single frames) making up ``test_fraction`` of the pool. With
    ``stress_key``, the frames at its largest value are a stress set outside both.
    """

    file: str = Field(description="extxyz with reference energy (eV) and forces (eV/A) per "
                      "frame, relative to the campaign file")
    energy_key: str = Field("ref_energy", description="info key of a frame's reference energy (eV)")
    forces_key: str = Field("ref_forces", description="arrays key of a frame's reference forces "
        "(eV/A)")
    group_key: str | None = Field(
        None, description="info key of a frame's group: frames of one group never straddle "
        "test and training")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="share of the pool (whole groups) "
        "held out as the test set")
    test_file: str | None = Field(None, description="a separate labeled test file instead")
    initial_size: int = Field(16, ge=4, le=MAX_LABELS, description="generation 0's labels "
                              "(train + calib; at most 100000)")
    candidates: int | None = Field(
        None, gt=0, le=MAX_STEPS,
        description="per generation, a random subset of this many unlabeled "
        "frames are the candidates (default: all of them)")
    stress_key: str | None = Field(
        None, description="numeric info key (e.g. temperature_K) whose largest value marks "
        "the stress set: the groups at that value are held out of the candidates and of the "
        "test set, and every model is also measured on them (conditions beyond the rest)")


class BackboneConfig(_Section):
    """The MACE backbone: trained from scratch, or a local model file the user supplies."""

    model_file: str | None = Field(
        None, description="local MACE model file to start from (loading runs pickled code)"
    )
    foundation: str | None = Field(
        None, description="pretrained MACE model file (e.g. a MACE-OFF or MACE-MP file on disk, "
        "or campaigns/data/foundation/foundation_small.model): every training run fine-tunes "
        "it on all training labels with mace-torch's multihead replay (a pt_head on "
        "replay_file); loading runs pickled code")
    replay_file: str | None = Field(
        None, description="with foundation: labeled extxyz of the foundation's own training "
        "data (or a sample of it), the replay set; a share (replay_holdout) is held back to "
        "measure forgetting")
    replay_energy_key: str = Field("ref_energy", description="info key of the replay set's "
                                   "energies (eV)")
    replay_forces_key: str = Field("ref_forces", description="arrays key of the replay set's "
                                   "forces (eV/A)")
    replay_samples: int = Field(200, gt=0, le=MAX_LABELS, description="frames replayed in "
                                "every fine-tune: a seeded subset of the replay set (after the "
                                "held-back share), the same for the whole campaign")
    replay_holdout: float = Field(0.1, gt=0, lt=1, description="share of the replay set held "
                                  "back: never replayed, the forgetting yardstick")
    replay_weight: float = Field(1.0, gt=0, le=1000.0, description="weight of the replay "
                                 "frames' loss against the campaign's (their config_weight in "
                                 "the file mace-torch replays): larger keeps the body closer "
                                 "to what the foundation knew")
    replay_labels: Literal["file", "foundation"] = Field(
        "file", description="replay targets: the file's labels, or the foundation's own "
        "predictions on its structures (mace-torch's pseudolabel_replay)")
    freeze: int = Field(0, ge=0, le=7, description="mace-torch's --freeze of a fine-tune: 0 "
                        "trains every layer; 1 freezes the embedding, 5 also the interactions, "
                        "6 also the products (readout-only fine-tuning: embeddings stay fixed)")
    finetune_lr: float | None = Field(None, gt=0, le=10.0, description="learning rate of "
                                      "fine-tunes (default: lr)")
    channels: int = Field(32, gt=0, le=1024, description="MACE channels per irrep of the hidden "
        "features")
    max_L: int = Field(0, ge=0, le=3, description="highest angular order of the hidden features "
        "(0: invariant only)")
    r_max_A: float = Field(5.0, gt=0, le=20.0, description="cutoff radius (A, at most 20)")
    interactions: int = Field(2, ge=1, le=8, description="MACE interaction layers "
        "(message-passing steps)")
    correlation: int = Field(2, ge=1, le=6, description="body order of MACE's product basis "
        "(correlation order)")
    epochs: int = Field(60, gt=0, le=MAX_EPOCHS, description="epochs of a backbone trained from "
        "scratch")
    finetune: bool = Field(True, description="fine-tune on all training labels every generation")
    finetune_epochs: int = Field(30, gt=0, le=MAX_EPOCHS, description="epochs of each "
        "generation's fine-tune")
    batch_size: int = Field(4, gt=0, le=65_536, description="training batch size (frames)")
    lr: float = Field(0.01, gt=0, le=10.0, description="learning rate of mace-torch's trainer")
    forces_weight: float = Field(10.0, ge=0, le=1e6, description="weight of the force loss")
    energy_weight: float = Field(1.0, ge=0, le=1e6, description="weight of the energy loss "
        "(first stage)")
    stage_two_energy_weight: float = Field(100.0, ge=0, le=1e6, description="weight of the "
        "energy loss in mace-torch's second stage (the last third of the epochs)")
    dtype: Literal["float32", "float64"] = Field("float32", description="floating-point "
        "precision of the model")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:N or mps")
    refresh_every: int = Field(
        1, ge=1, le=MAX_GENERATIONS,
        description="train the backbone only every K generations; in between it is "
        "frozen, so every new label is out of sample for the probe")
    retrain: Literal["finetune", "scratch"] = Field(
        "finetune", description="every generation: fine-tune the previous backbone "
        "(finetune_epochs) or train a new one from scratch on all training labels (epochs); "
        "with foundation, every run fine-tunes the foundation on all training labels")
    ema: bool = Field(False, description="exponential moving average of the weights (mace)")
    train_timeout_s: float | None = Field(
        None, gt=0, le=MAX_SECONDS, description="wall-time limit of one training run (s, at "
        "most 30 days); over it the trainer is killed and the stage stops with an error "
        "(resumable)")

    @field_validator("device")
    @classmethod
    def _torch_device(cls, v: str) -> str:
        return _device(v)

    @model_validator(mode="after")
    def _foundation(self) -> BackboneConfig:
        if self.foundation and self.model_file:
            raise ValueError("foundation and model_file exclude each other: foundation "
                             "fine-tunes with multihead replay, model_file without")
        if self.foundation and not self.replay_file:
            raise ValueError("foundation needs replay_file (labeled frames of the "
                             "foundation's training data): mace-torch turns multihead replay "
                             "off without one for a model that is not MACE-MP")
        if self.replay_file and not self.foundation:
            raise ValueError("replay_file is used only with foundation")
        if self.freeze and not (self.foundation or self.model_file):
            raise ValueError("freeze applies to fine-tunes: set foundation or model_file")
        return self

    @property
    def start_file(self) -> str | None:
        """The model file every training run starts from (foundation or model_file), or
        None (from scratch)."""
        return self.foundation or self.model_file


class ProbeConfig(_Section):
    """The PROBE reliability classifier (see PROBE.md)."""

    error: Literal["energy", "energy_per_atom", "force_rmse", "force_max"] = Field(
        "force_rmse", description="the error the probe learns to flag, per frame: energy (eV), "
        "energy_per_atom (eV/atom), force_rmse or force_max (eV/A)")
    threshold: Literal["quantile", "absolute"] = Field(
        "quantile", description="how tau, the unreliability threshold, is set: a quantile of "
        "the out-of-sample errors, or an absolute error")
    threshold_value: float = Field(
        0.5, gt=0, le=1e6, description="quantile in (0, 1), or eV / eV/A / eV per atom if "
        "absolute"
    )
    members: int = Field(3, ge=1, le=MAX_MEMBERS, description="heads with different seeds, "
                         "averaged (one batched forward pass for all; at most 64)")
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
    width: Annotated[
        Union[Annotated[Annotated[int, Field(gt=0, le=4096)], Tag("width-int")],
              Annotated[Literal["auto"], Tag("width-auto")]],
        Discriminator(lambda v: "width-auto" if isinstance(v, str) else "width-int"),
    ] = Field("auto", description="hidden width (1..4096); auto: probe.auto_width (grows "
              "with the training examples, 32..256)")
    lineage: int = Field(
        1, ge=1, le=MAX_GENERATIONS,
        description="backbones whose out-of-sample errors train the probe: 1 = the "
        "current backbone only; K = also the K-1 before it, each on the labeled frames none "
        "of its lineage trained on (frames labeled after it), errors scaled to the current "
        "backbone's median (more examples where each generation adds few)")
    crossfit: int = Field(
        0, ge=0, le=10,
        description="K-fold cross-fitting (0: off; K >= 2): every generation that trains the "
        "backbone also fine-tunes K fold models from the same start point, model k on every "
        "training frame but fold k of the frames new to this generation; the folds' errors "
        "(with the fold models' embeddings) train the probe, so the backbone keeps every "
        "label. Costs K extra fine-tunes per generation")
    temperature_scaling: bool = Field(
        False, description="fit a temperature on the validation split (calibrates P(reliable))")
    epochs: int = Field(300, gt=0, le=MAX_EPOCHS, description="most training epochs of each "
        "probe head (early stopping)")
    patience: int = Field(25, gt=0, le=MAX_EPOCHS, description="epochs without a better "
        "validation loss before early stopping")
    lr: float = Field(1e-3, gt=0, le=10.0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=10.0, description="AdamW weight decay")
    validation_fraction: float = Field(0.15, gt=0, lt=1, description="share of the probe's "
        "frames kept for early stopping")
    batch_size: int = Field(32, gt=0, le=65_536, description="probe training batch size (frames)")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:N or mps")

    @field_validator("width", mode="before")
    @classmethod
    def _width(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            raise ValueError("expected a whole number of hidden units or 'auto'")
        return v

    @field_validator("device")
    @classmethod
    def _torch_device(cls, v: str) -> str:
        return _device(v)

    @model_validator(mode="after")
    def _quantile_range(self) -> ProbeConfig:
        if self.threshold == "quantile" and not 0 < self.threshold_value < 1:
            raise ValueError("threshold_value must lie in (0, 1) for a quantile threshold")
        return self


class ExploreConfig(_Section):
    """MD walkers (ASE Langevin) on the backbone."""

    walkers: int = Field(4, gt=0, le=MAX_WALKERS, description="MD walkers (at most 10000)")
    temperatures_K: tuple[float, ...] = Field(
        (300.0,), min_length=1, max_length=MAX_WALKERS,
        description="walker temperatures, cycled over the walkers (each in (0, 1e6] K)")
    timestep_fs: float = Field(0.5, gt=0, le=5, description="MD time step (fs)")
    steps: int = Field(400, gt=0, le=MAX_STEPS, description="MD steps of each walker per "
                       "generation (at most 1e7; at least stride)")
    stride: int = Field(10, gt=0, le=MAX_STEPS, description="MD steps between sampled frames")
    friction_per_fs: float = Field(0.01, gt=0, le=10.0, description="Langevin friction (1/fs)")
    trust_floor: float = Field(0.1, ge=0, le=1, description="stop when P(reliable) stays below")
    patience: int = Field(3, gt=0, le=MAX_STEPS, description="consecutive samples below the "
                          "floor to stop")
    min_distance_A: float = Field(0.6, gt=0, le=3.0, description="closer pairs are unphysical")
    fragment_distance_A: float = Field(
        3.0, gt=0, le=100.0,
        description="an atom group farther than this from the rest has flown off"
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
        if any(t > MAX_TEMPERATURE_K for t in v):
            raise ValueError(f"temperatures must be at most {MAX_TEMPERATURE_K:g} K")
        return v


class StabilityConfig(_Section):
    """MD stability of the final model: ``walkers`` Langevin walkers on the last backbone at
    the stress temperature for ``steps`` steps each (no probe, never stopped for trust), each
    checked every ``check_every`` steps by the explore section's rules (min_distance_A,
    fragment_distance_A, keep_bonds). Reported: the fraction that stayed physical and the
    time to the first failure (fs; the full run length where none failed)."""

    walkers: int = Field(4, ge=0, le=MAX_WALKERS, description="walkers (0: off)")
    steps: int = Field(1000, gt=0, le=MAX_STEPS, description="MD steps of each walker")
    timestep_fs: float = Field(0.5, gt=0, le=5, description="MD time step (fs)")
    check_every: int = Field(10, gt=0, le=MAX_STEPS, description="MD steps between geometry "
                             "checks")
    temperature_K: float | None = Field(
        None, gt=0, le=MAX_TEMPERATURE_K, description="null: the stress set's temperature "
        "(initial.stress_temperature_K, or the pool's stress_key value when that key is "
        "temperature_K), else 1.5x the hottest explore temperature")


#: The names ``select.rule`` accepts: every arm registered in alprobe.arms.ARMS (a test checks
#: the two agree; config does not import the arms, which sit above it).
RULES = ("probe", "ensemble", "random", "latent", "oracle")


class SelectConfig(_Section):
    """Which frames go to DFT each generation, and by which rule (the arm's strategy).

    ``probe``: the least trusted by PROBE (lowest P(reliable)); ``ensemble``: the largest
    committee disagreement inside the committee's trust window (see CommitteeConfig);
    ``random``: uniform among the candidates (the control); ``latent``: the farthest from the
    training set in the backbone's embedding space; ``oracle`` (pool only): the largest true
    force error under the current backbone (the ceiling). See alprobe.arms.
    """

    rule: str = Field("probe", description="the arm's strategy: probe, ensemble, random, "
                      "latent, oracle (pool only: the largest true force error, the ceiling of "
                      "any error-seeking signal; any name in alprobe.config.RULES)")
    budget: int = Field(16, gt=0, le=MAX_LABELS, description="labels per generation (at "
                        "most 100000)")
    sampling: Literal["top", "power"] = Field(
        "top", description="top: the rule's most wanted frames first; power: drawn at random "
        "with probability proportional to (wanted-ness)**select.power (stochastic batch "
        "acquisition: a batch that does not pile onto one kind of structure)")
    power: float = Field(1.0, ge=0, le=100.0, description="the exponent of sampling: power")
    min_spacing: int = Field(2, ge=0, le=MAX_STEPS, description="samples between two picks of "
                             "one walker")
    max_failed_fraction: float = Field(
        0.5, ge=0, le=1, description="pause before training when more labels of a generation "
        "failed than this fraction")
    audit_random: int = Field(
        0, ge=0, le=MAX_LABELS,
        description="of the budget, this many labels go to candidates drawn at "
        "random (marked audit), which measure the trust signal without selection bias")
    hit_threshold_force_rmse_eV_A: float | None = Field(
        None, gt=0, le=1e4,
        description="absolute hit-rate threshold: a new label is a hit when the "
        "force RMSE of the model that picked it exceeds this (eV/A), from its raw predictions")
    hold_out: bool | Literal["rotate"] | None = Field(
        None, description="keep initial.calibration_fraction of every new batch out of "
        "backbone training (the PROBE arm's calibration split). null: the arm's own choice "
        "(probe: yes, every other arm: no); true for random or oracle measures what that "
        "hold-out (the probe's data tax) costs by itself; false for the probe arm (with "
        "probe.lineage >= 2): no tax, the probe learns from each backbone's errors on the "
        "labels picked after it; rotate: a generation's held-out share joins backbone "
        "training at the next generation (the tax is one batch's share, not a quarter of "
        "every label)")
    diversity: Literal["none", "farthest_point"] = Field(
        "none", description="none: the rule's batch as it is; farthest_point: among the "
        "rule's select.shortlist x budget most wanted candidates (same spacing rules), a batch "
        "spread out in the backbone's own embedding space (greedy farthest-point on "
        "standardised mean-pooled last-layer invariant features, starting from the most "
        "wanted), so one batch does not spend its labels on near-copies")
    shortlist: float = Field(3.0, ge=1.0, le=100.0, description="select.diversity's shortlist "
                             "size as a multiple of the budget (1: the rule's batch unchanged)")

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        if v not in RULES:
            raise ValueError(f"Input should be {', '.join(repr(r) for r in RULES)}")
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

    members: int = Field(4, ge=2, le=MAX_MEMBERS, description="committee size M, the "
                         "backbone included (2..64)")
    kind: Literal["models", "heads"] = Field(
        "models", description="models: M backbones trained alike with other seeds; heads: "
        "members 1..M-1 are readout heads trained on the backbone's frozen body (readout-only "
        "fine-tunes of it, readouts drawn afresh per seed), so one body pass scores them all "
        "(signal energy: about one backbone pass; force: one backward pass per member)")
    bootstrap: bool = Field(False, description="members 1..M-1 train on bootstrap resamples")
    signal: Literal["force", "energy"] = Field("force", description="force: DP-GEN's max atomic "
        "force deviation eps_F (eV/A); energy: the energy std per atom (eV/atom)")
    sigma_lo: float = Field(0.0, ge=0, le=1e4, description="eV/A (force) or eV/atom "
                            "(energy)")
    sigma_hi: float | None = Field(None, gt=0, le=1e4, description="eV/A or eV/atom; None: no "
                                   "ceiling")

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
        None, gt=0, le=MAX_LABELS * 100,
        description="labels after generation 0, audit sample included (default: "
        "select.budget x generations)")
    retrain_every: int | None = Field(
        None, gt=0, le=MAX_LABELS,
        description="new labels between two trainings (default: select.budget)")
    segment_steps: int | None = Field(
        None, gt=0, le=MAX_STEPS,
        description="MD steps of one walker segment (default: explore.steps / 3, "
        "at least 2 strides)")
    picks_per_segment: int | None = Field(
        None, gt=0, le=MAX_LABELS,
        description="frames the rule picks per segment (default: the generations "
        "schedule's fraction, select.budget of walkers x steps / stride candidates, at least 1)")
    max_labels_per_hour: float | None = Field(
        None, gt=0, description="optional rate limit of new label tasks")
    label_slots: int | None = Field(
        None, gt=0, le=MAX_LABELS,
        description="label tasks kept in flight (default: every worker thread)")


TASK_KINDS = ("md", "label", "train", "probe", "evaluate")


class TLSConfig(_Section):
    """TLS files passed to distributed.security.Security (all paths)."""

    ca_file: str = Field(min_length=1, description="the certificate authority's certificate "
                         "(PEM)")
    cert: str = Field(min_length=1, description="this machine's certificate (PEM)")
    key: str = Field(min_length=1, description="the private key of cert (PEM)")


class ClusterConfig(_Section):
    """Where the tasks run. Default: a LocalCluster on this machine.

    ``local``: LocalCluster (n_workers x threads_per_worker). ``address``: an existing
    ``dask scheduler``. ``slurm`` / ``pbs`` / ``lsf``: dask-jobqueue (cores, memory, walltime,
    queue, account, job_extra_directives, job_script_prologue; ``jobs`` fixed jobs, or adaptive
    between adapt_minimum_jobs and adapt_maximum_jobs). ``resources`` asks Dask worker
    resources per task kind (md, label, train, probe, evaluate), e.g. {md: {GPU: 1}}; workers
    offer them with ``worker_resources`` (local / jobqueue) or ``dask worker --resources``.
    """

    kind: Literal["local", "address", "slurm", "pbs", "lsf"] = Field("local", description="local "
        "(a LocalCluster), address (an existing dask scheduler), slurm, pbs or lsf (dask-jobqueue)")
    address: str | None = Field(None, description="kind address: the scheduler, "
                                "[tcp:// or tls://]HOST:PORT")
    n_workers: int = Field(2, gt=0, le=MAX_WORKERS, description="local: workers (at most 4096)")
    threads_per_worker: int = Field(1, gt=0, le=MAX_THREADS, description="at most 1024")
    memory_limit: str = Field(
        "auto", description="local: memory per worker, as Dask reads it: '4GB', '4 GiB', a "
        "number of bytes, 'auto', or a fraction of the machine's memory (0 < x <= 1)")
    dashboard_address: str = Field(
        "127.0.0.1:0", description="HOST:PORT of the dashboard (local and jobqueue); off "
        "loopback (0.0.0.0, ':8787', a host name) it needs cluster.tls, like cluster.host")
    host: str = Field("127.0.0.1", description="scheduler bind address (local and jobqueue)")
    cores: int = Field(1, gt=0, le=MAX_THREADS, description="jobqueue: cores per job")
    processes: int = Field(1, gt=0, le=MAX_THREADS, description="jobqueue: worker processes "
                           "per job")
    memory: str = Field("4GB", description="jobqueue: memory per job ('4GB', '4 GiB', bytes)")
    walltime: str = Field("01:00:00", description="jobqueue: wall time per job (HH:MM:SS)")
    queue: str | None = Field(None, description="jobqueue: queue or partition")
    account: str | None = Field(None, description="jobqueue: account to charge")
    job_extra_directives: tuple[str, ...] = Field((), description="jobqueue: extra scheduler "
        "directives, one per entry")
    job_script_prologue: tuple[str, ...] = Field((), description="jobqueue: shell lines run "
        "before the worker starts (module loads, a venv)")
    interface: str | None = Field(None, description="network interface the workers use (e.g. "
        "ib0); default: the system's")
    jobs: int = Field(1, ge=0, le=MAX_WORKERS, description="jobqueue: jobs to start when not "
                      "adaptive (at most 4096)")
    adaptive: bool = Field(False, description="jobqueue: scale the jobs with the work, between "
        "adapt_minimum_jobs and adapt_maximum_jobs")
    adapt_minimum_jobs: int = Field(0, ge=0, le=MAX_WORKERS, description="adaptive: fewest jobs")
    adapt_maximum_jobs: int = Field(4, ge=1, le=MAX_WORKERS, description="adaptive: most jobs")
    worker_resources: dict[str, Annotated[float, Field(ge=0, le=1e9)]] = Field(
        default_factory=dict, description="resources each worker offers (local and jobqueue), "
        "e.g. {GPU: 1}")
    resources: dict[str, dict[str, Annotated[float, Field(ge=0, le=1e9)]]] = Field(
        default_factory=dict, description="Dask worker resources per task kind (md, label, "
        "train, probe, evaluate), e.g. {md: {GPU: 1}}")
    wait_for_resources_s: float = Field(
        60.0, ge=0, le=MAX_SECONDS, description="how long to wait for a worker offering a "
        "requested resource")
    tls: Annotated[
        Union[Annotated[TLSConfig, Tag("tls-files")], Annotated[Literal["auto"], Tag("tls-auto")]],
        Discriminator(lambda v: "tls-auto" if isinstance(v, str) else "tls-files"),
    ] | None = Field(
        None, description="TLS for every connection: 'auto' makes a throw-away CA and "
        "certificate in the campaign folder (tls/), or give {ca_file, cert, key} (files that "
        "exist; paths as given, relative to the working directory)")

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_shape(cls, v: Any) -> Any:
        if v is None or v == "auto" or isinstance(v, (dict, TLSConfig)):
            return v
        raise ValueError("expected 'auto' or a mapping {ca_file, cert, key}")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, v: Any) -> Any:
        return _memory(v, auto=True)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_per_job(cls, v: Any) -> Any:
        return _memory(v, auto=False)

    @field_validator("address")
    @classmethod
    def _address_form(cls, v: str | None) -> str | None:
        if v is None:
            return v
        proto, sep, rest = v.rpartition("://")
        m = _PORT_TAIL.search(rest)
        if (sep and proto not in ("tcp", "tls")) or not m or not 0 < int(m.group(1)) < 65536 \
                or not rest[: m.start()].strip("[]"):
            raise ValueError("expected a scheduler address [tcp:// or tls://]HOST:PORT, e.g. "
                             "tls://10.0.0.5:8786")
        return v

    @field_validator("dashboard_address")
    @classmethod
    def _dashboard_form(cls, v: str) -> str:
        rest = v.strip().removeprefix("http://").removeprefix("https://")
        port = rest.rpartition(":")[2] if ":" in rest else rest
        if not port.isdigit() or int(port) > 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8787 (port 0: any free port)")
        return v

    @field_validator("host")
    @classmethod
    def _host_form(cls, v: str) -> str:
        if not re.fullmatch(r"\[?[A-Za-z0-9_.:%-]+\]?", v):
            raise ValueError("expected a host name or IP address, e.g. 127.0.0.1")
        return v

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
        if exposed.startswith("cluster.dashboard_address") and self.tls is None:
            raise ValueError(
                f"{exposed} without TLS (the printed link says 127.0.0.1, yet anyone who "
                "reaches that port sees the campaign's tasks and workers): keep it on "
                "127.0.0.1:PORT and reach it through an ssh tunnel (ssh -L PORT:127.0.0.1:PORT), "
                "or set cluster.tls as for a scheduler on the network")
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
    if not _is_loopback(_dashboard_host(cfg.dashboard_address)):
        return (f"cluster.dashboard_address {cfg.dashboard_address} binds the dashboard to the "
                "network")
    return ""


def _dashboard_host(address: str) -> str:
    """The host part of a dashboard address ('' for every interface: ':8787' or '8787')."""
    rest = address.strip().removeprefix("http://").removeprefix("https://")
    if ":" not in rest:
        return "" if rest.isdigit() else rest
    return rest.rsplit(":", 1)[0]


class CampaignConfig(_Section):
    """A whole campaign; ``source_dir`` is where relative paths are resolved."""

    name: str = Field(min_length=1, max_length=100, description="a plain name (letters, "
                      "digits, '_', '-', '.'; not starting with '.' or '-'): the default "
                      "campaign folder is runs/<name>")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="the campaign's master seed: every "
        "random stream (MD, splits, selection, training) derives from it and the generation")
    replica: int = Field(
        0, ge=0, le=1000, description="a replica of an arm: mixes into the selection, training and "
        "probe seeds after generation 0 (walker seeds and generation 0 stay shared)")
    generations: int = Field(3, ge=0, le=MAX_GENERATIONS, description="generations (the "
                             "streaming schedule: its default number of retrain cycles)")
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
    stability: StabilityConfig = StabilityConfig()
    cluster: ClusterConfig = ClusterConfig()
    source_dir: str = Field(".", description="set by the loader: folder of the campaign file")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be a plain name: letters, digits, '_', '-', '.', not "
                             "starting with '.' or '-' (the campaign folder is runs/<name>)")
        return v

    @model_validator(mode="after")
    def _frames_sampled(self) -> CampaignConfig:
        """MD settings under which walkers would sample too few frames (one every stride)."""
        if self.pool is not None:
            return self  # no MD
        ini, stride = self.initial, self.explore.stride
        if self.explore.steps < stride:
            raise ValueError(f"explore.steps: {self.explore.steps} steps are fewer than "
                             f"explore.stride ({stride}): walkers would sample no frame")
        if ini.n_md > 0 and ini.md_steps < stride:
            raise ValueError(f"initial.md_steps: {ini.md_steps} steps are fewer than "
                             f"explore.stride ({stride}): the bootstrap walkers would sample no "
                             "frame for initial.n_md")
        if ini.test_md_steps is not None:
            cap = ini.test_md_steps // stride
            n = ini.test_walkers
            per = [ini.test_size // n + (1 if w < ini.test_size % n else 0) for w in range(n)]
            got = sum(min(p, cap) for p in per)
            if got < ini.test_size:
                raise ValueError(
                    f"initial.test_md_steps: {ini.test_md_steps} steps at explore.stride "
                    f"({stride}) give {'no test frame' if got == 0 else f'only {got} test frames'}"
                    f" of initial.test_size ({ini.test_size}), at most {cap} per test walker; "
                    f"set it to at least {max(per) * stride} or leave it out")
        seg = self.streaming.segment_steps
        if self.schedule == "streaming" and seg is not None and seg < stride:
            raise ValueError(f"streaming.segment_steps: {seg} steps are fewer than "
                             f"explore.stride ({stride}): segments would sample no frame")
        return self

    @model_validator(mode="after")
    def _system_or_pool(self) -> CampaignConfig:
        if self.system is None and self.pool is None:
            raise ValueError("system: required key missing (seed structures for MD and DFT; "
                             "or give `pool`, a labeled pool, for a retrospective campaign)")
        return self

    @model_validator(mode="after")
    def _controls(self) -> CampaignConfig:
        rule, hold = self.select.rule, self.select.hold_out
        if rule == "oracle" and self.pool is None:
            raise ValueError("select.rule: oracle reads the candidates' reference labels, "
                             "which only a labeled pool has: give `pool` (a retrospective "
                             "campaign)")
        if rule == "probe" and hold is False and self.probe.lineage < 2 \
                and self.probe.crossfit < 2:
            raise ValueError("select.hold_out: false leaves the probe arm no out-of-sample "
                             "errors of the current backbone; give probe.lineage >= 2 (the "
                             "probe then learns from earlier backbones' errors on the labels "
                             "picked after them), probe.crossfit >= 2 (K fold models) or "
                             "keep the hold-out")
        if self.probe.crossfit == 1:
            raise ValueError("probe.crossfit: 1 fold leaves nothing out; give 0 (off) or "
                             "K >= 2 folds")
        return self

    @model_validator(mode="after")
    def _streaming_needs_walkers(self) -> CampaignConfig:
        if self.schedule == "streaming" and self.pool is not None:
            raise ValueError("schedule: streaming runs MD walkers and DFT; a pool campaign "
                             "(retrospective) uses schedule: generations")
        return self

    def stress_temperature_K(self) -> float:
        """The prospective stress set's temperature (K): initial.stress_temperature_K, default
        1.5x the hottest explore temperature."""
        return self.initial.stress_temperature_K or 1.5 * max(self.explore.temperatures_K)

    def resolve(self, path: str) -> Path:
        """A path from the campaign file, relative to the file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.source_dir) / p

    def science_dict(self) -> dict[str, Any]:
        """The settings that change results (everything but cluster and source_dir)."""
        return self.model_dump(mode="json", exclude={"cluster", "source_dir"})


#: Tags of tagged unions (``Tag``): part of pydantic's error locations, not of the key path.
_UNION_TAGS = {"tls-files", "tls-auto", "width-int", "width-auto"}


def _key(part: Any) -> str:
    text = str(part)
    return text if len(text) <= SHORT_VALUE else text[: SHORT_VALUE - 3] + "..."


def _format_error(err: dict[str, Any]) -> str:
    path = ".".join(_key(p) for p in err["loc"] if p not in _UNION_TAGS) or "<top>"
    msg = err["msg"].removeprefix("Value error, ")
    if path == "<top>" and msg.split(":")[0].replace(".", "").replace("_", "").isalnum():
        return msg  # a whole-campaign check that names its own key
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    if err["type"] == "missing":
        return f"{path}: required key missing"
    got = err.get("input")
    if err["type"] not in ("model_type",) and got is not None and not isinstance(got, dict):
        return f"{path}: {msg} (got {short(got)})"
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
        problems += [p for p in map(_format_error, _primary(exc.errors())) if p not in problems]
    if problems:
        raise ConfigError(problems, source) from None
    return cfg


def _primary(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors without the echoes: a sequence "too short after validation" because
    its items were refused (the items' own errors say why)."""
    def below(err: dict[str, Any]) -> bool:
        n = len(err["loc"])
        return any(len(o["loc"]) > n and o["loc"][:n] == err["loc"] for o in errors)

    return [e for e in errors if not (e["type"] in ("too_short", "too_long") and below(e))]


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads 1e12 as a number (YAML 1.2; YAML 1.1 wants 1.0e12)."""


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _node_problems(root: yaml.Node, limit: int = MAX_YAML_NODES) -> list[str]:
    """Duplicate keys of every mapping (with their path and lines) and the size of the document
    after alias expansion (more than ``limit`` nodes, or an alias inside itself), found on the
    composed node graph before anything is constructed. Every node is visited once (an anchor's
    content reached again through an alias adds its size without a second walk)."""
    problems: list[str] = []
    size: dict[int, int] = {}
    open_: set[int] = set()
    merge = "tag:yaml.org,2002:merge"

    def walk(node: yaml.Node, path: str) -> int:
        key = id(node)
        if key in size:
            return size[key]
        if key in open_:
            raise _Recursive(node)
        open_.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else "<complex key>"
                where = f"{path}.{name}" if path else name
                if isinstance(k, yaml.ScalarNode) and k.tag != merge:
                    line = k.start_mark.line + 1
                    if (k.tag, k.value) in seen:
                        first = seen[k.tag, k.value]
                        lines = f"twice on line {line}" if first == line else \
                            f"lines {first} and {line}"
                        problems.append(f"{short_key(where)}: duplicate key ({lines}; the second "
                                        "would silently replace the first)")
                    else:
                        seen[k.tag, k.value] = line
                total += walk(k, where) + walk(v, where)
                if total > limit:
                    return total
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                total += walk(v, f"{path}.{i}" if path else str(i))
                if total > limit:
                    return total
        open_.discard(key)
        size[key] = total
        return total

    try:
        total = walk(root, "")
    except _Recursive as exc:
        line = exc.node.start_mark.line + 1
        return problems + [f"the YAML document contains itself (an alias inside its own anchor, "
                           f"line {line})"]
    if total > limit:
        problems.append(f"the YAML document expands to more than {limit} values (aliases *name "
                        "repeat their anchor's content; a campaign file has a few hundred)")
    return problems


class _Recursive(Exception):
    def __init__(self, node: yaml.Node):
        super().__init__("recursive YAML alias")
        self.node = node


def short_key(path: str, limit: int = 2 * SHORT_VALUE) -> str:
    """A key path cut to ``limit`` characters."""
    return path if len(path) <= limit else path[: limit - 3] + "..."


def read_yaml(path: str | Path, kind: str = "campaign") -> Any:
    """The YAML document at ``path``; ConfigError if the ``kind`` file is missing or invalid.

    Refused with one line each: a file that is not UTF-8 text or is larger than
    ``MAX_YAML_BYTES``, invalid YAML, a key given twice in one mapping (YAML would keep the
    last silently), a document that expands beyond ``MAX_YAML_NODES`` values through aliases
    (an "alias bomb") or contains itself."""
    path = Path(path)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name no file can have (too long, NUL byte)
        found = False
    if not found:
        raise ConfigError([f"{kind} file not found: {path}"], str(path))
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError([f"{kind} file is {size} bytes, more than {MAX_YAML_BYTES}: not a "
                           f"{kind} file"], str(path))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not a text file (UTF-8): byte {exc.start} cannot be decoded"],
                          str(path)) from None
    loader = None
    try:
        loader = _StrictLoader(text)
        root = loader.get_single_node()
        if root is None:
            return None
        problems = _node_problems(root)
        if problems:
            raise ConfigError(problems, str(path))
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {' '.join(str(exc).split())}"], str(path)) from None
    except (ValueError, TypeError, RecursionError) as exc:
        if isinstance(exc, ConfigError):
            raise
        what = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(
            str(exc).split())
        raise ConfigError([f"not valid YAML: {what}"], str(path)) from None
    finally:
        if loader is not None:
            loader.dispose()


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
