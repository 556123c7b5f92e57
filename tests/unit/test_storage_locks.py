"""Tests for L{neo.services.storage.transactions}."""

import zlib

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from neo.lib.ids import makeNid, p64, u64
from neo.protocols.errors import TransactionNotFound
from neo.services.storage.transactions import TransactionManager

C1, C2 = makeNid("CLIENT", 1), makeNid("CLIENT", 2)
#: Temporary TIDs, in begin order: T1 is the oldest.
T1, T2, T3 = p64(1), p64(2), p64(3)
A, B = p64(0xA), p64(0xB)
#: Serials of committed revisions.
S5, S7 = p64(5), p64(7)
ZERO = p64(0)
PARTITION = 0


class FakeDatabase:
    """
    The database calls the transaction manager makes, in memory.

    Every method records its call in C{calls} and returns a fired Deferred.
    A transaction's objects become the last serials of their oids when it
    is unlocked, as in a real database.

    @ivar serials: C{{oid (int): last committed serial (int)}}.
    @ivar voteError: if set, the next vote fails with it.
    """

    def __init__(self):
        self.serials = {}
        self.calls = []
        self.voted = {}
        self.locked = {}
        #: C{{(oid, serial): (compression, data)}} for load().
        self.revisions = {}
        self.voteError = None

    def pause(self, name):
        """Leave the next call of C{name} unanswered: returns the Deferred
        that it returns, to fire when wanted."""
        method = getattr(self, name)
        paused = defer.Deferred()

        def call(*args):
            del self.__dict__[name]
            d = method(*args)
            return paused.addCallback(lambda _: d)
        setattr(self, name, call)
        return paused

    def callsOf(self, name):
        return [call[1:] for call in self.calls if call[0] == name]

    def lastSerial(self, partition, oid):
        self.calls.append(("lastSerial", partition, oid))
        return defer.succeed(self.serials.get(oid))

    def vote(self, ttid, partition, metadata, objects):
        self.calls.append(("vote", ttid, partition, metadata, objects))
        if self.voteError is not None:
            error, self.voteError = self.voteError, None
            return defer.fail(error)
        self.voted[ttid] = objects
        return defer.succeed(None)

    def lockTransaction(self, ttid, tid):
        self.calls.append(("lockTransaction", ttid, tid))
        self.locked[ttid] = tid
        return defer.succeed(None)

    def unlockTransaction(self, ttid):
        self.calls.append(("unlockTransaction", ttid))
        tid = self.locked.pop(ttid)
        for _, oid, _, _ in self.voted.pop(ttid):
            self.serials[oid] = tid
        return defer.succeed(None)

    def forgetLater(self, ttid):
        self.calls.append(("forgetLater", ttid))
        # A mark never written (only checks) is nothing to drop.
        tid = self.locked.pop(ttid, None)
        for _, oid, _, _ in self.voted.pop(ttid, ()):
            self.serials[oid] = tid

    def commitTransaction(self, ttid, tid):
        self.calls.append(("commitTransaction", ttid, tid))
        for _, oid, _, _ in self.voted.pop(ttid):
            self.serials[oid] = tid
        return defer.succeed(None)

    def commitVoted(self, ttid, tid, partition, metadata, objects):
        self.calls.append(("commitVoted", ttid, tid, partition, metadata,
                           objects))
        for _, oid, _, _ in objects:
            self.serials[oid] = tid
        return defer.succeed(tid)

    def voteAndLock(self, ttid, tid, partition, metadata, objects,
                    participants=None):
        extra = () if participants is None else (participants,)
        self.calls.append(("voteAndLock", ttid, tid, partition, metadata,
                           objects) + extra)
        self.voted[ttid] = objects
        self.locked[ttid] = tid
        return defer.succeed(None)

    def load(self, partition, oid, serial=None, before=None, maxSize=None):
        self.calls.append(("load", partition, oid, serial))
        compression, data = self.revisions[oid, serial]
        return defer.succeed((serial, None, compression, data, False))

    def abortTransaction(self, ttid):
        self.calls.append(("abortTransaction", ttid))
        self.voted.pop(ttid, None)
        return defer.succeed(None)


class TransactionManagerTestCase(SynchronousTestCase):
    #: The lock tests store records that are not pickles.
    resolveConflicts = False

    def setUp(self):
        self.db = FakeDatabase()
        self.db.serials = {u64(A): 5, u64(B): 5}
        self.deadlocks = []
        self.tm = TransactionManager(
            self.db, lambda txn, oid: self.deadlocks.append((txn.ttid, oid)),
            resolveConflicts=self.resolveConflicts)

    def begin(self, ttid, client=C1):
        return self.tm.get(ttid, client, create=True)

    def store(self, txn, oid, serial=S5, data=b"data"):
        return self.tm.store(txn, PARTITION, oid, serial, 0, data)

    def vote(self, txn, metadata=None):
        return self.tm.vote(txn, PARTITION, metadata)

    def commit(self, txn, tid):
        """Vote, lock and unlock C{txn}, all successfully."""
        self.assertIsNone(self.successResultOf(self.vote(txn)))
        self.successResultOf(self.tm.lock(txn.ttid, p64(tid)))
        self.successResultOf(self.tm.unlock(txn.ttid))


class TransactionTableTests(TransactionManagerTestCase):
    """Transactions are found by their ttid."""

    def test_getCreates(self):
        """get(create=True) makes a transaction; get() finds it."""
        txn = self.begin(T1, C2)
        self.assertIs(self.tm.get(T1), txn)
        self.assertEqual((txn.ttid, txn.clientNid), (T1, C2))
        self.assertEqual(len(self.tm), 1)

    def test_getUnknown(self):
        """get() of an unknown transaction raises TransactionNotFound."""
        self.assertRaises(TransactionNotFound, self.tm.get, T1)


