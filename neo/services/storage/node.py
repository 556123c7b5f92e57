# -*- test-case-name: tests.functional.test_cluster -*-
"""
The storage node.

It opens its database, listens for clients, then keeps a link to the
primary master: it answers the master's recovery and verification
questions, and once told to start operation serves stores, votes and
loads to clients, and locks and unlocks transactions for the master.
"""

from twisted.internet import defer
from twisted.protocols import amp

from neo.cluster.partition_table import PartitionTable
from neo.lib.ids import formatNid, p64, u64
from neo.lib.states import NodeState, NodeType
from neo.protocols import commands as c
from neo.protocols.errors import NotReady, ProtocolError
from neo.services.node import (
    BaseNode, ClusterView, ListenerService, MasterLinkService,
    MasterViewHandler, NodeTable, ProtocolFactory)
from neo.services.storage.database import DatabaseError
from neo.services.storage.transactions import TransactionManager

#: The largest result of a conflict resolved here that goes back to the
#: client with the answer to its store (larger ones it loads if needed).
RESOLVED_RETURNED = 64 * 1024

#: How long a client's identification waits for the master to announce it.
IDENTIFY_WAIT = 10.0


def makeBackend(config, reactor):
    """The database backend the configuration names."""
    adapter = (config.adapter or "SQLite").lower()
    if adapter == "sqlite":
        from neo.services.storage.sqlite import SQLiteBackend
        return SQLiteBackend(config.database, config.cluster, reactor,
                             sync=config.sync)
    if adapter == "mysql":
        from neo.services.storage.mysql import MySQLBackend
        return MySQLBackend(config.database, config.cluster, reactor)
    raise DatabaseError(f"unknown adapter {config.adapter!r}")


