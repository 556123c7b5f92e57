"""
neo-bench: how fast ZODB programs run on NEO, compared with other storages.

It starts its own local cluster through the real entry points (or uses a
running one), runs workloads over the plain ZODB API, and prints a table
(median, min and max of several repetitions); with --compare it runs the
same workloads, in the same invocation, against reference storages (a ZEO
server over FileStorage that it starts itself, an in-process FileStorage)
and prints NEO's figure as a ratio of theirs.  Results also go to a JSON
file.

    neo-bench                          # 1 master + 1 storage on SQLite
    neo-bench --compare zeo,filestorage
    neo-bench --storages 2 --adapter MySQL --mysql root@@127.0.0.1:3306
    neo-bench --masters 127.0.0.1:10000 --name main   # a running cluster
    neo-bench --objects 1000000        # storage node memory while filling
"""

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import transaction
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent import Persistent
from ZODB.POSException import ConflictError

from neo.lib.launch import LocalCluster, NodeFailed
from neo.services.storage.config import SYNC_MODES

#: Workloads in the order they run, with their unit.
WORKLOADS = [
    ("add", "objects/s"), ("update", "objects/s"), ("cold_read", "objects/s"),
    ("warm_read", "objects/s"), ("small", "txn/s"), ("concurrent", "txn/s"),
    ("conflicts", "txn/s"), ("large", "MB/s"),
]


class Item(Persistent):
    """A small object: its pickle is about 200 bytes."""

    def __init__(self, i):
        self.i = i
        self.payload = os.urandom(60).hex()


class Counter(Persistent):
    """A plain counter: concurrent increments conflict (no resolution)."""

    value = 0


class Blob(Persistent):
    def __init__(self, data):
        self.data = data


# -- Targets -------------------------------------------------------------------

class Target:
    """A storage to measure, described by a ZConfig <zodb> section."""

    name = None
    #: Whether several processes may open it (else concurrency is n/a).
    shared = True

    def start(self, work, log):
        pass

    def stop(self):
        pass

    def zconfig(self) -> str:
        raise NotImplementedError

    def open(self):
        import ZODB.config
        return ZODB.config.databaseFromString(self.zconfig())

    def pids(self):
        return []


class NEOTarget(Target):
    name = "neo"

    def __init__(self, options):
        self.options = options
        self.cluster = None
        self.masterNodes = options.master_nodes
        self.clusterName = options.name or "bench"

    def start(self, work, log):
        if self.masterNodes:
            return
        o = self.options
        directory = os.path.join(work, "neo")
        os.makedirs(directory)
        cluster = self.cluster = BenchCluster(
            directory, storages=o.storages, name=self.clusterName,
            adapter=o.adapter, replicas=o.replicas, mysql=o.mysql,
            sync=o.sync)
        log(f"starting a NEO cluster: 1 master, {o.storages} storage(s) on"
            f" {o.adapter}, {o.replicas} replica(s)")
        try:
            cluster.start()
            cluster.startCluster()
        except BaseException as e:
            # Nothing of it may stay behind.
            self.cluster = None
            cluster.stop()
            try:
                cluster.dropDatabases()
            except Exception:
                pass
            if isinstance(e, NodeFailed):
                raise SystemExit(
                    f"neo-bench: the NEO cluster did not start: {e}") from None
            raise
        self.masterNodes = cluster.masterAddress

    def stop(self):
        if self.cluster is not None:
            self.cluster.runNeoctl("set", "cluster", "STOPPING")
            for node in self.cluster.nodes():
                try:
                    node.waitExit(30)
                except subprocess.TimeoutExpired:
                    node.kill()
            self.cluster.dropDatabases()

    def zconfig(self):
        return ("%import neo.client\n<zodb>\n  cache-size 1000000\n"
                "  <NEOStorage>\n"
                f"    master_nodes {self.masterNodes}\n"
                f"    name {self.clusterName}\n"
                "  </NEOStorage>\n</zodb>\n")

    def pids(self):
        if self.cluster is None:
            return []
        return [(f"storage{i}", n.process.pid)
                for i, n in enumerate(self.cluster.storages)]