class StoreTests(TransactionManagerTestCase):
    """The first phase: stores take write locks and detect conflicts."""

    def test_storeFreeOid(self):
        """A store on a free oid with the current serial answers None."""
        txn = self.begin(T1)
        self.assertIsNone(self.successResultOf(self.store(txn, A)))
        self.assertEqual(txn.stores, {A: (PARTITION, S5, 0, b"data")})
        self.assertEqual(self.db.callsOf("lastSerial"), [(PARTITION, 0xA)])

    def test_storeNow(self):
        """
        storeNow stores at once what needs no wait and does not conflict
        (the serial known, the lock free or its own), and leaves anything
        else untouched, for store.
        """
        txn, other = self.begin(T1), self.begin(T2)
        now = lambda t, oid, serial=S5: self.tm.storeNow(
            t, PARTITION, oid, serial, 0, b"now")
        self.assertFalse(now(txn, A))  # serial unknown: asks the database
        self.successResultOf(self.store(txn, A))
        self.assertTrue(now(txn, A))
        self.assertEqual(txn.stores[A], (PARTITION, S5, 0, b"now"))
        self.assertFalse(now(other, A))  # locked by txn
        self.assertEqual(other.stores, {})
        self.tm.maxOid = 0xB
        self.assertTrue(now(other, p64(0xC), ZERO))  # new object
        self.assertFalse(now(other, B))  # below maxOid: unknown
        self.successResultOf(self.tm.abort(T1))
        self.assertFalse(now(other, A, S7))  # a conflict: for store
        self.assertNotIn(A, other.stores)
        self.successResultOf(self.vote(other))
        self.assertFalse(now(other, A))  # voted: store refuses it
        self.assertEqual(self.db.callsOf("lastSerial"), [(PARTITION, 0xA)])

    def test_storeNewObject(self):
        """A store of an object never committed is not a conflict."""
        txn = self.begin(T1)
        oid = p64(0xC)
        self.assertIsNone(self.successResultOf(self.store(txn, oid, p64(0))))
        self.assertIn(oid, txn.stores)

    def test_staleSerial(self):
        """A store based on an old serial answers the last serial, keeps
        nothing and leaves the oid free."""
        txn = self.begin(T2)
        self.assertEqual(self.successResultOf(self.store(txn, A, p64(3))), S5)
        self.assertEqual(txn.stores, {})
        # The lock was released: even a younger transaction gets it at once.
        other = self.begin(T3)
        self.assertIsNone(self.successResultOf(self.store(other, A)))

    def test_storeAfterVoteRefused(self):
        """A voted transaction cannot store any more."""
        txn = self.begin(T1)
        self.successResultOf(self.vote(txn))
        self.failureResultOf(self.store(txn, A), TransactionNotFound)

    def test_storeTwice(self):
        """A transaction storing an oid again keeps the newest data."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"one"))
        self.assertIsNone(self.successResultOf(self.store(txn, A,
                                                          data=b"two")))
        self.assertEqual(txn.stores[A][3], b"two")

    def test_checkCurrent(self):
        """checkCurrent locks a current oid, and reports an old one."""
        txn = self.begin(T1)
        d = self.tm.checkCurrent(txn, PARTITION, A, S5)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(txn.checked, {A: (PARTITION, S5)})
        d = self.tm.checkCurrent(txn, PARTITION, B, p64(4))
        self.assertEqual(self.successResultOf(d), S5)
        self.assertNotIn(B, txn.checked)
        younger = self.begin(T2)
        self.assertNoResult(self.store(younger, A))
        self.assertIsNone(self.successResultOf(self.store(younger, B)))


class LockOrderTests(TransactionManagerTestCase):
    """Younger transactions wait for older ones; older ones take locks."""

    def test_youngerWaitsUntilOlderAborts(self):
        """A younger store waits for an older unvoted holder to abort."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(older, A))
        d = self.store(younger, A)
        self.assertNoResult(d)
        self.successResultOf(self.tm.abort(T1))
        self.assertIsNone(self.successResultOf(d))
        self.assertIn(A, younger.stores)

    def test_youngerWaitsUntilOlderLocks(self):
        """A younger store waits for an older holder until the master
        decides its commit (the lock phase), then gets the new serial as a
        conflict, without waiting for the database."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(older, A))
        d = self.store(younger, A)
        self.assertIsNone(self.successResultOf(self.vote(older)))
        self.assertNoResult(d)
        self.db.pause("lockTransaction")
        locking = self.tm.lock(T1, S7)
        self.assertEqual(self.successResultOf(d), S7)
        self.assertEqual(younger.stores, {})
        self.assertNoResult(locking)
        self.assertNoResult(self.tm.readable(A))

    def test_olderWaitsAndNotifiesYounger(self):
        """
        An older store finding a younger, unvoted holder waits and tells
        the younger's client, once; when that client relocks, the older
        takes the lock and the younger queues behind it, getting the
        conflict when the older commits.
        """
        older, younger = self.begin(T1), self.begin(T2)
        self.assertIsNone(self.successResultOf(self.store(younger, A)))
        self.successResultOf(self.store(younger, B))
        d = self.store(older, A)
        self.assertNoResult(d)
        self.assertEqual(self.deadlocks, [(T2, A)])
        relocking = self.tm.relock(younger, A)
        self.assertIsNone(self.successResultOf(d))
        self.assertNoResult(relocking)
        self.commit(older, 7)
        self.assertEqual(self.successResultOf(relocking), S7)
        self.assertEqual(list(younger.stores), [B])
        self.assertIsNone(self.successResultOf(self.vote(younger)))
        self.assertEqual([c[0] for c in self.db.callsOf("vote")], [1, 2])
        self.assertEqual(self.deadlocks, [(T2, A)])

    def test_relockAfterOlderAborts(self):
        """When the older transaction aborts, the younger gets its lock
        back without conflict and votes its data."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(younger, A, data=b"young"))
        d = self.store(older, A)
        relocking = self.tm.relock(younger, A)
        self.successResultOf(d)
        self.assertNoResult(relocking)
        self.successResultOf(self.tm.abort(T1))
        self.assertIsNone(self.successResultOf(relocking))
        self.assertIsNone(self.successResultOf(self.vote(younger)))
        self.assertEqual(self.db.callsOf("vote"),
                         [(2, PARTITION, None, [(PARTITION, 0xA, 0,
                                                 b"young")])])

    def test_relockUnknownOid(self):
        """Relocking an oid the transaction did not store is a no-op."""
        txn = self.begin(T2)
        self.assertIsNone(self.successResultOf(self.tm.relock(txn, A)))
        self.assertIsNone(self.successResultOf(self.store(self.begin(T1), A)))

    def test_relockVotedIgnored(self):
        """A relock overtaken by the vote (pipelined vote) does nothing:
        the voted transaction keeps its lock."""
        txn = self.begin(T2)
        self.successResultOf(self.store(txn, A))
        self.successResultOf(self.vote(txn))
        self.assertIsNone(self.successResultOf(self.tm.relock(txn, A)))
        d = self.store(self.begin(T1), A)
        self.assertNoResult(d)

    def test_waitOnVotedHolderEvenIfOlder(self):
        """An older transaction waits for a voted younger holder, without
        telling its client anything."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(younger, A))
        self.assertIsNone(self.successResultOf(self.vote(younger)))
        d = self.store(older, A)
        self.assertNoResult(d)
        self.assertEqual(self.deadlocks, [])
        self.successResultOf(self.tm.lock(T2, S7))
        self.successResultOf(self.tm.unlock(T2))
        self.assertEqual(self.successResultOf(d), S7)

    def test_softVotedHolderNotified(self):
        """A younger holder voted softly (its client may still wait for
        locks on another node) is told of an older waiter, as an unvoted
        one is: once; the older waits until it commits."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(younger, A))
        self.assertIsNone(self.successResultOf(
            self.tm.vote(younger, PARTITION, None, soft=True)))
        self.assertEqual(len(self.db.callsOf("vote")), 1)  # durable
        d = self.store(older, A)
        self.assertNoResult(d)
        self.assertEqual(self.deadlocks, [(T2, A)])
        self.successResultOf(self.tm.lock(T2, S7))
        self.assertEqual(self.successResultOf(d), S7)
        self.assertEqual(self.deadlocks, [(T2, A)])

    def test_relockWithdrawsSoftVote(self):
        """A relock of a softly voted transaction withdraws its vote: the
        older waiter takes the lock, the younger queues behind it, and
        votes again (durably, once more) after it."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(younger, A))
        self.successResultOf(self.store(younger, B))
        self.successResultOf(self.tm.vote(younger, PARTITION, None,
                                          soft=True))
        d = self.store(older, A)
        relocking = self.tm.relock(younger, A)
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(younger.voted)
        self.assertNoResult(relocking)
        self.successResultOf(self.tm.abort(T1))
        self.assertIsNone(self.successResultOf(relocking))
        self.successResultOf(self.tm.vote(younger, PARTITION, None,
                                          soft=True))
        self.assertEqual([c[0] for c in self.db.callsOf("vote")], [2, 2])

    def test_forgottenSerialOfPendingCommit(self):
        """A decided transaction of more oids than the node remembers
        serials of is what the next stores of the forgotten ones are
        checked against while its database step is pending, not the
        serial the database still has."""
        self.tm.SERIALS = 1
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.successResultOf(self.store(txn, B))
        self.assertIsNone(self.successResultOf(self.vote(txn)))
        self.successResultOf(self.tm.lock(T1, S7))
        self.assertEqual(self.db.serials[u64(A)], 5)
        asked = len(self.db.callsOf("lastSerial"))
        self.assertEqual(self.successResultOf(self.store(self.begin(T2), A)),
                         S7)
        self.assertEqual(len(self.db.callsOf("lastSerial")), asked)

    def test_withdrawnVoteAborted(self):
        """The abort of a transaction whose soft vote a relock withdrew
        drops what that vote wrote."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(younger, A))
        self.successResultOf(self.tm.vote(younger, PARTITION, None,
                                          soft=True))
        self.store(older, A)
        relocking = self.tm.relock(younger, A)
        self.assertFalse(younger.voted)
        self.successResultOf(self.tm.abort(T2))
        self.assertEqual(self.db.callsOf("abortTransaction"), [(2,)])
        self.failureResultOf(relocking, TransactionNotFound)

    def test_relockKeepsFirmVote(self):
        """A relock after a vote that is not soft changes nothing."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(younger, A))
        self.successResultOf(self.vote(younger))
        self.assertIsNone(self.successResultOf(self.tm.relock(younger, A)))
        self.assertTrue(younger.voted)
        self.assertNoResult(self.store(older, A))

    def test_severalWaiters(self):
        """Waiters on one oid are woken oldest first."""
        t1, t2, t3 = self.begin(T1), self.begin(T2), self.begin(T3)
        self.successResultOf(self.store(t1, A))
        d3 = self.store(t3, A)
        d2 = self.store(t2, A)
        self.assertEqual(self.deadlocks, [])
        self.successResultOf(self.tm.abort(T1))
        self.assertIsNone(self.successResultOf(d2))
        self.assertNoResult(d3)
        self.successResultOf(self.tm.abort(T2))
        self.assertIsNone(self.successResultOf(d3))

    def batch(self, txn, *oids):
        return self.tm.storeBatch(
            txn, [(oid, S5, 0, b"batch") for oid in oids],
            lambda oid: PARTITION)

    def test_batchTakesNoLockWhileWaiting(self):
        """
        A batch is stored in oid order, and from a store that waits on, one
        after the other: while it waits for a lock, it holds none of the
        later oids, which others may take meanwhile; it is pending until
        its last store is done.
        """
        C = p64(0xC)
        self.db.serials[0xC] = 5
        self.tm.maxOid = 0xC
        for oid in (A, B, C):
            self.tm._remember(oid, S5)
        t1, t2, t3 = self.begin(T1), self.begin(T2), self.begin(T3)
        self.successResultOf(self.store(t1, B))
        waiting, d = self.batch(t2, C, B, A)
        locks = self.tm._locks
        self.assertEqual([record[0] for record in waiting], [B, C])
        self.assertIs(locks[A], t2)  # at once, before B
        self.assertNoResult(d)
        self.assertTrue(t2.pending)
        # C is free: another takes it while t2 waits for B.
        self.assertEqual(self.batch(t3, C), ((), None))
        self.assertIs(locks[C], t3)
        self.successResultOf(self.tm.abort(T1))
        self.assertIs(locks[B], t2)
        self.assertIs(locks[C], t3)
        self.assertNoResult(d)
        self.successResultOf(self.tm.abort(T3))
        self.assertEqual(self.successResultOf(d),
                         [(True, None), (True, None)])
        self.assertEqual([locks[oid] for oid in (A, B, C)], [t2] * 3)
        self.assertFalse(t2.pending)

    def test_batchDatabaseWaitsTogether(self):
        """Stores of a batch that only wait for a serial from the database
        (their locks free) go on together."""
        txn = self.begin(T1)
        paused = self.db.pause("lastSerial")
        waiting, d = self.batch(txn, B, A)
        self.assertEqual([record[0] for record in waiting], [A, B])
        self.assertEqual(self.db.callsOf("lastSerial"),
                         [(PARTITION, 0xA), (PARTITION, 0xB)])
        self.assertNoResult(d)
        paused.callback(None)
        self.assertEqual(self.successResultOf(d),
                         [(True, None), (True, None)])

    def test_batchStoresDoneAtOnceInALoop(self):
        """A long batch whose stores are all done at once, once the first
        waited, runs them in a loop, not a recursion."""
        t1, t2 = self.begin(T1), self.begin(T2)
        self.tm.maxOid = 0
        oids = [p64(0x100 + i) for i in range(3000)]
        self.successResultOf(self.store(t1, oids[0], serial=ZERO))
        waiting, d = self.tm.storeBatch(
            t2, [(oid, ZERO, 0, b"x") for oid in oids],
            lambda oid: PARTITION)
        self.assertEqual(len(waiting), 3000)
        self.successResultOf(self.tm.abort(T1))
        self.assertEqual(self.successResultOf(d), [(True, None)] * 3000)

    def test_abortWhileWaiting(self):
        """A transaction aborted while waiting for a lock fails its store
        at once, without taking the lock, which its holder keeps."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(older, A))
        d = self.store(younger, A)
        self.successResultOf(self.tm.abort(T2))
        self.failureResultOf(d, TransactionNotFound)
        waiting = self.store(self.begin(T3), A)
        self.assertNoResult(waiting)
        self.successResultOf(self.tm.abort(T1))
        self.assertIsNone(self.successResultOf(waiting))