class StorageNode(BaseNode, ClusterView):
    """
    @ivar operational: whether the master told us to serve clients.
    @ivar pt: the L{PartitionTable} as the master last sent it.
    """

    role = "storage"
    nodeType = NodeType.STORAGE

    def __init__(self, config, reactor, fatalCallback=None,
                 shutdownCallback=None):
        super().__init__(config.cluster, reactor, fatalCallback)
        self.config = config
        self.db = makeBackend(config, reactor)
        self.db.onBroken = self._databaseBroken
        self.txns = TransactionManager(self.db, self._notifyDeadlock,
                                       config.resolveConflicts)
        self.nodes = NodeTable()
        self.pt = None
        self.clusterState = None
        self.operational = False
        self.master = None
        self._clients = set()
        self._clientsByNid = {}
        self._nodeWaiters = []
        self._shutdownCallback = shutdownCallback
        listener = ListenerService(
            reactor, config.bind,
            ProtocolFactory(lambda proto: ClientHandler(self, proto),
                            self._peerLost),
            config.addressFile)
        listener.setName("listener")
        listener.setServiceParent(self)

    def startService(self):
        super().startService()
        d = self.db.reset() if self.config.reset else defer.succeed(None)
        d.addCallback(lambda _: self.db.open())
        d.addCallback(self._opened)
        d.addCallback(lambda _: self.getServiceNamed("listener").whenListening())
        d.addCallback(self._listening)
        d.addErrback(self._startFailed)
        self._started = d

    def _opened(self, db):
        nid = db.config.get("nid")
        self.nid = int(nid) if nid else None
        if self.config.reset:
            self.log.info("database {path} wiped", path=self.config.database)

    def _listening(self, address):
        link = MasterLinkService(self, self.reactor, self.config.masters)
        link.setName("master-link")
        link.setServiceParent(self)
        self.logRunning(address)

    def _startFailed(self, failure):
        if failure.check(DatabaseError):
            self.fatal(f"cannot use database {self.config.database}:"
                       f" {failure.value}")
        else:
            self.fatal(f"cannot start: {failure.getErrorMessage()}")

    def _databaseBroken(self, failure):
        self.fatal("the database failed to commit a transaction"
                   f" ({failure.getErrorMessage()}): transactions that"
                   " depend on it may be voted, so this node stops; restart"
                   " it once the database works (the cluster recovers what"
                   " was committed)")

    def stopService(self):
        self.operational = False
        # As in stopOperation.
        d = self.db.whenSettled()
        d.addCallback(lambda _: self._stopService())
        return d

    def _stopService(self):
        closed = [p.whenDisconnected() for p in self._clients]
        for proto in list(self._clients):
            proto.close()
        d = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: defer.DeferredList(closed))
        d.addBoth(lambda _: self.db.close())
        return d

    # -- The master link -----------------------------------------------------

    def makeMasterHandler(self, proto):
        return MasterHandler(self, proto)

    def masterIdentified(self, proto, answer):
        if answer["nodeType"] != NodeType.MASTER.value:
            raise ProtocolError("not connected to a master")
        self.master = proto
        if answer["yourNid"] != self.nid:
            self.nid = answer["yourNid"]
            self.db.setConfig("nid", self.nid)
        self.nodes = NodeTable()
        self.nodes.update(answer["nodes"] or [])
        self._nodesChanged()
        self.clusterState = answer["clusterState"]
        self.log.info("identified to the master as {me}",
                      me=formatNid(self.nid))

    def masterLost(self, proto):
        if proto is not self.master:
            return
        self.master = None
        self.log.warn("lost the master: stopping operation")
        self.stopOperation()

    def stopOperation(self):
        self.operational = False
        self.txns.clear()
        # A commit in the database is finished first: its client waits for
        # our notice (direct mode), which the master does not wait for.
        clients = list(self._clients)
        d = self.db.whenSettled()
        d.addCallback(lambda _: [client.close() for client in clients])

    def shutdown(self):
        self.log.info("the cluster is stopping")
        self.stopOperation()
        if self._shutdownCallback is not None:
            self._shutdownCallback()

    def partitionTableReceived(self, doc):
        super().partitionTableReceived(doc)
        self.db.savePartitionTable(doc)

    def partitionChangesReceived(self, ptid, replicas, changes):
        super().partitionChangesReceived(ptid, replicas, changes)
        self.db.savePartitionTable(self.pt.toJson())

    def nodesUpdated(self, rows):
        changed = super().nodesUpdated(rows)
        for entry in changed:
            if entry.nid == self.nid and entry.state is NodeState.UNKNOWN:
                self.fatal("the master forgot this node")
        self._nodesChanged()
        return changed

    def _nodesChanged(self):
        waiters, self._nodeWaiters = self._nodeWaiters, []
        for d in waiters:
            d.callback(None)

    # -- Clients -------------------------------------------------------------

    @defer.inlineCallbacks
    def identifyClient(self, proto, protocolVersion, cluster, nodeType, nid):
        if protocolVersion != c.PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version mismatch: the storage speaks version"
                f" {c.PROTOCOL_VERSION}, this node {protocolVersion}")
        if cluster != self.cluster:
            self.log.warn("refused a node of cluster {theirs!r}",
                          theirs=cluster)
            raise ProtocolError(
                f"wrong cluster name {cluster!r}: this storage belongs to"
                f" cluster {self.cluster!r}")
        if nodeType != NodeType.CLIENT.value:
            raise ProtocolError(f"a {nodeType} node cannot connect here")
        if not self.operational:
            raise NotReady("this storage node is not operational")
        # The master is the source of truth about who is in the cluster:
        # wait until it has announced this client to us.
        deadline = self.reactor.seconds() + IDENTIFY_WAIT
        while True:
            entry = self.nodes.get(nid)
            if entry is not None and entry.state is NodeState.RUNNING:
                break
            if self.reactor.seconds() >= deadline:
                raise NotReady(f"{formatNid(nid)} is unknown to the master")
            d = defer.Deferred()
            self._nodeWaiters.append(d)
            d.addTimeout(deadline - self.reactor.seconds(), self.reactor,
                         onTimeoutCancel=lambda *a: None)
            yield d
        proto.peer = entry
        self._clients.add(proto)
        self._clientsByNid[entry.nid] = proto
        return {"nodeType": NodeType.STORAGE.value, "nid": self.nid}

    def _peerLost(self, proto):
        self._clients.discard(proto)
        if proto.peer is not None and \
                self._clientsByNid.get(proto.peer.nid) is proto:
            del self._clientsByNid[proto.peer.nid]
        if proto.peer is not None and self.operational:
            self.txns.abortClient(proto.peer.nid)

    def notifyFinished(self, clientNid, ttid, tid):
        """Tell a client that its transaction is committed (the master
        finished it in direct mode)."""
        proto = self._clientsByNid.get(clientNid)
        if proto is not None:
            proto.notify(c.NotifyTransactionFinished, ttid=ttid, tid=tid)

    def _notifyDeadlock(self, txn, oid):
        proto = self._clientsByNid.get(txn.clientNid)
        if proto is not None:
            proto.notify(c.NotifyDeadlock, ttid=txn.ttid, oid=oid)

    def _table(self):
        if self.pt is None:
            raise NotReady("no partition table")
        return self.pt

    def partitionOf(self, oid):
        return self._table().partitionOf(oid)

    def tidPartition(self, tid):
        return self._table().tidPartition(tid)