class BenchCluster(LocalCluster):
    """The local cluster the benchmark starts (MySQL databases its own)."""

    def __init__(self, directory, mysql=None, sync=None, **kwargs):
        super().__init__(directory, **kwargs)
        self.mysql = mysql
        self.sync = sync

    def storageProcess(self, i, *extra, cluster=None):
        if self.sync is not None:
            extra = ("--sync", self.sync, *extra)
        return super().storageProcess(i, *extra, cluster=cluster)

    def database(self, i):
        if self.adapter == "SQLite":
            return super().database(i)
        name = f"neobench_{os.getpid()}_{i}"
        self.databases.append(name)
        user, _, host = (self.mysql or "root@@127.0.0.1:3306").partition("@@")
        return f"{user}@{name}@{host}"

    def dropDatabases(self):
        if not self.databases:
            return
        import MySQLdb
        from neo.services.storage.mysql import parseDSN
        kwargs = parseDSN(self.database(0))
        kwargs.pop("db")
        conn = MySQLdb.connect(**kwargs)
        try:
            for name in self.databases:
                conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


class ZEOTarget(Target):
    """A ZEO server over a FileStorage, started here."""

    name = "zeo"

    def start(self, work, log):
        import importlib.util
        if importlib.util.find_spec("ZEO") is None:
            raise SystemExit("neo-bench: --compare zeo needs ZEO"
                             " (pip install ZEO)")
        directory = os.path.join(work, "zeo")
        os.makedirs(directory)
        self.port = _freePort()
        self.log = open(os.path.join(directory, "zeo.log"), "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ZEO.runzeo", "-a",
             f"127.0.0.1:{self.port}", "-f",
             os.path.join(directory, "Data.fs")],
            stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        try:
            _waitForPort(self.port, self.process)
        except BaseException:
            self.stop()
            raise
        log("started a ZEO server over FileStorage")

    process = None

    def stop(self):
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        self.log.close()

    def zconfig(self):
        return ("%import ZEO\n<zodb>\n  cache-size 1000000\n"
                "  <clientstorage>\n"
                f"    server 127.0.0.1:{self.port}\n"
                "  </clientstorage>\n</zodb>\n")

    def pids(self):
        return [("zeo", self.process.pid)]


class FileStorageTarget(Target):
    """An in-process FileStorage: the ceiling (no network at all)."""

    name = "filestorage"
    shared = False

    def start(self, work, log):
        self.path = os.path.join(work, "fs", "Data.fs")
        os.makedirs(os.path.dirname(self.path))

    def zconfig(self):
        return ("<zodb>\n  cache-size 1000000\n  <filestorage>\n"
                f"    path {self.path}\n  </filestorage>\n</zodb>\n")


class ConfigTarget(Target):
    """Any storage, from a ZConfig file holding a <zodb> section."""

    def __init__(self, path):
        self.name = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            self._zconfig = f.read()

    def zconfig(self):
        return self._zconfig


def _freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _waitForPort(port, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"neo-bench: the server exited ({process.poll()})")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)  # the server is starting
    raise SystemExit("neo-bench: the server did not start")


# -- Workloads -----------------------------------------------------------------

def _commit():
    transaction.commit()


def runAdd(db, n, key):
    conn = db.open()
    root = conn.root()
    start = time.perf_counter()
    tree = root[key] = OOBTree()
    for i in range(n):
        tree[i] = Item(i)
    _commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def runUpdate(db, n, key):
    conn = db.open()
    tree = conn.root()[key]
    items = list(tree.values())
    start = time.perf_counter()
    for item in items:
        item.i += 1
    _commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


#: Passes of warm_read in a repetition, whose median is its figure: a pass
#: takes milliseconds, the time a slow spell of a shared machine lasts.
WARM_PASSES = 5


def runReads(target, n, key):
    """cold_read with a new client, then warm_read on the same one."""
    db = target.open()
    try:
        conn = db.open()
        start = time.perf_counter()
        tree = conn.root()[key]
        for item in tree.values():
            item.i
        cold = n / (time.perf_counter() - start)
        passes = []
        for _ in range(WARM_PASSES):
            conn.cacheMinimize()
            start = time.perf_counter()
            for item in conn.root()[key].values():
                item.i
            passes.append(n / (time.perf_counter() - start))
        warm = statistics.median(passes)
        conn.close()
    finally:
        db.close()
    return cold, warm


