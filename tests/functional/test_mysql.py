"""A cluster on MySQL while the MariaDB server restarts under load."""

import threading
import unittest

import transaction
from persistent.mapping import PersistentMapping

from tests import mysql
from tests.cluster import DEADLINE
from tests.functional.test_cluster import ProcessClusterTestCase


class MariaDBRestartTests(ProcessClusterTestCase):
    adapter = "MySQL"

    def setUp(self):
        if not mysql.canRestart():
            raise unittest.SkipTest("restarting the MariaDB server needs root"
                                    f" and {mysql.MARIADBD}")
        super().setUp()

    def test_restartUnderLoad(self):
        """
        MariaDB restarted while clients commit: storage nodes reconnect,
        every transaction whose commit returned is there, and the cluster
        still serves afterwards.
        """
        self.startCluster()
        db = self.openDB(timeout=DEADLINE)
        conn = db.open()
        for w in range(3):
            conn.root()[f"w{w}"] = PersistentMapping({"v": 0})
        transaction.commit()
        conn.close()
        committed = {w: 0 for w in range(3)}
        failures = []
        before, after = threading.Event(), threading.Event()
        restarted = threading.Event()
        stop = threading.Event()

        def work(w):
            tm = transaction.TransactionManager()
            c = db.open(tm)
            i = committed[w]
            while not stop.is_set():
                try:
                    c.root()[f"w{w}"]["v"] = i + 1
                    tm.commit()
                    i += 1
                    committed[w] = i
                except Exception as e:
                    failures.append(repr(e))
                    tm.abort()
                    continue
                if sum(committed.values()) >= 30:
                    before.set()
                if restarted.is_set() and i >= restartedAt[w] + 10:
                    after.set()
            c.close()

        restartedAt = {}
        threads = [threading.Thread(target=work, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        try:
            self.assertTrue(before.wait(DEADLINE))
            mysql.restartServer()
            restartedAt.update(committed)
            restarted.set()
            self.assertTrue(after.wait(DEADLINE),
                            "no commit after the restart: " + repr(failures))
        finally:
            stop.set()
            for thread in threads:
                thread.join(DEADLINE)
        self.assertGreater(sum(committed.values()),
                           sum(restartedAt.values()))
        tm = transaction.TransactionManager()
        c = db.open(tm)
        c.cacheMinimize()
        db.storage._cache.clear()
        for w in range(3):
            self.assertEqual(c.root()[f"w{w}"]["v"], committed[w])
        c.root()["w0"]["v"] = -1
        tm.commit()
        c.close()


class UnreachableDatabaseTests(unittest.TestCase):

    def test_storageExits(self):
        """A storage node whose MySQL server cannot be reached says so and
        exits with status 1."""
        import shutil
        import tempfile
        from tests.cluster import NodeProcess
        directory = tempfile.mkdtemp(prefix="neo-e2e-")
        self.addCleanup(shutil.rmtree, directory, True)
        node = NodeProcess("storage", ["-c", "x", "-a", "MySQL",
                                       "-d", "root@neo@127.0.0.1:1"],
                           directory).start()
        self.addCleanup(node.kill)
        self.assertEqual(node.waitExit(), 1)
        self.assertIn("cannot connect to MySQL as root@neo on 127.0.0.1:1",
                      node.output())

    def test_badDSN(self):
        """A malformed MySQL database option is refused with the format."""
        import subprocess
        from tests.cluster import twistdCommand
        result = subprocess.run(
            twistdCommand("storage", "-c", "x", "-a", "mysql", "-d", "a b"),
            capture_output=True, text=True, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("[user[:password]@]database[@host[:port]]",
                      result.stdout + result.stderr)