class MasterHandler(MasterViewHandler):
    """What the storage node answers to the master."""

    def __init__(self, node: StorageNode, proto):
        super().__init__(node, proto)
        self.node = node
        self.db = node.db

    @c.AskRecovery.responder
    def askRecovery(self):
        doc = self.db.partitionTable() or {"ptid": 0, "replicas": 0,
                                           "rows": []}
        if self.node.pt is None and doc["ptid"]:
            self.node.pt = PartitionTable.fromJson(doc)
        return {"partitionTable": doc}

    @c.AskLockedTransactions.responder
    def askLockedTransactions(self):
        d = self.db.lockedTransactions()
        d.addCallback(lambda rows: {"transactions": [list(r) for r in rows]})
        return d

    @c.AskKnownTransaction.responder
    def askKnownTransaction(self, tid):
        d = self.db.knows(u64(tid), self._partitions())
        return d.addCallback(lambda known: {"known": known})

    def _partitions(self):
        if self.node.pt is None:
            raise ProtocolError("no partition table yet")
        return list(range(self.node.pt.partitions))

    @c.ValidateTransaction.responder
    def validateTransaction(self, ttid, tid, undo=False):
        if undo:
            d = self.db.undoTransaction(u64(ttid), u64(tid),
                                        self._partitions())
        else:
            d = self.db.lockTransaction(u64(ttid), u64(tid))
            d.addCallback(lambda _: self.db.unlockTransaction(u64(ttid)))
        return d.addCallback(lambda _: {})

    @c.AskLastIDs.responder
    def askLastIDs(self):
        def answer(ids):
            lastTid, lastOid = ids
            return {"lastTid": None if lastTid is None else p64(lastTid),
                    "lastOid": None if lastOid is None else p64(lastOid)}
        return self.db.lastIds().addCallback(answer)

    @c.StartOperation.responder
    @defer.inlineCallbacks
    def startOperation(self):
        if self.node.pt is None:
            raise ProtocolError("start operation without a partition table")
        self.node.txns.clear()
        # Locked transactions are committed; the others never will be.
        yield self.db.finishRecovery()
        _, lastOid = yield self.db.lastIds()
        self.node.txns.resetSerials(-1 if lastOid is None else lastOid)
        self.node.operational = True
        self.node.log.info("operational")
        return {}

    @c.StopOperation.responder
    def stopOperation(self):
        self.node.stopOperation()
        return {}

    @c.Shutdown.responder
    def shutdown(self):
        self.node.shutdown()
        return {}

    @c.AskLockInformation.responder
    def askLockInformation(self, ttid, tid, final=False, notify=False):
        clientNid = self.node.txns.clientOf(ttid) if notify else None
        d = self.node.txns.lock(ttid, tid, final)
        if clientNid is not None:
            # Direct mode: the client hears of the commit from us, once it
            # is in the database.
            d.addCallback(
                lambda _: self.node.notifyFinished(clientNid, ttid, tid))
        if final and clientNid is not None and not d.called:
            # The sole participant, in direct mode: the master may tell the
            # other clients at once, not a database step later.  The
            # transaction is decided here (should the database fail to
            # commit it, this node stops; a crash meanwhile loses a
            # transaction that no other node holds, and that its client
            # was not told of), and loads of its oids wait for the
            # database (read locks, which the unlock leaves until then).
            # Its client, who was promised durability, waits for the
            # notice above.
            d.addErrback(lambda f: self.node.log.failure(
                "commit of {ttid} failed", f, ttid=ttid))
            return {}
        # Otherwise, once the lock is durable.  With other participants,
        # the master unlocks the transaction when every participant
        # answered, and each then forgets its mark of the decision (the
        # ttrans row with the TID): should a participant be lost before it
        # wrote its lock, verification must still find that mark on
        # another, to commit the durable vote left on it, or to undo the
        # transaction if that participant's vote was in memory.
        return d.addCallback(lambda _: {})

    @c.NotifyTransactionWritten.responder
    def notifyTransactionWritten(self, ttid):
        self.node.txns.written(ttid)
        return {}

    @c.NotifyUnlockInformation.responder
    def notifyUnlockInformation(self, ttid):
        d = self.node.txns.unlock(ttid)
        d.addErrback(lambda f: self.node.log.failure(
            "unlock of {ttid} failed", f, ttid=u64(ttid)))
        return {}

    @c.AbortTransaction.responder
    def abortTransaction(self, ttid, finishing=False, keep=False):
        self.node.txns.abort(ttid)
        return {}

    @c.AskResolveTransaction.responder
    def askResolveTransaction(self, ttid):
        return {"committed": self.node.txns.resolve(ttid)}


