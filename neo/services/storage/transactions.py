# -*- test-case-name: tests.unit.test_storage_locks -*-
"""
Write locks, conflict detection and the two phases of commit on a storage
node.

Locks are per object.  Transactions are ordered by their temporary TID
(begin order).  A younger transaction waits for an older one, and anyone
waits for a voted one.  An older transaction that finds a younger, unvoted
one holding a lock waits too, but tells the younger's client
(C{notifyDeadlock}); if that client has not started voting, it gives the
lock back (L{TransactionManager.relock}), the older one takes it, and the
younger queues again behind it, learning of a conflict if the older one
commits.  A client votes once every store and relock is answered, so that
such a vote never waits for a lock, and every chain of waits ends.  Or it
pipelines its votes behind its stores, node by node: then a younger
transaction voted on one node may wait for locks on another, and it is
soft (C{StorageTransaction.soft}): older transactions waiting for it still
tell its client, who relocks, which withdraws the vote, unless every vote
is answered (so that it waits for nothing).

Write locks last until the master decides the commit (the lock phase):
from then on the next stores of those oids are checked against the new
TID.  Read locks last until the commit is in the database: loads wait.
"""

from collections import OrderedDict

from twisted.internet import defer
from twisted.python.failure import Failure

from neo.lib.ids import ZERO_TID, p64, u64
from neo.services.storage.cache import LatestRecords
from neo.services.storage.resolution import LARGEST as RESOLVE_LARGEST
from neo.services.storage.resolution import UNRESOLVABLE
from neo.services.storage.resolution import hopeless as resolutionHopeless
from neo.services.storage.resolution import resolve as resolveConflict
from neo.protocols.errors import TransactionNotFound


class StorageTransaction:
    """
    A transaction as one storage node sees it.

    @ivar stores: C{{oid: (partition, serial, compression, data)}}.
    @ivar checked: C{{oid: (partition, serial)}} of checkCurrentSerial.
    @ivar notified: oids for which the client was told of a deadlock.
    """

    def __init__(self, ttid: bytes, clientNid: int):
        self.ttid = ttid
        self.clientNid = clientNid
        self.stores = {}
        self.checked = {}
        self.notified = set()
        #: Stored oids whose conflict this node resolved, not yet told.
        self.resolved = set()
        #: Stores, checks and relocks in progress.
        self.pending = set()
        #: One of them answered a conflict since the last vote attempt.
        self.conflicted = False
        self.voted = False
        #: A durable vote of it was written (or is being written): its
        #: rows stay in the database, even once a relock withdraws the
        #: vote, until the next vote replaces them or the abort drops
        #: them.
        self.written = False
        #: Voted while its client may still wait for locks elsewhere (a
        #: pipelined vote with other participants): older transactions that
        #: wait for it still tell its client.
        self.soft = False
        #: While the database step of its lock is under way: the
        #: Deferreds to fire once it is done (None otherwise).
        self.afterLock = None
        #: C{(partition, metadata)} of a vote kept in memory (not durable).
        self.inMemory = None
        #: Its records are what the next checks and resolutions of its
        #: oids see, and its write locks are released (L{TransactionManager.
        #: _publish}).
        self.published = False
        #: The nids of the nodes that write some of it, when it has other
        #: participants and its vote is kept in memory (L{TransactionManager.
        #: vote}): None otherwise.
        self.participants = None
        #: As of its vote, the greatest TID under which another transaction
        #: released one of its oids (None if it has none): its final TID
        #: must be greater (L{TransactionManager.finish}).
        self.released = None
        self.tid = None
        self.aborted = False
        #: Given up by this node for a conflict that no client can resolve
        #: (L{TransactionManager.doom}): kept, refusing to vote, until its
        #: client aborts it.
        self.doomed = False
        #: The oids of those conflicts, not yet told.
        self.unresolvable = set()

    def oids(self):
        return set(self.stores) | set(self.checked)


