"""The only place that creates or connects to a Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .config import ClusterConfig

__all__ = ["open_client"]


@contextmanager
def open_client(cfg: ClusterConfig, log: Any = print) -> Iterator[Any]:
    """A ``distributed.Client`` for the campaign's cluster section; closed on exit.

    ``local``: a LocalCluster of worker processes on 127.0.0.1 (n_workers x threads_per_worker;
    one thread per PySCF worker by default). ``address``: an existing ``dask scheduler``.
    The dashboard address is printed through ``log``.
    """
    import dask
    from distributed import Client, LocalCluster

    # Long PySCF/MACE tasks hold the GIL in C code; keep heartbeats lenient.
    dask.config.set({"distributed.scheduler.worker-ttl": "15 minutes",
                     "distributed.comm.timeouts.connect": "60s"})
    cluster = None
    if cfg.kind == "local":
        cluster = LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=cfg.dashboard_address,
            memory_limit=cfg.memory_limit,
        )
        client = Client(cluster)
    else:
        client = Client(cfg.address, timeout="60s")
    try:
        link = client.dashboard_link if client.scheduler_info().get("services") else "(none)"
        n = len(client.scheduler_info()["workers"])
        log(f"dask: {cfg.kind} cluster, {n} worker(s), dashboard {link}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