#: The steps of a commit that L{runSmall} times: (name, the two-phase
#: commit's method that starts it, the one that ends it).
STEPS = [("begin+stores", "tpc_begin", "commit"),
         ("vote", "tpc_vote", "tpc_vote"),
         ("finish", "tpc_finish", "tpc_finish")]

#: The clock of L{_StepClock}.
_clock = time.perf_counter


class _StepClock:
    """
    A resource of a transaction that notes when each method of the
    two-phase commit reaches it, into C{times}.  Joined twice, sorted
    first (C{edge} 0) and last (C{edge} 1) among the transaction's
    resources, it times what the storage between them does in each step,
    without knowing the storage.
    """

    def __init__(self, times, edge):
        self.times, self.edge = times, edge

    def sortKey(self):
        # Sorted before and after any storage's key.
        return "\0" if self.edge == 0 else "\U0010ffff" * 8

    def _note(self, method):
        self.times[method, self.edge] = _clock()

    def tpc_begin(self, txn):
        self._note("tpc_begin")

    def commit(self, txn):
        self._note("commit")

    def tpc_vote(self, txn):
        self._note("tpc_vote")

    def tpc_finish(self, txn):
        self._note("tpc_finish")

    def abort(self, txn):
        pass

    tpc_abort = abort


def _timedCommit(steps):
    """Commit, adding how long each step of L{STEPS} took to C{steps}
    (C{{name: [seconds]}})."""
    times = {}
    txn = transaction.get()
    txn.join(_StepClock(times, 0))
    txn.join(_StepClock(times, 1))
    _commit()
    for name, begin, end in STEPS:
        steps.setdefault(name, []).append(times[end, 1] - times[begin, 0])


def runSmall(db, t, key, first=0, count=None, steps=None):
    """
    T transactions modifying 1 or 2 objects; returns (txn/s, latencies).
    With C{steps} (a dict), how long each step of each commit took is
    added to it (L{_timedCommit}).
    """
    conn = db.open()
    tree = conn.root()[key]
    keys = list(tree.keys())[first:None if count is None else first + count]
    latencies = []
    start = time.perf_counter()
    for i in range(t):
        t0 = time.perf_counter()
        tree[keys[i % len(keys)]].i += 1
        if i % 2:
            tree[keys[(i * 7 + 3) % len(keys)]].i += 1
        if steps is None:
            _commit()
        else:
            _timedCommit(steps)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    conn.close()
    return t / elapsed, latencies


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _worker(zconfig, kind, args, barrier, results):
    """A client process of the concurrent and conflicts workloads."""
    import ZODB.config
    db = ZODB.config.databaseFromString(zconfig)
    try:
        conn = db.open()
        conn.root()  # connected and loaded before the clock starts
        conn.close()
        barrier.wait(120)
        start = time.perf_counter()
        if kind == "small":
            key, t, first, count = args
            runSmall(db, t, key, first, count)
            conflicts = 0
        else:
            t, = args
            conflicts = _increments(db, t)
        results.put((time.perf_counter() - start, conflicts))
    except Exception as e:
        results.put((None, repr(e)))
    finally:
        db.close()


def _increments(db, t):
    """Increment the shared Length and the plain counter, T times each."""
    conflicts = 0
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    for i in range(t):
        while True:
            try:
                root = conn.root()
                root["length"].change(1)
                if i % 2:
                    root["counter"].value += 1
                tm.commit()
                break
            except ConflictError:
                conflicts += 1
                tm.abort()
    conn.close()
    return conflicts


def _counts(db):
    """The shared Length's and plain counter's values, as committed."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        tm.begin()  # the latest state, whatever this connection cached
        root = conn.root()
        return root["length"].value, root["counter"].value
    finally:
        tm.abort()
        conn.close()


def _checkCounts(name, before, after, increments, plain):
    """
    The conflicts workload checks what it measures: every commit of its
    clients is in the database (a lost update fails the benchmark).
    """
    expected = (before[0] + increments, before[1] + plain)
    if after != expected:
        raise RuntimeError(
            f"{name}: updates were lost under contention: the Length and"
            f" the counter are {after[0]} and {after[1]}, not"
            f" {expected[0]} and {expected[1]}")


def runProcesses(target, kind, argsFor, count):
    """Run C{count} client processes at once; returns (elapsed, conflicts)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    processes = [ctx.Process(target=_worker, args=(
        target.zconfig(), kind, argsFor(i), barrier, results))
        for i in range(count)]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for p in processes:
        p.join(60)
    for elapsed, extra in outcomes:
        if elapsed is None:
            raise RuntimeError(f"a client process failed: {extra}")
    return (max(e for e, _ in outcomes), sum(c for _, c in outcomes))