class VoteTests(TransactionManagerTestCase):
    """Voting makes a transaction's stores durable, once."""

    def test_voteWritesStoresOnce(self):
        """vote() writes every store with one db.vote call."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.store(txn, B, data=b"b"))
        metadata = (b"user", b"desc", b"ext", A + B)
        self.assertIsNone(self.successResultOf(self.vote(txn, metadata)))
        [(ttid, partition, meta, objects)] = self.db.callsOf("vote")
        self.assertEqual((ttid, partition, meta), (1, PARTITION, metadata))
        self.assertEqual(sorted(objects), [(PARTITION, 0xA, 0, b"a"),
                                           (PARTITION, 0xB, 0, b"b")])
        self.assertTrue(txn.voted)
        # The data stays until unlock, to remember it as the latest.
        self.assertEqual(txn.stores[A], (PARTITION, S5, 0, b"a"))

    def test_voteWithoutStores(self):
        """A transaction with nothing stored here still votes its metadata."""
        txn = self.begin(T1)
        self.assertIsNone(self.successResultOf(
            self.vote(txn, (b"", b"", b"", b""))))
        self.assertEqual(self.db.callsOf("vote"),
                         [(1, PARTITION, (b"", b"", b"", b""), [])])

    def test_voteAgain(self):
        """A second vote (a client re-voting after conflicts found on
        another node) does not rewrite the transaction's objects."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.vote(txn))
        self.assertIsNone(self.successResultOf(self.vote(txn)))
        self.assertEqual(self.db.voted[1], [(PARTITION, 0xA, 0, b"a")])
        self.assertEqual(len(self.db.callsOf("vote")), 1)

    def test_voteFailureAborts(self):
        """When the database fails the vote, the transaction is aborted."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.db.voteError = IOError("disk full")
        self.failureResultOf(self.vote(txn), IOError)
        self.assertEqual(len(self.tm), 0)
        self.assertEqual(self.db.callsOf("abortTransaction"), [(1,)])
        self.assertIsNone(self.successResultOf(self.store(self.begin(T2), A)))

    def test_voteAborted(self):
        """The vote of an aborted transaction fails and writes nothing."""
        txn = self.begin(T2)
        self.successResultOf(self.store(txn, A))
        self.successResultOf(self.tm.abort(T2))
        self.failureResultOf(self.vote(txn), TransactionNotFound)
        self.assertEqual(self.db.callsOf("vote"), [])


class NodeResolutionTests(TransactionManagerTestCase):
    """Conflicting stores the node resolves itself."""

    resolveConflicts = True

    def counter(self, value, compression=0):
        from ZODB.tests.ConflictResolution import PCounter
        from ZODB.tests.StorageTestBase import zodb_pickle
        counter = PCounter()
        counter._value = value
        data = zodb_pickle(counter)
        return zlib.compress(data) if compression else data

    def value(self, data, compression=0):
        from ZODB.tests.StorageTestBase import zodb_unpickle
        return zodb_unpickle(zlib.decompress(data) if compression
                             else data)._value

    def commitCounter(self, ttid, tid, serial, value, record=None):
        """Commit a revision of A: a counter of C{value}, or whatever
        C{record} makes of it."""
        txn = self.begin(ttid)
        self.assertIsNone(self.successResultOf(self.store(
            txn, A, serial, (record or self.counter)(value))))
        self.commit(txn, tid)

    def test_resolvedFromMemory(self):
        """With the last revision and the one it replaced in memory, a
        store based on the latter is resolved, kept locked as based on
        the last serial, and reported; nothing is read from the
        database."""
        self.commitCounter(T1, 6, S5, 1)
        self.commitCounter(T2, 7, p64(6), 3)  # +2
        txn = self.begin(T3)
        data = self.counter(2, compression=1)  # +1 on revision 6
        self.assertIsNone(self.successResultOf(
            self.tm.store(txn, PARTITION, A, p64(6), 1, data)))
        self.assertEqual(txn.resolved, {A})
        partition, serial, compression, resolved = txn.stores[A]
        self.assertEqual(serial, S7)
        self.assertEqual(self.value(resolved, compression), 4)
        self.assertEqual(self.db.callsOf("load"), [])
        self.assertNoResult(self.store(self.begin(p64(4)), A, S7))

    def test_resolvedThenRelockedConflicts(self):
        """A resolved store whose lock is given back to an older
        transaction, which commits the object, conflicts with that
        commit, and is not reported resolved any more: nothing of it is
        kept."""
        self.commitCounter(T1, 6, S5, 1)
        self.commitCounter(p64(4), 7, p64(6), 3)  # +2
        older, younger = self.begin(T2), self.begin(T3)
        self.assertIsNone(self.successResultOf(self.tm.store(
            younger, PARTITION, A, p64(6), 0, self.counter(2))))
        self.assertEqual(younger.resolved, {A})
        d = self.tm.store(older, PARTITION, A, S7, 0, self.counter(4))
        relocking = self.tm.relock(younger, A)
        self.assertIsNone(self.successResultOf(d))
        self.commit(older, 8)
        self.assertEqual(self.successResultOf(relocking), p64(8))
        self.assertEqual((younger.resolved, younger.stores), (set(), {}))

    def test_resolvedFromDatabase(self):
        """A store based on an older revision reads it from the
        database."""
        self.db.revisions[0xA, 5] = (0, self.counter(10))
        self.commitCounter(T1, 6, S5, 11)
        self.commitCounter(T2, 7, p64(6), 12)
        txn = self.begin(T3)
        self.assertIsNone(self.successResultOf(
            self.store(txn, A, S5, self.counter(20))))  # +10 on 5
        self.assertEqual(self.db.callsOf("load"), [(PARTITION, 0xA, 5)])
        self.assertEqual(self.value(txn.stores[A][3]), 22)

    def test_notAsked(self):
        """A store whose answer cannot report a resolution (the single
        StoreObject) is a plain conflict."""
        self.commitCounter(T1, 6, S5, 1)
        self.commitCounter(T2, 7, p64(6), 3)
        txn = self.begin(T3)
        d = self.tm.store(txn, PARTITION, A, p64(6), 0, self.counter(2),
                          resolve=False)
        self.assertEqual(self.successResultOf(d), S7)
        self.assertEqual(txn.resolved, set())

    def test_unresolvable(self):
        """What cannot be resolved is a plain conflict: nothing kept, the
        lock released."""
        self.commitCounter(T1, 6, S5, 1)
        self.commitCounter(T2, 7, p64(6), 3)
        txn = self.begin(T3)
        self.assertEqual(self.successResultOf(
            self.store(txn, A, p64(6), b"not a pickle")), S7)
        self.assertEqual((txn.stores, txn.resolved), ({}, set()))
        self.assertFalse(txn.doomed)  # the client may know better
        self.assertIsNone(self.successResultOf(
            self.store(self.begin(p64(4)), A, S7)))

    def plain(self, value):
        """A record of a class without conflict resolution."""
        from ZODB.tests.MinPO import MinPO
        from ZODB.tests.StorageTestBase import zodb_pickle
        return zodb_pickle(MinPO(value))

    def commitPlain(self, ttid, tid, serial, value):
        self.commitCounter(ttid, tid, serial, value, self.plain)

    def test_unresolvableGivesUp(self):
        """
        A conflict that the class at hand cannot resolve (the client's
        resolution would fail the same way) gives the transaction up: its
        other locks are released at once, the oid is reported, and the
        transaction cannot vote; it is forgotten when its client aborts.
        """
        self.commitPlain(T1, 6, S5, 1)
        self.commitPlain(T2, 7, p64(6), 2)
        txn = self.begin(T3)
        self.assertIsNone(self.successResultOf(self.store(txn, B)))
        waiting = self.store(self.begin(p64(4)), B)
        self.assertNoResult(waiting)
        self.assertEqual(self.successResultOf(
            self.store(txn, A, p64(6), self.plain(3))), S7)
        self.assertTrue(txn.doomed)
        self.assertEqual(txn.unresolvable, {A})
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.successResultOf(
            self.store(self.begin(p64(5)), A, S7)))
        # Whatever comes next for it changes nothing, and it cannot vote.
        self.assertIsNone(self.successResultOf(self.store(txn, A, S7)))
        self.assertIsNone(self.successResultOf(
            self.tm.checkCurrent(txn, PARTITION, B, S5)))
        self.assertIsNone(self.successResultOf(self.tm.relock(txn, B)))
        self.assertTrue(self.successResultOf(self.tm.settle(txn)))
        self.assertTrue(self.successResultOf(self.tm.settle(txn)))
        self.assertIs(self.tm.get(T3), txn)
        self.successResultOf(self.tm.abort(T3))
        self.assertRaises(TransactionNotFound, self.tm.get, T3)

    def test_hopelessConflictWaitsForNothing(self):
        """A store based on a serial that is no longer the last, of a class
        without conflict resolution, gives its transaction up at once,
        without waiting for the lock another transaction holds: whatever
        that one does, the store conflicts."""
        self.commitPlain(T1, 6, S5, 1)
        self.commitPlain(T2, 7, p64(6), 2)
        holder, txn = self.begin(T3), self.begin(p64(4))
        self.assertIsNone(self.successResultOf(
            self.store(holder, A, S7, self.plain(3))))
        self.assertEqual(self.successResultOf(
            self.store(txn, A, p64(6), self.plain(4))), S7)
        self.assertTrue(txn.doomed)
        self.assertEqual(txn.unresolvable, {A})

    def test_basedOnDecidedNotHopeless(self):
        """
        A store based on the TID of a transaction decided but not yet
        published (its vote kept in memory with other participants, its
        write locks held until the unlock) is based on the last serial:
        it waits for the lock, and does not conflict.
        """
        self.commitPlain(T1, 6, S5, 1)
        holder = self.begin(T2)
        self.assertIsNone(self.successResultOf(
            self.store(holder, A, p64(6), self.plain(2))))
        self.successResultOf(self.tm.vote(holder, PARTITION, None,
                                          participants=[1, 2]))
        self.successResultOf(self.tm.lock(T2, S7))
        txn = self.begin(T3)
        storing = self.store(txn, A, S7, self.plain(3))
        self.assertNoResult(storing)
        self.assertFalse(txn.doomed)
        self.successResultOf(self.tm.unlock(T2))
        self.assertIsNone(self.successResultOf(storing))

    def test_resolvableConflictWaits(self):
        """Such a store of a class that resolves conflicts waits for the
        lock, to be resolved against what its holder commits."""
        self.commitCounter(T1, 6, S5, 1)
        self.commitCounter(T2, 7, p64(6), 3)
        holder, txn = self.begin(T3), self.begin(p64(4))
        self.assertIsNone(self.successResultOf(
            self.store(holder, A, S7, self.counter(4))))
        self.assertNoResult(self.store(txn, A, p64(6), self.counter(2)))
        self.assertFalse(txn.doomed)

    def test_resolvedAgainstDecided(self):
        """A store waiting for a transaction being committed is resolved
        against it once the master decided it, before the database has
        it."""
        self.commitCounter(T1, 6, S5, 1)
        holder, txn = self.begin(T2), self.begin(T3)
        self.assertIsNone(self.successResultOf(
            self.store(holder, A, p64(6), self.counter(3))))  # +2
        d = self.store(txn, A, p64(6), self.counter(2))  # +1
        self.assertNoResult(d)
        self.successResultOf(self.vote(holder))
        self.db.pause("lockTransaction")
        locking = self.tm.lock(T2, S7)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(txn.resolved, {A})
        self.assertEqual(txn.stores[A][1], S7)
        self.assertEqual(self.value(txn.stores[A][3]), 4)
        self.assertNoResult(locking)

    def test_givenUpStopsWaiting(self):
        """The stores of a transaction given up stop waiting for locks
        held by others, which keep them."""
        self.commitPlain(T1, 6, S5, 1)
        self.commitPlain(T2, 7, p64(6), 2)
        holder, txn = self.begin(p64(3)), self.begin(p64(4))
        self.assertIsNone(self.successResultOf(self.store(holder, B)))
        waiting = self.store(txn, B)
        self.assertNoResult(waiting)
        self.assertEqual(self.successResultOf(
            self.store(txn, A, p64(6), self.plain(3))), S7)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertNoResult(self.store(self.begin(p64(5)), B))


class InMemoryVoteTests(TransactionManagerTestCase):
    """A vote for a sole participant stays in memory until the lock."""

    def writes(self):
        return [call for call in self.db.calls if call[0] != "lastSerial"]

    def voteInMemory(self, txn, metadata=None):
        return self.tm.vote(txn, PARTITION, metadata, durable=False)

    def test_nothingWrittenUntilFinalLock(self):
        """The vote writes nothing; the final lock commits the stores and
        the metadata in one database call, then releases the locks."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        metadata = (b"user", b"desc", b"ext", A)
        self.successResultOf(self.voteInMemory(txn, metadata))
        self.assertTrue(txn.voted)
        self.assertEqual(self.writes(), [])
        self.successResultOf(self.tm.lock(T1, S7, final=True))
        self.assertEqual(self.db.callsOf("commitVoted"),
                         [(1, 7, PARTITION, metadata,
                           [(PARTITION, 0xA, 0, b"a")])])
        self.assertEqual(len(self.writes()), 1)
        self.assertEqual(len(self.tm), 0)
        self.assertEqual(self.tm.records.get(A, None, None), (S7, 0, b"a"))
        self.assertIsNone(self.successResultOf(
            self.store(self.begin(T2), A, S7)))

    def test_abortTouchesNoDatabase(self):
        """An abort after an in-memory vote has nothing to drop."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.successResultOf(self.voteInMemory(txn))
        self.successResultOf(self.tm.abort(T1))
        self.assertEqual(self.writes(), [])
        self.assertEqual(len(self.tm), 0)

    def test_lockNotFinal(self):
        """Should another node take part after all, the lock makes the
        vote durable with it, and the unlock commits as usual."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.voteInMemory(txn))
        self.successResultOf(self.tm.lock(T1, S7))
        self.assertEqual(self.db.callsOf("voteAndLock"),
                         [(1, 7, PARTITION, None,
                           [(PARTITION, 0xA, 0, b"a")])])
        self.assertIsNone(txn.inMemory)
        self.successResultOf(self.tm.unlock(T1))
        self.assertEqual(self.db.serials[0xA], 7)


