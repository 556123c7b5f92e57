"""
The storage backends through their common interface, on SQLite and on
MySQL (the same tests, parametrized by adapter).  They run real SQL in
adbapi's threads, driven from the test thread through the client's bridge.
"""

import os
import shutil
import sqlite3
import tempfile
import unittest

from twisted.internet import defer
from zope.interface.verify import verifyObject

from neo.client.bridge import Bridge
from neo.lib.ids import p64
from neo.protocols.errors import OidDoesNotExist, OidNotFound
from neo.services.storage.config import StorageConfig
from neo.services.storage.database import (
    CommitRefused, DatabaseError, SCHEMA_VERSION)
from neo.services.storage.interfaces import IStorageBackend
from neo.services.storage.node import makeBackend
from neo.services.storage.pool import SerialThreadPool
from neo.services.storage.sqlite import SQLiteDialect
from tests import mysql

P = 1  # the partition used


class BackendTests:
    """Tests every backend must pass; subclasses name the adapter."""

    adapter = None

    def setUp(self):
        self.bridge = Bridge(timeout=60)
        self.directory = tempfile.mkdtemp(prefix="neo-backend-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.backends = []

    def database(self, key="db"):
        raise NotImplementedError

    def open(self, cluster="test", key="db", **settings):
        from twisted.internet import reactor
        config = StorageConfig(cluster=cluster, masters=(), bind=None,
                               adapter=self.adapter,
                               database=self.database(key), **settings)
        backend = self.bridge.call(lambda: makeBackend(config, reactor))
        self.backends.append(backend)
        self.addCleanup(self.bridge.call, backend.close)
        self.bridge.call(backend.open)
        return backend

    def call(self, backend, method, *args):
        return self.bridge.call(getattr(backend, method), *args)

    def commit(self, db, ttid, tid, objects, metadata=None):
        """Vote, lock and unlock one transaction."""
        self.call(db, "vote", ttid, P, metadata, objects)
        self.call(db, "lockTransaction", ttid, tid)
        self.assertEqual(self.call(db, "unlockTransaction", ttid), tid)

    # -- Tests -------------------------------------------------------------

    def test_interface(self):
        """The backend provides IStorageBackend."""
        self.assertTrue(verifyObject(IStorageBackend, self.open()))

    def test_oneThread(self):
        """The backend's SQL runs on one thread of its own (a
        L{SerialThreadPool} under adbapi), which closing it ends."""
        db = self.open()
        pool = db._pool.threadpool
        self.assertIsInstance(pool, SerialThreadPool)
        thread = pool._thread
        self.assertTrue(thread.is_alive())
        self.bridge.call(db.close)
        self.assertFalse(thread.is_alive())

    def test_schema(self):
        """A new database records the schema version and the cluster."""
        db = self.open()
        self.assertEqual(db.config["version"], str(SCHEMA_VERSION))
        self.assertEqual(db.config["name"], "test")

    def test_otherCluster(self):
        """A database of another cluster is refused, not changed."""
        self.call(self.open(), "close")
        with self.assertRaises(DatabaseError) as e:
            self.open(cluster="other")
        self.assertIn("belongs to cluster 'test'", str(e.exception))

    def test_newerSchema(self):
        """A database made by a newer version is refused."""
        db = self.open()
        self.call(db, "setConfig", "version", SCHEMA_VERSION + 1)
        self.call(db, "close")
        with self.assertRaises(DatabaseError) as e:
            self.open()
        self.assertIn("newer", str(e.exception))

    def test_upgrade(self):
        """A database of schema version 1 (no participants in ttrans) is
        upgraded when opened, keeping its locked transactions."""
        db = self.open()
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"x")])
        self.call(db, "lockTransaction", 100, 110)
        self.bridge.call(db._run, lambda cur: cur.execute(
            "ALTER TABLE ttrans DROP COLUMN participants"))
        self.call(db, "setConfig", "version", 1)
        self.call(db, "close")
        db = self.open()
        self.assertEqual(db.config["version"], str(SCHEMA_VERSION))
        self.assertEqual(self.call(db, "lockedTransactions"),
                         [(100, 110, None)])
        self.call(db, "voteAndLock", 200, 210, P, None, [(P, 8, 0, b"y")],
                  [1, 2])
        self.assertEqual(self.call(db, "lockedTransactions"),
                         [(100, 110, None), (200, 210, [1, 2])])
        self.call(db, "close")
        self.assertEqual(self.open().config["version"], str(SCHEMA_VERSION))

    def test_config(self):
        """Settings persist across reopening; None deletes one."""
        db = self.open()
        self.call(db, "setConfig", "nid", 3)
        self.call(db, "savePartitionTable", {"ptid": 2, "replicas": 0,
                                             "rows": [[[3, "UP_TO_DATE"]]]})
        self.call(db, "setConfig", "gone", "x")
        self.call(db, "setConfig", "gone", None)
        self.call(db, "close")
        db = self.open()
        self.assertEqual(db.config["nid"], "3")
        self.assertNotIn("gone", db.config)
        self.assertEqual(db.partitionTable()["ptid"], 2)

    def test_commitAndLoad(self):
        """Committed revisions load by serial, before a TID, or latest,
        with the serial of the next revision."""
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 0, b"one")],
                    (b"user", b"desc", b"ext", b"\0" * 7 + b"\7"))
        self.commit(db, 200, 210, [(P, 7, 1, b"two")])
        self.assertEqual(self.call(db, "load", P, 7, None, None),
                         (210, None, 1, b"two", False))
        self.assertEqual(self.call(db, "load", P, 7, None, 210),
                         (110, 210, 0, b"one", False))
        self.assertEqual(self.call(db, "load", P, 7, 110, None),
                         (110, 210, 0, b"one", False))
        self.assertEqual(self.call(db, "lastSerial", P, 7), 210)
        self.assertEqual(self.call(db, "lastIds"), (210, 7))
        with self.assertRaises(OidNotFound):
            self.call(db, "load", P, 7, None, 110)
        with self.assertRaises(OidDoesNotExist):
            self.call(db, "load", P, 8, None, None)

    def test_commitAtOnce(self):
        """commitTransaction locks and unlocks in one step."""
        db = self.open()
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"x")])
        self.assertEqual(self.call(db, "commitTransaction", 100, 110), 110)
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"x")
        self.assertEqual(self.call(db, "lockedTransactions"), [])

    def test_commitVoted(self):
        """commitVoted writes a transaction never voted in the database
        straight under its final TID, with its metadata; repeated (after
        a lost connection), it writes the same rows again."""
        db = self.open()
        objects = [(P, 7, 0, b"x"), (P, 8, 0, None)]
        metadata = (b"user", b"desc", b"ext", b"\0" * 7 + b"\7")
        for _ in range(2):
            self.assertEqual(self.call(db, "commitVoted", 100, 110, P,
                                       metadata, objects), 110)
        self.assertEqual(self.call(db, "load", P, 7, None, None),
                         (110, None, 0, b"x", False))
        self.assertTrue(self.call(db, "load", P, 8, None, None)[4])
        self.assertEqual(self.call(db, "lastIds"), (110, 8))
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertEqual(self.dataRows(db), 1)

    def test_voteAndLock(self):
        """voteAndLock leaves a locked transaction, as vote then lock."""
        db = self.open()
        self.call(db, "voteAndLock", 100, 110, P, None, [(P, 7, 0, b"x")])
        self.assertEqual(self.call(db, "lockedTransactions"),
                         [(100, 110, None)])
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"x")
        self.assertEqual(self.call(db, "unlockTransaction", 100), 110)
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"x")

    def test_participants(self):
        """
        A lock with participants keeps them in its mark, survives a
        restart, and is known once unlocked too; undone, nothing of it is
        left, and what was committed before is what loads see again.
        """
        db = self.open()
        self.commit(db, 50, 60, [(P, 7, 0, b"before")])
        meta = (b"user", b"desc", b"", b"\0" * 8)
        self.call(db, "voteAndLock", 100, 110, P, meta,
                  [(P, 7, 0, b"x"), (P, 8, 0, b"y")], [3, 4])
        self.call(db, "close")
        db = self.open()
        self.assertEqual(self.call(db, "lockedTransactions"),
                         [(100, 110, [3, 4])])
        partitions = [0, P]
        self.assertTrue(self.call(db, "knows", 110, partitions))
        self.assertFalse(self.call(db, "knows", 111, partitions))
        self.assertFalse(self.call(db, "knows", 110, [P + 1]))
        self.call(db, "undoTransaction", 100, 110, partitions)
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertFalse(self.call(db, "knows", 110, partitions))
        self.assertEqual(self.call(db, "load", P, 7, None, None)[:4],
                         (60, None, 0, b"before"))
        with self.assertRaises(OidDoesNotExist):
            self.call(db, "load", P, 8, None, None)
        self.assertEqual(self.dataRows(db), 1)
        self.assertEqual(self.call(db, "lastIds"), (60, 7))

    def test_knownOnceUnlocked(self):
        """A transaction whose mark was dropped is still known by its TID,
        from its objects or its metadata alone."""
        db = self.open()
        self.call(db, "voteAndLock", 100, 110, P, None, [(P, 7, 0, b"x")],
                  [3, 4])
        self.call(db, "unlockTransaction", 100)
        meta = (b"", b"", b"", b"\0" * 8)
        self.call(db, "voteAndLock", 200, 210, P, meta, [], [3, 4])
        self.call(db, "unlockTransaction", 200)
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertTrue(self.call(db, "knows", 110, [P]))
        self.assertTrue(self.call(db, "knows", 210, [P]))

    def test_undoVoteOnly(self):
        """Undoing a transaction only voted here drops the vote."""
        db = self.open()
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"x")])
        self.call(db, "undoTransaction", 100, 110, [P])
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertEqual(self.dataRows(db), 0)

    def test_groupCommit(self):
        """Commit steps asked while one is in the database run together
        afterwards, each with its own result; a vote that fails fails
        alone."""
        db = self.open()

        def steps():
            ds = [db.commitVoted(100, 110, P, None, [(P, 7, 0, b"a")]),
                  db.vote(200, P, None, [(P, 8, 0, b"b")]),
                  db.commitVoted(300, 310, P, None, [(P, 9, 0, b"c")]),
                  db.vote(400, P, None, [(P, 10, 0, "not bytes")]),
                  db.lockTransaction(200, 210),
                  db.unlockTransaction(200)]
            return defer.DeferredList(ds, consumeErrors=True)

        results = self.bridge.call(steps)
        self.assertEqual([ok for ok, _ in results],
                         [True, True, True, False, True, True])
        self.assertEqual(results[0][1], 110)
        self.assertEqual(results[5][1], 210)
        for oid, data in ((7, b"a"), (8, b"b"), (9, b"c")):
            self.assertEqual(self.call(db, "load", P, oid, None, None)[3],
                             data)
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertIsNone(db.broken)

    def test_whenSettled(self):
        """whenSettled fires at once when no commit step runs, else once
        every step asked so far is done (even when one breaks the
        backend)."""
        db = self.open()
        db.onBroken = lambda failure: None

        def steps():
            idle = db.whenSettled()
            self.assertTrue(idle.called)
            order = []
            ds = [db.commitVoted(100, 110, P, None, [(P, 7, 0, b"a")]),
                  db.commitVoted(200, 210, P, None,
                                 [(P, 8, 0, "not bytes")]),
                  db.commitVoted(300, 310, P, None, [(P, 9, 0, b"c")])]
            for i, d in enumerate(ds):
                d.addBoth(lambda _, i=i: order.append(i))
            settled = db.whenSettled()
            self.assertFalse(settled.called)
            settled.addCallback(lambda _: order.append("settled"))
            return defer.DeferredList([settled] + ds,
                                      consumeErrors=True).addCallback(
                lambda _: order)

        self.assertEqual(self.bridge.call(steps), [0, 1, 2, "settled"])
        self.assertIsNotNone(db.broken)
        self.assertTrue(self.bridge.call(lambda: db.whenSettled().called))

    def test_failedCommitStopsCommits(self):
        """
        A step of a decided transaction that fails refuses every commit
        step after it, in its group and later, and is reported once: the
        transactions after it may have been checked or resolved against
        it.
        """
        db = self.open()
        broken = []
        db.onBroken = broken.append

        def steps():
            ds = [db.vote(100, P, None, [(P, 7, 0, b"a")]),
                  db.commitVoted(200, 210, P, None,
                                 [(P, 8, 0, "not bytes")]),
                  db.commitVoted(300, 310, P, None, [(P, 9, 0, b"c")]),
                  db.abortTransaction(100)]
            return defer.DeferredList(ds, consumeErrors=True)

        results = self.bridge.call(steps)
        self.assertEqual([ok for ok, _ in results],
                         [True, False, False, False])
        self.assertNotIsInstance(results[1][1].value, CommitRefused)
        for _, refused in results[2:]:
            self.assertIsInstance(refused.value, CommitRefused)
        self.assertEqual(broken, [db.broken])
        with self.assertRaises(CommitRefused):
            self.call(db, "lockTransaction", 100, 110)
        with self.assertRaises(OidDoesNotExist):
            self.call(db, "load", P, 9, None, None)
        self.assertEqual(len(broken), 1)

    def test_groupCommitInteractions(self):
        """Four steps asked at once take two SQL transactions: the first,
        then the three others together."""
        from twisted.internet import defer
        db = self.open()
        interactions = []
        run = db._run
        db._run = lambda *args: interactions.append(args[0]) or run(*args)
        self.bridge.call(lambda: defer.gatherResults([
            db.commitVoted(t, t + 1, P, None, [(P, t, 0, b"x")])
            for t in (100, 200, 300, 400)]))
        self.assertEqual([f.__name__ for f in interactions],
                         ["_commitVoted", "_steps"])
        self.assertEqual(self.call(db, "lastIds"), (401, 400))

    def test_loadCapped(self):
        """A load with a size cap does not read a larger record."""
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 0, b"x" * 100), (P, 8, 0, b"y")])
        self.assertEqual(self.call(db, "load", P, 7, None, None, 10),
                         (110, None, 0, None, False))
        self.assertEqual(self.call(db, "load", P, 8, None, None, 10),
                         (110, None, 0, b"y", False))

    def test_loadLatest(self):
        """The current revisions of several objects in one call: each as a
        load answers it (not read if larger than the cap), None for an
        object that does not exist."""
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 0, b"x" * 100), (P, 8, 0, b"y")])
        self.commit(db, 200, 210, [(P, 8, 1, b"z")])
        self.assertEqual(
            self.call(db, "loadLatest", [(P, 8), (P, 9), (P, 7)], 10),
            [(210, None, 1, b"z", False), None, (110, None, 0, None, False)])
        self.assertEqual(self.call(db, "loadLatest", [(P, 7)])[0][3],
                         b"x" * 100)

    def test_votedIsInvisible(self):
        """Voted data is not visible; the lock writes it to the permanent
        tables (clients wait for the unlock, in the node's memory), and
        keeps it marked as locked until it is unlocked."""
        db = self.open()
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"x")])
        with self.assertRaises(OidDoesNotExist):
            self.call(db, "load", P, 7, None, None)
        self.assertIsNone(self.call(db, "lastSerial", P, 7))
        self.call(db, "lockTransaction", 100, 110)
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"x")
        self.assertEqual(self.call(db, "lastSerial", P, 7), 110)
        self.assertEqual(self.call(db, "lockedTransactions"), [(100, 110, None)])
        # Aborting it is refused: the decision is taken.
        self.assertFalse(self.call(db, "abortTransaction", 100))
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"x")

    def test_forgetLater(self):
        """The mark of a transaction locked and then unlocked by the master
        goes with the next commit step, or on its own once idle for
        FORGET_DELAY; a mark left behind (a crash) is committed again by
        recovery, which changes nothing."""
        db = self.open()
        meta = (b"u", b"d", b"e", p64(7))
        self.call(db, "vote", 100, P, meta, [(P, 7, 0, b"x")])
        self.call(db, "lockTransaction", 100, 110)
        self.bridge.call(lambda: defer.succeed(db.forgetLater(100)))
        self.assertEqual(self.call(db, "lockedTransactions"), [(100, 110, None)])
        self.call(db, "commitVoted", 200, 210, P, None, [(P, 8, 0, b"y")])
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        # Idle: the delayed call drops it.
        self.call(db, "vote", 300, P, None, [(P, 9, 0, b"z")])
        self.call(db, "lockTransaction", 300, 310)
        self.bridge.call(lambda: defer.succeed(db.forgetLater(300)))
        call = db._forgetCall
        self.assertTrue(call.active())
        self.assertAlmostEqual(call.getTime() - call.seconds(),
                               db.FORGET_DELAY, delta=0.5)
        self.bridge.call(lambda: defer.succeed(call.cancel()))
        self.call(db, "_forgetNow")
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertIsNone(db._forgetCall)
        # A mark left behind.
        self.call(db, "vote", 400, P, meta, [(P, 10, 0, b"w")])
        self.call(db, "lockTransaction", 400, 410)
        self.assertEqual(self.call(db, "finishRecovery"), 1)
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        for oid, data in ((7, b"x"), (8, b"y"), (9, b"z"), (10, b"w")):
            self.assertEqual(self.call(db, "load", P, oid, None, None)[3],
                             data)
        self.assertEqual(self.dataRows(db), 4)

    def test_voteIsIdempotent(self):
        """A vote repeated (after a lost connection) replaces itself."""
        db = self.open()
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"x")])
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"x")])
        self.commit(db, 100, 110, [(P, 7, 0, b"x")])
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"x")
        self.assertEqual(self.dataRows(db), 1)

    def test_abort(self):
        """An aborted vote leaves nothing; a locked one cannot abort."""
        db = self.open()
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"x")])
        self.assertTrue(self.call(db, "abortTransaction", 100))
        self.assertEqual(self.call(db, "lockedTransactions"), [])
        self.assertEqual(self.dataRows(db), 0)
        self.call(db, "vote", 200, P, None, [(P, 7, 0, b"y")])
        self.call(db, "lockTransaction", 200, 210)
        self.assertFalse(self.call(db, "abortTransaction", 200))
        self.assertEqual(self.call(db, "lockedTransactions"), [(200, 210, None)])

    def test_finishRecovery(self):
        """After a crash, locked transactions are committed and merely
        voted ones dropped."""
        db = self.open()
        self.call(db, "vote", 100, P, None, [(P, 7, 0, b"locked")])
        self.call(db, "lockTransaction", 100, 110)
        self.call(db, "vote", 200, P, None, [(P, 8, 0, b"voted")])
        self.call(db, "close")
        db = self.open()
        self.assertEqual(self.call(db, "lockedTransactions"),
                         [(100, 110, None), (200, None, None)])
        self.assertEqual(self.call(db, "finishRecovery"), 2)
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3],
                         b"locked")
        with self.assertRaises(OidDoesNotExist):
            self.call(db, "load", P, 8, None, None)
        self.assertEqual(self.call(db, "lockedTransactions"), [])

    def test_deduplication(self):
        """Identical records are stored once, and kept while referenced."""
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 1, b"same"), (P, 8, 1, b"same"),
                                   (P, 9, 0, b"same")])
        self.assertEqual(self.dataRows(db), 2)  # compression differs
        self.call(db, "vote", 200, P, None, [(P, 10, 1, b"same")])
        self.call(db, "abortTransaction", 200)
        self.assertEqual(self.dataRows(db), 2)
        self.assertEqual(self.call(db, "load", P, 8, None, None)[3], b"same")
        # Many at once (looked up in several batches), committed straight
        # from memory: new ones, identical ones, a deletion.
        records = [(P, 100 + i, 0, b"r%d" % (i % 700)) for i in range(1400)]
        records.append((P, 9, 0, b"same"))
        records.append((P, 7, 0, None))
        self.call(db, "commitVoted", 300, 310, P, None, records)
        self.assertEqual(self.dataRows(db), 2 + 700)
        for oid, data in ((100, b"r0"), (1499, b"r699"), (9, b"same")):
            self.assertEqual(self.call(db, "load", P, oid, None, None)[3],
                             data)
        self.assertTrue(self.call(db, "load", P, 7, None, None)[4])
        self.commit(db, 400, 410, [(P, 8, 0, b"r5"), (P, 8000, 0, b"new")])
        self.assertEqual(self.dataRows(db), 2 + 701)
        self.assertEqual(self.call(db, "load", P, 8000, None, None)[3],
                         b"new")

    def test_deletion(self):
        """A revision without data is a deletion."""
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 0, b"x")])
        self.commit(db, 200, 210, [(P, 7, 0, None)])
        self.assertEqual(self.call(db, "load", P, 7, None, None),
                         (210, None, 0, b"", True))

    def test_largeRecord(self):
        """A 64 MiB record is stored and loaded back intact."""
        db = self.open()
        data = os.urandom(64 * 1024 * 1024)
        self.commit(db, 100, 110, [(P, 7, 0, data)])
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], data)
        del data

    def test_reset(self):
        """reset() wipes everything."""
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 0, b"x")])
        self.call(db, "reset")
        self.call(db, "open")
        with self.assertRaises(OidDoesNotExist):
            self.call(db, "load", P, 7, None, None)


