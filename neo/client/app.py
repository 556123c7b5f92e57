# -*- test-case-name: tests.zodb.test_storage -*-
"""
The reactor side of the NEO client.

Everything here runs in the reactor thread and returns Deferreds: the link
to the primary master (identification, node list, partition table,
invalidations), connections to storage nodes, loads, and the phases of a
commit.  L{neo.client.Storage} calls it from ZODB's threads.
"""

import random
import threading
import zlib

from twisted.internet import defer, protocol
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionClosed
from twisted.protocols import amp
from twisted.python.failure import Failure

from neo.cluster.partition_table import PartitionTable
from neo.lib.config import clientEndpoint
from neo.lib.ids import ZERO_TID, formatNid, u64
from neo.lib.logging import NodeLogger
from neo.lib.states import ClusterState, NodeState, NodeType
from neo.protocols import commands as c
from neo.protocols.base import NodeProtocol
from neo.protocols.errors import NotReady, ProtocolError, TransactionNotFound
from neo.services.node import (
    ClusterView, MasterLinkService, MasterViewHandler, NodeTable)


class ClusterError(Exception):
    """The cluster cannot serve the request (the message says why)."""


class ClientTransaction:
    """
    A transaction being committed, shared by the ZODB thread that runs it
    (which only adds to C{data} and C{checked}) and the reactor thread.

    @ivar data: C{{oid: (serial, data)}} as given to store (uncompressed).
    @ivar conflicts: C{{oid: serial}} conflicts answered and not resolved.
    @ivar involved: storage nids written to.
    """

    def __init__(self, transaction):
        self.transaction = transaction
        self.ttid = None
        self.data = {}
        self.checked = {}
        self.conflicts = {}
        self.readConflicts = {}
        self.resolved = set()
        self.involved = set()
        self.outstanding = []
        #: Stores not yet handed to the reactor (ZODB thread only).
        self.buffer = []
        self.buffered = 0
        #: Stores not yet written to their connection.
        self.unsent = 0
        self.protos = {}
        self.voting = False
        self.aborted = False
        self.beginWaiters = []
        #: The begin was asked (it is asked by the first operation that
        #: reaches the reactor, unless a TID is imposed).
        self.begun = False
        self.error = None
        #: Storage nids voted on.
        self.voted = set()
        #: The TID was imposed at begin.
        self.imposed = False
        #: The partition the metadata is voted in.
        self.metaPartition = None
        #: C{{oid: (serial, compression, data)}}: committed revisions that
        #: conflicted, as the storage nodes sent them.
        self.committed = {}
        #: Oids whose conflict a storage node resolved, with the
        #: C{(compression, data)} it kept if it sent it back (else None).
        self.resolvedByNodes = {}
        #: Conflicting oids that a storage node failed to resolve with
        #: the object's class at hand: not worth trying here (the node
        #: gave the transaction up).
        self.unresolvable = set()
        #: Told to forget it after a node gave it up (L{ClientApp._givenUp}).
        self.givenUp = False
        #: Its only node answered its vote with conflicts: that node keeps
        #: nothing of it once told to abort, and the master knows only its
        #: begin, so that the retry that usually follows may take its
        #: temporary TID over (L{ClientApp.abort}).
        self.reusable = False
        #: C{{nid: voted}} of the votes pipelined behind the stores on
        #: several nodes (L{ClientApp._voteEach}); None in the other modes.
        self.softVotes = None
        #: C{{nid: count}} of the relocks that withdrew those votes: an
        #: answer to a vote sent before is not a vote.
        self.voteEpochs = {}
        #: The Deferred answer of the master to the reservation of the
        #: final TID, asked with the votes (L{ClientApp._reserve}); None if
        #: not asked.
        self.reservation = None
        #: The nids of those votes, and the TID reserved once answered
        #: (None if refused).
        self.reservedOn = None
        self.reservedTid = None
        #: C{{nid: tid}}: the C{released} of each vote (L{c.VoteTransaction}).
        self.released = {}
        #: It met a conflict, or its stores were answered before its votes
        #: for a conflict met lately (L{ClientApp._pipelined}): no TID is
        #: reserved for it (L{ClientApp._reserve}).
        self.contended = False
        #: Its nodes were asked to finish it (L{ClientApp._finishAtNodes}).
        self.finishSent = False
        #: Its votes on several nodes were kept in memory there
        #: (L{ClientApp.votesInMemory}).
        self.votesInMemory = False
        #: The storage nodes told to forget it (L{ClientApp.abortAtNodes}).
        self.toldNodes = None


