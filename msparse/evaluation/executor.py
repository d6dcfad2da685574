"""Executors: where the points of a sweep are computed — in this process (the default) or on a Dask cluster.

Every record of the results store is an independent, idempotent unit of work, so a sweep can hand its points
to many workers: each worker computes one point (or one index shard of a point, :mod:`.shards`) at a time and
writes its record atomically into the *shared* store; the client then reads every record back through the
ordinary in-process sweep, which finds them all stored. The numbers are therefore those of the in-process run
(same code, same batches, same seeds), and a run stopped at any moment resumes from the store.

Cluster choices (``sweep(cluster=...)``, ``with using(...)``, ``--cluster`` on the command line, or
``$MSPARSE_CLUSTER``; the first one given wins)::

    None / "none" / "in-process"   this process, one point after another (the default; nothing changes)
    "local:N"                      a Dask LocalCluster of N worker processes here (1 thread each)
    "tcp://host:8786"              a running Dask scheduler (``dask scheduler`` + ``dask worker``)
    "slurm:N"                      dask-jobqueue's SLURMCluster, N jobs (configured in jobqueue.yaml)
    a distributed.Client or a Dask cluster object, used as it is

GPUs are worker resources: when the model is on CUDA each point asks for ``resources={"GPU": 1}``, so start
GPU workers with ``dask worker ADDRESS --nthreads 1 --resources GPU=1`` (one per GPU, with
``CUDA_VISIBLE_DEVICES`` set). Dask is an optional extra (``pip install "msparse[cluster]"``), imported only
when a cluster is asked for; without it the request fails in one line (:class:`~msparse.errors.ClusterError`).

Every wait on the network is bounded: connecting to the scheduler (its handshake included), each wait for
results (when none arrives in time the scheduler must still answer a request), and fetching a result each take
at most :func:`network_timeout` seconds (``Executor(timeout=...)``, ``--cluster-timeout``, else
``$MSPARSE_CLUSTER_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`); a scheduler that accepts the connection and then
never answers fails the run with a :class:`~msparse.errors.ClusterError` naming its address and the timeout,
instead of hanging it. A long computation is not a timeout: the run waits as long as the scheduler answers.

Faults: a worker that dies mid-point loses nothing — Dask reruns its task elsewhere, and that task resumes
from the per-batch shards the dead worker left in the store (writes are atomic, so no half record; two
writers of one key write the same bytes through ``os.replace``). A worker that cannot see the store (another
filesystem, another path) fails the run with a clear error instead of leaving a silent gap: the client puts a
token in the store and every task checks that it reads the same token before it computes anything.

This module owns where points run: :class:`Job`, :class:`Executor` (in-process or Dask: clients, tasks, the worker
side) and :func:`evaluate_sharded`. What it runs comes from below: the key of each point from
:func:`~msparse.evaluation.evaluate.evaluation_plan`, shard bounds and the merge of shard records from
:mod:`.shards`, the site state shipped per point from :mod:`msparse.core.placement`. :mod:`.sweep`, above it,
hands it the points of a grid.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import contextvars
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .._io import atomic_write_text
from ..core.placement import apply_site_state, preserved_sites, site_state
from ..errors import ClusterError, InputError, StoreError, UsageError
from .evaluate import NOT_IN_KEY, Result, evaluate, evaluation_plan
from .shards import merge_records, shard_bounds
from .store import Store

__all__ = ["Executor", "Job", "evaluate_sharded", "get_executor", "using", "parse_cluster", "cluster_arg", "ENV_VAR",
           "TOKEN_FILE", "network_timeout", "TIMEOUT_ENV", "DEFAULT_TIMEOUT"]

#: environment variable read when no cluster is given (the book passes ``--cluster`` to its kernels this way)
ENV_VAR = "MSPARSE_CLUSTER"
#: file in the store root that lets a worker prove it sees the client's store
TOKEN_FILE = ".msparse-store-id"
#: environment variable: the seconds one wait on a Dask scheduler may take (see :func:`network_timeout`)
TIMEOUT_ENV = "MSPARSE_CLUSTER_TIMEOUT"
#: the default of :func:`network_timeout`, in seconds: long enough for a scheduler busy receiving a large model
DEFAULT_TIMEOUT = 60.0

_IN_PROCESS = ("", "none", "in-process", "inprocess", "local", "local:0")
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("msparse_cluster", default=None)


def parse_cluster(spec: Any) -> str | None:
    """Normalise a cluster choice: None for in-process, else ``"local:N"``, an address or ``"slurm:N"``.

    Objects (a ``distributed.Client``, a cluster) are returned unchanged. Raises
    :class:`~msparse.errors.UsageError` for anything else (e.g. ``"bogus"``, ``"local:x"``)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return spec
    s = spec.strip()
    if s.lower() in _IN_PROCESS:
        return None
    m = re.fullmatch(r"(local|slurm):(\d+)", s)
    if m:
        if int(m.group(2)) < 1:
            raise UsageError(f"cluster {spec!r}: the number of workers must be >= 1")
        return f"{m.group(1)}:{int(m.group(2))}"
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://[^\s/]+(:\d+)?/?", s):
        return s.rstrip("/")
    if re.fullmatch(r"[\w.\-]+:\d+", s):   # host:port
        return f"tcp://{s}"
    raise UsageError(f"unknown cluster {spec!r}: use 'in-process', 'local:N' (N Dask workers here), a scheduler "
                     "address such as tcp://host:8786, or 'slurm:N' (dask-jobqueue)")