class SQLiteBackendTests(BackendTests, unittest.TestCase):
    adapter = "SQLite"

    def database(self, key="db"):
        return os.path.join(self.directory, key + ".sqlite")

    def dataRows(self, db):
        conn = sqlite3.connect(db.path)
        try:
            return conn.execute("SELECT COUNT(*) FROM data").fetchone()[0]
        finally:
            conn.close()

    def test_exclusive(self):
        """A second process (or node) cannot open the same file."""
        self.open()
        with self.assertRaises(DatabaseError) as e:
            self.open()
        self.assertIn("used by another process", str(e.exception))

    def synchronous(self, db):
        """The synchronous mode of the connections of C{db}: the one of
        the commits and the one of the checkpoints."""
        return [self.bridge.call(pool.runQuery, "PRAGMA synchronous")[0][0]
                for pool in (db._pool, db._checkpointPool)]

    def test_syncedCommits(self):
        """
        By default, each commit is synced to disk (synchronous FULL, 2):
        it survives a power loss, as with FileStorage.  With NORMAL (1),
        only checkpoints are.
        """
        self.assertEqual(self.synchronous(self.open()), [2, 2])
        db = self.open(key="normal", sync="NORMAL")
        self.assertEqual(self.synchronous(db), [1, 1])
        self.commit(db, 100, 110, [(P, 1, 0, b"x")])
        self.assertEqual(self.call(db, "load", P, 1, None, None)[3], b"x")

    def test_unknownSync(self):
        """A synchronous mode other than FULL and NORMAL is refused."""
        from twisted.internet import reactor
        from neo.services.storage.sqlite import SQLiteBackend
        with self.assertRaises(ValueError):
            SQLiteBackend(self.database(), "test", reactor, sync="OFF")

    def test_checkpointInBackground(self):
        """
        Every few commit steps, the write-ahead log is copied into the
        database file in the background; the commits do not do it
        themselves (the log is far from the size at which they would).
        """
        db = self.open()
        started = []
        checkpoint = db._checkpoint

        def recording():
            checkpoint()
            started.append(db._checkpointing)
        db._checkpoint = recording
        db.CHECKPOINT_EVERY = 3
        size = os.path.getsize(db.path)
        for i in range(2):  # 3 commit steps each
            self.commit(db, 100 + i, 110 + i, [(P, i, 0, os.urandom(50000))])
        self.assertGreaterEqual(len(started), 1)
        self.bridge.call(lambda: defer.gatherResults(started))
        self.assertGreater(os.path.getsize(db.path), size + 50000)
        db.CHECKPOINT_EVERY = 10 ** 6
        size = os.path.getsize(db.path)
        for i in range(2, 6):
            self.commit(db, 100 + i, 110 + i, [(P, i, 0, os.urandom(50000))])
        self.assertEqual(os.path.getsize(db.path), size)
        self.assertGreater(os.path.getsize(db.path + "-wal"), 200000)
        # Or once enough bytes were written, whatever the number of steps.
        del started[:]
        db.CHECKPOINT_BYTES = db.written - db._checkpointedAt + 120000
        self.commit(db, 106, 116, [(P, 6, 0, os.urandom(50000))])
        self.assertEqual(started, [])
        self.commit(db, 107, 117, [(P, 7, 0, os.urandom(80000))])
        self.assertEqual(len(started), 1)
        self.bridge.call(lambda: defer.gatherResults(started))
        self.assertGreater(os.path.getsize(db.path), size + 200000)

    def tableSQL(self, path):
        conn = sqlite3.connect(path)
        try:
            return dict(conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type='table'"))
        finally:
            conn.close()

    def test_tablesMadeBefore(self):
        """
        A new database clusters obj and trans by their primary key, with
        data ids allotted without AUTOINCREMENT; one whose tables were made
        before (rowid tables, AUTOINCREMENT) keeps them, and commits,
        loads, shares identical records and undoes as well.
        """
        tables = self.tableSQL(self.open(key="new").path)
        self.assertIn("WITHOUT ROWID", tables["obj"])
        self.assertIn("WITHOUT ROWID", tables["trans"])
        self.assertNotIn("AUTOINCREMENT", tables["data"])
        conn = sqlite3.connect(self.database())
        for statement in SQLiteDialect.schema:
            conn.execute(statement.replace(" WITHOUT ROWID", "").replace(
                "id INTEGER PRIMARY KEY,", "id INTEGER PRIMARY KEY"
                " AUTOINCREMENT,"))
        conn.close()
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 0, b"one"), (P, 8, 0, b"one")],
                    (b"user", b"desc", b"ext", b"\0" * 7 + b"\7"))
        self.commit(db, 200, 210, [(P, 7, 1, b"two")])
        self.call(db, "voteAndLock", 300, 310, P, None, [(P, 9, 0, b"three")],
                  [1, 2])
        self.call(db, "undoTransaction", 300, 310, [P])
        self.assertEqual(self.call(db, "load", P, 7, None, None),
                         (210, None, 1, b"two", False))
        self.assertEqual(self.call(db, "load", P, 7, None, 210),
                         (110, 210, 0, b"one", False))
        with self.assertRaises(OidDoesNotExist):
            self.call(db, "load", P, 9, None, None)
        self.assertEqual(self.dataRows(db), 2)
        tables = self.tableSQL(db.path)
        self.assertNotIn("WITHOUT ROWID", tables["obj"])
        self.assertIn("AUTOINCREMENT", tables["data"])

    def test_foreignDatabase(self):
        """A database not made by NEO is refused, not changed."""
        conn = sqlite3.connect(self.database())
        conn.execute("CREATE TABLE config (name TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO config VALUES ('owner', 'someone else')")
        conn.commit()
        conn.close()
        with self.assertRaises(DatabaseError) as e:
            self.open()
        self.assertIn("not made by a NEO storage node", str(e.exception))


