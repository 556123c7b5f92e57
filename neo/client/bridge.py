"""
The only module that crosses threads.

ZODB calls the storage from its own threads; the reactor-side client
(L{neo.client.app}) runs in the reactor thread, which crochet starts once
per process (every NEO storage of a process shares it).  L{Bridge.call}
runs a function in the reactor thread and waits for its Deferred with a
timeout; L{Bridge.fire} runs one without waiting.  Never call the bridge
from the reactor thread itself.
"""

import crochet

from neo.client.exceptions import ClientDisconnected

#: Seconds a ZODB call waits for the cluster by default.
CALL_TIMEOUT = 30.0


@crochet.run_in_reactor
def _inReactor(function, *args, **kwargs):
    return function(*args, **kwargs)


class Bridge:
    def __init__(self, timeout=CALL_TIMEOUT):
        crochet.setup()
        from twisted.internet import reactor
        self.reactor = reactor
        self.timeout = timeout

    def call(self, function, *args, timeout=None, **kwargs):
        """Run C{function} in the reactor thread and return its result."""
        timeout = self.timeout if timeout is None else timeout
        result = _inReactor(function, *args, **kwargs)
        try:
            return result.wait(timeout)
        except crochet.TimeoutError:
            result.cancel()
            try:
                # Collect the cancellation, so that it is not reported as
                # an unhandled error later.
                result.wait(5)
            except Exception:
                pass
            raise ClientDisconnected(
                f"no answer from the NEO cluster within {timeout:g} s")

    def fire(self, function, *args, **kwargs):
        """Run C{function} in the reactor thread; do not wait."""
        self.reactor.callFromThread(function, *args, **kwargs)
