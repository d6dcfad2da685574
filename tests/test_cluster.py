"""Scale-out: the executor (in-process, Dask local:N, a scheduler address), index shards, faults.

The Dask tests start real processes (a scheduler and workers on 127.0.0.1, random free ports, always stopped)
and kill a worker in the middle of a point; the records must equal the in-process run's bit for bit."""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from msparse.core.calibration import calibrate
from msparse.core.placement import set_alpha, site_state, sparsify
from msparse.errors import ClusterError, MsparseError, StoreError, UsageError
from msparse.evaluation import executor as ex
from msparse.evaluation.evaluate import evaluate
from msparse.evaluation.shards import merge_records, shard_bounds
from msparse.evaluation.store import Store
from msparse.evaluation.sweep import sweep
from msparse.models.resnet import resnet18

SWEEP = dict(alphas=[0.0, 0.2, 0.4], attack="apgd-ce", n_iter=4, batch_size=8, progress=False)


def tiny_model(seed: int = 0):
    """A random-weight ResNet-18 (GELU, width 4) with MeanSparse at the paper's placement, calibrated."""
    torch.manual_seed(seed)
    m = resnet18("gelu", width=4).eval()
    sparsify(m, "ResNet-18/cifar10/Linf/v1")
    calibrate(m, torch.rand(64, 3, 32, 32))
    return m


def tiny_data(n: int = 24):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def numbers(store_dir) -> dict:
    """``{key: (spec, result)}`` of every record in a store (provenance and labels left out)."""
    return {r["key"]: (r["spec"], r["result"]) for r in Store(store_dir)}


# ------------------------------------------------------------------------------------------------------
# choosing a cluster
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [(None, None), ("in-process", None), ("none", None), ("local:2", "local:2"),
                                        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
                                        ("10.0.0.5:8786", "tcp://10.0.0.5:8786"), ("slurm:4", "slurm:4")])
def test_parse_cluster_normalises_the_choices(text, want):
    assert ex.parse_cluster(text) == want


@pytest.mark.parametrize("text", ["bogus", "local:x", "local:0x", "slurm:0", "tcp://"])
def test_parse_cluster_refuses_anything_else(text):
    with pytest.raises(UsageError, match="cluster"):
        ex.parse_cluster(text)


@pytest.mark.parametrize("cmd", [["sweep", "--cluster", "bogus"], ["book", "--list", "--cluster", "local:"],
                                 ["plan", "paper", "--cluster", "nowhere"]])
def test_cli_bad_cluster_is_one_line_and_exit_2(cmd, capsys):
    from msparse.cli import main

    with pytest.raises(SystemExit) as e:
        main(cmd)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown cluster" in err


def test_network_timeout_is_the_argument_else_the_environment_else_the_default(monkeypatch):
    monkeypatch.delenv(ex.TIMEOUT_ENV, raising=False)
    assert ex.network_timeout() == ex.DEFAULT_TIMEOUT
    monkeypatch.setenv(ex.TIMEOUT_ENV, "2.5")
    assert ex.network_timeout() == 2.5 and ex.network_timeout(7) == 7.0
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(ex.TIMEOUT_ENV, bad)
        with pytest.raises(UsageError, match=rf"\$MSPARSE_CLUSTER_TIMEOUT must be a number of seconds > 0, "
                                             rf"got '{bad}'"):
            ex.network_timeout()


def test_cluster_without_distributed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed -> ImportError
    with pytest.raises(ClusterError, match=r"msparse\[cluster\]"):
        ex._client("local:2")
    assert issubclass(ClusterError, MsparseError)


def test_env_var_and_using_choose_the_executor(monkeypatch):
    monkeypatch.delenv(ex.ENV_VAR, raising=False)
    assert not ex.get_executor().distributed
    monkeypatch.setenv(ex.ENV_VAR, "local:3")
    assert ex.get_executor().spec == "local:3"
    with ex.using("in-process"):
        assert not ex.get_executor().distributed
    with ex.using("tcp://h:1"):
        assert ex.get_executor().spec == "tcp://h:1"
    assert ex.get_executor("local:1").spec == "local:1"   # an explicit choice wins


def test_a_cluster_run_needs_a_store():
    m = tiny_model()
    x, y = tiny_data(8)
    with pytest.raises(MsparseError, match="store"):
        sweep(m, x, y, store=False, cluster=ex.Executor("local:1"), **SWEEP)


# ------------------------------------------------------------------------------------------------------
# shards
# ------------------------------------------------------------------------------------------------------

def test_shard_bounds_are_multiples_of_the_batch_size():
    assert shard_bounds(100, 8, None) == [(0, 100)]
    assert shard_bounds(100, 8, 20) == [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80), (80, 96), (96, 100)]
    assert shard_bounds(100, 8, 3) == [(a, min(100, a + 8)) for a in range(0, 100, 8)]   # at least one batch
    assert all(a % 8 == 0 for a, _ in shard_bounds(1000, 8, 77))


