"""The only place that creates or connects to a Dask cluster, and checks worker resources."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import ClusterConfig, TLSConfig
from .errors import AlprobeError
from .files import atomic_write

__all__ = ["ResourceError", "jobqueue_cluster", "make_tls_files", "open_client", "resolve_tls",
           "wait_for_resources"]

_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}


class ResourceError(AlprobeError):
    """No worker offers a resource that a task kind asks for."""


def make_tls_files(folder: str | Path, days: int = 365) -> TLSConfig:
    """A throw-away certificate authority and one certificate it signs, for the scheduler, the
    workers and the client of one campaign: ``folder``/ca.pem, cert.pem and key.pem (the key
    readable by its owner only). Files already there and valid for another day are reused.

    Distributed checks that every peer's certificate is signed by the CA (it does not check
    host names), so only holders of key.pem, i.e. of the campaign folder, can connect.
    """
    import datetime

    folder = Path(folder)
    paths = TLSConfig(ca_file=str(folder / "ca.pem"), cert=str(folder / "cert.pem"),
                      key=str(folder / "key.pem"))
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    if all(Path(p).is_file() for p in (paths.ca_file, paths.cert, paths.key)):
        try:
            cert = x509.load_pem_x509_certificate(Path(paths.cert).read_bytes())
            if cert.not_valid_after_utc > now + datetime.timedelta(days=1):
                return paths
        except ValueError:
            pass  # unreadable: make new ones
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("alprobe throw-away CA"))
          .issuer_name(name("alprobe throw-away CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("alprobe"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("alprobe")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))  # the CA key is not kept: nothing else is signed
    pem = serialization.Encoding.PEM
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    atomic_write(paths.key, key_bytes, mode=0o600)
    atomic_write(paths.cert, cert.public_bytes(pem))
    atomic_write(paths.ca_file, ca.public_bytes(pem))
    return paths


def resolve_tls(cfg: ClusterConfig, folder: str | Path | None) -> TLSConfig | None:
    """The TLS files of ``cfg``: its own, or for ``tls: auto`` those in ``folder``/tls."""
    if cfg.tls is None:
        return None
    if isinstance(cfg.tls, TLSConfig):
        for key in ("ca_file", "cert", "key"):
            path = getattr(cfg.tls, key)
            if path and not Path(path).is_file():
                raise AlprobeError(f"cluster.tls.{key}: file not found: {path}")
        return cfg.tls
    if folder is None:
        raise AlprobeError("cluster.tls 'auto' needs a campaign folder for its certificates")
    return make_tls_files(Path(folder) / "tls")


def _security(cfg: ClusterConfig, folder: str | Path | None = None) -> Any:
    tls = resolve_tls(cfg, folder)
    if tls is None:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert,
                    tls_client_key=tls.key, tls_scheduler_cert=tls.cert,
                    tls_scheduler_key=tls.key, tls_worker_cert=tls.cert,
                    tls_worker_key=tls.key, require_encryption=True)


def jobqueue_cluster(cfg: ClusterConfig, folder: str | Path | None = None) -> Any:
    """A dask-jobqueue cluster object for kind slurm / pbs / lsf (no job is submitted yet).

    ``folder``: the campaign folder (where ``tls: auto`` keeps its certificates; the workers'
    job scripts name those files, so it must be on a file system the compute nodes see)."""
    import dask_jobqueue

    cls = getattr(dask_jobqueue, _JOBQUEUE[cfg.kind])
    extra = []
    if cfg.worker_resources:
        extra = ["--resources", ",".join(f"{k}={v:g}" for k, v in cfg.worker_resources.items())]
    kwargs: dict[str, Any] = dict(
        cores=cfg.cores, processes=cfg.processes, memory=cfg.memory, walltime=cfg.walltime,
        queue=cfg.queue, account=cfg.account,
        job_extra_directives=list(cfg.job_extra_directives),
        job_script_prologue=list(cfg.job_script_prologue), worker_extra_args=extra,
        interface=cfg.interface,
        scheduler_options={"host": cfg.host, "dashboard_address": cfg.dashboard_address},
    )
    security = _security(cfg, folder)
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    return cls(**kwargs)


@contextmanager
def open_client(cfg: ClusterConfig, log: Any = print,
                folder: str | Path | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for the campaign's cluster section; closed on exit.

    The scheduler and dashboard bind to ``cfg.host`` (127.0.0.1 unless the campaign says
    otherwise; the config refuses a network address without TLS); the dashboard address is
    printed through ``log``. ``folder``: the campaign folder (``tls: auto`` certificates).
    """
    import dask
    from distributed import Client, LocalCluster

    # Long PySCF/MACE tasks hold the GIL in C code; keep heartbeats lenient.
    # Saturation 1.0: a one-thread worker holds one task, so a structure that kills its worker
    # never drags a queued, innocent task into KilledWorker with it.
    dask.config.set({"distributed.scheduler.worker-ttl": "15 minutes",
                     "distributed.comm.timeouts.connect": "60s",
                     "distributed.scheduler.worker-saturation": 1.0})
    cluster = None
    security = _security(cfg, folder)
    if cfg.kind == "local":
        cluster = LocalCluster(
            n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker, processes=True,
            host=cfg.host, dashboard_address=cfg.dashboard_address,
            memory_limit=cfg.memory_limit, resources=dict(cfg.worker_resources) or None,
            **({"security": security, "protocol": "tls://"} if security else {}))
        client = Client(cluster, security=security)
    elif cfg.kind == "address":
        client = Client(cfg.address, timeout="60s", security=security)
    else:
        cluster = jobqueue_cluster(cfg, folder)
        if cfg.adaptive:
            cluster.adapt(minimum_jobs=cfg.adapt_minimum_jobs,
                          maximum_jobs=cfg.adapt_maximum_jobs)
        else:
            cluster.scale(jobs=cfg.jobs)
        client = Client(cluster, security=security)
    try:
        link = client.dashboard_link if client.scheduler_info().get("services") else "(none)"
        n = len(client.scheduler_info()["workers"])
        log(f"dask: {cfg.kind} cluster, {n} worker(s), dashboard {link}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def wait_for_resources(client: Any, kind: str, resources: dict[str, float],
                       timeout_s: float) -> None:
    """Return once some worker offers ``resources``; else raise ResourceError after timeout_s."""
    if not resources:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        for w in workers.values():
            offered = w.get("resources", {})
            if all(offered.get(k, 0) >= v for k, v in resources.items()):
                return
        if time.monotonic() >= deadline:
            have = sorted({f"{k}={v:g}" for w in workers.values()
                           for k, v in w.get("resources", {}).items()}) or ["none"]
            raise ResourceError(
                f"no worker offers {resources} for {kind} tasks after {timeout_s:.0f} s "
                f"({len(workers)} worker(s); resources offered: {', '.join(have)}); start "
                "workers with e.g. `dask worker ADDRESS --resources GPU=1` or change "
                "cluster.resources")
        time.sleep(0.5)
