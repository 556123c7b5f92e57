"""Tests for L{neo.client.bridge}: calls into the reactor thread."""

import threading
import unittest

from twisted.internet import defer

from neo.client.bridge import Bridge
from neo.client.exceptions import ClientDisconnected


class BridgeTests(unittest.TestCase):
    def setUp(self):
        self.bridge = Bridge(timeout=10)

    def test_result(self):
        """call() returns what the function returns, or its Deferred's
        result, computed in the reactor thread."""
        threads = []

        def inReactor(value):
            threads.append(threading.current_thread())
            return defer.succeed(value * 2)
        self.assertEqual(self.bridge.call(inReactor, 21), 42)
        self.assertEqual(self.bridge.call(lambda: "plain"), "plain")
        self.assertIsNot(threads[0], threading.current_thread())

    def test_failure(self):
        """A failure is raised in the calling thread, as its exception."""
        def failing():
            return defer.fail(KeyError("missing"))
        with self.assertRaises(KeyError):
            self.bridge.call(failing)
        with self.assertRaises(ZeroDivisionError):
            self.bridge.call(lambda: 1 / 0)

    def test_timeout(self):
        """A call not answered in time raises ClientDisconnected, and its
        Deferred is cancelled."""
        pending = defer.Deferred()
        cancelled = threading.Event()
        pending.addErrback(lambda f: f.check(defer.CancelledError)
                           and cancelled.set())
        with self.assertRaises(ClientDisconnected) as e:
            self.bridge.call(lambda: pending, timeout=0.05)
        self.assertIn("0.05 s", str(e.exception))
        self.assertTrue(cancelled.wait(10))

    def test_fire(self):
        """fire() runs the function in the reactor thread, unwaited."""
        ran = threading.Event()
        self.bridge.fire(ran.set)
        self.assertTrue(ran.wait(10))
