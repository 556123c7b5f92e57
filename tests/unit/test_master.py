"""Tests for L{neo.services.master.transactions}."""

from twisted.trial.unittest import SynchronousTestCase

from neo.lib.ids import makeNid
from neo.services.master.transactions import TransactionTable

S1, S2, S3 = (makeNid("STORAGE", n) for n in (1, 2, 3))
C1 = makeNid("CLIENT", 1)


class TransactionTableTests(SynchronousTestCase):
    """The master commits transactions strictly in TID order."""

    def setUp(self):
        self.table = TransactionTable()

    def finishing(self, ttid, tid, involved, oids=()):
        txn = self.table.begin(ttid, C1)
        self.table.finishing(txn, tid, list(oids), involved)
        return txn

    def test_begin(self):
        """begin() registers a transaction, found again by its ttid."""
        txn = self.table.begin(10, C1)
        self.assertIs(self.table.get(10), txn)
        self.assertEqual((txn.ttid, txn.clientNid, txn.tid), (10, C1, None))
        self.assertEqual(len(self.table), 1)
        self.assertEqual(list(self.table), [txn])
        self.assertIsNone(self.table.get(11))

    def test_finishing(self):
        """finishing() records the final TID and the nodes to wait for."""
        txn = self.finishing(10, 12, [S1, S2], oids=[b"o" * 8])
        self.assertEqual(txn.tid, 12)
        self.assertEqual(txn.oids, [b"o" * 8])
        self.assertEqual(txn.locking, {S1, S2})
        self.assertEqual(txn.involved, {S1, S2})
        self.assertEqual(self.table.queue, [txn])

    def test_releasedWhenEveryNodeLocked(self):
        """A transaction is released once every involved node locked it."""
        txn = self.finishing(10, 12, [S1, S2])
        self.assertEqual(self.table.locked(10, S1), [])
        self.assertEqual(self.table.locked(10, S2), [txn])
        self.assertIsNone(self.table.get(10))
        self.assertEqual(self.table.queue, [])
        self.assertEqual(len(self.table), 0)
        # Involved nodes are kept: they must be told to unlock.
        self.assertEqual(txn.involved, {S1, S2})

    def test_outOfOrderLocks(self):
        """When the second transaction locks first, nothing is released until
        the first one locks; then both are, in TID order."""
        first = self.finishing(10, 12, [S1, S2])
        second = self.finishing(11, 13, [S2])
        self.assertEqual(self.table.locked(11, S2), [])
        self.assertEqual(self.table.locked(10, S2), [])
        self.assertEqual(self.table.get(11), second)
        self.assertEqual(self.table.locked(10, S1), [first, second])
        self.assertEqual(len(self.table), 0)

    def test_firstReleasedAlone(self):
        """The first transaction is released without waiting for later ones."""
        first = self.finishing(10, 12, [S1])
        second = self.finishing(11, 13, [S2])
        self.assertEqual(self.table.locked(10, S1), [first])
        self.assertEqual(self.table.queue, [second])
        self.assertEqual(self.table.locked(11, S2), [second])

    def test_unknownLockIgnored(self):
        """A lock answer for an unknown transaction releases nothing."""
        self.finishing(10, 12, [S1])
        self.assertEqual(self.table.locked(99, S1), [])
        self.assertEqual(self.table.locked(10, S3), [])
        self.assertEqual(len(self.table.queue), 1)

    def test_nodeLost(self):
        """A lost node is removed from every locking set, and whatever is
        then complete is released in order."""
        first = self.finishing(10, 12, [S1, S2])
        second = self.finishing(11, 13, [S2, S3])
        third = self.finishing(12, 14, [S1, S2])
        self.table.locked(10, S1)
        self.table.locked(11, S3)
        self.assertEqual(self.table.nodeLost(S2), [first, second])
        self.assertEqual(third.locking, {S1})
        for txn in (first, second, third):
            self.assertNotIn(S2, txn.involved)
        self.assertEqual(self.table.queue, [third])
        self.assertEqual(self.table.locked(12, S1), [third])

    def test_nodeLostNothingComplete(self):
        """Losing an uninvolved node releases nothing."""
        txn = self.finishing(10, 12, [S1])
        self.assertEqual(self.table.nodeLost(S3), [])
        self.assertEqual(txn.locking, {S1})

    def test_nodeLostOnlyAffectsFinishing(self):
        """Transactions not yet finishing stay in the table."""
        txn = self.table.begin(10, C1)
        self.assertEqual(self.table.nodeLost(S1), [])
        self.assertIs(self.table.get(10), txn)

    def test_remove(self):
        """remove() forgets a transaction."""
        self.table.begin(10, C1)
        self.assertEqual(self.table.remove(10), [])
        self.assertEqual(self.table.remove(10), [])
        self.assertEqual(len(self.table), 0)

    def test_reserved(self):
        """A transaction with an imposed TID holds its place in the queue
        from begin: those finished after it are committed after it, or
        once it is removed (aborted)."""
        imposed = self.table.begin(10, C1)
        self.table.reserve(imposed)
        self.assertEqual(self.table.lastQueued(), 10)
        later = self.finishing(11, 12, [S1])
        self.assertEqual(self.table.lastQueued(), 12)
        self.assertEqual(self.table.locked(11, S1), [])
        self.table.finishing(imposed, 10, [], [S1])
        self.assertEqual(self.table.locked(10, S1), [imposed, later])
        again = self.table.begin(20, C1)
        self.table.reserve(again)
        later = self.finishing(21, 22, [S1])
        self.assertEqual(self.table.locked(21, S1), [])
        self.assertEqual(self.table.remove(20), [later])
        self.assertEqual(self.table.lastQueued(), 0)

    def test_clear(self):
        """clear() forgets every transaction, finishing or not."""
        begun = self.table.begin(9, C1)
        txn = self.finishing(10, 12, [S1])
        self.assertEqual(sorted(self.table.clear(), key=lambda t: t.ttid),
                         [begun, txn])
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.queue, [])
        self.assertEqual(self.table.locked(10, S1), [])