class SharedInMemoryVoteTests(TransactionManagerTestCase):
    """
    A vote on several nodes kept in memory (with its participants): the
    lock writes it, but nothing may build on it before the master's
    unlock, since a participant lost before it wrote its part would have
    the transaction undone.
    """

    def voteShared(self, txn, participants=(1, 2), soft=False):
        return self.tm.vote(txn, PARTITION, None, soft=soft,
                            participants=list(participants))

    def test_lockWritesWithParticipants(self):
        """The vote writes nothing; the lock writes vote and lock at once,
        with the participants, and is not final."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.voteShared(txn))
        self.assertEqual(self.db.callsOf("vote"), [])
        d, final = self.tm.finish(T1, C1, S7, final=False)
        self.assertFalse(final)
        self.successResultOf(d)
        self.assertEqual(self.db.callsOf("voteAndLock"),
                         [(1, 7, PARTITION, None,
                           [(PARTITION, 0xA, 0, b"a")], [1, 2])])
        self.assertEqual(self.db.callsOf("commitVoted"), [])

    def lockedWithAWaiter(self):
        """T1 stores A, votes in memory with other participants and is
        locked under S7; T2's store of A, waiting: returned."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.voteShared(txn))
        self.successResultOf(self.tm.lock(T1, S7))
        storing = self.store(self.begin(T2), A)
        self.assertNoResult(storing)
        return storing

    def test_writeLocksUntilUnlock(self):
        """
        Once locked, the next store of its oid waits for the unlock (not
        for the lock, as after a durable vote), and is checked against it
        then; its records are not published before.
        """
        storing = self.lockedWithAWaiter()
        self.assertIsNone(self.tm.records.get(A, S7))
        self.successResultOf(self.tm.unlock(T1))
        self.assertEqual(self.successResultOf(storing), S7)
        self.assertEqual(self.tm.records.get(A, S7)[0], S7)

    def test_writtenReleasesWriteLocks(self):
        """Told that every participant wrote it (an earlier TID keeps it
        from being unlocked), it releases its write locks; loads still
        wait for the unlock."""
        storing = self.lockedWithAWaiter()
        self.tm.written(T1)
        self.assertEqual(self.successResultOf(storing), S7)
        reading = self.tm.readable(A)
        self.assertNoResult(reading)
        self.successResultOf(self.tm.unlock(T1))
        self.successResultOf(reading)
        self.assertEqual(self.db.callsOf("forgetLater"), [(1,)])

    def test_durableVoteReleasesAtLock(self):
        """For comparison: after a durable vote, the lock releases the
        write locks at once."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.vote(txn))
        self.successResultOf(self.tm.lock(T1, S7))
        other = self.begin(T2)
        self.assertEqual(self.successResultOf(self.store(other, A)), S7)

    def test_checksOnlyWriteNothing(self):
        """A node that only checked oids of the transaction has nothing to
        write, nor to undo: its lock touches no database."""
        txn = self.begin(T1)
        self.assertIsNone(self.successResultOf(
            self.tm.checkCurrent(txn, PARTITION, A, S5)))
        self.successResultOf(self.voteShared(txn))
        self.successResultOf(self.tm.lock(T1, S7))
        self.successResultOf(self.tm.unlock(T1))
        self.assertEqual(self.db.callsOf("voteAndLock"), [])
        self.assertEqual(len(self.tm), 0)

    def test_resolveKeepsIt(self):
        """Asked by the master (its client lost), a node keeps such a vote
        for the master's decision, unlike a sole participant's."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.voteShared(txn))
        self.assertFalse(self.tm.resolve(T1))
        self.assertIs(self.tm.get(T1), txn)
        self.successResultOf(self.tm.lock(T1, S7))
        self.assertEqual(len(self.db.callsOf("voteAndLock")), 1)

    def test_relockWithdraws(self):
        """A soft one is withdrawn by a relock, in memory only."""
        txn = self.begin(T2)
        self.successResultOf(self.store(txn, A, data=b"a"))
        self.successResultOf(self.voteShared(txn, soft=True))
        self.assertTrue(txn.soft)
        self.assertIsNone(self.successResultOf(self.tm.relock(txn, A)))
        self.assertFalse(txn.voted)
        self.assertIsNone(txn.inMemory)
        self.assertRaises(TransactionNotFound, self.tm.finish, T2, C1, S7)


