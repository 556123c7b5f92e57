"""
The only module that crosses threads.

ZODB calls the storage from its own threads; the reactor-side client
(L{neo.client.app}) runs in the reactor thread, which crochet starts once
per process (every NEO storage of a process shares it).  L{Bridge.call}
runs a function in the reactor thread and waits for its Deferred with a
timeout; L{Bridge.fire} runs one without waiting.  Never call the bridge
from the reactor thread itself.
"""

import threading

import crochet
from twisted.internet import defer
from twisted.python.failure import Failure

from neo.client.exceptions import ClientDisconnected

#: Seconds a ZODB call waits for the cluster by default.
CALL_TIMEOUT = 30.0


class _Call:
    """
    One call waited for: the calling thread blocks on a lock that the
    reactor thread releases with the outcome (the commit path makes two
    such calls per transaction: they are kept to one wake-up each way).
    """

    def __init__(self, function, args, kwargs):
        self.function, self.args, self.kwargs = function, args, kwargs
        self.outcome = None
        self.deferred = None
        self.done = threading.Lock()
        self.done.acquire()

    def run(self):
        # In the reactor thread.
        self.deferred = defer.maybeDeferred(self.function, *self.args,
                                            **self.kwargs)
        self.deferred.addBoth(self._finished)

    def _finished(self, outcome):
        self.outcome = outcome
        self.done.release()
        if isinstance(outcome, Failure):
            return None  # reported to the caller, not as unhandled
        return outcome

    def cancel(self):
        # In the reactor thread, after a timeout.
        if self.deferred is not None:
            self.deferred.cancel()


class Bridge:
    def __init__(self, timeout=CALL_TIMEOUT):
        crochet.setup()
        from twisted.internet import reactor
        self.reactor = reactor
        self.timeout = timeout

    def call(self, function, *args, timeout=None, **kwargs):
        """Run C{function} in the reactor thread and return its result."""
        timeout = self.timeout if timeout is None else timeout
        call = _Call(function, args, kwargs)
        self.reactor.callFromThread(call.run)
        if not call.done.acquire(timeout=timeout):
            self.reactor.callFromThread(call.cancel)
            raise ClientDisconnected(
                f"no answer from the NEO cluster within {timeout:g} s")
        if isinstance(call.outcome, Failure):
            call.outcome.raiseException()
        return call.outcome

    def fire(self, function, *args, **kwargs):
        """Run C{function} in the reactor thread; do not wait."""
        self.reactor.callFromThread(function, *args, **kwargs)