def runLarge(target, db, size, key):
    data = os.urandom(size)
    conn = db.open()
    start = time.perf_counter()
    conn.root()[key] = Blob(data)
    _commit()
    write = size / 1e6 / (time.perf_counter() - start)
    conn.close()
    if not target.shared:
        db.close()  # only one DB may open it at a time
    other = target.open()
    try:
        conn = other.open()
        start = time.perf_counter()
        assert len(conn.root()[key].data) == size
        read = size / 1e6 / (time.perf_counter() - start)
        conn.close()
    finally:
        other.close()
    return write, read, (db if target.shared else target.open())


class Results:
    """
    Samples per (target, workload); summaries for the table and JSON.  A
    repetition may bring latencies (the summary's percentiles are over
    those of every repetition) and counts (the summary gives their
    median, and each repetition's).
    """

    def __init__(self):
        self.samples = {}
        self.latencies = {}
        self.counts = {}
        #: C{{target: {step: [seconds]}}}, of L{STEPS}.
        self.steps = {}

    def add(self, target, workload, value, latencies=(), **counts):
        self.samples.setdefault(target, {}).setdefault(workload, []).append(
            value)
        self.latencies.setdefault(target, {}).setdefault(
            workload, []).extend(latencies)
        for name, count in counts.items():
            self.counts.setdefault(target, {}).setdefault(
                workload, {}).setdefault(name, []).append(count)

    def addSteps(self, target, steps):
        for name, durations in steps.items():
            self.steps.setdefault(target, {}).setdefault(name, []).extend(
                durations)

    def summary(self, target, workload):
        values = self.samples.get(target, {}).get(workload)
        if not values:
            return None
        summary = {"median": statistics.median(values), "min": min(values),
                   "max": max(values), "samples": values}
        latencies = self.latencies[target][workload]
        if latencies:
            summary["p50_ms"] = 1000 * _percentile(latencies, .5)
            summary["p99_ms"] = 1000 * _percentile(latencies, .99)
        if workload == "small" and self.steps.get(target):
            summary["steps_p50_ms"] = {
                name: 1000 * _percentile(durations, .5)
                for name, durations in self.steps[target].items()}
        for name, counts in self.counts.get(target, {}).get(
                workload, {}).items():
            summary[name] = statistics.median_low(counts)
            summary[f"{name}_samples"] = counts
        return summary