class ClientApp(ClusterView):
    """
    @ivar lastTid: the last TID whose invalidations were processed.
    """

    role = "client"
    nodeType = NodeType.CLIENT
    #: Whether a transaction on a single node is finished at that node,
    #: under a TID reserved with its vote (L{_reserve}).
    finishAtNode = True

    def __init__(self, reactor, masters, cluster, cache, readOnly=False):
        self.reactor = reactor
        self.cluster = cluster
        self.cache = cache
        self.readOnly = readOnly
        self.nid = None
        self.nodes = NodeTable()
        self.pt = None
        self.clusterState = None
        self.lastTid = None
        #: Held while invalidations are delivered and lastTid moves, so
        #: that a ZODB thread never sees a lastTid whose invalidations it
        #: has not been given (see ZODB's racetest).
        self.lastTidLock = threading.RLock()
        #: Notified whenever lastTid moves.
        self.lastTidMoved = threading.Condition(self.lastTidLock)
        self.db = None
        self.master = None
        self.fatalError = None
        self.closed = False
        self.log = NodeLogger(self, namespace="neo.client")
        self._storages = {}
        self._connecting = {}
        self._txnByTtid = {}
        #: C{{ttid: {nid: Deferred}}}: transactions finishing in direct
        #: mode, waiting for the word of each node voted on (L{finish}).
        self._finishing = {}
        #: C{{ttid: tid}} of the commits in direct mode whose nodes' word
        #: is awaited, and the invalidations of later commits held back
        #: until then (L{invalidate}).
        self._finishingTids = {}
        self._heldInvalidations = []
        #: C{(master, Deferred of a ttid or None)}: a transaction begun
        #: ahead, for the next commit.
        self._spare = None
        #: Commits left to vote in two steps on several nodes, since one
        #: met a conflict (L{_pipelined}).
        self._contended = 0
        #: Commits left to finish through the master without asking it for
        #: a TID, since it refused the last one asked, and how many the
        #: next refusal leaves (L{_reserved}).
        self._skipReservations = 0
        self._refusals = 0
        self._link = MasterLinkService(self, reactor, masters)

    @property
    def clusterState(self):
        return self._clusterState

    @clusterState.setter
    def clusterState(self, state):
        self._clusterState = state
        if state is not ClusterState.RUNNING:
            # The master forgets the transactions not being finished.
            self._spare = None

    # -- The master link (the node interface MasterLinkService expects) -----

    def start(self):
        self._link.startService()

    def listenAddress(self):
        return None

    def fatal(self, reason):
        self.fatalError = reason
        self.log.critical("{reason}", reason=reason)
        self._link.stopService()

    def makeMasterHandler(self, proto):
        return MasterHandler(self, proto)

    @defer.inlineCallbacks
    def masterIdentified(self, proto, answer):
        self.nid = answer["yourNid"]
        self.nodes = NodeTable()
        self.nodes.update(answer["nodes"] or [])
        doc = answer["partitionTable"]
        self.pt = PartitionTable.fromJson(doc) if doc else None
        self.clusterState = answer["clusterState"]
        last = (yield proto.ask(c.AskLastTransaction))["tid"]
        with self.lastTidLock:
            if self.lastTid is not None and last != self.lastTid:
                # We may have missed invalidations while disconnected.
                self.cache.clearCurrent()
                if self.db is not None:
                    self.db.invalidateCache()
            self._advance(last or ZERO_TID)
        self.master = proto
        self.log.info("connected to the cluster as {me}",
                      me=formatNid(self.nid))

    def masterLost(self, proto):
        if proto is self.master:
            self.master = None
            self._spare = None
            if not self.closed:
                self.log.warn("lost the connection to the primary master")

    def nodesUpdated(self, rows):
        changed = super().nodesUpdated(rows)
        for entry in changed:
            if entry.state is not NodeState.RUNNING:
                proto = self._storages.get(entry.nid)
                if proto is not None:
                    proto.close()
        return changed

    def partitionChangesReceived(self, ptid, replicas, changes):
        if self.pt is not None:
            super().partitionChangesReceived(ptid, replicas, changes)

    @defer.inlineCallbacks
    def connected(self):
        """The connection to the primary master, once identified."""
        if self.fatalError:
            raise ClusterError(self.fatalError)
        if self.closed:
            raise ClusterError("the storage is closed")
        while self.master is None:
            # Fires once identified: masterIdentified is part of the
            # connection's preparation.
            yield self._link.whenConnected()
        return self.master

    def close(self):
        with self.lastTidMoved:
            self.closed = True
            self.lastTidMoved.notify_all()
        for proto in list(self._storages.values()):
            proto.close()
        return self._link.stopService()

    def invalidate(self, tid, oids):
        if any(t < tid for t in self._finishingTids.values()):
            # A later commit, heard of before the nodes' word on one of
            # ours (the master may hear of that one before a node wrote
            # it): processed after ours, in TID order, so that neither
            # the cache nor lastTid gets ahead of ZODB's callback.
            self._heldInvalidations.append((tid, oids))
            return
        with self.lastTidLock:
            self.cache.invalidate(oids, tid)
            if self.db is not None:
                self.db.invalidate(tid, oids)
            self._advance(tid)

    def _advance(self, tid):
        # With lastTidLock held.
        if self.lastTid is None or tid > self.lastTid:
            self.lastTid = tid
            self.lastTidMoved.notify_all()

    def waitForTid(self, tid, timeout):
        """
        In a ZODB thread: wait until the invalidations of C{tid} (a
        committed TID) are processed, for C{timeout} seconds at most;
        returns whether they were.
        """
        with self.lastTidMoved:
            return self.lastTidMoved.wait_for(
                lambda: self.closed or (self.lastTid or ZERO_TID) >= tid,
                timeout)

    # -- Storage connections -------------------------------------------------

    def _running(self):
        return {n.nid for n in self.nodes.byType(NodeType.STORAGE,
                                                 NodeState.RUNNING)}

    def getStorage(self, nid):
        """The identified connection to a storage node (made if needed)."""
        proto = self._storages.get(nid)
        if proto is not None:
            return defer.succeed(proto)
        waiters = self._connecting.get(nid)
        if waiters is None:
            entry = self.nodes.get(nid)
            if entry is None or entry.address is None:
                return defer.fail(NotReady(f"{formatNid(nid)} is not known"))
            waiters = self._connecting[nid] = []
            self._connectStorage(entry).addBoth(self._storageConnected, nid)
        d = defer.Deferred()
        waiters.append(d)
        return d

    def _storageConnected(self, result, nid):
        for d in self._connecting.pop(nid, ()):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    @defer.inlineCallbacks
    def _connectStorage(self, entry):
        proto = NodeProtocol()
        proto.handler = StorageHandler(self, proto)
        proto.peer = entry
        proto.onConnectionLost = lambda p: self._storageLost(entry.nid, p)
        endpoint = clientFromString(self.reactor, clientEndpoint(entry.address))
        try:
            yield endpoint.connect(protocol.Factory.forProtocol(lambda: proto))
            yield proto.ask(c.Identify, protocolVersion=c.PROTOCOL_VERSION,
                            cluster=self.cluster, nodeType=self.nodeType.value,
                            nid=self.nid)
        except Exception as e:
            proto.close()
            if isinstance(e, ProtocolError):
                raise
            raise NotReady(f"cannot connect to {formatNid(entry.nid)}: {e}")
        self._storages[entry.nid] = proto
        return proto

    def _storageLost(self, nid, proto):
        if self._storages.get(nid) is proto:
            del self._storages[nid]
        for waiters in list(self._finishing.values()):
            d = waiters.get(nid)
            if d is not None and not d.called:
                d.errback(ClusterError(
                    f"the connection to {formatNid(nid)} was lost while it"
                    " committed the transaction"))

    # -- Loads ---------------------------------------------------------------

    def load(self, oid, serial=None, before=None):
        """
        C{(compression, data, serial, next)} of a revision (C{data} is None
        for a deletion); raises L{OidNotFound}, L{OidDoesNotExist}, or
        L{ClusterError}.  The caller must end the load with
        C{cache.endLoad} when this succeeds (it was begun here).
        """
        if self.master is not None:
            # The hot path: connected to a readable cell already.
            for nid in self.pt.readable(self.pt.partitionOf(oid),
                                        self._running()):
                proto = self._storages.get(nid)
                if proto is not None and proto.connected:
                    self.cache.beginLoad(oid)
                    d = proto.ask(c.AskObject, oid=oid, serial=serial,
                                  before=before)
                    return d.addCallbacks(self._loaded, self._loadFailed,
                                          errbackArgs=(oid, serial, before))
        return self._load(oid, serial, before)

    #: Records larger than this are not read ahead.
    PREFETCH_LARGEST = 256 * 1024

    def prefetch(self, oids):
        """
        Read ahead the current revision of objects a loaded record refers
        to, into the cache: ZODB will likely load them next.  Best effort:
        failures are ignored.  Returns a Deferred fired once the answers
        are in the cache.
        """
        if self.master is None:
            return None
        batches = {}
        for oid in self.cache.missing(oids):
            for nid in self.pt.readable(self.pt.partitionOf(oid),
                                        self._running()):
                proto = self._storages.get(nid)
                if proto is not None and proto.connected:
                    batches.setdefault(proto, []).append(oid)
                    break
        # One message per node (per MAX_READ_AHEAD oids), answered in one
        # database call there.
        asked = []
        for proto, oids in batches.items():
            for start in range(0, len(oids), c.MAX_READ_AHEAD):
                batch = oids[start:start + c.MAX_READ_AHEAD]
                for oid in batch:
                    self.cache.beginLoad(oid)
                d = proto.ask(c.AskObjects, oids=batch,
                              maxSize=self.PREFETCH_LARGEST)
                asked.append(d.addBoth(self._prefetched, batch))
        return defer.gatherResults(asked)

    def _prefetched(self, answer, oids):
        records = {}
        if not isinstance(answer, Failure):
            try:
                records = {oid: (serial, compression, data) for
                           oid, serial, compression, data in c.unpackRecords(
                               answer["records"])}
            except ProtocolError as e:
                self.log.warn("a read-ahead answer was malformed: {error}",
                              error=e)
        for oid in oids:
            record = records.get(oid)
            if record is None:
                self.cache.endLoad(oid, ZERO_TID, ZERO_TID)
            else:
                serial, compression, data = record
                # Current when the node read it: an invalidation since
                # is recorded in the meantime (beginLoad).
                self.cache.endLoad(oid, serial, None,
                                   uncompressed(compression, data),
                                   readAhead=True)

    @staticmethod
    def _loaded(answer):
        data = None if answer["deleted"] else answer["data"]
        return (answer["compression"], data, answer["serial"],
                answer["nextSerial"])

    def _loadFailed(self, failure, oid, serial, before):
        self.cache.endLoad(oid, ZERO_TID, ZERO_TID)
        if failure.check(NotReady, ConnectionClosed):
            return self._load(oid, serial, before)  # the slow path
        return failure

    @defer.inlineCallbacks
    def _load(self, oid, serial, before):
        yield self.connected()
        partition = self.pt.partitionOf(oid)
        nids = self.pt.readable(partition, self._running())
        random.shuffle(nids)
        errors = []
        for nid in nids:
            try:
                proto = yield self.getStorage(nid)
            except NotReady as e:
                errors.append(str(e))
                continue
            self.cache.beginLoad(oid)
            try:
                answer = yield proto.ask(c.AskObject, oid=oid, serial=serial,
                                         before=before)
            except (NotReady, ConnectionClosed) as e:
                self.cache.endLoad(oid, ZERO_TID, ZERO_TID)
                errors.append(f"{formatNid(nid)}: {e}")
                continue
            except BaseException:
                self.cache.endLoad(oid, ZERO_TID, ZERO_TID)
                raise
            data = None if answer["deleted"] else answer["data"]
            return (answer["compression"], data, answer["serial"],
                    answer["nextSerial"])
        raise ClusterError(
            f"no storage node could serve partition {partition}: "
            + ("; ".join(errors) or "no readable cell"))

    # -- Commits -------------------------------------------------------------

    def _masterOrFail(self):
        if self.master is None:
            raise ClusterError("not connected to the primary master")
        return self.master

    @defer.inlineCallbacks
    def newOids(self, count):
        master = yield self.connected()
        return (yield master.ask(c.AskNewOIDs, count=count))["oids"]

    def begin(self, txn, tid=None):
        """
        Ask the master for the transaction's temporary TID.  Stores sent
        meanwhile wait for it (L{whenBegun}): ZODB's thread need not.
        """
        txn.beginWaiters = []
        txn.begun = True
        txn.imposed = tid is not None
        spare = self._spare
        if tid is None and spare is not None and spare[1].called \
                and spare[0] is self.master:
            # Begun ahead, and here: taken over at once.
            self._spare = None
            ttid = []
            spare[1].addBoth(ttid.append)
            if ttid and ttid[0] is not None:
                try:
                    self._begun(txn, spare[0], ttid[0])
                except Exception:
                    self._beginFailed(Failure(), txn)
                return
        self._begin(txn, tid).addErrback(self._beginFailed, txn)

    @defer.inlineCallbacks
    def _begin(self, txn, tid):
        ttid = None
        spare, self._spare = self._spare, None
        if spare is not None:
            master, d = spare
            if tid is None:
                # Begun ahead: no round trip (none at all if it is here).
                ttid = yield d
                if master is not self.master:
                    ttid = None
            else:
                # A TID is imposed: give the spare back.
                d.addCallback(self._giveBack, master)
        if ttid is None:
            master = yield self.connected()
            ttid = (yield master.ask(c.AskBeginTransaction, tid=tid))["ttid"]
        self._begun(txn, master, ttid)

    def _begun(self, txn, master, ttid):
        txn.ttid = ttid
        txn.master = master
        if txn.aborted:
            # Aborted while we waited: nothing of it may reach a storage.
            master.notify(c.AbortTransaction, ttid=ttid)
            raise ClusterError("the transaction was aborted")
        self._txnByTtid[ttid] = txn
        waiters, txn.beginWaiters = txn.beginWaiters, None
        for d in waiters:
            d.callback(ttid)

    def _metaPartition(self, txn):
        """
        The partition of the transaction's metadata: that of an object it
        stores, so that a transaction whose objects are on one node has
        that node as its only participant; the ttid's when its TID was
        imposed (the final TID is in that partition).
        """
        if not txn.imposed:
            stored = txn.data or txn.checked
            if stored:
                return self.pt.partitionOf(min(stored))
        return self.pt.tidPartition(txn.ttid)

    def _beginAhead(self, master):
        """Begin a transaction for the next commit (after an abort)."""
        if self._spare is not None or self.closed or self.readOnly:
            return
        d = master.ask(c.AskBeginTransaction, tid=None)
        d.addCallbacks(lambda answer: answer["ttid"], lambda _: None)
        self._spare = (master, d)

    @staticmethod
    def _giveBack(ttid, master):
        if ttid is not None and master.connected:
            master.notify(c.AbortTransaction, ttid=ttid)

    def _beginFailed(self, failure, txn):
        # Recorded for the stores and the vote, which wait for the begin.
        txn.error = txn.error or f"cannot begin: {failure.getErrorMessage()}"
        waiters, txn.beginWaiters = txn.beginWaiters, None
        for d in waiters:
            d.errback(failure)

    def whenBegun(self, txn):
        """A Deferred of the temporary TID (begun now if not yet)."""
        if not txn.begun:
            self.begin(txn)
        if txn.beginWaiters is None:
            if txn.ttid is None:
                return defer.fail(ClusterError(txn.error))
            return defer.succeed(txn.ttid)
        d = defer.Deferred()
        txn.beginWaiters.append(d)
        return d

    def _route(self, txn, oid):
        """
        The storage nodes a write of C{oid} goes to.  Called in callbacks
        whose exceptions would be lost: a failure is recorded in C{txn}.
        """
        try:
            nids = self.pt.writable(self.pt.partitionOf(oid), self._running())
        except Exception as e:
            nids = []
            txn.error = txn.error or f"cannot store object {u64(oid)}: {e}"
        if not nids:
            txn.error = txn.error or f"no storage node for object {u64(oid)}"
        return nids

    #: Bytes of records sent in one StoreObjects command at most.
    BATCH_BYTES = 4 * 1024 * 1024

    #: Commits after one met a conflict that vote on several nodes in two
    #: steps (stores answered, then votes: L{_pipelined}), or on one node
    #: without reserving their TID (L{_reserve}).
    CONTENDED_COMMITS = 16

    #: Commits at most that ask for no TID after a refused reservation
    #: (L{_reserved}).
    REFUSED_COMMITS = 16

    def _untilBegun(self, txn, operation) -> bool:
        """
        Begin the transaction if nobody did yet.  While its temporary TID
        is not known (begin in progress, maybe reconnecting), the
        operation runs once it is (a failure recorded in the transaction):
        returns True then.
        """
        if not txn.begun:
            self.begin(txn)
        if txn.ttid is not None:
            return False
        d = self.whenBegun(txn)
        d.addCallback(lambda _: operation())
        d.addErrback(self._storeFailed, txn, None)
        txn.outstanding.append(d)
        return True

    def storeMany(self, txn, records):
        """
        Send stores (C{(oid, serial, compression, data)}) to every writable
        cell of their objects, batched per node; answers arrive later.
        """
        if self._untilBegun(txn, lambda: self.storeMany(txn, records)):
            return
        batches = {}
        for record in records:
            for nid in self._route(txn, record[0]):
                batches.setdefault(nid, []).append(record)
        for nid, batch in batches.items():
            txn.involved.add(nid)
            chunk, size = [], 0
            for record in batch:
                if chunk and size + len(record[3]) > self.BATCH_BYTES:
                    self._sendBatch(txn, nid, chunk)
                    chunk, size = [], 0
                chunk.append(record)
                size += len(record[3]) + 21
            self._sendBatch(txn, nid, chunk)

    def _sendBatch(self, txn, nid, records):
        txn.unsent += 1
        d = self.getStorage(nid)
        d.addCallback(self._sendTo, txn, nid, c.StoreObjects,
                      records=c.packRecords(records))
        d.addCallbacks(self._storedMany, self._storeFailed,
                       callbackArgs=(txn, nid), errbackArgs=(txn, nid))
        txn.outstanding.append(d)

    def _storedMany(self, answer, txn, nid):
        items = answer["conflicts"] or ()
        if items:
            self._contend(txn)
        for i in range(0, len(items), 2):
            self._conflict(txn, items[i], items[i + 1], txn.conflicts)
        if answer["committed"]:
            for oid, serial, compression, data in c.unpackRecords(
                    answer["committed"]):
                txn.committed[oid] = (serial, compression, data)
        for oid in answer["resolved"] or ():
            # Resolved by the node: what it keeps is not txn.data.
            txn.resolvedByNodes[oid] = None
            txn.resolved.add(oid)
        if answer["resolvedRecords"]:
            for oid, _, compression, data in c.unpackRecords(
                    answer["resolvedRecords"]):
                txn.resolvedByNodes[oid] = (compression, data)
        if answer["unresolvable"]:
            txn.unresolvable.update(answer["unresolvable"])
            self._givenUp(txn, nid)

    def checkCurrent(self, txn, oid, serial):
        self._send(txn, oid, serial, c.CheckCurrentSerial, txn.readConflicts)

    def _send(self, txn, oid, serial, command, conflicts, **kwargs):
        # Called through callFromThread: an exception here would be lost,
        # and the store with it, so every failure is recorded in txn.
        if self._untilBegun(txn, lambda: self._send(
                txn, oid, serial, command, conflicts, **kwargs)):
            return
        nids = self._route(txn, oid)
        txn.unsent += len(nids)
        for nid in nids:
            txn.involved.add(nid)
            d = self.getStorage(nid)
            d.addCallback(self._sendTo, txn, nid, command, oid=oid,
                          serial=serial, **kwargs)
            d.addCallbacks(self._stored, self._storeFailed,
                           callbackArgs=(txn, oid, conflicts),
                           errbackArgs=(txn, nid))
            txn.outstanding.append(d)

    def _sendTo(self, proto, txn, nid, command, **kwargs):
        txn.unsent -= 1
        if txn.aborted:
            raise ClusterError("the transaction was aborted")
        # Stores of a transaction must all reach a node on one connection:
        # a node forgets the unvoted transactions of a lost connection.
        if txn.protos.setdefault(nid, proto) is not proto:
            raise ClusterError(f"the connection to {formatNid(nid)} was lost"
                               " during the transaction")
        return proto.ask(command, ttid=txn.ttid, **kwargs)

    def deadlock(self, proto, ttid, oid):
        """
        An older transaction waits for a lock of ours: give it back if we
        have not started voting (we hold every lock once voting).
        """
        txn = self._txnByTtid.get(ttid)
        if txn is None or txn.voting:
            return
        nid = proto.peer.nid if proto.peer is not None else None
        self._contend(txn)
        if txn.softVotes is not None and nid in txn.softVotes:
            # Its vote there, soft, is withdrawn by the relock: whatever
            # answer it gets is not a vote any more (L{_voteEach}).
            txn.softVotes[nid] = False
            txn.voteEpochs[nid] = txn.voteEpochs.get(nid, 0) + 1
        if oid in txn.checked and oid not in txn.data:
            conflicts = txn.readConflicts
        else:
            conflicts = txn.conflicts
        d = proto.ask(c.RelockObject, ttid=ttid, oid=oid)
        d.addCallbacks(self._stored, self._storeFailed,
                       callbackArgs=(txn, oid, conflicts),
                       errbackArgs=(txn, nid))
        txn.outstanding.append(d)

    def _stored(self, answer, txn, oid, conflicts):
        conflict = answer["conflict"]
        if conflict is not None:
            self._contend(txn)
            self._conflict(txn, oid, conflict, conflicts)

    @staticmethod
    def _conflict(txn, oid, serial, conflicts):
        """
        A store (or check) of C{oid} conflicts with the commit of
        C{serial}: the node kept nothing of it.  What the node may have
        resolved before (before a relock, say) is not what will be
        committed any more: the client resolves it anew, against that
        commit, and caches what it stores then.
        """
        txn.resolvedByNodes.pop(oid, None)
        if serial > conflicts.get(oid, ZERO_TID):
            conflicts[oid] = serial

    def _contend(self, txn):
        """A transaction met a conflict: it and the next commits
        (C{CONTENDED_COMMITS}) run as under contention."""
        self._contended = self.CONTENDED_COMMITS
        txn.contended = True

    def _givenUp(self, txn, nid):
        """
        Node C{nid} gave the transaction up (a conflict nobody can
        resolve): it can only be aborted, so the other nodes forget it now,
        instead of letting its stores wait for locks, and take them, until
        the client hears of it.
        """
        if txn.givenUp:
            return
        txn.givenUp = True
        for other, proto in txn.protos.items():
            if other != nid and proto.connected:
                proto.notify(c.AbortTransaction, ttid=txn.ttid)

    def _storeFailed(self, failure, txn, nid):
        if txn.givenUp and failure.check(TransactionNotFound):
            return  # Forgotten by our own doing: the conflict is raised.
        txn.error = txn.error or (f"store to {formatNid(nid)} failed:"
                                  f" {failure.getErrorMessage()}")

    @defer.inlineCallbacks
    def waitStores(self, txn):
        """
        Wait for every store answer; returns C{(conflicts, readConflicts)}
        and clears them (the caller resolves and stores again).
        """
        while txn.outstanding:
            outstanding, txn.outstanding = txn.outstanding, []
            yield defer.DeferredList(outstanding)
        if txn.error:
            raise ClusterError(txn.error)
        conflicts, txn.conflicts = txn.conflicts, {}
        readConflicts, txn.readConflicts = txn.readConflicts, {}
        return conflicts, readConflicts

    @defer.inlineCallbacks
    def vote(self, txn, user, description, extension, records=()):
        """
        Vote on every storage node involved, after storing C{records} (as
        L{storeMany}); the nodes holding the transaction's partition get
        its metadata.  If conflicts are still to resolve, returns them (as
        L{waitStores}) without voting: the caller resolves them, stores
        again and calls again.
        """
        if txn.ttid is None:
            yield self.whenBegun(txn)
        running = self._running()
        txn.metaPartition = self._metaPartition(txn)
        metaNids = self.pt.writable(txn.metaPartition, running)
        # The stores go with the vote (one node only), or each node's with
        # its vote (L{_voteEach}), when each node's share fits in one
        # message; else ahead of the votes.
        batches = self._batches(txn, records)
        nids = txn.involved | set(metaNids) | set(batches or ())
        carried = bool(records) and batches is not None and len(nids) == 1
        if not carried and batches is not None and not (
                (len(nids) > 1 or txn.softVotes)
                and self._pipelined(txn, batches)):
            batches = None
        if batches is None:
            if records:
                self.storeMany(txn, records)
            nids = txn.involved | set(metaNids)
        else:
            txn.involved.update(batches)
        txn.voted = nids
        txn.reusable = False
        oids = list(txn.data)
        if batches is not None and not carried:
            return (yield self._voteEach(txn, nids, metaNids, batches, user,
                                         description, extension))
        if len(nids) == 1 and not txn.error and not txn.unsent:
            # One node only: vote right behind the stores, in the same
            # round trip (or with them).  Deadlock notifications are still
            # honoured until the vote is answered: the node votes only once
            # every store and relock is settled, and did not conflict.
            nid, = nids
            proto = self._storages.get(nid)
            if proto is None:
                proto = yield self.getStorage(nid)
            if txn.protos.setdefault(nid, proto) is not proto:
                raise ClusterError(f"the connection to {formatNid(nid)} was"
                                   " lost during the transaction")
            extra = {}
            if carried:
                extra["records"] = c.packRecords(records)
            d = proto.ask(c.VoteTransaction, ttid=txn.ttid, user=user,
                          description=description, extension=extension,
                          oids=oids if nid in metaNids else None,
                          pipelined=True, partition=txn.metaPartition,
                          **extra)
            proto.flush()  # on its way before the rest of this turn
            if carried:
                # The answers of the stores come with the vote's: they are
                # counted as outstanding until then.
                self._carriedBy(d, records)
                d.addCallback(self._votedWithStores, txn, nid)
                txn.outstanding.append(d)
            if nid in metaNids:
                self._reserve(txn, nids, oids)
            # An errback in this same turn: AMP drops the connection when an
            # error answer finds none.
            voted = []
            d.addBoth(voted.append)
            try:
                conflicts = yield self.waitStores(txn)
            finally:
                if not voted:
                    yield d
            answer = voted[0]
            if isinstance(answer, Failure):
                answer.raiseException()
            txn.released[nid] = answer["released"]
            txn.reusable = not answer["voted"]
            if not answer["voted"] and txn.reservation is not None:
                self._unreserve(txn)
            if answer["voted"]:
                txn.voting = True
                return {}, {}
            if conflicts[0] or conflicts[1]:
                return conflicts
            # Conflicts of relocks answered after the stores: again.
            return (yield self.vote(txn, user, description, extension))
        conflicts = yield self.waitStores(txn)
        if conflicts[0] or conflicts[1]:
            return conflicts
        # From now on, deadlock notifications are ignored: every store is
        # answered, so we hold all our locks and the votes cannot wait.
        txn.voting = True
        calls = []
        extra = {}
        if len(nids) > 1:
            extra["participants"] = self._participants(txn, metaNids)
        for nid in sorted(nids):
            proto = yield self.getStorage(nid)
            if nid in txn.protos and txn.protos[nid] is not proto:
                raise ClusterError(f"the connection to {formatNid(nid)} was"
                                   " lost during the transaction")
            if nid in metaNids:
                d = proto.ask(c.VoteTransaction, ttid=txn.ttid, user=user,
                              description=description, extension=extension,
                              oids=oids, partition=txn.metaPartition, **extra)
            else:
                d = proto.ask(c.VoteTransaction, ttid=txn.ttid, **extra)
            txn.protos[nid] = proto
            calls.append(d)
        self._reserve(txn, nids, oids)
        results = yield defer.DeferredList(calls, consumeErrors=True)
        for nid, (ok, result) in zip(sorted(nids), results):
            if not ok:
                raise ClusterError(f"vote failed: {result.getErrorMessage()}")
            txn.released[nid] = result["released"]
        return {}, {}

    #: Whether the votes of a transaction on several storage nodes stay in
    #: memory there, until the lock writes them (L{c.VoteTransaction}).
    votesInMemory = True

    def _participants(self, txn, metaNids):
        """
        For votes on several nodes: the nids of the storage nodes that
        write some of C{txn} (its stores and its metadata, not its checks),
        for its votes to stay in memory there; None if they are durable
        (L{votesInMemory}).
        """
        txn.votesInMemory = self.votesInMemory
        if not self.votesInMemory:
            return None
        pt, running = self.pt, self._running()
        nids = set(metaNids)
        for partition in {pt.partitionOf(oid) for oid in txn.data}:
            nids.update(pt.writable(partition, running))
        return sorted(nids)

    def _reserve(self, txn, nids, oids):
        """
        Ask the master, along with the votes on C{nids}, for the final
        TID, to finish at those nodes (L{_finishAtNodes}).
        """
        master = self.master
        if txn.reservation is not None or txn.imposed or master is None \
                or master is not txn.master or not self.finishAtNode \
                or txn.contended:
            return
        if self._contended:
            # Under contention, a vote often waits for locks, or conflicts:
            # a TID reserved meanwhile holds the commits of others back, and
            # their invalidations, which retries need.
            self._contended -= 1
            return
        if self._skipReservations:
            # Other commits were being finished when the master refused the
            # last reservation: asking again likely costs two messages for
            # nothing (the commit then finishes through the master).
            self._skipReservations -= 1
            return
        txn.reservedOn = set(nids)
        d = txn.reservation = master.ask(
            c.ReserveTransaction, ttid=txn.ttid, oids=oids,
            checked=list(txn.checked), voted=sorted(nids),
            beginNext=self._spare is None or None,
            metaPartition=txn.metaPartition)
        d.addCallbacks(self._reserved, self._notReserved,
                       callbackArgs=(txn, master, d))

    def _reserved(self, answer, txn, master, d):
        if txn.reservation is d:
            txn.reservedTid = answer["tid"]
        if answer["tid"] is None:
            # While refusals go on, the next 1, 2, 4... commits ask for none.
            self._refusals = min(2 * self._refusals or 1,
                                 self.REFUSED_COMMITS)
            self._skipReservations = self._refusals
        else:
            self._refusals = 0
        self._keepSpare(answer["nextTtid"], master)
        return answer

    @staticmethod
    def _notReserved(failure):
        """
        The reservation failed (the master was lost, say): the finish, if
        it comes, goes through the master, which tells what is wrong.
        Nothing may wait for it, so its failure is not left unhandled.
        """
        return None

    def _unreserve(self, txn):
        """
        Give back the TID reserved for a transaction whose vote conflicted:
        the commits after it need not wait for its conflicts to be resolved
        (its client may well wait for their invalidations), nor for its
        abort.  Its next vote asks again.
        """
        txn.reservation = txn.reservedTid = None
        master = self.master
        if master is not None and master is txn.master:
            # The transaction stays begun (a refused reservation: nothing).
            master.notify(c.AbortTransaction, ttid=txn.ttid, keep=True)

    def _keepSpare(self, ttid, master):
        """A transaction begun ahead for our next commit, if any."""
        if ttid is not None:
            if self._spare is None and master is self.master:
                self._spare = (master, defer.succeed(ttid))
            else:
                self._giveBack(ttid, master)

    def _batches(self, txn, records):
        """
        C{{nid: records}}: the stores of C{records} node by node, when
        each node's share fits in one message and nothing of the
        transaction is still unsent; None otherwise.
        """
        if txn.error or txn.unsent:
            return None
        batches, sizes = {}, {}
        for record in records:
            for nid in self._route(txn, record[0]):
                batches.setdefault(nid, []).append(record)
                sizes[nid] = sizes.get(nid, 0) + len(record[3]) + 21
                if sizes[nid] > self.BATCH_BYTES:
                    return None
        if txn.error:
            return None
        return batches

    def _pipelined(self, txn, batches) -> bool:
        """
        Whether C{batches} can go with the votes on several nodes
        (L{_voteEach}): nothing of the transaction was sent before but
        such votes, none to a node that voted, and no conflict was met
        lately.
        """
        if txn.outstanding:
            return False
        if txn.softVotes is None:
            if txn.involved:
                return False
            if self._contended:
                # Under contention, a vote sent with the stores is often
                # written for nothing (conflicts elsewhere), on the very
                # node that others wait for: the stores are answered first
                # (and no TID is reserved, as in L{_reserve}).
                self._contended -= 1
                txn.contended = True
                return False
            return True
        # Not expected: a node that voted had conflicts.
        return not any(txn.softVotes.get(nid) for nid in batches)

    @defer.inlineCallbacks
    def _voteEach(self, txn, nids, metaNids, batches, user, description,
                  extension):
        """
        Vote on several nodes, each right behind its stores, in one round
        trip: as L{vote}.  The votes are durable, and soft: a node voted
        on may hold locks that an older transaction waits for, while we
        wait for locks on another.  Told of an older transaction waiting
        for us, we relock, unless every node voted (we wait for nothing
        then): that withdraws the vote, which we send again once the
        relock is answered (L{deadlock}).
        """
        if txn.softVotes is None:
            txn.softVotes = {}
        oids = list(txn.data)
        # Voted ones are skipped: conflicts were elsewhere.
        nids = [nid for nid in sorted(nids) if not txn.softVotes.get(nid)]
        protos = {}
        for nid in nids:
            proto = protos[nid] = yield self.getStorage(nid)
            if txn.protos.setdefault(nid, proto) is not proto:
                raise ClusterError(f"the connection to {formatNid(nid)} was"
                                   " lost during the transaction")
        participants = self._participants(txn, metaNids)
        # All sent in one go: a deadlock notification finds each vote
        # under way (L{deadlock}).
        for nid, proto in protos.items():
            extra = {"participants": participants}
            if nid in metaNids:
                extra.update(user=user, description=description,
                             extension=extension, oids=oids)
            batch = batches.get(nid)
            if batch:
                extra["records"] = c.packRecords(batch)
            txn.softVotes[nid] = False
            d = proto.ask(c.VoteTransaction, ttid=txn.ttid, pipelined=True,
                          shared=True, partition=txn.metaPartition, **extra)
            if batch:
                self._carriedBy(d, batch)
            d.addCallbacks(self._votedOn, self._storeFailed,
                           callbackArgs=(txn, nid, txn.voteEpochs.get(nid, 0)),
                           errbackArgs=(txn, nid))
            txn.outstanding.append(d)
        for proto in protos.values():
            proto.flush()
        self._reserve(txn, txn.voted, oids)
        conflicts = yield self.waitStores(txn)
        if all(txn.softVotes.values()):
            # From now on, deadlock notifications are ignored: we hold all
            # our locks and wait for nothing.
            txn.voting = True
            return {}, {}
        if txn.reservation is not None:
            self._unreserve(txn)
        if conflicts[0] or conflicts[1]:
            return conflicts
        return (yield self.vote(txn, user, description, extension))

    def _votedOn(self, answer, txn, nid, epoch):
        self._storedMany(answer, txn, nid)
        if txn.voteEpochs.get(nid, 0) == epoch:
            txn.softVotes[nid] = answer["voted"]
            txn.released[nid] = answer["released"]

    def _carriedBy(self, d, records):
        """
        C{records} went with a vote, whose answer (C{d}) brings the
        committed records they conflict with: cached as current (unless
        invalidated meanwhile), for the retry that usually follows.
        """
        stored = [record[0] for record in records]
        for oid in stored:
            self.cache.beginLoad(oid)
        d.addBoth(self._cacheCommitted, stored)

    def _cacheCommitted(self, answer, oids):
        committed = {}
        if not isinstance(answer, Failure) and answer["committed"]:
            for oid, serial, compression, data in c.unpackRecords(
                    answer["committed"]):
                committed[oid] = (serial, uncompressed(compression, data))
        for oid in oids:
            if oid in committed:
                serial, data = committed[oid]
                self.cache.endLoad(oid, serial, None, data)
            else:
                self.cache.endLoad(oid, ZERO_TID, ZERO_TID)
        return answer

    def _votedWithStores(self, answer, txn, nid):
        self._storedMany(answer, txn, nid)
        return answer

    def finish(self, txn, callback=None):
        d = self._finish(txn, callback)
        return d.addBoth(self._finished, txn.ttid)

    def _finished(self, result, ttid):
        self._stopHolding(ttid)
        return result

    def _stopHolding(self, ttid):
        """Later commits' invalidations wait no more for this one's."""
        if self._finishingTids.pop(ttid, None) is not None:
            held, self._heldInvalidations = self._heldInvalidations, []
            for tid, oids in held:
                self.invalidate(tid, oids)

    @defer.inlineCallbacks
    def _finish(self, txn, callback):
        master = self._masterOrFail()
        if master is not getattr(txn, "master", None):
            raise ClusterError("the connection to the master was lost"
                               " during the commit")
        if txn.reservation is not None:
            yield txn.reservation
            if txn.reservedTid is not None and (
                    yield self._finishAtNodes(txn)):
                return self._committed(txn, txn.reservedTid, callback)
        # The nodes voted on (still connected) may tell us of the commit
        # themselves, a message sooner than the master (direct mode).
        waiters = None
        if txn.voted and all(
                self._storages.get(nid) is txn.protos.get(nid) is not None
                for nid in txn.voted):
            waiters = self._finishing[txn.ttid] = {
                nid: defer.Deferred() for nid in txn.voted}
        try:
            answer = yield master.ask(c.AskFinishTransaction, ttid=txn.ttid,
                                      oids=list(txn.data),
                                      checked=list(txn.checked),
                                      voted=sorted(txn.voted),
                                      beginNext=self._spare is None,
                                      metaPartition=txn.metaPartition,
                                      direct=waiters is not None or None)
            if answer["direct"]:
                self._finishingTids[txn.ttid] = answer["tid"]
                try:
                    tids = yield defer.DeferredList(
                        list(waiters.values()), fireOnOneErrback=True,
                        consumeErrors=True)
                except defer.FirstError as e:
                    e.subFailure.raiseException()
                for nid, (_, tid) in zip(waiters, tids):
                    if tid != answer["tid"]:
                        raise ClusterError(
                            f"{formatNid(nid)} committed transaction"
                            f" {u64(txn.ttid):#x} under TID {u64(tid):#x},"
                            f" not {u64(answer['tid']):#x} as the master"
                            " said")
        finally:
            self._txnByTtid.pop(txn.ttid, None)
            self._finishing.pop(txn.ttid, None)
            for d in (waiters or {}).values():
                d.addErrback(lambda _: None)  # a node lost, not waited for
        self._keepSpare(answer["nextTtid"], master)
        return self._committed(txn, answer["tid"], callback)

    @defer.inlineCallbacks
    def _finishAtNodes(self, txn):
        """
        Finish at its nodes a transaction whose final TID the master
        reserved; returns whether they did.  If one of them refuses (the
        master asked them to decide, L{c.AskResolveTransaction}), the
        transaction is committed if another did not: the master locks it
        on those that refused.
        """
        nids, tid = txn.reservedOn, txn.reservedTid
        if txn.voted != nids:
            return False  # voted again elsewhere (the partition table moved)
        if any(released is not None and released >= tid
               for released in txn.released.values()):
            # A transaction that held one of its locks got a greater TID.
            return False
        protos = {}
        for nid in sorted(nids):
            proto = protos[nid] = txn.protos.get(nid)
            if proto is None or self._storages.get(nid) is not proto:
                raise ClusterError(f"the connection to {formatNid(nid)} was"
                                   " lost during the commit")
        # Later commits' invalidations wait for ours (L{invalidate}).
        self._finishingTids[txn.ttid] = tid
        txn.finishSent = True
        shared = len(protos) > 1 or None
        answers = yield defer.DeferredList(
            [proto.ask(c.FinishTransaction, ttid=txn.ttid, tid=tid,
                       shared=shared)
             for proto in protos.values()], consumeErrors=True)
        committed = [ok and answer["committed"] for ok, answer in answers]
        if txn.votesInMemory and any(committed) and not all(committed):
            # The others kept their votes in memory, which the master locks
            # now: should one of them be lost before it wrote it, the
            # transaction is undone.
            self._txnByTtid.pop(txn.ttid, None)
            raise ClusterError(
                f"transaction {u64(txn.ttid):#x} was committed by some of"
                " its storage nodes only (a node was lost, or the cluster"
                " is stopping): the others commit it unless one of them"
                " fails before writing it")
        if any(committed):
            self._txnByTtid.pop(txn.ttid, None)
            return True
        for ok, failure in answers:
            if not ok:
                # Unknown: the master decides, from what the nodes say.
                failure.raiseException()
        # Refused everywhere: the master finishes it, under a new TID.
        self._stopHolding(txn.ttid)
        txn.finishSent = False
        return False

    def _committed(self, txn, tid, callback):
        """Our commit is done, under C{tid}: update the cache, move
        lastTid."""
        with self.lastTidLock:
            for oid, (_, data) in txn.data.items():
                self.cache.invalidate([oid], tid)
                if oid in txn.resolvedByNodes:
                    record = txn.resolvedByNodes[oid]
                    data = None if record is None else uncompressed(*record)
                if data is not None:
                    self.cache.store(oid, tid, None, data)
            # ZODB's callback invalidates the other connections of this
            # process: before lastTid moves, which they poll.
            if callback is not None:
                try:
                    callback(tid)
                except Exception:
                    self.log.failure("tpc_finish callback failed")
            self._advance(tid)
        return tid

    def transactionFinished(self, proto, ttid, tid):
        """A storage node committed a transaction finished in direct
        mode."""
        waiters = self._finishing.get(ttid)
        if waiters is not None and proto.peer is not None:
            d = waiters.get(proto.peer.nid)
            if d is not None and not d.called:
                d.callback(tid)

    def abortAtNodes(self, txn):
        """
        Tell the storage nodes to forget a transaction (about to be
        aborted), once; returns the nodes told on the connections it used.
        """
        if txn.toldNodes is None:
            txn.toldNodes = set()
            if txn.ttid is not None:
                for nid in set(txn.protos) | txn.involved:
                    proto = self._storages.get(nid)
                    if proto is not None:
                        proto.notify(c.AbortTransaction, ttid=txn.ttid)
                        if proto is txn.protos.get(nid):
                            txn.toldNodes.add(nid)
        return txn.toldNodes

    def abort(self, txn):
        txn.aborted = True
        if txn.ttid is None:
            return  # _begin tells the master when the ttid arrives.
        self._txnByTtid.pop(txn.ttid, None)
        told = self.abortAtNodes(txn)
        master = self.master
        if master is None:
            return
        if txn.reservation is not None and txn.reservation.called \
                and txn.reservedTid is None:
            txn.reservation = None  # refused: nothing to give back
        if (txn.reusable and told == txn.voted and not txn.imposed
                and master is txn.master and self._spare is None
                and not self.readOnly):
            # A conflict, likely retried: the retry takes this temporary
            # TID over, the master none the wiser (the node it was voted on
            # was told first, on the same connection) but for the TID it
            # may have reserved, given back.
            self._spare = (master, defer.succeed(txn.ttid))
            if txn.reservation is not None:
                master.notify(c.AbortTransaction, ttid=txn.ttid, keep=True)
            return
        master.notify(c.AbortTransaction, ttid=txn.ttid,
                      finishing=txn.finishSent or None)
        # Likely retried: begin the next one meanwhile.
        self._beginAhead(master)

    @defer.inlineCallbacks
    def sync(self):
        master = yield self.connected()
        yield master.ask(c.Ping)


class MasterHandler(MasterViewHandler):
    """What the client answers to the master."""

    @c.InvalidateObjects.responder
    def invalidateObjects(self, tid, oids):
        self.view.invalidate(tid, oids)
        return {}

    @c.Shutdown.responder
    def shutdown(self):
        self.view.log.info("the cluster is stopping")
        return {}


class StorageHandler(amp.CommandLocator):
    """What storage nodes send clients unasked."""

    def __init__(self, app, proto):
        self.app = app
        self.proto = proto

    @c.NotifyDeadlock.responder
    def notifyDeadlock(self, ttid, oid):
        self.app.deadlock(self.proto, ttid, oid)
        return {}

    @c.NotifyTransactionFinished.responder
    def notifyTransactionFinished(self, ttid, tid):
        self.app.transactionFinished(self.proto, ttid, tid)
        return {}

    @c.Ping.responder
    def ping(self):
        return {}


#: The compression of a record that zlib compressed (0: none).
ZLIB = 1


def uncompressed(compression, data):
    """A record's data as ZODB knows it (None stays None)."""
    if data is not None and compression == ZLIB:
        return zlib.decompress(data)
    return data