def cluster_arg(text: str) -> str:
    """``argparse`` type of ``--cluster``: the normalised choice (``"in-process"`` for this process); a bad
    value is an ``ArgumentTypeError`` (one line, exit 2)."""
    import argparse

    try:
        return parse_cluster(text) or "in-process"
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def network_timeout(value=None) -> float:
    """Seconds that one wait on a Dask scheduler may take (connecting, one reply, one result): ``value``, else
    ``$MSPARSE_CLUSTER_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`. Anything but a finite number > 0 is a
    :class:`~msparse.errors.UsageError`."""
    where = "the cluster timeout"
    if value is None:
        value = os.environ.get(TIMEOUT_ENV, "").strip() or DEFAULT_TIMEOUT
        where = f"${TIMEOUT_ENV}"
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(value, bool) or not (math.isfinite(t) and t > 0):
        raise UsageError(f"{where} must be a number of seconds > 0, got {value!r}")
    return t


@contextlib.contextmanager
def using(cluster):
    """Run every sweep inside the ``with`` block on ``cluster`` (the experiments' functions call the sweep
    engine without a ``cluster=`` argument; this is how they get one)."""
    tok = _CURRENT.set(cluster if isinstance(cluster, Executor) else (parse_cluster(cluster) or "in-process"))
    try:
        yield
    finally:
        _CURRENT.reset(tok)


def get_executor(cluster=None) -> "Executor":
    """The executor for ``cluster`` (a choice of :func:`parse_cluster` or an :class:`Executor`); None = the one
    set by :func:`using`, else ``$MSPARSE_CLUSTER``, else in-process."""
    if cluster is None:
        cluster = _CURRENT.get()
    if cluster is None:
        cluster = os.environ.get(ENV_VAR) or None
    if isinstance(cluster, Executor):
        return cluster
    return Executor(parse_cluster(cluster))


# --------------------------------------------------------------------------------------------------
# jobs and tasks
# --------------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One point to evaluate: the site state of the model at that point (:func:`msparse.core.placement.site_state`:
    all that differs between the points of one sweep; the host weights are shared and shipped once), the attack
    and ``evaluate`` keywords (eps, norm, seed, batch_size, budgets, labels). ``key`` is filled by
    :meth:`Executor.run`."""
    sites: list
    attack: str
    kwargs: dict
    key: str | None = None


@dataclass
class _Task:
    job: int          # index into the job list
    start: int        # image range [start, stop) of this task (the whole set unless sharded)
    stop: int


# --------------------------------------------------------------------------------------------------
# the worker side
# --------------------------------------------------------------------------------------------------

_WORKER_LOCK = threading.Lock()   # one point at a time per process, whatever the worker's thread count


def _worker_device(want: str) -> str:
    if not want.startswith("cuda"):
        return "cpu"
    if not torch.cuda.is_available():
        raise ClusterError("the model is on CUDA but this Dask worker has no CUDA device; start GPU workers "
                           "with --resources GPU=1 on GPU machines")
    n = torch.cuda.device_count()
    try:
        from distributed import get_worker

        name = get_worker().name
        idx = int(name) % n if str(name).isdigit() else 0
    except Exception:   # not inside a worker (in-process) or no numeric name
        idx = 0
    return f"cuda:{idx}" if n > 1 else "cuda"


def check_store_token(root: str, token: str | None) -> None:
    """Raise :class:`~msparse.errors.StoreError` unless ``<root>/.msparse-store-id`` holds ``token``: the
    store this process sees is the client's store (a shared filesystem, the same path)."""
    if token is None:
        return
    p = Path(root) / TOKEN_FILE
    try:
        seen = p.read_text().strip()
    except OSError:
        seen = None
    if seen != token:
        import socket

        raise StoreError(f"a Dask worker on {socket.gethostname()} cannot see the results store {root} "
                         f"({'no ' + TOKEN_FILE if seen is None else 'another store is at that path'}); put "
                         "the store on a filesystem every worker mounts at the same path (--store DIR)")