def runRepetition(target, options, results, progress, rep):
    """
    One repetition of every selected workload on one target: a generator
    that stops after each workload.  The targets take turns, workload by
    workload (L{runTurns}), so that a slow spell of a shared machine weighs
    on all of them alike.
    """
    n, t, name = options.objects_count, options.transactions, target.name
    selected = options.workloads.__contains__
    db = target.open()
    try:
        key = f"bench{rep}"
        progress(name, "add", rep)
        rate = runAdd(db, n, key)  # the data of the other workloads
        if selected("add"):
            results.add(name, "add", rate)
        yield
        if selected("update"):
            progress(name, "update", rep)
            results.add(name, "update", runUpdate(db, n, key))
            yield
        if selected("cold_read") or selected("warm_read"):
            progress(name, "cold_read", rep)
            if not target.shared:
                db.close()  # only one DB may open it at a time
            cold, warm = runReads(target, n, key)
            if not target.shared:
                db = target.open()
            results.add(name, "cold_read", cold)
            results.add(name, "warm_read", warm)
            yield
        if selected("small"):
            progress(name, "small", rep)
            steps = {}
            rate, latencies = runSmall(db, t, key, steps=steps)
            results.add(name, "small", rate, latencies)
            results.addSteps(name, steps)
            yield
        shared = target.shared
        if shared and rep == 0 and (
                selected("concurrent") or selected("conflicts")):
            conn = db.open()
            conn.root()["length"] = Length()
            conn.root()["counter"] = Counter()
            _commit()
            conn.close()
        for c in options.clients if selected("concurrent") else ():
            if shared:
                progress(name, f"concurrent C={c}", rep)
                per = max(1, n // c)
                elapsed, _ = runProcesses(
                    target, "small", lambda i: (key, t, i * per, per), c)
                results.add(name, f"concurrent_{c}", c * t / elapsed)
            yield
        if selected("conflicts"):
            if shared:
                c = max(options.clients)
                progress(name, f"conflicts C={c}", rep)
                each = max(1, t // c)
                before = _counts(db)
                elapsed, conflicts = runProcesses(
                    target, "conflicts", lambda i: (each,), c)
                _checkCounts(name, before, _counts(db), c * each,
                             c * (each // 2))
                results.add(name, "conflicts", c * each / elapsed,
                            conflict_errors=conflicts)
            yield
        for size in options.large if selected("large") else ():
            progress(name, f"large {size >> 20} MiB", rep)
            write, read, db = runLarge(target, db, size, f"large{size}_{rep}")
            results.add(name, f"large_write_{size >> 20}MiB", write)
            results.add(name, f"large_read_{size >> 20}MiB", read)
            yield
    finally:
        db.close()


def runTurns(repetitions):
    """Run the L{runRepetition} generators of the targets in turns, one
    workload each, until all are done."""
    running = list(repetitions)
    try:
        while running:
            for repetition in list(running):
                try:
                    next(repetition)
                except StopIteration:
                    running.remove(repetition)
    finally:
        for repetition in running:
            repetition.close()


def rows(options):
    """The table's rows: (key in results, label, unit)."""
    selected = options.workloads.__contains__
    out = [(w, w, unit) for w, unit in WORKLOADS[:5] if selected(w)]
    if selected("concurrent"):
        out += [(f"concurrent_{c}", f"concurrent C={c}", "txn/s")
                for c in options.clients]
    if selected("conflicts"):
        out.append(("conflicts", f"conflicts C={max(options.clients)}",
                    "txn/s"))
    for size in options.large if selected("large") else ():
        mib = size >> 20
        out.append((f"large_write_{mib}MiB", f"large write {mib} MiB", "MB/s"))
        out.append((f"large_read_{mib}MiB", f"large read {mib} MiB", "MB/s"))
    return out


def _fmt(value):
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def formatTable(results, options, targets):
    names = [t.name for t in targets]
    header = ["workload", "unit"]
    for name in names:
        header.append(f"{name} median (min-max)")
        if name != "neo":
            header.append(f"neo/{name}")
    lines = [header]
    for key, label, unit in rows(options):
        line = [label, unit]
        neo = results.summary("neo", key)
        for name in names:
            s = results.summary(name, key)
            if s is None:
                line.append("n/a")
            else:
                cell = f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"
                if key == "small" and "p50_ms" in s:
                    cell += f" p50 {s['p50_ms']:.2f}ms p99 {s['p99_ms']:.2f}ms"
                if key == "conflicts" and "conflict_errors" in s:
                    cell += f" [{s['conflict_errors']} ConflictErrors]"
                line.append(cell)
            if name != "neo":
                line.append(f"{neo['median'] / s['median']:.2f}x"
                            if neo and s else "n/a")
        lines.append(line)
    return _aligned(lines)


def formatSteps(results, targets):
    """
    Where a commit of C{small} spends its time, target by target: the
    median of each step of L{STEPS}; None if C{small} did not run.
    """
    columns = {}
    for target in targets:
        steps = (results.summary(target.name, "small") or {}).get(
            "steps_p50_ms")
        if steps:
            columns[target.name] = steps
    if not columns:
        return None
    lines = [["step", "unit", *columns]]
    for step, _, _ in STEPS:
        line = [step, "p50 ms"]
        for steps in columns.values():
            value = steps.get(step)
            line.append("n/a" if value is None else f"{value:.3f}")
        lines.append(line)
    return "small, a commit step by step:\n" + _aligned(lines)


def _aligned(lines):
    """C{lines} (the first one a header) as a table of aligned columns."""
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = []
    for i, row in enumerate(lines):
        text.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths))
                    .rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


# -- Memory mode ---------------------------------------------------------------

def _rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None


def runFill(target, options, log):
    """Commit many objects in batches, sampling the storage nodes' memory."""
    total, batch = options.objects_count, 10000
    db = target.open()
    lines = [f"{'objects':>10}  {'objects/s':>10}  " + "  ".join(
        f"{name + ' RSS MiB':>16}" for name, _ in target.pids())]
    samples = []
    try:
        conn = db.open()
        tree = conn.root()["fill"] = OOBTree()
        _commit()
        done, start = 0, time.perf_counter()
        while done < total:
            t0 = time.perf_counter()
            for i in range(done, min(total, done + batch)):
                tree[i] = Item(i)
            _commit()
            conn.cacheMinimize()
            done = min(total, done + batch)
            rate = batch / (time.perf_counter() - t0)
            rss = [_rss(pid) for _, pid in target.pids()]
            samples.append({"objects": done, "rate": rate, "rss": rss})
            if done % (total // 10 or batch) == 0 or done == total:
                lines.append(f"{done:>10,}  {rate:>10,.0f}  " + "  ".join(
                    f"{(r or 0) / 2**20:>16.1f}" for r in rss))
                log(lines[-1])
        elapsed = time.perf_counter() - start
        conn.close()
    finally:
        db.close()
    size = sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(options.work) for f in files
               if f.endswith((".db", ".db-wal", ".fs")))
    lines.append(f"{total:,} objects in {elapsed:.1f} s; database size on disk"
                 f" {size / 2**20:.1f} MiB")
    return "\n".join(lines), {"samples": samples, "elapsed": elapsed,
                              "database_bytes": size}


# -- Command line --------------------------------------------------------------

def parseArgs(argv):
    parser = argparse.ArgumentParser(
        prog="neo-bench", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default="SQLite",
                        choices=["SQLite", "MySQL"],
                        help="storage backend of the cluster started here")
    parser.add_argument("--mysql", default="root@@127.0.0.1:3306",
                        help="MySQL user and server for --adapter MySQL, as"
                        " USER[:PASSWORD]@@HOST:PORT (databases neobench_*"
                        " are created and dropped)")
    parser.add_argument("--sync", type=str.upper, choices=SYNC_MODES,
                        help="SQLite: when the storage nodes sync commits to"
                        " disk: FULL, every commit, as FileStorage does"
                        " (neo-storage's default); NORMAL, only at"
                        " checkpoints (a power loss may lose the last"
                        " commits)")
    parser.add_argument("--storages", type=int, default=1,
                        help="storage nodes of the cluster started here")
    parser.add_argument("--replicas", type=int, default=0,
                        help="replicas of the cluster started here")
    parser.add_argument("--masters", default="1",
                        help="a number of masters for the cluster started"
                        " here (1), or the HOST:PORT addresses of a running"
                        " cluster's masters (with --name); the workloads"
                        " write their objects in its root (keys bench*,"
                        " large*, length, counter): give a cluster for"
                        " testing")
    parser.add_argument("--name", help="cluster name of a running cluster")
    parser.add_argument("--objects", type=int, default=1000, dest="objects_count",
                        help="N, objects per workload (>= 100000: the memory"
                        " mode, filling the cluster in batches) [1000]")
    parser.add_argument("--transactions", type=int, default=500,
                        help="T, transactions of the small workloads [500]")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repetitions of each workload [3]")
    parser.add_argument("--clients", default="1,2,4",
                        help="client processes of the concurrent workload")
    parser.add_argument("--large", default="1,16",
                        help="sizes in MiB of the large records")
    parser.add_argument("--compare", default="",
                        help="reference storages: zeo, filestorage, or"
                        " ZConfig files with a <zodb> section, separated by"
                        " commas")
    parser.add_argument("--json", help="where to write the results"
                        " [bench-YYYYmmdd-HHMMSS.json]")
    parser.add_argument("--workloads", default=",".join(
                            w for w, _ in WORKLOADS),
                        help="the workloads to run, separated by commas"
                        " [all]")
    parser.add_argument("--quick", action="store_true",
                        help="a short run that checks everything works")
    options = parser.parse_args(argv)
    if options.masters.isdigit():
        if int(options.masters) != 1:
            parser.error("a cluster started here has one master (several"
                         " masters come with failover)")
        options.master_nodes = None
    else:
        options.master_nodes = options.masters
        if not options.name:
            parser.error("--name is needed with the addresses of a running"
                         " cluster")
    if options.adapter == "MySQL":
        if options.sync is not None:
            parser.error("--sync is for SQLite: with MySQL, the server"
                         " decides (innodb_flush_log_at_trx_commit)")
        from neo.services.storage.mysql import parseDSN
        user, at, host = options.mysql.partition("@@")
        try:
            if not at:
                raise ValueError("no @@")
            parseDSN(f"{user}@neobench@{host}")
        except ValueError:
            parser.error(f"--mysql {options.mysql!r}: use"
                         " USER[:PASSWORD]@@HOST:PORT")
    if options.quick:
        options.objects_count = min(options.objects_count, 100)
        options.transactions = min(options.transactions, 20)
        options.repeat = 1
        options.clients = "1,2"
        options.large = "1"
    try:
        options.clients = [int(c) for c in options.clients.split(",")]
        options.large = [int(s) << 20 for s in options.large.split(",") if s]
    except ValueError:
        parser.error("--clients and --large take numbers separated by commas")
    options.workloads = [w.strip() for w in options.workloads.split(",")]
    unknown = set(options.workloads) - {w for w, _ in WORKLOADS}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}"
                     f" (choose among {', '.join(w for w, _ in WORKLOADS)})")
    if options.storages < 1 or options.replicas < 0 or min(options.clients) < 1:
        parser.error("--storages and --clients must be at least 1")
    return options


