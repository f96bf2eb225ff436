"""Running one task per input on Dask distributed (or in this process), shared by ``tracelens scan`` and
``tracelens gate --workers``.

* :func:`connect` yields a ``distributed.Client``: on a ``LocalCluster`` of N worker processes with one thread each
  (numba kernels and dump readers keep their state per process), bound to 127.0.0.1; or on an existing cluster
  (``dask scheduler`` / ``dask worker``, or any deployment) given by its address.
* :func:`run_tasks` submits ``fn(item, *args)`` for every item (one future each, larger inputs first), hands each
  result to a callback as it completes, and turns worker death into a callback too: Dask re-runs a task whose
  worker died (on another worker, or the nanny's replacement) up to ``distributed.scheduler.allowed-failures``
  times, then gives up with ``KilledWorker``. Results are handed over as they come, so nothing already done is lost
  when a later task fails.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

from tracelens.errors import UsageError


@dataclass
class ClusterOptions:
    """``workers``: size of a LocalCluster (None: the machine's cores; 0: no Dask, tasks run in this process, one
    after the other); ``scheduler``: the address of an existing cluster (``tcp://HOST:PORT``), instead;
    ``retries``: how many worker deaths a task survives before it is recorded as lost (LocalCluster only: an
    existing scheduler keeps its own ``allowed-failures``); ``dashboard_address``: where a LocalCluster serves the
    Dask dashboard (when bokeh is installed; a random port when that one is taken)."""

    workers: int | None = None
    scheduler: str | None = None
    retries: int = 2
    dashboard_address: str | None = "127.0.0.1:8787"

    def __post_init__(self):
        _check(self)


def _check(opts: ClusterOptions) -> None:
    if opts.workers is not None and opts.scheduler:
        raise UsageError("give workers (a local cluster) or scheduler (an existing one), not both", "workers",
                         "scheduler")
    if opts.workers is not None and (isinstance(opts.workers, bool) or not isinstance(opts.workers, int)
                                     or opts.workers < 0):
        raise UsageError(f"workers must be 0 or more, not {opts.workers!r}", "workers")
    if isinstance(opts.retries, bool) or not isinstance(opts.retries, int) or opts.retries < 0:
        raise UsageError(f"retries must be 0 or more, not {opts.retries!r}", "retries")


class InProcess:
    """The runner of ``workers=0``: no cluster."""

    dashboard_link = None


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError("workers and scheduler need Dask distributed: pip install 'tracelens[fleet]'", "workers",
                         "scheduler") from None


def dashboard_link(client) -> str | None:
    """The dashboard's address when the cluster serves one."""
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return client.dashboard_link
    except Exception:
        return None


@contextmanager
def connect(opts: ClusterOptions, client=None):
    """Yield a ``distributed.Client`` (or :class:`InProcess` for ``workers=0``). ``client``: use that one."""
    if client is not None:
        yield client
        return
    _check(opts)  # the fields may have changed since it was made
    if opts.workers == 0:
        yield InProcess()
        return
    _require_distributed()
    import dask
    from distributed import Client, LocalCluster

    if opts.scheduler:
        try:
            c = Client(opts.scheduler, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise UsageError(f"cannot reach the Dask scheduler at {opts.scheduler}: {e}") from None
        try:
            yield c
        finally:
            c.close()
        return
    n = opts.workers or os.cpu_count() or 1
    dash = opts.dashboard_address or "127.0.0.1:0"  # distributed serves one whenever bokeh is importable
    # worker-saturation 1: a worker holds only the task it runs, the rest wait on the scheduler. A dying worker
    # then counts against that task alone (Dask counts a death against every task assigned to the worker: a
    # capture queued behind one that kills its worker would be lost with it), and a long capture does not hold
    # up others queued behind it on one worker
    with dask.config.set({"distributed.scheduler.allowed-failures": opts.retries,
                          "distributed.scheduler.worker-saturation": 1.0,
                          "distributed.admin.system-monitor.gil.enabled": False}), warnings.catch_warnings():
        # a dashboard port in use is not worth a warning: another one is chosen, and its address is reported
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=dash, silence_logs=logging.CRITICAL)  # losses are rows
        try:
            with Client(cluster) as c:
                yield c
        finally:
            cluster.close()


def run_tasks(client, fn, items, args=(), *, sizes=None, on_result, on_lost, key_prefix: str = "tracelens"):
    """Run ``fn(item, *args)`` for every item and call ``on_result(item, result)`` as each one completes, or
    ``on_lost(item, message)`` when the workers running it died more often than the scheduler allows. An exception
    raised by ``fn`` cancels what has not run yet and is re-raised here. ``sizes``: a number per item (bytes):
    larger items are scheduled first, so that a long one does not start last."""
    items = list(items)
    if isinstance(client, InProcess):
        for item in items:
            on_result(item, fn(item, *args))
        return
    import uuid

    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    run = uuid.uuid4().hex[:8]
    futures = {}
    for i, item in enumerate(items):
        prio = int(sizes[i] >> 20) if sizes is not None else 0  # MiB: Dask runs higher priorities first
        fut = client.submit(fn, item, *args, key=f"{key_prefix}-{run}-{i}", pure=False, priority=prio)
        futures[fut.key] = (fut, item)
    pending = as_completed([f for f, _ in futures.values()])
    try:
        for fut in pending:
            _, item = futures.pop(fut.key)
            try:
                # a result held by a worker that died since is computed again by Dask: result() waits for it
                result = fut.result()
            except KilledWorker as exc:
                on_lost(item, f"the workers analysing it died {_failures(client)} time(s) (killed, out of "
                              f"memory, or lost): {exc}")
            else:
                on_result(item, result)
            fut.release()
    except BaseException:
        client.cancel([f for f, _ in futures.values()])
        raise


def _failures(client) -> str:
    try:
        import dask

        return str(int(dask.config.get("distributed.scheduler.allowed-failures")) + 1)
    except Exception:
        return "several"