class _Shipped:
    """A model sent to the workers as plain pickle bytes (Dask's own torch serializer drops the modules' hook
    dicts' type, which breaks forward hooks); unpickled once per worker process and kept for later tasks."""

    _cache: dict[str, nn.Module] = {}

    def __init__(self, model: nn.Module):
        import pickle

        self.id = uuid.uuid4().hex
        self.data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)

    def get(self) -> nn.Module:
        import pickle

        if self.id not in self._cache:
            while len(self._cache) >= 4:   # a few sweeps' models at most
                self._cache.pop(next(iter(self._cache)))
            self._cache[self.id] = pickle.loads(self.data)
        return self._cache[self.id]


def run_task(model, source, x, y, sites, attack: str, kwargs: dict, start: int, stop: int, store_root: str | None,
             token: str | None, device: str, threads: int | None) -> dict:
    """Compute one task on a worker: the point's record (or the record of images [start, stop)), written to
    the shared store by ``evaluate`` (atomically, resuming from its per-batch shards); returns the record.

    ``model``/``source``: modules or :class:`_Shipped` ones. ``store_root`` None = the client writes (the
    worker only computes)."""
    with _WORKER_LOCK:
        if isinstance(model, _Shipped):
            model = model.get()
        if isinstance(source, _Shipped):
            source = source.get()
        if store_root is not None:
            check_store_token(store_root, token)
        if threads:
            torch.set_num_threads(int(threads))
        dev = _worker_device(device)
        model.to(dev)
        if source is not None:
            source.to(dev)
        apply_site_state(model, sites)
        r = evaluate(model, x[start:stop], y[start:stop], attack, source=source, progress=False,
                     store=store_root if store_root is not None else False, **kwargs)
        rec = r.to_record()
        rec["_cached"] = r.cached
        return rec


# --------------------------------------------------------------------------------------------------
# clients (one per cluster choice and process, closed at exit)
# --------------------------------------------------------------------------------------------------

_CLIENTS: dict[str, Any] = {}

#: Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536; setting it at all switches off glibc's dynamic
#: mmap threshold, so every large tensor is a fresh mmap and its pages fault in again: torch's CPU forward and
#: backward ran 2.3-2.8x slower in such a worker (measured here). The workers msparse starts leave it unset; for
#: workers started by hand, export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_=None.
NO_MALLOC_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("a Dask cluster was asked for but 'distributed' is not installed: pip install "
                           "\"msparse[cluster]\" (or run in-process: drop --cluster)") from None
    return distributed


def _connect(distributed, target, where: str, timeout: float):
    """``distributed.Client(target)`` with its whole start bounded by ``timeout`` seconds: Dask's own ``timeout``
    covers opening the connection only, and a server that accepts it and never answers the handshake would
    block the constructor forever. Raises :class:`~msparse.errors.ClusterError` naming ``where``."""

    class BoundedClient(distributed.Client):
        def start(self, **kwargs):
            try:   # distributed.utils.sync takes callback_timeout: a wait past it is cancelled in the event loop
                return super().start(callback_timeout=timeout, **kwargs)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.close(timeout=timeout)   # stop the half-started client's event loop thread
                raise

    try:
        return BoundedClient(target, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        why = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {where} ({why}): check that it is running there, "
                           f"or allow more time with ${TIMEOUT_ENV} / --cluster-timeout SECONDS") from None