def test_sharded_evaluation_equals_the_unsharded_one_per_example(tmp_path):
    """Shards of 2 batches, merged from per-example flags: the unsharded run's key, flags, counts, intervals."""
    m = tiny_model()
    set_alpha(m, 0.3)
    x, y = tiny_data(20)
    kw = dict(attack="apgd-ce", n_iter=3, batch_size=4, seed=3)
    whole = evaluate(m, x, y, store=tmp_path / "a", **kw)
    merged = ex.evaluate_sharded(m, x, y, shard_size=8, store=tmp_path / "b", progress=False, **kw)
    assert merged.key == whole.key
    for f in ("n", "clean", "robust", "clean_acc", "robust_acc", "clean_ci", "robust_ci", "clean_flags",
              "robust_flags", "components"):
        assert merged.result[f] == whole.result[f], f
    parts = merged.provenance["merged_from"]
    assert [p["n"] for p in parts] == [8, 8, 4]
    assert len(Store(tmp_path / "b")) == 4          # three shard records and the merged one
    # the pooled count is not the mean of the shards' accuracies (unequal shards)
    recs = [Store(tmp_path / "b").get(p["key"]) for p in parts]
    assert merge_records(recs, x, y)["result"]["robust"] == sum(r["result"]["robust"] for r in recs)


def test_merge_refuses_shards_of_different_evaluations(tmp_path):
    m = tiny_model()
    x, y = tiny_data(8)
    a = evaluate(m, x[:4], y[:4], "apgd-ce", n_iter=2, batch_size=4, store=False).to_record()
    b = evaluate(m, x[4:], y[4:], "apgd-ce", n_iter=2, batch_size=4, seed=1, store=False).to_record()
    with pytest.raises(MsparseError, match="not of one evaluation"):
        merge_records([a, b], x, y)


# ------------------------------------------------------------------------------------------------------
# faults without Dask: resume, a store the worker cannot see, concurrent writers
# ------------------------------------------------------------------------------------------------------

def test_rerun_computes_only_the_missing_records(tmp_path):
    m = tiny_model()
    x, y = tiny_data(8)
    jobs = []
    for a in (0.0, 0.3):
        set_alpha(m, a)
        jobs.append(ex.Job(site_state(m), "apgd-ce", dict(n_iter=2, batch_size=8)))
    run = ex.Executor(None)
    first = run.run(m, x, y, jobs, store=tmp_path, progress=False)
    assert len(first) == 2
    assert run.run(m, x, y, jobs, store=tmp_path, progress=False) == set()      # nothing missing
    gone = sorted(first)[0]
    Store(tmp_path).path(gone).unlink()
    assert run.run(m, x, y, jobs, store=tmp_path, progress=False) == {gone}     # only the lost one


def test_a_worker_that_cannot_see_the_store_fails_clearly(tmp_path):
    m = tiny_model()
    x, y = tiny_data(4)
    tok = ex._store_token(tmp_path)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    with pytest.raises(StoreError, match="cannot see the results store"):
        ex.run_task(m, None, x, y, site_state(m), "none", {}, 0, 4, str(elsewhere), tok, "cpu", None)
    assert not (elsewhere / "records").exists()       # nothing computed or written there


def _hammer(root: str, rec: dict, n: int) -> None:
    st = Store(root)
    for _ in range(n):
        st.put(rec)


def test_concurrent_writers_of_one_key_never_corrupt_it(tmp_path):
    import multiprocessing as mp

    m = tiny_model()
    x, y = tiny_data(4)
    rec = evaluate(m, x, y, "none", store=False).to_record()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), rec, 40)) for _ in range(3)]
    for p in procs:
        p.start()
    for _ in range(200):   # a reader never sees half a record
        got = Store(tmp_path).get(rec["key"]) if Store(tmp_path).path(rec["key"]).exists() else rec
        assert got is not None and got["result"] == rec["result"]
    for p in procs:
        p.join(30)
    assert Store(tmp_path).get(rec["key"])["result"] == rec["result"]
    assert not list((tmp_path / "records").glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------------
# real Dask: local:2 and a scheduler address, one worker killed mid-point
# ------------------------------------------------------------------------------------------------------

needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="distributed is not installed (pip install 'msparse[cluster]')")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process sweep's records (the numbers every cluster run must reproduce)."""
    d = tmp_path_factory.mktemp("inprocess")
    m = tiny_model()
    x, y = tiny_data()
    sw = sweep(m, x, y, store=d, **SWEEP)
    assert not any(r.cached for r in sw.results)
    return numbers(d), [r.result["robust_flags"] for r in sw.results]


def _kill_when_a_point_is_half_done(store: Path, kill, timeout: float = 60.0) -> threading.Thread:
    """Call ``kill()`` as soon as a per-batch shard of an unfinished point appears in ``store``."""
    def watch():
        t0 = time.time()
        while time.time() - t0 < timeout:
            if any((store / "partial").glob("*/*.json")):
                kill()
                return
            time.sleep(0.02)
    th = threading.Thread(target=watch, daemon=True)
    th.start()
    return th