class MySQLBackendTests(BackendTests, unittest.TestCase):
    adapter = "MySQL"

    def setUp(self):
        mysql.requireMySQL(self)
        super().setUp()
        self.names = {}
        self.addCleanup(lambda: mysql.dropDatabases(self.names.values()))

    def database(self, key="db"):
        if key not in self.names:
            self.names[key] = mysql.newDatabaseName()
        return mysql.dsn(self.names[key])

    def dataRows(self, db):
        conn = mysql.connect(db=self.names["db"])
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT COUNT(*) FROM data")
            return cursor.fetchone()[0]
        finally:
            conn.close()

    def test_createdDatabase(self):
        """The database is created when missing, in utf8mb4."""
        self.open()
        conn = mysql.connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT default_character_set_name FROM"
                           " information_schema.schemata WHERE schema_name=%s",
                           (self.names["db"],))
            self.assertEqual(cursor.fetchone()[0], "utf8mb4")
            cursor.execute("SELECT DISTINCT engine FROM information_schema."
                           "tables WHERE table_schema=%s", (self.names["db"],))
            self.assertEqual(cursor.fetchall(), (("InnoDB",),))
        finally:
            conn.close()

    def test_unreachable(self):
        """An unreachable server gives a clear error."""
        from twisted.internet import reactor
        from neo.services.storage.mysql import MySQLBackend
        backend = MySQLBackend("root@nothere@127.0.0.1:1", "test", reactor)
        with self.assertRaises(DatabaseError) as e:
            self.bridge.call(backend.open)
        self.assertIn("cannot connect to MySQL as root@nothere on"
                      " 127.0.0.1:1", str(e.exception))

    def test_cannotCreate(self):
        """A user who may not create the database is told what to do."""
        from twisted.internet import reactor
        from neo.services.storage.mysql import MySQLBackend
        conn = mysql.connect()
        user = "neotest_ro_%d" % os.getpid()
        cursor = conn.cursor()
        cursor.execute(f"CREATE USER IF NOT EXISTS '{user}'@'%'"
                       " IDENTIFIED BY 'pw'")
        cursor.execute(f"CREATE USER IF NOT EXISTS '{user}'@'localhost'"
                       " IDENTIFIED BY 'pw'")
        conn.close()

        def dropUser():
            conn = mysql.connect()
            conn.cursor().execute(f"DROP USER IF EXISTS '{user}'@'%'")
            conn.cursor().execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
            conn.close()
        self.addCleanup(dropUser)
        name = self.database("denied").split("@")[1]
        backend = MySQLBackend(f"{user}:pw@{name}@127.0.0.1:3306", "test",
                               reactor)
        with self.assertRaises(DatabaseError) as e:
            self.bridge.call(backend.open)
        self.assertIn(f"CREATE DATABASE `{name}`", str(e.exception))

    def test_connectionKilled(self):
        """When the server drops the connection, the next call reconnects
        and succeeds; nothing committed is lost."""
        db = self.open()
        self.commit(db, 100, 110, [(P, 7, 0, b"kept")])
        conn = mysql.connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT id FROM information_schema.processlist"
                           " WHERE db=%s", (self.names["db"],))
            ids = [row[0] for row in cursor.fetchall()]
            self.assertTrue(ids)
            for id in ids:
                cursor.execute(f"KILL CONNECTION {id}")
        finally:
            conn.close()
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"kept")
        self.commit(db, 200, 210, [(P, 7, 0, b"after")])
        self.assertEqual(self.call(db, "load", P, 7, None, None)[3], b"after")
