"""The only place that creates or connects to a Dask cluster, and checks worker resources."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .config import ClusterConfig
from .errors import AlprobeError

__all__ = ["ResourceError", "jobqueue_cluster", "open_client", "wait_for_resources"]

_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}


class ResourceError(AlprobeError):
    """No worker offers a resource that a task kind asks for."""


def _security(cfg: ClusterConfig) -> Any:
    if cfg.tls is None:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=cfg.tls.ca_file, tls_client_cert=cfg.tls.cert,
                    tls_client_key=cfg.tls.key, tls_scheduler_cert=cfg.tls.cert,
                    tls_scheduler_key=cfg.tls.key, tls_worker_cert=cfg.tls.cert,
                    tls_worker_key=cfg.tls.key, require_encryption=True)


def jobqueue_cluster(cfg: ClusterConfig) -> Any:
    """A dask-jobqueue cluster object for kind slurm / pbs / lsf (no job is submitted yet)."""
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
    security = _security(cfg)
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    return cls(**kwargs)


@contextmanager
def open_client(cfg: ClusterConfig, log: Any = print) -> Iterator[Any]:
    """A ``distributed.Client`` for the campaign's cluster section; closed on exit.

    The scheduler and dashboard bind to ``cfg.host`` (127.0.0.1 unless the campaign says
    otherwise); the dashboard address is printed through ``log``.
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
    security = _security(cfg)
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
        cluster = jobqueue_cluster(cfg)
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