class CommitTests(TransactionManagerTestCase):
    """The second phase: lock, then unlock."""

    def test_lockBlocksReads(self):
        """Once locked, reads of the transaction's oids wait for unlock."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.successResultOf(self.vote(txn))
        self.successResultOf(self.readable(A))
        self.successResultOf(self.tm.lock(T1, S7))
        self.assertEqual(self.db.callsOf("lockTransaction"), [(1, 7)])
        reading = self.readable(A)
        self.assertNoResult(reading)
        self.successResultOf(self.readable(B))
        self.successResultOf(self.tm.unlock(T1))
        self.successResultOf(reading)
        # Written by the lock: the unlock only drops its mark, later.
        self.assertEqual(self.db.callsOf("forgetLater"), [(1,)])
        self.assertEqual(self.db.callsOf("unlockTransaction"), [])
        self.assertEqual(self.db.serials[0xA], 7)
        self.assertEqual(len(self.tm), 0)

    def readable(self, oid):
        return self.tm.readable(oid)

    def test_unlockReleasesWriteLocks(self):
        """After unlock, other transactions store the oids at once."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.commit(txn, 7)
        self.assertIsNone(self.successResultOf(self.store(self.begin(T2), A,
                                                          S7)))

    def test_lockUnknown(self):
        """lock() and unlock() of an unknown transaction do nothing."""
        self.successResultOf(self.tm.lock(T3, S7))
        self.successResultOf(self.tm.unlock(T3))
        self.assertEqual(self.db.calls, [])

    def test_abortLockedDoesNothing(self):
        """abort() of a locked transaction keeps it and its read locks;
        the next stores see its serials."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.successResultOf(self.vote(txn))
        self.successResultOf(self.tm.lock(T1, S7))
        self.successResultOf(self.tm.abort(T1))
        self.assertIs(self.tm.get(T1), txn)
        self.assertFalse(txn.aborted)
        self.assertEqual(self.db.callsOf("abortTransaction"), [])
        self.assertNoResult(self.readable(A))
        self.assertEqual(self.successResultOf(self.store(self.begin(T2), A)),
                         S7)

    def test_abortVoted(self):
        """abort() of a voted, unlocked transaction drops its data."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.successResultOf(self.vote(txn))
        self.successResultOf(self.tm.abort(T1))
        self.assertEqual(self.db.callsOf("abortTransaction"), [(1,)])
        self.assertEqual(len(self.tm), 0)

    def test_abortUnvotedTouchesNoDatabase(self):
        """abort() of an unvoted transaction only forgets it in memory."""
        self.successResultOf(self.store(self.begin(T1), A))
        self.successResultOf(self.tm.abort(T1))
        self.assertEqual(self.db.callsOf("abortTransaction"), [])
        self.successResultOf(self.tm.abort(T1))
        self.assertEqual(len(self.tm), 0)

    def test_abortClient(self):
        """abortClient() aborts the client's unvoted transactions only."""
        unvoted, voted = self.begin(T1, C1), self.begin(T2, C1)
        other = self.begin(T3, C2)
        self.successResultOf(self.store(unvoted, A))
        self.successResultOf(self.vote(voted))
        self.tm.abortClient(C1)
        self.assertTrue(unvoted.aborted)
        self.assertRaises(TransactionNotFound, self.tm.get, T1)
        self.assertIs(self.tm.get(T2), voted)
        self.assertIs(self.tm.get(T3), other)
        self.assertEqual(self.db.callsOf("abortTransaction"), [])
        self.assertIsNone(self.successResultOf(self.store(other, A)))

    def test_clear(self):
        """clear() forgets every transaction and frees every lock."""
        older, locked = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(older, A))
        self.successResultOf(self.store(locked, B))
        self.successResultOf(self.vote(locked))
        self.successResultOf(self.tm.lock(T2, S7))
        reading = self.readable(B)
        self.tm.clear()
        self.assertEqual(len(self.tm), 0)
        self.assertTrue(older.aborted)
        self.successResultOf(reading)
        self.assertIsNone(self.successResultOf(self.store(self.begin(T3), B)))
        self.assertIsNone(self.successResultOf(self.store(self.begin(T3), A)))
        self.assertEqual(self.db.callsOf("abortTransaction"), [])

    def test_clearFailsWaiters(self):
        """A store waiting for a lock when clear() is called fails."""
        older, younger = self.begin(T1), self.begin(T2)
        self.successResultOf(self.store(older, A))
        d = self.store(younger, A)
        self.tm.clear()
        self.failureResultOf(d, TransactionNotFound)


