"""The benchmark command still works (a quick run, no timing asserted)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest


class BenchSmokeTests(unittest.TestCase):

    def test_quick(self):
        """neo-bench --quick --compare zeo,filestorage prints the table
        with ratios and writes the JSON results."""
        directory = tempfile.mkdtemp(prefix="neo-bench-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "out.json")
        result = subprocess.run(
            [sys.executable, "-m", "neo.bench", "--quick", "--objects", "50",
             "--transactions", "10", "--compare", "zeo,filestorage",
             "--json", path], capture_output=True, text=True, timeout=600,
            cwd=directory)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        for label in ("add", "update", "cold_read", "warm_read", "small",
                      "concurrent C=2", "conflicts C=2",
                      "large write 1 MiB", "large read 1 MiB"):
            self.assertIn(label, result.stdout)
        self.assertIn("neo/zeo", result.stdout)
        # The targets take turns, workload by workload.
        progress = [line for line in result.stderr.splitlines()
                    if line.startswith("[")]
        self.assertLess(progress.index("[filestorage] add (1/1)"),
                        progress.index("[neo] update (1/1)"))
        with open(path) as f:
            doc = json.load(f)
        for target in ("neo", "zeo", "filestorage"):
            self.assertGreater(doc["results"][target]["add"]["median"], 0)
        self.assertIsNone(doc["results"]["filestorage"]["concurrent_2"])
        self.assertGreater(doc["results"]["neo"]["concurrent_2"]["median"], 0)
        # Where small's commits spend their time, target by target.
        self.assertIn("small, a commit step by step:", result.stdout)
        for target in ("neo", "zeo", "filestorage"):
            steps = doc["results"][target]["small"]["steps_p50_ms"]
            self.assertEqual(sorted(steps),
                             ["begin+stores", "finish", "vote"])
            self.assertGreater(steps["finish"], 0)

    def test_turns(self):
        """runTurns runs one step of each repetition in turn, goes on with
        those left when one is done, and closes them all should a step
        fail."""
        from neo.bench import runTurns
        steps, closed = [], []

        def repetition(name, count, failAt=None):
            try:
                for i in range(count):
                    if i == failAt:
                        raise ValueError(name)
                    steps.append((name, i))
                    yield
            finally:
                closed.append(name)

        runTurns([repetition("a", 2), repetition("b", 3)])
        self.assertEqual(steps, [("a", 0), ("b", 0), ("a", 1), ("b", 1),
                                 ("b", 2)])
        del steps[:], closed[:]
        with self.assertRaises(ValueError):
            runTurns([repetition("a", 3, failAt=1), repetition("b", 3)])
        self.assertEqual(sorted(closed), ["a", "b"])

    def test_summaryOverRepetitions(self):
        """A summary's latency percentiles are over every repetition's
        latencies, and a count is the median of the repetitions' (each
        kept), not the last one's."""
        from neo.bench import Results
        results = Results()
        results.add("neo", "small", 100.0, [0.001] * 60)
        results.add("neo", "small", 300.0, [0.002] * 30 + [0.050] * 10)
        results.add("neo", "small", 200.0, [])
        s = results.summary("neo", "small")
        self.assertEqual((s["median"], s["min"], s["max"]),
                         (200.0, 100.0, 300.0))
        self.assertEqual(s["p50_ms"], 1.0)
        self.assertEqual(s["p99_ms"], 50.0)
        for count in (7, 3, 5):
            results.add("neo", "conflicts", 10.0, conflict_errors=count)
        s = results.summary("neo", "conflicts")
        self.assertEqual(s["conflict_errors"], 5)
        self.assertEqual(s["conflict_errors_samples"], [7, 3, 5])
        self.assertNotIn("p50_ms", s)
        self.assertIsNone(results.summary("zeo", "small"))

    def test_steps(self):
        """The steps of small's commits are timed around what the storage
        does in each (the clocks are the first and last resources of the
        transaction), and printed target by target."""
        import ZODB
        from ZODB.MappingStorage import MappingStorage

        from neo import bench
        now = [0]
        self.patch(bench, "_clock", lambda: now[0])
        storage = MappingStorage()

        def spending(method, seconds):
            def spend(*args, **kwargs):
                now[0] += seconds
                return method(*args, **kwargs)
            return spend
        storage.tpc_begin = spending(storage.tpc_begin, 1)
        storage.store = spending(storage.store, 2)
        storage.tpc_vote = spending(storage.tpc_vote, 30)
        storage.tpc_finish = spending(storage.tpc_finish, 400)
        db = ZODB.DB(storage)
        self.addCleanup(db.close)
        bench.runAdd(db, 10, "bench")
        steps = {}
        bench.runSmall(db, 4, "bench", steps=steps)
        # Two commits change one object, two change two.
        self.assertEqual(steps, {"begin+stores": [3, 5, 3, 5],
                                 "vote": [30] * 4, "finish": [400] * 4})
        results = bench.Results()
        results.add("neo", "small", 1.0)
        results.addSteps("neo", steps)
        results.add("zeo", "small", 1.0)

        class Target:
            def __init__(self, name):
                self.name = name
        lines = bench.formatSteps(results, [Target("neo"), Target("zeo")]
                                  ).splitlines()
        # zeo's small was not timed step by step: no column.
        self.assertEqual(lines[1].split(), ["step", "unit", "neo"])
        self.assertEqual(lines[3:], [
            "begin+stores  p50 ms  5000.000",
            "vote          p50 ms  30000.000",
            "finish        p50 ms  400000.000"])
        self.assertIsNone(bench.formatSteps(bench.Results(), [Target("neo")]))

    def patch(self, obj, name, value):
        old = getattr(obj, name)
        setattr(obj, name, value)
        self.addCleanup(setattr, obj, name, old)

    def test_lostUpdatesFail(self):
        """The conflicts workload fails when the database lacks one of its
        commits, instead of reporting a rate."""
        from neo.bench import _checkCounts
        _checkCounts("neo", (10, 4), (18, 6), 8, 2)
        with self.assertRaisesRegex(RuntimeError, "17 and 6, not 18 and 6"):
            _checkCounts("neo", (10, 4), (17, 6), 8, 2)

    def test_describeNEO(self):
        """The header names the cluster measured: the one started here, or
        the running one given (not the options of a cluster not started)."""
        from neo.bench import describeNEO, parseArgs
        self.assertEqual(describeNEO(parseArgs(["--storages", "2"])),
                         "2 storage(s) on SQLite (commits synced),"
                         " 0 replica(s)")
        self.assertEqual(describeNEO(parseArgs(["--sync", "normal"])),
                         "1 storage(s) on SQLite (commits not synced),"
                         " 0 replica(s)")
        self.assertEqual(describeNEO(parseArgs(["--adapter", "MySQL"])),
                         "1 storage(s) on MySQL, 0 replica(s)")
        self.assertEqual(
            describeNEO(parseArgs(["--masters", "127.0.0.1:10000",
                                   "--name", "demo"])),
            "the running cluster 'demo' of master(s) 127.0.0.1:10000")

    def test_sync(self):
        """--sync reaches the storage nodes the benchmark starts, and is
        refused with MySQL, whose server decides."""
        from neo.bench import BenchCluster
        for sync in ("NORMAL", None):
            cluster = BenchCluster("/nonexistent", sync=sync)
            cluster.masterAddress = "127.0.0.1:1"
            args = cluster.storageProcess(0).args
            if sync is None:
                self.assertNotIn("--sync", args)
            else:
                self.assertEqual(args[args.index("--sync") + 1], sync)
        result = subprocess.run(
            [sys.executable, "-m", "neo.bench", "--adapter", "MySQL",
             "--sync", "FULL"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn("innodb_flush_log_at_trx_commit", result.stderr)

    def test_badMySQLOption(self):
        """A --mysql value of the wrong shape is refused before anything
        starts, saying what shape it takes."""
        result = subprocess.run(
            [sys.executable, "-m", "neo.bench", "--adapter", "MySQL",
             "--mysql", "root@127.0.0.1:3306"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn("USER[:PASSWORD]@@HOST:PORT", result.stderr)

    def test_failedStartLeavesNothing(self):
        """A cluster that cannot start (its database is unreachable) ends
        the command with the node's reason, and none of its processes is
        left running."""
        before = _benchNodes()
        result = subprocess.run(
            [sys.executable, "-m", "neo.bench", "--quick", "--adapter",
             "MySQL", "--mysql", "root@@127.0.0.1:1", "--workloads", "small",
             "--json", os.devnull],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 1, result.stderr[-3000:])
        self.assertIn("the NEO cluster did not start", result.stderr)
        self.assertIn("cannot connect to MySQL", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(_benchNodes() - before, set())


def _benchNodes():
    """The node processes of benchmark clusters running now."""
    pids = set()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if b"twistd" in b" ".join(cmdline) and b"bench" in cmdline:
            pids.add(int(pid))
    return pids
