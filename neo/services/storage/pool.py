# -*- test-case-name: tests.unit.test_pool -*-
"""
The adbapi connection pool of a storage backend: one connection, on one
thread of its own.

A storage node keeps the statements of its commit protocol in submission
order on one connection.  Twisted's thread pool, which
L{adbapi.ConnectionPool} uses by default, is made for many threads: each
call goes through its team coordination, its context propagation and a
lock, on the way in and again on the way out, all of it holding the GIL
that the other side of the hand-off waits for.  Measured in a storage
node on the commit of small transactions, that made each database step
30 to 50 microseconds longer (of about 300).  L{SerialThreadPool} hands
each call to its thread through a C{queue.SimpleQueue} instead; the pool
is still adbapi's, with its transactions, commits, rollbacks and
reconnections.
"""

import queue
import threading

from twisted.enterprise import adbapi
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class SerialThreadPool:
    """
    What L{adbapi.ConnectionPool} needs of a thread pool (C{start}, C{stop}
    and C{callInThreadWithCallback}), with a single thread that runs the
    calls in the order they were made.
    """

    def __init__(self, name: str):
        self.name = name
        self._queue = queue.SimpleQueue()
        self._thread = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name,
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Run what was asked so far, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def callInThreadWithCallback(self, onResult, function, *args, **kwargs):
        """
        Run C{function(*args, **kwargs)} in the thread, then
        C{onResult(True, result)} or C{onResult(False, failure)} there.
        """
        self._queue.put((onResult, function, args, kwargs))

    def _work(self):
        get = self._queue.get
        while True:
            call = get()
            if call is None:
                return
            onResult, function, args, kwargs = call
            del call
            try:
                result, ok = function(*args, **kwargs), True
            except BaseException:
                result, ok = Failure(), False
            # Nothing of the call may outlive it in this frame.
            del function, args, kwargs
            try:
                onResult(ok, result)
            except BaseException:
                log.failure("the outcome of a database call was lost")
            del onResult, result


class SerialConnectionPool(adbapi.ConnectionPool):
    """
    An L{adbapi.ConnectionPool} of one connection (C{cp_min} and
    C{cp_max} are 1), run on a L{SerialThreadPool}.
    """

    def __init__(self, dbapiName, *connargs, **connkw):
        connkw["cp_min"] = connkw["cp_max"] = 1
        super().__init__(dbapiName, *connargs, **connkw)

    @property
    def threadpool(self):
        return self._serialThreadPool

    @threadpool.setter
    def threadpool(self, _):
        # adbapi makes a Twisted thread pool (not started yet) in its
        # constructor: this one takes its place.
        self._serialThreadPool = SerialThreadPool(f"{self.dbapiName} pool")