@pytest.mark.slow
@needs_dask
def test_local_cluster_sweep_with_a_killed_worker_equals_the_in_process_sweep(tmp_path, reference):
    want, flags = reference
    m = tiny_model()
    x, y = tiny_data()
    client = ex._client("local:2")
    try:
        pids = list(client.run(os.getpid).values())
        killed = []
        watcher = _kill_when_a_point_is_half_done(tmp_path, lambda: (os.kill(pids[0], signal.SIGKILL),
                                                                     killed.append(pids[0])))
        sw = sweep(m, x, y, store=tmp_path, cluster="local:2", **SWEEP)
        watcher.join(1)
        assert killed, "no worker was killed mid-point (the sweep finished before a batch shard appeared)"
        assert numbers(tmp_path) == want                      # every record, bit for bit
        assert [r.result["robust_flags"] for r in sw.results] == flags
        assert not any(r.cached for r in sw.results)          # computed by this run, on the workers
        again = sweep(m, x, y, store=tmp_path, cluster="local:2", **SWEEP)
        assert all(r.cached for r in again.results)           # a rerun recomputes nothing
    finally:
        ex._close_clients()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_client(address: str, timeout: float = 30.0):
    """A client of the scheduler at ``address``, retried until it answers (at most ``timeout`` seconds)."""
    import distributed

    end = time.monotonic() + timeout
    while True:
        try:
            return distributed.Client(address, timeout="5s")
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _wait_for_workers(address: str, n: int, timeout: float = 60.0) -> None:
    import distributed

    with distributed.Client(address, timeout="20s") as c:
        c.wait_for_workers(n, timeout=timeout)


@pytest.fixture
def dask_processes(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (random free ports); stopped after."""
    dask = Path(sys.executable).with_name("dask")
    if not dask.exists():
        pytest.skip("the dask command is not installed next to this python")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = dict(cwd=str(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], **common)]
    try:
        time.sleep(0.5)
        for i in range(2):
            procs.append(subprocess.Popen([str(dask), "worker", address, "--nthreads", "1", "--no-nanny",
                                           "--name", str(i), "--no-dashboard", "--host", "127.0.0.1"], **common))
        _wait_for_workers(address, 2)
        yield address, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


@pytest.mark.slow
@needs_dask
def test_scheduler_address_sweep_with_a_killed_worker_equals_the_in_process_sweep(tmp_path, reference,
                                                                                   dask_processes):
    address, procs = dask_processes
    want, flags = reference
    m = tiny_model()
    x, y = tiny_data()
    store = tmp_path / "store"
    victim = procs[1]
    watcher = _kill_when_a_point_is_half_done(store, lambda: victim.send_signal(signal.SIGKILL))
    try:
        sw = sweep(m, x, y, store=store, cluster=address, **SWEEP)
        watcher.join(1)
        assert victim.poll() is not None, "no worker was killed mid-point"
        assert numbers(store) == want
        assert [r.result["robust_flags"] for r in sw.results] == flags
        assert not list((store / "records").glob("*.corrupt"))
    finally:
        ex._close_clients()


@pytest.mark.slow
@needs_dask
def test_a_scheduler_that_stops_answering_mid_run_fails_the_run_naming_it(tmp_path):
    """A real scheduler without workers: the tasks wait, and the run waits on as long as the scheduler answers
    (several timeouts long); once it stops answering (SIGSTOP) the run fails within about two timeouts. (3 s: a
    scheduler on a loaded 2-core machine took over 1 s to answer its first request here.)"""
    dask = Path(sys.executable).with_name("dask")
    if not dask.exists():
        pytest.skip("the dask command is not installed next to this python")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--dashboard-address", ":0"], cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    m = tiny_model()
    x, y = tiny_data(8)
    stopped = []
    freeze = threading.Timer(8.0, lambda: (sched.send_signal(signal.SIGSTOP), stopped.append(time.monotonic())))
    watchdog = threading.Timer(60.0, sched.kill)   # a client that waits for ever gets a dead scheduler instead
    try:
        with distributed_client(address):   # the scheduler is up and answers
            pass
        freeze.start()
        watchdog.start()
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=f"the Dask scheduler at {address} stopped answering \\(no answer "
                                               "within 3 s\\)"):
            sweep(m, x, y, store=tmp_path / "store", cluster=ex.Executor(address, timeout=3), **SWEEP)
        assert stopped and stopped[0] - t0 > 7.5, "the run failed while the scheduler still answered"
        assert time.monotonic() - stopped[0] < 15
    finally:
        freeze.cancel()
        watchdog.cancel()
        sched.send_signal(signal.SIGCONT)
        ex._close_clients()
        sched.terminate()
        try:
            sched.wait(5)
        except subprocess.TimeoutExpired:
            sched.kill()
            sched.wait(10)