class SerialCacheTests(TransactionManagerTestCase):
    """Conflict checks answered from memory, without a database query."""

    def test_newOidAboveMax(self):
        """An oid above the greatest one stored is new: no query."""
        self.tm.resetSerials(0xA)
        self.assertIsNone(self.successResultOf(
            self.store(self.begin(T1), p64(0xB), serial=p64(0))))
        self.assertEqual(self.db.callsOf("lastSerial"), [])

    def test_oidBelowMaxQueried(self):
        """An oid not above the greatest stored is looked up once."""
        self.tm.resetSerials(0xB)
        txn = self.begin(T1)
        self.assertIsNone(self.successResultOf(self.store(txn, A)))
        self.successResultOf(self.tm.abort(T1))
        self.assertIsNone(self.successResultOf(self.store(self.begin(T2), A)))
        self.assertEqual(self.db.callsOf("lastSerial"), [(PARTITION, 0xA)])

    def test_commitRemembered(self):
        """After a commit, the next store of the oid is checked against
        the new serial from memory: a stale serial conflicts."""
        self.tm.resetSerials(0xB)
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.commit(txn, 7)
        calls = len(self.db.callsOf("lastSerial"))
        self.assertEqual(self.successResultOf(self.store(self.begin(T2), A)),
                         S7)
        self.assertIsNone(self.successResultOf(
            self.store(self.begin(T3), A, serial=S7)))
        self.assertEqual(len(self.db.callsOf("lastSerial")), calls)

    def test_maxOidGrows(self):
        """A committed oid above the maximum raises it."""
        self.tm.resetSerials(0x1)
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, serial=p64(0)))
        self.commit(txn, 7)
        self.assertEqual(self.tm.maxOid, 0xA)

    def test_clearForgets(self):
        """clear() forgets the serials (the database may change)."""
        self.tm.resetSerials(0xB)
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.commit(txn, 7)
        self.tm.clear()
        self.assertIsNone(self.tm.maxOid)
        self.db.serials[0xA] = 9
        self.assertEqual(self.successResultOf(self.store(self.begin(T2), A)),
                         p64(9))