class ClientHandler(amp.CommandLocator):
    """What the storage node answers to clients."""

    def __init__(self, node: StorageNode, proto):
        self.node = node
        self.proto = proto

    def _client(self):
        if self.proto.peer is None:
            raise ProtocolError("identify first")
        if not self.node.operational:
            raise NotReady("this storage node is not operational")
        return self.proto.peer

    @c.Identify.responder
    def identify(self, protocolVersion, cluster, nodeType, nid=None,
                 address=None):
        if self.proto.peer is not None:
            raise ProtocolError("this connection is already identified")
        return self.node.identifyClient(self.proto, protocolVersion, cluster,
                                        nodeType, nid)

    @c.Ping.responder
    def ping(self):
        return {}

    @c.StoreObject.responder
    def storeObject(self, ttid, oid, serial, compression, data):
        client = self._client()
        txns = self.node.txns
        txn = txns.get(ttid, client.nid, create=True)
        # Its answer cannot say that the node resolved the store.
        d = txns.track(txn, txns.store(txn, self.node.partitionOf(oid), oid,
                                       serial, compression, data,
                                       resolve=False))
        return d.addCallback(lambda conflict: {"conflict": conflict})

    @c.StoreObjects.responder
    def storeObjects(self, ttid, records):
        client = self._client()
        txn = self.node.txns.get(ttid, client.nid, create=True)
        return self._storeRecords(txn, records)

    def _storeRecords(self, txn, records):
        """
        Store a batch; returns the answer, or a Deferred of it when some
        stores wait (for a lock, or a serial from the database).
        """
        outcome = self._storeBatch(txn, records)
        if isinstance(outcome, defer.Deferred):
            return outcome.addCallback(lambda o: self._stored(txn, *o))
        return self._stored(txn, *outcome)

    def _storeBatch(self, txn, records):
        """
        Store a batch; returns C{(records, waiting, results)} (see
        L{TransactionManager.storeBatch}), or a Deferred of it, failed if
        a store failed: L{_stored} makes the answer of it.
        """
        records = c.unpackRecords(records)
        waiting, d = self.node.txns.storeBatch(txn, records,
                                               self.node.partitionOf)
        if d is None:
            return records, (), ()

        def done(results):
            for ok, result in results:
                if not ok:
                    result.raiseException()
            return records, waiting, results
        return d.addCallback(done)

    def _stored(self, txn, records, waiting, results):
        """The answer to a batch of stores that succeeded
        (L{_storeBatch})."""
        txns = self.node.txns
        conflicts, committed = [], []
        for (oid, _, _, _), (_, result) in zip(waiting, results):
            if result is not None:
                conflicts += (oid, result)
                hit = txns.records.get(oid, result)
                if hit is not None and hit[2] is not None:
                    committed.append((oid, result, hit[1], hit[2]))
        resolved, returned = [], None
        if txn.resolved:
            resolved = [oid for oid, _, _, _ in records if oid in txn.resolved]
            txn.resolved.difference_update(resolved)
            returned = [(oid,) + txn.stores[oid][1:] for oid in resolved
                        if oid in txn.stores
                        and len(txn.stores[oid][3]) <= RESOLVED_RETURNED]
            if txn.doomed:
                # Its client will retry: what it resolved against is
                # current, and saves it a load.
                for oid in resolved:
                    hit = oid in txn.stores and txns.records.get(
                        oid, txn.stores[oid][1])
                    if hit and hit[2] is not None:
                        committed.append((oid, hit[0], hit[1], hit[2]))
        unresolvable, txn.unresolvable = list(txn.unresolvable), set()
        return {"conflicts": conflicts,
                "committed": c.packRecords(committed) if committed else None,
                "resolved": resolved,
                "resolvedRecords": (c.packRecords(returned) if returned
                                    else None),
                "unresolvable": unresolvable or None}

    @c.CheckCurrentSerial.responder
    def checkCurrentSerial(self, ttid, oid, serial):
        client = self._client()
        txns = self.node.txns
        txn = txns.get(ttid, client.nid, create=True)
        d = txns.track(txn, txns.checkCurrent(
            txn, self.node.partitionOf(oid), oid, serial))
        return d.addCallback(lambda conflict: {"conflict": conflict})

    @c.RelockObject.responder
    def relockObject(self, ttid, oid):
        client = self._client()
        txns = self.node.txns
        txn = txns.get(ttid, client.nid)
        d = txns.track(txn, txns.relock(txn, oid))
        return d.addCallback(lambda conflict: {"conflict": conflict})

    @c.VoteTransaction.responder
    def voteTransaction(self, ttid, user=None, description=None,
                        extension=None, oids=None, pipelined=False,
                        partition=None, records=None, shared=False,
                        participants=None):
        client = self._client()
        if partition is None:
            partition = self.node.tidPartition(ttid)
        elif not 0 <= partition < self.node.pt.partitions:
            raise ProtocolError(f"no partition {partition}")
        if records is not None and not pipelined:
            raise ProtocolError("records go with a pipelined vote only")
        txns = self.node.txns
        txn = txns.get(ttid, client.nid, create=True)
        metadata = None
        if oids is not None:
            metadata = (user or b"", description or b"", extension or b"",
                        b"".join(oids))
        stored = None if records is None else self._storeBatch(txn, records)
        if not pipelined or (shared and participants is None) or \
                isinstance(stored, defer.Deferred) or txn.pending:
            return self._vote(txn, partition, metadata, pipelined, shared,
                              stored, participants)
        # The usual vote, answered at once: its stores took their locks
        # without waiting, and the vote stays in memory until the lock,
        # which commits it at once on a single participant.
        answer = {} if stored is None else self._stored(txn, *stored)
        if txns.settled(txn):
            return dict(answer, voted=False)
        txns.voteInMemory(txn, partition, metadata, participants,
                          soft=shared)
        return dict(answer, voted=True, released=txn.released)

    @defer.inlineCallbacks
    def _vote(self, txn, partition, metadata, pipelined, shared, stored,
              participants):
        txns = self.node.txns
        stored = yield stored
        conflicted = yield txns.settle(txn)
        if not (pipelined and conflicted):
            # A pipelined vote of a transaction on this node only becomes
            # durable with the lock, which commits it at once; so does one
            # with participants (written by the lock).  Shared, it may
            # still wait for locks elsewhere: it is soft
            # (L{TransactionManager.vote}).
            yield txns.vote(txn, partition, metadata,
                            durable=shared or not pipelined,
                            soft=pipelined and shared,
                            participants=participants)
        # What the stores resolved is told as of now, not as of their
        # end: a relock answered meanwhile may have dropped a resolved
        # store (a conflict), and its client must not hear of it as
        # resolved after that conflict.
        answer = {} if stored is None else self._stored(txn, *stored)
        if pipelined and conflicted:
            return dict(answer, voted=False)
        return dict(answer, voted=True, released=txn.released)

    @c.AbortTransaction.responder
    def abortTransaction(self, ttid, finishing=False, keep=False):
        self._client()
        self.node.txns.abort(ttid)
        return {}

    @c.FinishTransaction.responder
    def finishTransaction(self, ttid, tid, shared=False):
        client = self._client()
        finishing = self.node.txns.finish(ttid, client.nid, tid,
                                          final=not shared)
        if finishing is None:
            return {"committed": False}
        d, final = finishing

        def committed(_):
            self.node.master.notify(c.NotifyCommitted, ttid=ttid, tid=tid)
        if final:
            # Decided: the master may tell the other clients now, not a
            # database step later (loads of its oids wait for the database:
            # read locks), as when it locks a transaction itself.
            committed(None)
        else:
            # Other nodes take part: as for the master's lock, once it is
            # durable (L{MasterHandler.askLockInformation}).
            d.addCallback(committed)
        return d.addCallback(lambda _: {"committed": True})

    @c.AskObject.responder
    def askObject(self, oid, serial=None, before=None):
        self._client()
        txns = self.node.txns
        if not txns.readLocked(oid):
            # The hot path: answered at once from memory.
            hit = txns.records.get(oid, serial, before)
            if hit is not None:
                tid, compression, data = hit
                return {"serial": tid, "nextSerial": None,
                        "compression": compression, "data": data or b"",
                        "deleted": data is None}
        return self._loadObject(oid, serial, before)

    @c.AskObjects.responder
    def askObjects(self, oids, maxSize):
        self._client()
        if len(oids) > c.MAX_READ_AHEAD:
            raise ProtocolError(f"{len(oids)} oids to read ahead, more than"
                                f" {c.MAX_READ_AHEAD}")
        txns = self.node.txns
        records = txns.records
        found, unread = [], []
        for oid in oids:
            if txns.readLocked(oid):
                continue  # Being committed: not worth waiting for.
            hit = records.get(oid)
            if hit is None:
                unread.append(oid)
            else:
                tid, compression, data = hit
                if data is not None and len(data) <= maxSize:
                    found.append((oid, tid, compression, data))
        if not unread:
            return {"records": c.packRecords(found)}
        generation = records.generation
        d = self.node.db.loadLatest(
            [(self.node.partitionOf(oid), u64(oid)) for oid in unread],
            maxSize)

        def loaded(rows):
            current = records.generation == generation
            for oid, row in zip(unread, rows):
                if row is None:
                    continue
                tid, _, compression, data, deleted = row
                if current and (deleted or data is not None):
                    # Nothing committed meanwhile (as for a load).
                    records.put(oid, p64(tid), compression,
                                None if deleted else data)
                if data is not None and not deleted:
                    found.append((oid, p64(tid), compression, data))
            return {"records": c.packRecords(found)}
        return d.addCallback(loaded)

    @defer.inlineCallbacks
    def _loadObject(self, oid, serial, before):
        partition = self.node.partitionOf(oid)
        txns = self.node.txns
        yield txns.readable(oid)
        records = txns.records
        hit = records.get(oid, serial, before)
        if hit is not None:
            tid, compression, data = hit
            return {"serial": tid, "nextSerial": None,
                    "compression": compression, "data": data or b"",
                    "deleted": data is None}
        generation = records.generation
        tid, nextTid, compression, data, deleted = yield self.node.db.load(
            partition, u64(oid), None if serial is None else u64(serial),
            None if before is None else u64(before))
        if nextTid is None and records.generation == generation:
            # The current revision, and nothing committed meanwhile.
            records.put(oid, p64(tid), compression, None if deleted else data)
        return {"serial": p64(tid),
                "nextSerial": None if nextTid is None else p64(nextTid),
                "compression": compression, "data": data, "deleted": deleted}