def _client(spec, timeout: float | None = None):
    """The client of ``spec`` (one per choice and process); connecting waits at most ``timeout`` seconds
    (default :func:`network_timeout`)."""
    distributed = _import_distributed()
    if isinstance(spec, distributed.Client):
        return spec
    timeout = network_timeout(timeout)
    if not isinstance(spec, str):   # a cluster object (LocalCluster, SLURMCluster, ...)
        return _connect(distributed, spec, repr(spec), timeout)
    if spec in _CLIENTS and _CLIENTS[spec].status == "running":
        return _CLIENTS[spec]
    import dask

    kind, _, n = spec.partition(":")
    if kind == "local":
        with dask.config.set(NO_MALLOC_TRIM):
            cluster = distributed.LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=40)
        client = _connect(distributed, cluster, f"{spec} ({cluster.scheduler_address})", timeout)
    elif kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise ClusterError("--cluster slurm:N needs dask-jobqueue: pip install dask-jobqueue (and its "
                               "jobqueue.yaml; see book/usage_scaleout.md)") from None
        with dask.config.set(NO_MALLOC_TRIM):
            cluster = SLURMCluster()
        cluster.scale(jobs=int(n))
        client = _connect(distributed, cluster, f"{spec} ({cluster.scheduler_address})", timeout)
    else:
        client = _connect(distributed, spec, spec, timeout)
    _CLIENTS[spec] = client
    return client


def _ping(client, where: str, timeout: float) -> None:
    """One request to the scheduler (its identity), answered within ``timeout`` seconds or a ClusterError."""
    try:
        client.sync(client.scheduler.identity, callback_timeout=timeout)
    except (OSError, TimeoutError) as e:
        why = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
        raise ClusterError(f"the Dask scheduler at {where} stopped answering ({why}): check that it is running, "
                           f"or allow more time with ${TIMEOUT_ENV} / --cluster-timeout SECONDS; the records "
                           "finished so far are stored, run the same command again to resume") from None


def _finished(distributed, client, futures, where: str, timeout: float):
    """Yield each of ``futures`` once it has finished. The waiting is bounded: after ``timeout`` seconds in which
    none finished the scheduler must still answer (:func:`_ping`), so a long computation is waited on and a
    scheduler that went silent fails the run."""
    ac = distributed.as_completed(list(futures), loop=client.loop)
    quiet_since = time.monotonic()
    while ac.count():
        batch = ac.next_batch(block=False)
        if batch:
            yield from batch
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > timeout:
            _ping(client, where, timeout)
            quiet_since = time.monotonic()
        else:
            time.sleep(0.05)


def _result(future, where: str, timeout: float):
    """The value of a finished future, fetched within ``timeout`` seconds; a task's own error is raised as it is
    (a worker's MsparseError keeps its message)."""
    if future.status != "finished":
        try:
            return future.result()
        except concurrent.futures.CancelledError as e:
            raise ClusterError(f"the Dask scheduler at {where} cancelled task {future.key} ({e}); run the same "
                               "command again to resume") from None
    try:
        return future.result(timeout=timeout)
    except TimeoutError:
        raise ClusterError(f"the result of task {future.key} did not arrive from the Dask cluster at {where} within "
                           f"{timeout:g} s: check the scheduler and workers, or allow more time with "
                           f"${TIMEOUT_ENV} / --cluster-timeout SECONDS") from None


@atexit.register
def _close_clients() -> None:
    for c in list(_CLIENTS.values()):
        with contextlib.suppress(Exception):
            cluster = c.cluster
            c.close(timeout=network_timeout())
            if cluster is not None:
                cluster.close(timeout=network_timeout())
    _CLIENTS.clear()


# --------------------------------------------------------------------------------------------------
# the executor
# --------------------------------------------------------------------------------------------------