class LatestRecordsTests(TransactionManagerTestCase):
    """The latest revisions a storage node keeps in memory."""

    def test_commitRemembered(self):
        """A commit leaves its records as the latest revisions."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"new"))
        generation = self.tm.records.generation
        self.commit(txn, 7)
        self.assertEqual(self.tm.records.get(A), (S7, 0, b"new"))
        self.assertEqual(self.tm.records.get(A, before=p64(8)),
                         (S7, 0, b"new"))
        self.assertIsNone(self.tm.records.get(A, before=S7))
        self.assertIsNone(self.tm.records.get(A, serial=S5))
        self.assertGreater(self.tm.records.generation, generation)

    def test_bounded(self):
        """Beyond its size, the least recently used records go."""
        from neo.services.storage.cache import LatestRecords
        records = LatestRecords(10)
        records.put(A, S5, 0, b"12345")
        records.put(B, S5, 0, b"12345")
        records.get(A)
        records.put(p64(0xC), S5, 0, b"123")
        self.assertIsNone(records.get(B))
        self.assertIsNotNone(records.get(A))
        self.assertEqual(records.size, 8)

    def test_largeRecords(self):
        """Records up to a few MiB are kept (a record just written is
        likely read next, by the clients it invalidated); larger ones are
        not, and a larger revision forgets the smaller one it replaces."""
        from neo.services.storage.cache import LARGEST, LatestRecords
        records = LatestRecords()
        self.assertGreaterEqual(LARGEST, 4 * 1024 * 1024)
        records.put(A, S5, 0, b"x" * LARGEST)
        self.assertEqual(len(records.get(A)[2]), LARGEST)
        records.put(A, S7, 0, b"x" * (LARGEST + 1))
        self.assertIsNone(records.get(A))
        self.assertEqual(records.size, 0)

    def test_previousRevisions(self):
        """The last revisions replaced are kept (for conflict resolution),
        a few per object, within their own budget; putting the current
        revision again (a load) keeps them."""
        from neo.services.storage import cache
        records = cache.LatestRecords()
        count = cache.PREVIOUS_COUNT
        for tid in range(1, count + 3):
            records.put(A, p64(tid), 0, b"%d" % tid)
        records.put(A, p64(count + 2), 0, b"%d" % (count + 2))
        self.assertIsNone(records.previous(A, p64(1)))
        self.assertIsNone(records.previous(A, p64(count + 2)))  # current
        for tid in range(2, count + 2):
            self.assertEqual(records.previous(A, p64(tid)),
                             (p64(tid), 0, b"%d" % tid))
        self.patch(cache, "PREVIOUS_SIZE", 3)
        records.put(B, S5, 0, b"12")
        records.put(B, S7, 0, b"34")
        self.assertEqual(records.previous(B, S5), (S5, 0, b"12"))
        self.assertIsNone(records.previous(A, p64(count + 1)))
        records.forget(B)
        self.assertEqual(records._previousSize, 0)

    def test_resetForgets(self):
        """resetSerials forgets the records too."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A))
        self.commit(txn, 7)
        self.tm.resetSerials(None)
        self.assertIsNone(self.tm.records.get(A))


