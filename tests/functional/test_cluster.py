"""
End-to-end tests with real node processes started through the twistd
plugins, on ephemeral loopback ports, always torn down.
"""

import os
import signal
import threading
import unittest

import transaction
import ZODB
from BTrees.Length import Length
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError
from ZODB.utils import u64

from tests import mysql
from tests.cluster import DEADLINE, ProcessCluster, waitFor


class ProcessClusterTestCase(unittest.TestCase):
    storages = 2
    adapter = "SQLite"

    def setUp(self):
        if self.adapter == "MySQL":
            mysql.requireMySQL(self)
        self.directory = self.mkdtemp()
        self.cluster = ProcessCluster(self.directory, storages=self.storages,
                                      adapter=self.adapter)
        self.addCleanup(self.cluster.clean)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()

    def mkdtemp(self):
        import shutil
        import tempfile
        directory = tempfile.mkdtemp(prefix="neo-e2e-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def startCluster(self):
        self.assertEqual(self.cluster.neoctl("start")[1].strip(), "starting")

    def openDB(self, **kwargs):
        db = ZODB.DB(self.cluster.client(**kwargs))
        self.addCleanup(closeDB, db)
        return db


def closeDB(db):
    """Close a DB unless it is closed already (DB.close is not idempotent)."""
    if getattr(db, "_mvcc_storage", None) is not None:
        db.close()


class ClusterLifeTests(ProcessClusterTestCase):

    def test_startPrintAndServe(self):
        """
        A new cluster waits in RECOVERING; after neoctl start it is RUNNING,
        its partitions are spread over both storage nodes, and it serves a
        ZODB client.
        """
        neoctl = self.cluster.neoctl
        self.assertEqual(neoctl("print", "cluster")[1].strip(), "RECOVERING")
        self.startCluster()
        db = self.openDB()
        self.assertEqual(neoctl("print", "cluster")[1].strip(), "RUNNING")
        pt = neoctl("print", "pt")[1].splitlines()
        self.assertIn("partitions: 12  stripe: 16", pt[0])
        self.assertIn("S1", pt[1])
        self.assertIn("S2", pt[1])
        rows = [line.split()[1:] for line in pt[2:]]
        self.assertEqual(len(rows), 12)
        # Consecutive partitions on different nodes, one copy each.
        for row in rows:
            self.assertEqual(sorted(row), [".", "U"])
        self.assertNotEqual(rows[0], rows[1])
        nodes = neoctl("print", "node", "storage")[1]
        self.assertEqual(nodes.count("RUNNING"), 2)
        conn = db.open()
        conn.root()["answer"] = 42
        transaction.commit()
        conn.close()
        ids = neoctl("print", "ids")[1]
        self.assertIn("last_tid = 0x", ids)
        self.assertNotIn("last_tid = none", ids)

    def test_restartRecoversByItself(self):
        """
        After every node is restarted the cluster recovers its partition
        table and ids from the storage nodes and runs again without
        neoctl start; the data is there and TIDs keep increasing.
        """
        self.startCluster()
        db = self.openDB()
        conn = db.open()
        conn.root()["kept"] = PersistentMapping({"v": 1})
        transaction.commit()
        lastTid = db.lastTransaction()
        conn.close()
        closeDB(db)
        self.cluster.stop()
        self.cluster.restart()
        db = self.openDB()
        conn = db.open()
        self.assertEqual(conn.root()["kept"]["v"], 1)
        conn.root()["kept"]["v"] = 2
        transaction.commit()
        self.assertGreater(u64(db.lastTransaction()), u64(lastTid))
        self.assertEqual(self.cluster.neoctl("print", "cluster")[1].strip(),
                         "RUNNING")

    def test_masterRestart(self):
        """
        When the master dies, storage nodes stop serving and the client
        reports ClientDisconnected; when it comes back (same address),
        storage nodes, admin and client reconnect by themselves and the
        cluster runs again with its data.
        """
        from neo.client.exceptions import ClientDisconnected
        self.startCluster()
        db = self.openDB(timeout=3)
        conn = db.open()
        conn.root()["v"] = 1
        transaction.commit()
        self.cluster.master.kill()
        conn.root()["v"] = 2
        self.assertRaises(ClientDisconnected, transaction.commit)
        transaction.abort()
        self.cluster.restartMaster()
        storage = conn._storage._storage
        storage._bridge.timeout = DEADLINE
        transaction.begin()
        self.assertEqual(conn.root()["v"], 1)
        conn.root()["v"] = 3
        transaction.commit()
        conn.close()
        # The admin node reconnects by itself too (with its own backoff).
        waitFor(lambda: self.cluster.neoctl(
            "print", "cluster", check=False)[1].strip() == "RUNNING")

    def test_stopping(self):
        """neoctl set cluster STOPPING makes every node exit with status 0."""
        self.startCluster()
        db = self.openDB()
        conn = db.open()
        conn.root()["x"] = 1
        transaction.commit()
        conn.close()
        self.assertEqual(
            self.cluster.neoctl("set", "cluster", "STOPPING")[1].strip(),
            "stopping")
        for node in self.cluster.nodes():
            self.assertEqual(node.waitExit(), 0, node.output())

    def test_wrongClusterName(self):
        """A storage node of another cluster is refused, says why, and
        exits with status 1; the master logs the reason too."""
        intruder = self.cluster.storageProcess(9, cluster="other").start()
        self.addCleanup(intruder.kill)
        self.assertEqual(intruder.waitExit(), 1)
        self.assertIn("wrong cluster name 'other'", intruder.output())
        self.assertIn("belongs to cluster 'other'",
                      open(self.cluster.master.logPath).read())

    def test_neoctlErrors(self):
        """neoctl says clearly when the admin is unreachable, the master
        refuses, or the arguments are invalid, with a non-zero exit."""
        code, _, err = self.cluster.neoctl("set", "cluster", "RUNNING",
                                           check=False)
        self.assertEqual(code, 2)
        self.assertIn("can be set to", err)
        code, _, err = self.cluster.neoctl("print", "node", "bogus",
                                           check=False)
        self.assertEqual(code, 2)
        self.startCluster()
        code, _, err = self.cluster.neoctl("start", check=False)
        self.assertEqual(code, 1)
        self.assertIn("Denied", err)
        self.cluster.admin.terminate()
        code, _, err = self.cluster.neoctl("print", "cluster", check=False)
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the admin node", err)


class ConcurrencyTests(ProcessClusterTestCase):

    def test_fourThreads(self):
        """
        Four threads commit concurrently to their own objects and to one
        shared, conflict-resolving counter; each sees its own and the
        others' changes.
        """
        self.startCluster()
        db = self.openDB()
        conn = db.open()
        conn.root()["counter"] = Length()
        for t in range(4):
            conn.root()[f"t{t}"] = PersistentMapping()
        transaction.commit()
        conn.close()
        commits = 25
        errors = []

        def work(t):
            tm = transaction.TransactionManager()
            c = db.open(tm)
            try:
                for i in range(commits):
                    for attempt in range(20):
                        try:
                            c.root()[f"t{t}"][i] = t
                            c.root()["counter"].change(1)
                            tm.commit()
                            break
                        except ConflictError:
                            tm.abort()
                    else:
                        errors.append(f"thread {t} gave up")
            except Exception as e:
                errors.append(repr(e))
            finally:
                c.close()

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
        self.assertEqual(errors, [])
        for t in range(4):
            tm = transaction.TransactionManager()
            c = db.open(tm)
            self.assertEqual(c.root()["counter"](), 4 * commits)
            for other in range(4):
                self.assertEqual(len(c.root()[f"t{other}"]), commits)
            c.close()


class CrashTests(ProcessClusterTestCase):

    def commitLoad(self, db):
        """
        Four threads committing, each two objects at once (on both storage
        nodes) until C{stop} is set: returns C{(committed, tids, stop,
        threads)} once they committed more than 40 transactions (the last
        value each thread committed, and the TIDs).
        """
        conn = db.open()
        root = conn.root()
        # Two objects per worker, written together by every commit: a
        # stripe of oids apart, for the commits to involve both nodes.
        for w in range(4):
            root[f"a{w}"] = PersistentMapping({"v": 0})
        transaction.commit()
        storage = db.storage
        pt = storage._app.pt
        for _ in range(pt.stripe):
            storage.new_oid()
        for w in range(4):
            root[f"b{w}"] = PersistentMapping({"v": 0})
        transaction.commit()
        for w in range(4):
            self.assertNotEqual(
                *(pt.readable(pt.partitionOf(root[f"{k}{w}"]._p_oid))
                  for k in "ab"))
        conn.close()
        committed = {w: 0 for w in range(4)}
        tids = []
        enough = threading.Event()
        stop = threading.Event()

        def work(w):
            tm = transaction.TransactionManager()
            c = db.open(tm)
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    c.root()[f"a{w}"]["v"] = i
                    c.root()[f"b{w}"]["v"] = i
                    tm.commit()
                    committed[w] = i
                    tids.append(c._storage.lastTransaction())
                    if sum(committed.values()) > 40:
                        enough.set()
            except Exception:
                pass
            finally:
                try:
                    tm.abort()
                    c.close()
                except Exception:
                    pass

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        self.assertTrue(enough.wait(DEADLINE))
        return committed, tids, stop, threads

    def assertWhole(self, committed, lastTid):
        """Every transaction whose tpc_finish returned is there, no partial
        transaction is visible, and TIDs keep increasing."""
        db = self.openDB()
        conn = db.open()
        root = conn.root()
        for w in range(4):
            a, b = root[f"a{w}"]["v"], root[f"b{w}"]["v"]
            self.assertEqual(a, b, "a partial transaction is visible")
            self.assertGreaterEqual(a, committed[w],
                                    "a committed transaction was lost")
            self.assertLessEqual(a, committed[w] + 1)
        root["after"] = 1
        transaction.commit()
        self.assertGreater(u64(db.lastTransaction()), lastTid)

    def test_killAllDuringCommits(self):
        """
        kill -9 of every node during a concurrent commit load, then a
        restart: L{assertWhole}.
        """
        self.startCluster()
        db = self.openDB(timeout=10)
        committed, tids, stop, threads = self.commitLoad(db)
        for node in self.cluster.nodes():
            os.kill(node.process.pid, signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(DEADLINE)
        for node in self.cluster.nodes():
            node.waitExit()
        closeDB(db)
        self.cluster.restart()
        self.assertWhole(committed, max(u64(t) for t in tids))

    def test_killOneStorageDuringCommits(self):
        """
        kill -9 of one storage node during a concurrent commit load (each
        transaction on both nodes, its votes in memory there), then its
        restart: the cluster recovers by itself, undoing what the other
        node wrote of a transaction the killed one never wrote, and
        L{assertWhole}.
        """
        self.startCluster()
        db = self.openDB(timeout=10)
        committed, tids, stop, threads = self.commitLoad(db)
        killed = self.cluster.storages[1]
        os.kill(killed.process.pid, signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(DEADLINE)
        killed.waitExit()
        closeDB(db)
        self.cluster.storages[1] = self.cluster.storageProcess(1).start()
        self.cluster.storages[1].waitReady()
        waitFor(lambda: self.cluster.neoctl(
            "print", "cluster", check=False)[1].strip() == "RUNNING")
        self.assertWhole(committed, max(u64(t) for t in tids))

onMySQL = mysql.onMySQL

ClusterLifeTestsOnMySQL = onMySQL(ClusterLifeTests)
ConcurrencyTestsOnMySQL = onMySQL(ConcurrencyTests)
CrashTestsOnMySQL = onMySQL(CrashTests)
