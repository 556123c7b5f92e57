# -*- test-case-name: tests.unit.test_master -*-
"""
The master's view of transactions in progress, and its commit queue.

Transactions are answered, invalidated and unlocked strictly in TID order,
even when their storage nodes acknowledge the lock out of order.
"""

from twisted.internet import defer

#: In the C{locking} set of a transaction with an imposed TID, until it is
#: finished: it holds its place in the commit queue.
_RESERVED = object()


class MasterTransaction:
    """
    @ivar ttid: the temporary TID given at begin (an integer).
    @ivar tid: the final TID, given at finish (C{None} before).
    @ivar locking: storage nids that have not yet answered the lock.
    @ivar involved: storage nids that took part in the lock phase.
    """

    def __init__(self, ttid: int, clientNid: int):
        self.ttid = ttid
        self.clientNid = clientNid
        self.tid = None
        self.oids = []
        self.locking = set()
        self.involved = set()
        #: Nodes that unlocked with the lock (single participant).
        self.unlocked = set()
        self.finished = defer.Deferred()
        #: The TID (the ttid) was imposed at begin: its place in the commit
        #: queue is reserved.
        self.imposed = False
        #: Its final TID was given along with its vote, for its client to
        #: finish it at its only storage node (L{c.ReserveTransaction}).
        self.reserved = False
        #: That node was asked to decide (its client lost or gave up).
        self.resolving = False
        #: Its nodes were told that every participant wrote it, while an
        #: earlier TID kept it from being unlocked.
        self.toldWritten = False


class TransactionTable:
    """Transactions by ttid, plus the queue of those being finished."""

    def __init__(self):
        self._byTtid = {}
        self.queue = []

    def __len__(self):
        return len(self._byTtid)

    def __iter__(self):
        return iter(list(self._byTtid.values()))

    def get(self, ttid):
        return self._byTtid.get(ttid)

    def begin(self, ttid: int, clientNid: int) -> MasterTransaction:
        txn = self._byTtid[ttid] = MasterTransaction(ttid, clientNid)
        return txn

    def remove(self, ttid) -> list:
        """
        Forget a transaction that is not finishing.  Returns the
        transactions now committed (those that waited behind a reserved
        TID), in TID order.
        """
        txn = self._byTtid.pop(ttid, None)
        if txn is not None and txn in self.queue:
            self.queue.remove(txn)
            return self._pop()
        return []

    def reserve(self, txn: MasterTransaction):
        """Queue a transaction whose TID (its ttid) was imposed at begin:
        those finished after it wait for it."""
        txn.imposed = True
        txn.locking = {_RESERVED}
        self.queue.append(txn)

    def lastQueued(self) -> int:
        """The greatest TID in the commit queue (0 if empty)."""
        if not self.queue:
            return 0
        last = self.queue[-1]
        return last.ttid if last.tid is None else last.tid

    def finishing(self, txn: MasterTransaction, tid: int, oids, involved):
        """Enter the lock phase; TIDs are handed out in increasing order, so
        appending keeps the queue sorted (a reserved TID is in place)."""
        txn.tid = tid
        txn.oids = oids
        txn.involved = set(involved)
        txn.locking = set(involved)
        if not txn.imposed:
            self.queue.append(txn)

    def unreserve(self, txn: MasterTransaction) -> list:
        """
        Take a transaction whose TID was reserved out of the commit queue,
        to be finished again.  Returns the transactions now committed (those
        that waited behind it), in TID order.
        """
        self.queue.remove(txn)
        txn.tid = None
        txn.reserved = False
        return self._pop()

    def locked(self, ttid, nid) -> list:
        """
        A storage node answered the lock (or was lost).  Returns the
        transactions now committed, in TID order.
        """
        txn = self._byTtid.get(ttid)
        if txn is not None:
            txn.locking.discard(nid)
        return self._pop()

    def writtenBehind(self) -> list:
        """The transactions that every participant locked, kept from being
        committed by an earlier one, and not yet said so."""
        written = [txn for txn in self.queue[1:]
                   if not txn.locking and not txn.toldWritten]
        for txn in written:
            txn.toldWritten = True
        return written

    def nodeLost(self, nid) -> list:
        for txn in self.queue:
            txn.locking.discard(nid)
            txn.involved.discard(nid)
        return self._pop()

    def _pop(self) -> list:
        done = []
        while self.queue and not self.queue[0].locking:
            txn = self.queue.pop(0)
            self._byTtid.pop(txn.ttid, None)
            done.append(txn)
        return done

    def clear(self) -> list:
        """Forget everything (the cluster left operation)."""
        txns = list(self._byTtid.values())
        self._byTtid.clear()
        self.queue = []
        return txns
