"""
The storage backends' connection pool: one thread, calls in order, the
outcome of each delivered, nothing left running once stopped.
"""

import os
import shutil
import sqlite3
import tempfile
import threading
import unittest

from neo.client.bridge import Bridge
from neo.services.storage.pool import SerialConnectionPool, SerialThreadPool

WAIT = 30


class SerialThreadPoolTests(unittest.TestCase):

    def setUp(self):
        self.pool = SerialThreadPool("test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.outcomes = []
        self.done = threading.Event()

    def onResult(self, ok, result):
        self.outcomes.append((ok, result, threading.current_thread()))
        self.done.set()

    def wait(self):
        self.assertTrue(self.done.wait(WAIT))
        self.done.clear()

    def test_resultsAndFailures(self):
        """A call's value, or its exception as a Failure, goes to its
        callback, in the pool's thread."""
        self.pool.callInThreadWithCallback(self.onResult, lambda x: x * 2, 21)
        self.wait()
        self.pool.callInThreadWithCallback(self.onResult, lambda: 1 / 0)
        self.wait()
        (ok1, value, thread1), (ok2, failure, thread2) = self.outcomes
        self.assertEqual((ok1, value), (True, 42))
        self.assertFalse(ok2)
        self.assertTrue(failure.check(ZeroDivisionError))
        self.assertIs(thread1, thread2)
        self.assertIsNot(thread1, threading.current_thread())

    def test_orderAndStop(self):
        """Calls run one at a time, in the order made; stop() runs those
        still queued, then ends the thread."""
        gate = threading.Event()
        seen = []
        ignore = lambda ok, result: None  # noqa: E731
        self.pool.callInThreadWithCallback(ignore, gate.wait, WAIT)
        for i in range(100):
            self.pool.callInThreadWithCallback(ignore, seen.append, i)
        thread = self.pool._thread
        gate.set()
        self.pool.stop()
        self.assertEqual(seen, list(range(100)))
        self.assertFalse(thread.is_alive())
        self.assertIsNone(self.pool._thread)

    def test_brokenCallback(self):
        """A callback that raises does not end the thread: later calls
        still run."""
        def broken(ok, result):
            raise RuntimeError("lost")
        self.pool.callInThreadWithCallback(broken, lambda: None)
        self.pool.callInThreadWithCallback(self.onResult, lambda: "after")
        self.wait()
        self.assertEqual(self.outcomes[0][:2], (True, "after"))


class SerialConnectionPoolTests(unittest.TestCase):
    """adbapi's pool on that thread: commits, rollbacks, one connection."""

    def setUp(self):
        self.bridge = Bridge(timeout=WAIT)
        directory = tempfile.mkdtemp(prefix="neo-pool-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "db.sqlite")

        def make():
            from twisted.internet import reactor
            return SerialConnectionPool("sqlite3", self.path,
                                        check_same_thread=False,
                                        cp_reactor=reactor)
        self.pool = self.bridge.call(lambda: _succeed(make()))
        self.addCleanup(self.bridge.call, lambda: _succeed(self.pool.close()))

    def run_(self, function, *args):
        return self.bridge.call(self.pool.runInteraction, function, *args)

    def test_commitRollback(self):
        self.run_(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
        self.run_(lambda c: c.execute("INSERT INTO t VALUES (1)"))

        def failing(c):
            c.execute("INSERT INTO t VALUES (2)")
            raise ValueError("rolled back")
        with self.assertRaises(ValueError):
            self.run_(failing)

        def rows(c):
            c.execute("SELECT x FROM t")
            return c.fetchall()
        self.assertEqual(self.run_(rows), [(1,)])
        # Committed: another connection sees it.
        other = sqlite3.connect(self.path)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("SELECT x FROM t").fetchall(), [(1,)])

    def test_oneConnectionOneThread(self):
        """Every interaction runs on the same thread and connection, which
        closing the pool ends."""
        seen = set()

        def where(c):
            seen.add((threading.get_ident(), id(c._connection._connection)))
        for _ in range(5):
            self.run_(where)
        self.assertEqual(len(seen), 1)
        self.assertIsInstance(self.pool.threadpool, SerialThreadPool)
        thread = self.pool.threadpool._thread
        self.bridge.call(lambda: _succeed(self.pool.close()))
        self.assertFalse(thread.is_alive())


def _succeed(value):
    from twisted.internet import defer
    return defer.succeed(value)
