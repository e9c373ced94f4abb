"""Cluster section: jobqueue job scripts, resource placement on a real scheduler + workers."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

import pytest

from alprobe.config import parse_campaign

from .conftest import TINY_CAMPAIGN


def test_slurm_job_script_from_campaign():
    from alprobe.cluster import jobqueue_cluster

    cfg = parse_campaign({**TINY_CAMPAIGN, "cluster": {
        "kind": "slurm", "cores": 4, "processes": 2, "memory": "8GB", "walltime": "02:00:00",
        "queue": "cpu", "account": "chem", "job_extra_directives": ["--constraint=avx2"],
        "job_script_prologue": ["module load pyscf"], "worker_resources": {"GPU": 1}}})
    cluster = jobqueue_cluster(cfg.cluster)
    try:
        script = cluster.job_script()
        for line in ("#SBATCH -p cpu", "#SBATCH -A chem", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --mem=8G", "#SBATCH -t 02:00:00", "#SBATCH --constraint=avx2",
                     "module load pyscf"):
            assert line in script.splitlines(), line
        assert "--resources GPU=1" in script and "--nworkers 2" in script
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")  # bound to loopback
    finally:
        cluster.close()


def test_pbs_and_bad_cluster_sections():
    from alprobe.cluster import jobqueue_cluster
    from alprobe.config import ConfigError

    cfg = parse_campaign({**TINY_CAMPAIGN, "cluster": {"kind": "pbs", "queue": "q",
                                                        "walltime": "00:30:00"}})
    cluster = jobqueue_cluster(cfg.cluster)
    try:
        assert "#PBS -q q" in cluster.job_script()
    finally:
        cluster.close()
    with pytest.raises(ConfigError, match="cluster.resources"):
        parse_campaign({**TINY_CAMPAIGN, "cluster": {"resources": {"mdd": {"GPU": 1}}}})
    with pytest.raises(ConfigError, match="cluster"):
        parse_campaign({**TINY_CAMPAIGN, "cluster": {"kind": "address"}})


def test_missing_resource_is_reported_not_hung(tmp_path):
    from alprobe import run
    from alprobe.cluster import ResourceError

    cfg = copy.deepcopy(TINY_CAMPAIGN)
    cfg["cluster"] = {"n_workers": 1, "resources": {"label": {"GPU": 1}},
                      "wait_for_resources_s": 1}
    t0 = time.monotonic()
    with pytest.raises(ResourceError, match=r"no worker offers \{'GPU': 1.0\} for label tasks"):
        run(parse_campaign(cfg), tmp_path / "c", log=None)
    assert time.monotonic() - t0 < 60


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scheduler_and_workers(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1: one offers GPU=1,
    the other DFT=1."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([f"{bindir}/dask", "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--dashboard-address", "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    time.sleep(2)
    for name, res in (("gpu", "GPU=1"), ("cpu", "DFT=1")):
        procs.append(subprocess.Popen(
            [f"{bindir}/dask", "worker", addr, "--nthreads", "1", "--name", name,
             "--resources", res, "--host", "127.0.0.1", "--local-directory", str(tmp_path / name)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    try:
        from distributed import Client

        client = Client(addr, timeout="30s")
        client.wait_for_workers(2, timeout=60)
        yield addr, client
        client.close()
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_placement_on_external_scheduler(scheduler_and_workers, tmp_path):
    """MD and training go to the GPU-labeled worker, DFT to the other (real processes)."""
    from distributed import get_task_stream

    from alprobe import run

    addr, client = scheduler_and_workers
    cfg = copy.deepcopy(TINY_CAMPAIGN)
    cfg["generations"] = 1
    cfg["cluster"] = {"kind": "address", "address": addr,
                      "resources": {"md": {"GPU": 1}, "train": {"GPU": 1}, "label": {"DFT": 1}}}
    with get_task_stream(client) as ts:
        result = run(parse_campaign(cfg), tmp_path / "c", client=client, log=None)
    assert len(result.metrics) == 2
    where = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    placed: dict[str, set[str]] = {}
    for t in ts.data:
        if "worker" not in t:
            continue
        prefix = t["key"].split("-")[0] if isinstance(t["key"], str) else str(t["key"])
        placed.setdefault(prefix, set()).add(where.get(t["worker"], t["worker"]))
    assert placed.get("walk") == {"gpu"}, placed
    assert placed["train"] == {"gpu"}
    assert placed["label"] == {"cpu"}


@pytest.mark.slow  # about 2-4 min on 2 cores: kept out of the default run (pytest -m slow)
def test_elastic_workers_lose_no_label(tmp_path):
    """Workers join and leave during a campaign against a real `dask scheduler`: one worker at
    the start, a second joins while generation 0 is being labeled, the first then leaves
    (SIGTERM, as when a job's walltime ends) with labels pending, a third joins. The campaign
    finishes without a stall, every selected frame is labeled exactly once, and labels ran on
    all three workers."""
    import threading

    from distributed import Client, get_task_stream

    from alprobe import open_ledger, run

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ALPROBE_FAULT_DELAY_LABEL_S": "0.7"}
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str) -> None:
        procs[name] = subprocess.Popen(
            [f"{bindir}/dask", "worker", addr, "--nthreads", "1", "--name", name,
             "--host", "127.0.0.1", "--local-directory", str(tmp_path / name)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    procs["scheduler"] = subprocess.Popen(
        [f"{bindir}/dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(2)
    start("a")
    cfg = copy.deepcopy(TINY_CAMPAIGN)
    cfg["generations"] = 1
    cfg["initial"] = {**cfg["initial"], "n_rattle": 16}
    cfg["cluster"] = {"kind": "address", "address": addr}
    d = tmp_path / "c"
    spool = d / "spool"
    client = Client(addr, timeout="30s")
    try:
        client.wait_for_workers(1, timeout=60)
        out: dict = {}

        def campaign() -> None:
            try:
                out["result"] = run(parse_campaign(cfg), d, client=client, log=None)
            except BaseException as exc:  # noqa: BLE001 - reported below
                out["error"] = exc

        def spooled() -> int:
            return len(list(spool.glob("*.json"))) if spool.is_dir() else 0

        def wait_until(cond, what: str, timeout: float = 120) -> None:
            t0 = time.monotonic()
            while not cond():
                assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
                assert "error" not in out, out.get("error")
                time.sleep(0.05)

        with get_task_stream(client) as ts:
            th = threading.Thread(target=campaign, daemon=True)
            th.start()
            wait_until(lambda: spooled() >= 2, "the first labels")
            start("b")
            wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, "worker b")
            n_before = spooled()
            wait_until(lambda: spooled() >= n_before + 2, "labels with two workers")
            procs["a"].terminate()  # graceful: its running task is rescheduled
            procs["a"].wait(timeout=60)
            left_at = spooled()
            start("c")
            th.join(timeout=600)
            assert not th.is_alive(), "the campaign stalled"
        assert "error" not in out, out.get("error")
        assert left_at < cfg["initial"]["n_rattle"] + cfg["initial"]["n_md"], \
            "worker a left after generation 0 was labeled: the test did not test anything"
        L = open_ledger(d)
        fids = [k["fid"] for k in L.keys()]
        assert len(fids) == len(set(fids))
        # generation 0: the initial labels plus the held-out test frames (test walkers)
        n0 = cfg["initial"]["n_rattle"] + cfg["initial"]["n_md"] + cfg["initial"]["test_size"]
        assert L.count(generation=0, status="labeled") == n0
        assert L.count(generation=0, status="labeled", split="test") == cfg["initial"]["test_size"]
        assert L.count(generation=1, status="labeled") == cfg["select"]["budget"]
        assert L.count(status="failed") == 0
        assert len(list(spool.glob("*.json"))) == n0 + cfg["select"]["budget"]
        names = {}
        for t in ts.data:
            if isinstance(t.get("key"), str) and t["key"].startswith("label-"):
                names.setdefault(t["worker"], 0)
                names[t["worker"]] += 1
        assert len(names) == 3, names  # a, b and c each labeled frames
    finally:
        client.close()
        for p in list(procs.values())[::-1]:
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            p.wait(timeout=30)


# ------------------------------------------------------------------ network exposure, TLS

def test_network_scheduler_without_tls_is_refused_with_the_fix(tmp_path, capsys):
    """A scheduler bound off loopback without TLS is a config error that says how to fix it;
    the repository's SLURM example (tls: auto) passes `alprobe validate`."""
    from pathlib import Path

    import yaml

    from alprobe.cli import main
    from alprobe.config import ConfigError

    for cluster in ({"kind": "slurm", "host": "0.0.0.0"}, {"kind": "local", "host": "10.1.2.3"},
                    {"kind": "address", "address": "tcp://10.1.2.3:8786"},
                    {"kind": "slurm", "host": "login01"}):
        with pytest.raises(ConfigError, match="without TLS") as info:
            parse_campaign({**TINY_CAMPAIGN, "cluster": cluster})
        (line,) = info.value.problems
        assert line.startswith("cluster:") and "tls" in line
    for cluster in ({"kind": "slurm", "host": "127.0.0.1"}, {"kind": "local", "host": "::1"},
                    {"kind": "slurm", "host": "0.0.0.0", "tls": "auto"},
                    {"kind": "address", "address": "tcp://127.0.0.1:8786"}):
        parse_campaign({**TINY_CAMPAIGN, "cluster": cluster})
    with pytest.raises(ConfigError, match="needs cluster.tls"):
        parse_campaign({**TINY_CAMPAIGN, "cluster": {"kind": "address",
                                                      "address": "tls://10.1.2.3:8786"}})
    repo = Path(__file__).resolve().parents[1] / "campaigns"
    assert main(["validate", str(repo / "slurm_ethanol.yaml")]) == 0
    old = yaml.safe_load((repo / "slurm_ethanol.yaml").read_text())
    del old["cluster"]["tls"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert main(["validate", str(tmp_path / "old.yaml")]) == 1
    out = capsys.readouterr().out
    assert "cluster: cluster.host 0.0.0.0 binds the scheduler to the network without TLS" in out
    assert "cluster.tls: auto" in out


def test_auto_tls_files_reach_the_job_script(tmp_path):
    from alprobe.cluster import jobqueue_cluster, make_tls_files

    cfg = parse_campaign({**TINY_CAMPAIGN, "cluster": {"kind": "slurm", "tls": "auto"}})
    cluster = jobqueue_cluster(cfg.cluster, tmp_path)
    try:
        script = cluster.job_script()
        tls = tmp_path / "tls"
        for flag, name in (("--tls-ca-file", "ca.pem"), ("--tls-cert", "cert.pem"),
                           ("--tls-key", "key.pem")):
            assert f"{flag} {tls / name}" in script
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
    finally:
        cluster.close()
    assert (tls / "key.pem").stat().st_mode & 0o077 == 0  # the key is the owner's only
    before = (tls / "cert.pem").read_bytes()
    make_tls_files(tls)  # still valid: reused, not replaced
    assert (tls / "cert.pem").read_bytes() == before


def test_label_task_through_a_real_tls_scheduler_and_worker(tmp_path):
    """`dask scheduler` and `dask worker` with alprobe's throw-away certificates on 127.0.0.1:
    a PySCF label runs through them; a plain TCP client and a client with a certificate of
    another CA are turned away."""
    from ase.build import molecule
    from distributed import Client

    from alprobe.cluster import make_tls_files, open_client
    from alprobe.config import ClusterConfig
    from alprobe.dft import DFTLevel
    from alprobe.tasks import label_task

    tls = make_tls_files(tmp_path / "tls")
    port = _free_port()
    bindir = os.path.dirname(sys.executable)
    flags = ["--tls-ca-file", tls.ca_file, "--tls-cert", tls.cert, "--tls-key", tls.key]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([f"{bindir}/dask", "scheduler", "--protocol", "tls", "--host",
                               "127.0.0.1", "--port", str(port), "--dashboard-address",
                               "127.0.0.1:0", *flags],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    addr = f"tls://127.0.0.1:{port}"
    time.sleep(2)
    procs.append(subprocess.Popen(
        [f"{bindir}/dask", "worker", addr, "--nthreads", "1", "--host", "127.0.0.1",
         "--local-directory", str(tmp_path / "w"), *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    try:
        cfg = ClusterConfig(kind="address", address=addr, tls=tls)
        with open_client(cfg, log=lambda _m: None) as client:
            client.wait_for_workers(1, timeout=60)
            r = client.submit(label_task, molecule("H2O"),
                              DFTLevel(method="hf", basis="sto-3g", density_fit=False),
                              pure=False).result(timeout=120)
            assert r["status"] == "ok" and -2050 < r["energy"] < -2030
            assert len(r["forces"]) == 3
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            Client(f"tcp://127.0.0.1:{port}", timeout="3s")
        from distributed.security import Security

        other = make_tls_files(tmp_path / "other")
        with pytest.raises(Exception):  # noqa: B017
            Client(addr, timeout="5s", security=Security(
                tls_ca_file=other.ca_file, tls_client_cert=other.cert,
                tls_client_key=other.key, require_encryption=True))
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