class FinalLockTests(TransactionManagerTestCase):
    """A sole participant locks and unlocks in one database step."""

    def test_finalLock(self):
        """lock(final=True) commits at once and releases the locks."""
        txn = self.begin(T1)
        self.successResultOf(self.store(txn, A, data=b"x"))
        self.successResultOf(self.vote(txn))
        self.successResultOf(self.tm.lock(T1, S7, final=True))
        self.assertEqual(self.db.callsOf("commitTransaction"), [(1, 7)])
        self.assertEqual(self.db.callsOf("lockTransaction"), [])
        self.assertEqual(len(self.tm), 0)
        self.successResultOf(self.tm.readable(A))
        self.assertEqual(self.successResultOf(self.store(self.begin(T2), A)),
                         S7)


class FinishAtNodeTests(TransactionManagerTestCase):
    """
    A transaction voted in memory, finished by its client under the TID
    the master reserved with its vote (L{TransactionManager.finish}), or
    decided by the master should its client be lost
    (L{TransactionManager.resolve}).
    """

    def voted(self, ttid, oid, client=C1, check=False, serial=S5):
        txn = self.begin(ttid, client)
        if check:
            d = self.tm.checkCurrent(txn, PARTITION, oid, serial)
        else:
            d = self.store(txn, oid, serial)
        self.assertIsNone(self.successResultOf(d))
        self.successResultOf(self.tm.vote(txn, PARTITION, None,
                                          durable=False))
        return txn

    def test_finish(self):
        """The client's finish commits under the reserved TID, as a final
        lock does."""
        self.voted(T1, A)
        self.successResultOf(self.tm.finish(T1, C1, p64(9))[0])
        self.assertEqual(len(self.tm), 0)
        self.assertEqual(self.db.serials[0xA], 9)

    def test_finishRefused(self):
        """A finish is refused for another client's transaction, for one
        not voted, twice, and after the master decided that it aborts."""
        self.voted(T1, A)
        self.assertRaises(TransactionNotFound, self.tm.finish, T1, C2,
                          p64(9))
        txn = self.begin(T2)
        self.assertIsNone(self.successResultOf(self.store(txn, B)))
        self.assertRaises(TransactionNotFound, self.tm.finish, T2, C1,
                          p64(9))
        self.successResultOf(self.tm.finish(T1, C1, p64(9))[0])
        self.assertRaises(TransactionNotFound, self.tm.finish, T1, C1,
                          p64(10))
        self.voted(T3, A, serial=p64(9))
        self.assertFalse(self.tm.resolve(T3))
        self.assertRaises(TransactionNotFound, self.tm.finish, T3, C1,
                          p64(11))
        self.assertEqual(self.db.serials[0xA], 9)

    def test_finishShared(self):
        """
        A transaction voted durably, with other participants, is locked
        by its client's finish, not unlocked: its mark stays until the
        master unlocks it, once every participant's lock is done.  Asked
        by the master meanwhile, it is committed; had its client not
        asked, it would be refused but keep its vote, for the master to
        decide.
        """
        txn = self.begin(T1)
        self.assertIsNone(self.successResultOf(self.store(txn, A)))
        self.successResultOf(self.vote(txn))
        other = self.begin(T2, C2)
        self.assertIsNone(self.successResultOf(self.store(other, B)))
        self.successResultOf(self.vote(other))
        d, final = self.tm.finish(T1, C1, p64(9), final=False)
        self.assertFalse(final)
        self.successResultOf(d)
        self.assertEqual(self.db.locked, {1: 9})
        self.assertEqual(len(self.tm), 2)
        self.assertTrue(self.tm.resolve(T1))
        self.successResultOf(self.tm.unlock(T1))
        self.assertEqual(self.db.serials[0xA], 9)
        self.assertFalse(self.tm.resolve(T2))
        self.assertIn(2, self.db.voted)
        self.assertRaises(TransactionNotFound, self.tm.finish, T2, C2,
                          p64(10), final=False)
        self.successResultOf(self.tm.lock(T2, p64(10)))
        self.assertEqual(self.db.locked, {2: 10})

    def test_resolve(self):
        """The master's question: committed once the client asked to
        finish; otherwise aborted (its locks released), and refused should
        the client's finish still come."""
        self.voted(T1, A)
        d = self.db.pause("commitVoted")
        self.tm.finish(T1, C1, p64(9))
        self.assertTrue(self.tm.resolve(T1))
        d.callback(None)
        self.assertEqual(self.db.serials[0xA], 9)
        self.voted(T2, B)
        self.assertFalse(self.tm.resolve(T2))
        self.assertEqual(len(self.tm), 0)
        self.assertIsNone(self.successResultOf(self.store(self.begin(T3), B)))
        self.assertFalse(self.tm.resolve(p64(42)))
        self.voted(p64(42), A, serial=p64(9))
        self.assertRaises(TransactionNotFound, self.tm.finish, p64(42), C1,
                          p64(10))

    def test_reservedBeforeALaterLock(self):
        """
        A TID reserved before the transaction took a lock that another
        transaction held (here to check the oid) until it was locked under
        a greater TID is refused (None): commits follow the order of the
        locks.  A greater TID is accepted.
        """
        holder = self.voted(T1, A, check=True)
        waiter = self.begin(T2, C2)
        d = self.store(waiter, A)
        self.assertNoResult(d)
        self.successResultOf(self.tm.lock(holder.ttid, p64(20), final=True))
        self.assertIsNone(self.successResultOf(d))
        self.successResultOf(self.tm.vote(waiter, PARTITION, None,
                                          durable=False))
        self.assertIsNone(self.tm.finish(T2, C2, p64(19)))
        self.assertIsNone(self.tm.finish(T2, C2, p64(20)))
        self.assertEqual(self.db.serials[0xA], 5)
        self.successResultOf(self.tm.finish(T2, C2, p64(21))[0])
        self.assertEqual(self.db.serials[0xA], 21)

    def test_reservedLocksForgotten(self):
        """Beyond the locks it remembers, the node refuses any TID not
        greater than the greatest it forgot."""
        self.tm.SERIALS = 1
        for ttid, oid, tid in ((T1, A, 20), (T2, B, 30)):
            self.voted(ttid, oid)
            self.successResultOf(self.tm.lock(ttid, p64(tid), final=True))
        self.voted(T3, A, serial=p64(20))
        self.assertIsNone(self.tm.finish(T3, C1, p64(19)))
        self.successResultOf(self.tm.finish(T3, C1, p64(21))[0])
        self.assertEqual(self.db.serials[0xA], 21)
