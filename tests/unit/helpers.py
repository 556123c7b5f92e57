"""Helpers shared by the unit tests."""

from twisted.internet import defer
from twisted.python.failure import Failure


def settled(d):
    """
    A Deferred with the result of C{d}, while C{d} itself ends in success.

    AMP treats an error answer that reaches a C{callRemote} Deferred with
    no errback yet as unhandled and drops the connection; the errback
    added here is there before any answer arrives.
    """
    result = defer.Deferred()

    def relay(outcome):
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    d.addBoth(relay)
    return result
