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