def describeNEO(options) -> str:
    """The NEO cluster measured, as the table's header says it."""
    if options.master_nodes:
        return (f"the running cluster {options.name!r} of master(s)"
                f" {options.master_nodes}")
    synced = ""
    if options.adapter == "SQLite":
        synced = (" (commits synced)" if (options.sync or SYNC_MODES[0])
                  == "FULL" else " (commits not synced)")
    return (f"{options.storages} storage(s) on {options.adapter}{synced},"
            f" {options.replicas} replica(s)")


def main(argv=None):
    options = parseArgs(sys.argv[1:] if argv is None else argv)
    # The large records are meant: ZODB need not advise blobs for them.
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=r"The <class 'neo\.bench\.Blob'>")
    targets = [NEOTarget(options)]
    for name in filter(None, options.compare.split(",")):
        name = name.strip()
        if name == "zeo":
            targets.append(ZEOTarget())
        elif name in ("filestorage", "fs"):
            targets.append(FileStorageTarget())
        elif os.path.exists(name):
            targets.append(ConfigTarget(name))
        else:
            raise SystemExit(f"neo-bench: unknown reference storage {name!r}")
    work = options.work = tempfile.mkdtemp(prefix="neo-bench-")
    interactive = sys.stderr.isatty()

    def log(message):
        sys.stderr.write(("\r\x1b[K" if interactive else "") + message + "\n")
        sys.stderr.flush()

    def progress(target, workload, rep):
        text = f"[{target}] {workload} ({rep + 1}/{options.repeat})"
        if interactive:
            sys.stderr.write("\r\x1b[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    results, report = Results(), {}
    started = []
    try:
        if options.objects_count >= 100000:
            for target in targets:
                target.start(work, log)
                try:
                    table, report[target.name] = runFill(target, options, log)
                    print(f"\n{target.name}:\n{table}")
                finally:
                    target.stop()
        else:
            for target in targets:
                target.start(work, log)
                started.append(target)
            for rep in range(options.repeat):
                runTurns(runRepetition(target, options, results, progress,
                                       rep) for target in targets)
    finally:
        for target in started:
            try:
                target.stop()
            except Exception as e:
                log(f"could not stop {target.name}: {e}")
        shutil.rmtree(work, ignore_errors=True)
    if interactive:
        sys.stderr.write("\r\x1b[K")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
           "options": {k: v for k, v in vars(options).items()
                       if k not in ("work",)},
           "results": {t.name: {key: results.summary(t.name, key)
                                for key, _, _ in rows(options)}
                       for t in targets},
           "neo": describeNEO(options),
           "fill": report}
    if options.objects_count < 100000:
        print(f"N={options.objects_count} T={options.transactions}"
              f" repeat={options.repeat}; NEO: {describeNEO(options)}")
        print(formatTable(results, options, targets))
        steps = formatSteps(results, targets)
        if steps is not None:
            print(steps)
    path = options.json or time.strftime("bench-%Y%m%d-%H%M%S.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=str)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