class TransactionManager:
    """The transactions in progress on a storage node and their locks."""

    def __init__(self, db, notifyDeadlock=None, resolveConflicts=True):
        """
        @param notifyDeadlock: called with a transaction and an oid when an
            older transaction waits for that (younger, unvoted or soft)
            one's lock.
        @param resolveConflicts: resolve conflicting stores here when
            possible (L{neo.services.storage.resolution}).
        """
        self._db = db
        self.resolveConflicts = resolveConflicts
        self._notifyDeadlock = notifyDeadlock
        # Last committed serials, to check stores without asking the
        # database: an LRU of recent ones, and the greatest oid stored
        # (any greater oid is new).  None: unknown, ask the database.
        self._serials = OrderedDict()
        self.maxOid = None
        self.records = LatestRecords()
        self._txns = {}
        self._locks = {}
        self._lockWaiters = {}
        self._readLocks = {}
        self._readWaiters = {}
        #: Ttids that the master decided are not to be finished here
        #: (L{resolve}), the latest ones.
        self._refused = OrderedDict()
        #: C{{oid: tid}}: the TID of the last transaction that held the
        #: lock on C{oid} until it was locked itself, the latest ones; and
        #: the greatest of those forgotten (L{_voting}).
        self._releasedAt = OrderedDict()
        self._releasedFloor = ZERO_TID

    def __len__(self):
        return len(self._txns)

    def get(self, ttid, clientNid=None, create=False):
        txn = self._txns.get(ttid)
        if txn is None:
            if not create:
                raise TransactionNotFound(
                    f"transaction {u64(ttid):#x} is not in progress here")
            txn = self._txns[ttid] = StorageTransaction(ttid, clientNid)
        return txn

    def clientOf(self, ttid):
        """The nid of the client of a transaction in progress, or None."""
        txn = self._txns.get(ttid)
        return None if txn is None else txn.clientNid

    # -- Locks --------------------------------------------------------------

    @staticmethod
    def _wait(waiters, oid, order=b""):
        d = defer.Deferred()
        waiters.setdefault(oid, []).append((order, d))
        return d

    @staticmethod
    def _wake(waiters, oid):
        queue = waiters.pop(oid, None)
        if queue:
            # Oldest first: the first woken takes the lock synchronously.
            for _, d in sorted(queue, key=lambda w: w[0]):
                d.callback(None)

    @defer.inlineCallbacks
    def _acquire(self, txn, oid):
        while True:
            if txn.aborted:
                raise TransactionNotFound(
                    f"transaction {u64(txn.ttid):#x} was aborted")
            holder = self._locks.get(oid)
            if holder is None or holder is txn:
                break
            if ((not holder.voted or holder.soft) and holder.ttid > txn.ttid
                    and oid not in holder.notified):
                holder.notified.add(oid)
                if self._notifyDeadlock is not None:
                    self._notifyDeadlock(holder, oid)
            yield self._wait(self._lockWaiters, oid, txn.ttid)
        self._locks[oid] = txn

    def _release(self, txn, oid):
        if self._locks.get(oid) is txn:
            del self._locks[oid]
            self._wake(self._lockWaiters, oid)

    def _releaseAll(self, txn):
        for oid in txn.oids():
            self._release(txn, oid)
            if self._readLocks.get(oid) is txn:
                del self._readLocks[oid]
                self._wake(self._readWaiters, oid)

    #: Serials remembered for conflict checks.
    SERIALS = 200000

    def resetSerials(self, maxOid):
        """The database changed behind us: forget what we knew of it."""
        self._serials.clear()
        self.records.clear()
        self.maxOid = maxOid

    def _remember(self, oid, serial):
        self._serials[oid] = serial
        self._serials.move_to_end(oid)
        if len(self._serials) > self.SERIALS:
            self._serials.popitem(last=False)

    def _lastSerial(self, partition, oid):
        """The last committed serial of C{oid} (8 bytes), or None."""
        serial = self._serials.get(oid, False)
        if serial is not False:
            self._serials.move_to_end(oid)
            return defer.succeed(serial)
        if self.maxOid is not None and u64(oid) > self.maxOid:
            return defer.succeed(None)
        committing = self._readLocks.get(oid)
        if committing is not None:
            # Decided, and forgotten here meanwhile (a transaction of more
            # oids than SERIALS): the database may not have it yet.
            return defer.succeed(committing.tid)
        d = self._db.lastSerial(partition, u64(oid))

        def found(last):
            # Safe to remember: we hold the lock, nothing commits oid now.
            last = None if last is None else p64(last)
            self._remember(oid, last)
            return last
        return d.addCallback(found)

    @defer.inlineCallbacks
    def _check(self, txn, oid, partition, serial, keep=False):
        """
        Lock C{oid}; return the last serial if it is not C{serial} (the
        lock is then released, unless C{keep}).
        """
        yield self._acquire(txn, oid)
        last = yield self._lastSerial(partition, oid)
        if last is not None and last != serial:
            if not keep:
                self._release(txn, oid)
            return last
        return None

    def _checkAlive(self, txn, oid, partition, serial, keep=False):
        """L{_check}, answering no conflict (None) if the transaction is
        given up meanwhile: its client can only abort it."""
        def givenUp(failure):
            failure.trap(TransactionNotFound)
            return None if txn.doomed else failure
        return self._check(txn, oid, partition, serial, keep).addErrback(
            givenUp)

    def _revision(self, partition, oid, serial):
        """C{(serial, compression, data)} of a committed revision, from
        memory if it is there (data is None if deleted or too large)."""
        hit = self.records.get(oid, serial) or \
            self.records.previous(oid, serial)
        if hit is not None:
            return defer.succeed(hit)
        d = self._db.load(partition, u64(oid), u64(serial), None,
                          RESOLVE_LARGEST)
        d.addCallback(lambda r: (serial, r[2], None if r[4] else r[3]))
        return d.addErrback(lambda _: (serial, 0, None))

    # -- First phase ---------------------------------------------------------

    def storeNow(self, txn, partition, oid, serial, compression, data):
        """
        L{store} at once, when it needs nothing to wait for (the lock is
        free, the last serial known) and does not conflict: returns True
        then, else False (nothing done: call L{store}).  Most stores are
        such, and spared a chain of Deferreds.
        """
        if txn.voted or txn.doomed or txn.aborted:
            return False
        holder = self._locks.get(oid)
        if holder is not None and holder is not txn:
            return False
        last = self._serials.get(oid, False)
        if last is False:
            if self.maxOid is None or u64(oid) <= self.maxOid:
                return False
            last = None
        else:
            self._serials.move_to_end(oid)
        if last is not None and last != serial:
            return False
        self._locks[oid] = txn
        txn.stores[oid] = (partition, serial, compression, data)
        return True

    @defer.inlineCallbacks
    def store(self, txn, partition, oid, serial, compression, data,
              resolve=True):
        """
        Store a revision; returns None, or the last committed serial when
        it differs from C{serial} (a conflict: nothing is kept).  With
        C{resolve} (for a client that learns which stores were resolved),
        the node may resolve the conflict itself: then the oid is added to
        C{txn.resolved} and None is returned.
        """
        if txn.voted:
            raise TransactionNotFound("the transaction is already voted")
        if txn.doomed:
            return None
        resolve = resolve and self.resolveConflicts
        if resolve:
            holder = self._locks.get(oid)
            if holder is not None and holder.tid is not None:
                # Decided, not yet published (L{lock}): it is the last.
                last = holder.tid
            else:
                last = self._serials.get(oid)
            if last is not None and last != serial and \
                    resolutionHopeless(compression, data):
                # Whatever commits meanwhile, this store conflicts, and
                # nobody can resolve it: no need to wait for the lock.
                txn.unresolvable.add(oid)
                self.doom(txn)
                return last
        txn.stores[oid] = (partition, serial, compression, data)
        conflict = yield self._checkAlive(txn, oid, partition, serial,
                                          keep=resolve)
        if conflict is not None and resolve:
            resolved = None
            if serial != ZERO_TID:
                old = yield self._revision(partition, oid, serial)
                committed = yield self._revision(partition, oid, conflict)
                resolved = resolveConflict(oid, old, committed, compression,
                                           data)
            if resolved is UNRESOLVABLE:
                txn.unresolvable.add(oid)
                self.doom(txn)  # releasing this lock too
                txn.stores.pop(oid, None)
                return conflict
            if resolved is not None:
                # Kept locked, as a store based on the last serial.
                txn.stores[oid] = (partition, conflict) + resolved
                txn.resolved.add(oid)
                return None
            self._release(txn, oid)
        if conflict is not None:
            txn.stores.pop(oid, None)
        return conflict

    def storeBatch(self, txn, records, partitionOf):
        """
        Store C{records} (C{(oid, serial, compression, data)}) in oid
        order: those that need no wait at once (L{storeNow}), the others
        as L{store} does, each once those before it hold their locks.  A
        transaction waiting for a lock so takes no other meanwhile, which
        the transactions waiting for that other would wait for too (while
        stores that only wait for a serial from the database go on
        together).

        Returns the records that waited and a Deferred of their outcomes
        (C{(success, result or failure)}, as a DeferredList's), or
        C{((), None)} if none waited.  The batch counts as pending
        (L{track}) until its last store is done.
        """
        waiting = []
        for record in sorted(records):
            if waiting or not self.storeNow(txn, partitionOf(record[0]),
                                            *record):
                waiting.append(record)
        if not waiting:
            return (), None
        results = [None] * len(waiting)
        left = [len(waiting)]
        pending = self.track(txn, defer.Deferred())
        done = defer.Deferred()

        def finished(outcome, i):
            results[i] = outcome
            left[0] -= 1
            if not left[0]:
                pending.callback(None)
                done.callback(results)

        def storeFrom(i):
            # A loop through the stores that take their lock at once.
            for i in range(i, len(waiting)):
                oid, serial, compression, data = waiting[i]
                holder = self._locks.get(oid)
                d = self.track(txn, self.store(txn, partitionOf(oid), oid,
                                               serial, compression, data))
                d.addCallbacks(lambda result, i=i: finished((True, result), i),
                               lambda failure, i=i: finished((False, failure),
                                                             i))
                if results[i] is None and holder not in (None, txn):
                    # It waits for that lock: the next ones once it is done.
                    d.addCallback(lambda _, i=i: storeFrom(i + 1))
                    return
        storeFrom(0)
        return waiting, done

    def doom(self, txn):
        """
        Give up a transaction that can only be aborted: release its locks
        and stop its waits now, instead of holding what others wait for
        until its client hears of the conflict and aborts.  It stays known
        (conflicted: it cannot vote) until then.
        """
        if txn.doomed or txn.voted:
            return
        txn.doomed = txn.aborted = txn.conflicted = True
        self._releaseAll(txn)
        self._stopWaiting(txn)

    def _stopWaiting(self, txn):
        """End the lock waits of an aborted transaction now (instead of
        when the holders release the locks)."""
        waiters = self._lockWaiters
        for oid, waiting in list(waiters.items()):
            mine = [d for order, d in waiting if order == txn.ttid]
            if mine:
                waiting[:] = [w for w in waiting if w[0] != txn.ttid]
                if not waiting:
                    del waiters[oid]
                for d in mine:
                    d.callback(None)  # it sees that it was aborted

    @defer.inlineCallbacks
    def checkCurrent(self, txn, partition, oid, serial):
        if txn.doomed:
            return None
        txn.checked[oid] = (partition, serial)
        conflict = yield self._checkAlive(txn, oid, partition, serial)
        if conflict is not None:
            txn.checked.pop(oid, None)
        return conflict

    @defer.inlineCallbacks
    def relock(self, txn, oid):
        """
        The client of a younger transaction gives back its lock on C{oid}
        to the older one waiting for it, and queues again behind it.
        Returns the conflict, as L{store} does.  A soft vote (L{vote}) is
        withdrawn.
        """
        if txn.doomed or (txn.voted and not txn.soft):
            # The vote overtook the relock (pipelined vote on this node
            # only): the transaction holds its locks and waits for nothing,
            # so nothing to do.  Or it was given up: it holds nothing.
            return None
        # A soft vote is withdrawn (its client votes again): what it wrote
        # is replaced by the next vote, or dropped by the abort.
        txn.voted = txn.soft = False
        txn.inMemory = None
        txn.notified.discard(oid)
        if oid in txn.stores:
            partition, serial = txn.stores[oid][:2]
        elif oid in txn.checked:
            partition, serial = txn.checked[oid]
        else:
            return None
        self._release(txn, oid)
        conflict = yield self._checkAlive(txn, oid, partition, serial)
        if conflict is not None:
            txn.stores.pop(oid, None)
            txn.checked.pop(oid, None)
            # What it resolved is dropped: not to be reported as such.
            txn.resolved.discard(oid)
        return conflict

    def vote(self, txn, partition, metadata, durable=True, soft=False,
             participants=None):
        """
        Make the stores durable.  The transaction holds all its locks here:
        this never waits for one.  Returns a Deferred.

        Without C{durable} (the transaction has no other participant), the
        vote stays in memory (L{voteInMemory}).  With C{participants} (the
        nids of its nodes that write some of it, this one or others), it
        stays in memory too: the lock writes it, and keeps it unpublished
        until the master unlocks it (L{lock}).  With C{soft}, its client
        may still wait for locks on other nodes: older transactions that
        wait for its locks tell that client, as they do for an unvoted one,
        and its relock withdraws the vote (L{relock}).
        """
        try:
            if participants is not None:
                self.voteInMemory(txn, partition, metadata, participants,
                                  soft)
                return defer.succeed(None)
            if not durable:
                self.voteInMemory(txn, partition, metadata)
                return defer.succeed(None)
            if not self._voting(txn):
                return defer.succeed(None)
            txn.soft = soft
        except Exception:
            return defer.fail()
        try:
            txn.written = True
            d = self._db.vote(u64(txn.ttid), partition, metadata,
                              _objects(txn))
        except Exception:
            d = defer.fail()

        def failed(failure):
            self.abort(txn.ttid)
            return failure
        return d.addErrback(failed)

    def voteInMemory(self, txn, partition, metadata, participants=None,
                     soft=False):
        """
        L{vote}, kept in memory, at once (raises instead of failing a
        Deferred): the lock writes everything in one step.  For a
        transaction with a single participant: a vote lost in a crash
        before the lock is a transaction that nobody committed, which the
        master aborts anyway.  With C{participants}, see L{vote}.
        """
        if self._voting(txn):
            txn.inMemory = (partition, metadata)
            txn.participants = participants
            txn.soft = soft

    def _voting(self, txn) -> bool:
        """Whether the transaction is to be voted now (not already)."""
        if txn.aborted:
            raise TransactionNotFound("the transaction was aborted")
        if txn.voted:
            return False
        txn.voted = True
        # It holds all its locks from now on: nobody else releases them.
        floor, released = self._releasedFloor, self._releasedAt
        txn.released = max((released.get(oid, floor) for oid in txn.oids()),
                           default=None)
        return True

    # -- Second phase --------------------------------------------------------

    def track(self, txn, d):
        """Count an operation of the transaction as in progress until done,
        noting a conflict it answers."""
        txn.pending.add(d)

        def done(result):
            txn.pending.discard(d)
            if result is not None and not isinstance(result, Failure):
                txn.conflicted = True
            return result
        return d.addBoth(done)

    @defer.inlineCallbacks
    def settle(self, txn):
        """
        Wait for the operations of the transaction in progress; returns
        whether one conflicted (and forgets it, unless the transaction was
        given up).
        """
        while txn.pending:
            yield defer.DeferredList(list(txn.pending))
        return self.settled(txn)

    @staticmethod
    def settled(txn) -> bool:
        """L{settle} at once, for a transaction with nothing pending."""
        assert not txn.pending
        conflicted, txn.conflicted = txn.conflicted, txn.doomed
        return conflicted

    def lock(self, ttid, tid, final=False):
        """
        Lock the transaction under its final TID (durably); with C{final},
        unlock it as well (it has no other participant).

        The master decided to commit it: its write locks go now, before
        the database is written.  The next stores of its oids are checked
        against its TID (and resolved against its records) instead of
        waiting for the database; loads of its oids wait until it is
        committed (read locks).  Should the database then fail to lock or
        commit it, transactions that built on it may have voted: the
        backend refuses every commit step from then on, and the node stops
        (L{neo.services.storage.database.SQLBackend.broken}).

        Unless its vote was kept in memory with other participants
        (L{vote}): a participant lost before it wrote its part loses it,
        and verification then undoes the others'.  Until the master's
        unlock (every participant wrote it), nothing may build on it: its
        write locks stay, and its records are not published.
        """
        txn = self._txns.get(ttid)
        if txn is None:
            # Nothing of it here (e.g. it only had checks elsewhere).
            return defer.succeed(None)
        try:
            txn.tid = tid
            for oid in txn.stores:
                self._readLocks[oid] = txn
            if txn.participants is None or final:
                self._publish(txn)
            if final:
                return self.unlock(ttid, commit=True)
            if txn.inMemory is None:
                d = self._db.lockTransaction(u64(ttid), u64(tid))
            elif txn.participants is not None and not txn.stores and \
                    txn.inMemory[1] is None:
                # Only checks here: nothing to write, nothing to undo.
                d = defer.succeed(None)
            else:
                # Without participants, not expected (such a vote is for a
                # sole participant), but safe.
                partition, metadata = txn.inMemory
                d = self._db.voteAndLock(u64(ttid), u64(tid), partition,
                                         metadata, _objects(txn),
                                         txn.participants)
        except Exception:
            return defer.fail()

        txn.afterLock = []

        def locked(result):
            if not isinstance(result, Failure):
                txn.inMemory = None
            waiting, txn.afterLock = txn.afterLock, None
            for waiter in waiting:
                waiter.callback(None)
            return result if isinstance(result, Failure) else None
        return d.addBoth(locked)

    def finish(self, ttid, clientNid, tid, final=True):
        """
        L{lock}, asked by the client of a transaction voted here, under the
        TID that the master reserved for it (L{neo.protocols.commands.
        ReserveTransaction}); C{final} unless other nodes take part (a vote
        kept in memory is always final).  Returns the Deferred of the
        lock, and whether it was final; None if refused.  Raises
        L{TransactionNotFound} if there is no such transaction.
        """
        txn = self._txns.get(ttid)
        if txn is None or txn.clientNid != clientNid or txn.tid is not None \
                or not txn.voted or ttid in self._refused:
            raise TransactionNotFound(f"transaction {u64(ttid):#x} is not"
                                      " voted here")
        # The TID was reserved before the transaction took its locks: a
        # transaction that held one of them before may have got a greater
        # TID since.  Commits follow the order of the locks, so that this
        # one is then finished through the master, under a new TID (its
        # client, who got C{released} with the vote, knows it already).
        if txn.released is not None and txn.released >= tid:
            return None
        final = final or (txn.inMemory is not None
                          and txn.participants is None)
        return self.lock(ttid, tid, final=final), final

    #: How many ttids L{resolve} remembers refusing.
    REFUSED_KEPT = 1000

    def resolve(self, ttid) -> bool:
        """
        The master asks whether a transaction reserved for its client to
        finish here commits: yes if its client asked (L{finish}); else it
        is refused, should the client's request still come.  A vote kept
        in memory as the only participant is aborted at once; any other
        waits for the master's decision, which depends on the other
        participants.
        """
        txn = self._txns.get(ttid)
        if txn is not None and txn.tid is not None:
            return True
        self._refused[ttid] = None
        if len(self._refused) > self.REFUSED_KEPT:
            self._refused.popitem(last=False)
        if txn is not None and (not txn.voted or (
                txn.inMemory is not None and txn.participants is None)):
            self.abort(ttid)
        return False

    def _publish(self, txn):
        """Make a decided transaction what the next checks and conflict
        resolutions of its oids see, and release its write locks (once)."""
        if txn.published:
            return
        txn.published = True
        self.records.generation += 1
        for oid, (_, _, compression, data) in txn.stores.items():
            self._remember(oid, txn.tid)
            self.records.put(oid, txn.tid, compression, data)
            if self.maxOid is not None and u64(oid) > self.maxOid:
                self.maxOid = u64(oid)
        released = self._releasedAt
        for oid in txn.oids():
            # Before the waiter is woken, which may vote at once (_voting).
            released[oid] = txn.tid
            released.move_to_end(oid)
            self._release(txn, oid)
        while len(released) > self.SERIALS:
            self._releasedFloor = max(self._releasedFloor,
                                      released.popitem(last=False)[1])

    def unlock(self, ttid, commit=False):
        """
        The transaction is committed: make it visible to loads, forget it.
        With C{commit}, it was not locked in the database yet: lock and
        unlock in one step.  Returns a Deferred.
        """
        txn = self._txns.get(ttid)
        if txn is None:
            return defer.succeed(None)
        if not commit and txn.afterLock is not None:
            # The lock was answered before its database step (direct
            # mode): the read locks last until that step is done.
            return self._locking(txn).addCallback(lambda _: self.unlock(ttid))
        try:
            if commit and txn.inMemory is not None:
                partition, metadata = txn.inMemory
                d = self._db.commitVoted(u64(ttid), u64(txn.tid), partition,
                                         metadata, _objects(txn))
            elif commit:
                d = self._db.commitTransaction(u64(ttid), u64(txn.tid))
            else:
                # Every participant wrote it: others may build on it.
                self._publish(txn)
                # Written already (lock): only its mark is left to drop
                # (none if the node only had checks of it).
                self._db.forgetLater(u64(ttid))
                d = defer.succeed(None)
        except Exception:
            d = defer.fail()

        def done(result):
            # clear() may have forgotten it meanwhile (master lost).
            if self._txns.get(ttid) is txn:
                del self._txns[ttid]
            self._releaseAll(txn)
            return result if isinstance(result, Failure) else None
        return d.addBoth(done)

    def written(self, ttid):
        """
        Every participant of a locked transaction wrote it, while an
        earlier TID keeps it from being unlocked: release its write locks
        (its vote was kept in memory, L{lock}), not its read locks.  A
        transaction waiting for one of them may hold the reservation of
        that earlier TID.
        """
        txn = self._txns.get(ttid)
        if txn is None or txn.tid is None:
            return
        if txn.afterLock is not None:
            self._locking(txn).addCallback(lambda _: self.written(ttid))
        else:
            self._publish(txn)

    @staticmethod
    def _locking(txn):
        """A Deferred fired once the database step of the lock of C{txn},
        under way, is done."""
        waiter = defer.Deferred()
        txn.afterLock.append(waiter)
        return waiter

    def abort(self, ttid):
        """Forget a transaction that is not locked.  Returns a Deferred."""
        txn = self._txns.get(ttid)
        if txn is None or txn.tid is not None:
            return defer.succeed(None)
        txn.aborted = True
        del self._txns[ttid]
        self._releaseAll(txn)
        self._stopWaiting(txn)
        if txn.written:
            return self._db.abortTransaction(u64(ttid))
        return defer.succeed(None)

    def abortClient(self, clientNid):
        """A client left: forget its transactions that are not voted."""
        for txn in list(self._txns.values()):
            if txn.clientNid == clientNid and not txn.voted:
                self.abort(txn.ttid)

    def clear(self):
        """Forget everything in memory (the temporary tables stay)."""
        txns = list(self._txns.values())
        self._txns.clear()
        self.resetSerials(None)
        # Mark them all first: releasing wakes waiters, which must not take
        # a lock for a transaction about to be forgotten.
        for txn in txns:
            txn.aborted = True
        for txn in txns:
            self._releaseAll(txn)

    def readLocked(self, oid) -> bool:
        """Whether a transaction being committed holds C{oid}."""
        return oid in self._readLocks

    @defer.inlineCallbacks
    def readable(self, oid):
        """Wait while a transaction being committed holds C{oid}."""
        while oid in self._readLocks:
            yield self._wait(self._readWaiters, oid)


def _objects(txn):
    """The stores of a transaction, as the database takes them."""
    return [(partition, u64(oid), compression, data)
            for oid, (partition, _, compression, data) in txn.stores.items()]