@dataclass
class Executor:
    """Runs jobs (points) in this process (``spec`` None) or on a Dask cluster.

    ``shard_size``: split a point of more than this many images into index shards, each a record of its own,
    merged on the client into the point's record (:mod:`.shards`; rounded down to a multiple of the batch
    size). ``shared_store=False``: workers only compute, the client writes every record (workers that cannot
    see the store; no per-batch resume on the workers then). ``threads``: torch threads per worker (default:
    this machine's cores / N for ``local:N``, torch's default otherwise). ``timeout``: seconds one wait on the
    scheduler may take (default :func:`network_timeout`). ``stats``: the last run's tasks, images computed,
    seconds and images per second."""
    spec: Any = None
    shard_size: int | None = None
    shared_store: bool = True
    threads: int | None = None
    timeout: float | None = None
    stats: dict = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        return self.spec is not None

    def __repr__(self) -> str:
        return f"Executor({self.spec or 'in-process'})"

    # ------------------------------------------------------------------------------------------------
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, jobs: Sequence[Job], *, store,
            source: nn.Module | None = None, progress: bool | str = True) -> set[str]:
        """Compute every job whose record is missing from ``store``; returns the keys computed here.

        Keys come from :func:`~msparse.evaluation.evaluate.evaluation_plan` (the key ``evaluate`` stores under,
        computed without running anything), so points already stored are skipped and two jobs with one key run
        once. Fills every job's ``key``. The model's site state is left as it was."""
        if store is False:
            raise InputError("a cluster run needs a results store (the workers' records go there): drop "
                             "store=False / --no-store")
        st = store if isinstance(store, Store) else Store(store)
        root = st.root.expanduser().resolve()
        st = Store(root, reuse_other_versions=st.reuse_other_versions)
        st.check_writable()
        todo: dict[str, tuple[int, int]] = {}   # key -> (first job with that key, the batch size it runs with)
        with preserved_sites(model):
            for i, job in enumerate(jobs):
                apply_site_state(model, job.sites)
                plan = evaluation_plan(model, x, y, job.attack, source=source,
                                       **{k: v for k, v in job.kwargs.items() if k not in NOT_IN_KEY})
                job.key = plan.key
                if job.key not in todo and st.get(job.key) is None:
                    todo[job.key] = (i, plan.batch_size)
        if not todo:
            return set()
        tasks = [_Task(i, a, b) for i, bs in todo.values() for a, b in shard_bounds(len(x), bs, self.shard_size)]
        recs = self._execute(model, source, x, y, jobs, tasks, root, st, progress)
        # one record per job: a point computed in shards is merged on the client
        by_job: dict[int, list] = {}
        for t, rec in zip(tasks, recs):
            by_job.setdefault(t.job, []).append(rec)
        for i, parts in by_job.items():
            key = jobs[i].key
            if not self.shared_store:
                for rec in parts:
                    rec.pop("_cached", None)
                    st.put(rec)
            elif any(st.get(rec["key"]) is None for rec in parts):
                raise StoreError(f"a worker computed record {parts[0]['key'][:12]} but the client cannot read it "
                                 f"from {root}: the workers do not share this store")
            if len(parts) > 1 or parts[0]["key"] != key:
                merged = merge_records(parts, x, y)
                if merged["key"] != key:
                    raise StoreError(f"merged shards give key {merged['key'][:12]}, the point has {key[:12]} "
                                     "(a bug: please report it)")
                st.put(merged)
        return set(todo)

    # ------------------------------------------------------------------------------------------------
    def _execute(self, model, source, x, y, jobs, tasks, root: Path, st, progress) -> list[dict]:
        token = _store_token(root) if self.shared_store else None
        store_root = str(root) if self.shared_store else None
        device = str(next(iter(model.parameters())).device) if any(True for _ in model.parameters()) else "cpu"
        total = len(tasks)
        bar = _Progress(total, progress, f"{len(tasks)} task(s) on {self.spec or 'this process'}")
        out: list[dict | None] = [None] * total
        try:
            if not self.distributed:
                with preserved_sites(model):
                    for k, t in enumerate(tasks):
                        j = jobs[t.job]
                        out[k] = run_task(model, source, x, y, j.sites, j.attack, j.kwargs, t.start, t.stop,
                                          store_root, token, device, self.threads)
                        bar.done(out[k], "local")
                return out
            distributed = _import_distributed()
            timeout = network_timeout(self.timeout)
            client = _client(self.spec, timeout)
            where = self.spec if isinstance(self.spec, str) else str(getattr(client.scheduler, "address", self.spec))
            threads = self.threads
            if threads is None and isinstance(self.spec, str) and self.spec.startswith("local:"):
                threads = max(1, (os.cpu_count() or 1) // int(self.spec.split(":")[1]))
            # the model and images go into the graph as tasks with literal inputs (not scattered data): a
            # worker that dies holding them is recomputed from the scheduler's copy, never "lost"
            ship = (lambda m: _Shipped(m if device == "cpu" else _cpu_copy(m)))
            put = (lambda v, what: client.submit(_identity, v, pure=False, key=f"msparse-{what}-{uuid.uuid4().hex}"))
            fm = put(ship(model), "model")
            fs = put(ship(source), "source") if source is not None else None
            fx, fy = put(x.cpu(), "images"), put(y.cpu(), "labels")
            res = {"GPU": 1} if device.startswith("cuda") else None
            futures = {}
            for k, t in enumerate(tasks):
                j = jobs[t.job]
                f = client.submit(run_task, fm, fs, fx, fy, j.sites, j.attack, j.kwargs, t.start, t.stop,
                                  store_root, token, device, threads, resources=res, pure=False,
                                  key=f"msparse-{j.key[:16]}-{t.start}-{uuid.uuid4().hex[:6]}")
                futures[f] = k
            for f in _finished(distributed, client, futures, where, timeout):
                k = futures[f]
                out[k] = _result(f, where, timeout)   # a worker's MsparseError is raised here, with its message
                bar.done(out[k])
            return out
        finally:
            self.stats = bar.summary()
            bar.close()


def evaluate_sharded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str = "apgd-ce", *,
                     shard_size: int, cluster=None, store=None, progress: bool | str = True, **kwargs) -> Result:
    """:func:`~msparse.evaluation.evaluate.evaluate` of all images as index shards of ``shard_size`` images
    (rounded down to a multiple of the batch size), each shard a record computed on ``cluster`` (default
    in-process), merged into the record of the whole evaluation (stored under the unsharded key).

    Returns the merged :class:`~msparse.evaluation.evaluate.Result`; per example it equals the unsharded
    ``evaluate`` with the same seed and batch size (see :mod:`msparse.evaluation.shards`)."""
    ex = Executor(get_executor(cluster).spec, shard_size=int(shard_size))
    source = kwargs.pop("source", None)
    ex.run(model, x, y, [Job(site_state(model), attack, dict(kwargs))], store=store, source=source,
           progress=progress)
    return evaluate(model, x, y, attack, store=store, source=source, progress=False, **kwargs)


def _identity(v):
    return v


def _cpu_copy(m: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(m).cpu()


def _store_token(root: Path) -> str:
    """The store's token (created once, atomically); workers check they read the same one."""
    p = root / TOKEN_FILE
    try:
        return p.read_text().strip()
    except OSError:
        pass
    tok = uuid.uuid4().hex
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)   # first writer wins
        with os.fdopen(fd, "w") as f:
            f.write(tok + "\n")
    except FileExistsError:
        pass
    except OSError:
        atomic_write_text(p, tok + "\n")
    return p.read_text().strip()


class _Progress:
    """Points done / total and images per second over every worker (a tqdm bar, lines, or nothing)."""

    def __init__(self, total: int, mode, desc: str):
        self.total, self.mode, self.n_done, self.images, self.t0 = total, mode, 0, 0, time.perf_counter()
        self.bar = None
        if mode is True and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="point", leave=False, dynamic_ncols=True)
        elif mode == "lines" and total:
            print(f"  {desc}", flush=True)

    def done(self, rec: dict, where: str = "") -> None:
        self.n_done += 1
        if not rec.get("_cached"):
            self.images += int(rec["result"]["n"])
        rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{rate:.1f} images/s")
        elif self.mode == "lines":
            print(f"  [{self.n_done}/{self.total}] {rec['key'][:12]} n={rec['result']['n']} "
                  f"robust {100 * rec['result']['robust_acc']:.1f}%  ({rate:.1f} images/s over all workers)",
                  flush=True)

    def summary(self) -> dict:
        dt = time.perf_counter() - self.t0
        return {"tasks": self.n_done, "images": self.images, "seconds": dt,
                "images_per_s": self.images / dt if dt > 0 else 0.0}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
