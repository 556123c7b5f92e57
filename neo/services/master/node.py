# -*- test-case-name: tests.unit.test_master_node -*-
"""
The primary master node.

It identifies every other node and gives it its node id, keeps node states
and tells every node about the others, recovers the partition table and
the last ids from the storage nodes, drives the cluster through
RECOVERING, VERIFYING and RUNNING, allocates OIDs and TIDs, and runs the
second phase of every commit.  It stores nothing: after a restart it learns
everything again from the storage nodes.
"""

from twisted.internet import defer
from twisted.protocols import amp

from neo.cluster.partition_table import PartitionTable
from neo.lib.config import formatAddress, parseAddress
from neo.lib.ids import TidAllocator, formatNid, makeNid, nidType, p64, u64
from neo.lib.states import ClusterState, NodeState, NodeType
from neo.protocols import commands as c
from neo.protocols.base import CLOSED
from neo.protocols.errors import (
    Denied, NotReady, ProtocolError, TransactionNotFound)
from neo.services.master.transactions import TransactionTable
from neo.services.node import (
    BaseNode, ListenerService, NodeEntry, NodeTable, ProtocolFactory)

#: The most OIDs a client may ask for at once.
MAX_NEW_OIDS = 10000
#: How long the master waits for connections to close when stopping.
SHUTDOWN_GRACE = 5.0


class MasterNode(BaseNode):
    """
    @ivar state: the L{ClusterState}.
    @ivar pt: the L{PartitionTable}, C{None} until one is recovered or made.
    @ivar lastTid: the last committed TID (integer).
    @ivar lastOid: the last OID handed out (integer).
    """

    role = "master"
    nodeType = NodeType.MASTER

    def __init__(self, config, reactor, fatalCallback=None,
                 shutdownCallback=None):
        super().__init__(config.cluster, reactor, fatalCallback)
        self.config = config
        self.nid = makeNid("MASTER", 1)
        self.nodes = NodeTable()
        self.me = self.nodes.add(NodeEntry(self.nid, NodeType.MASTER,
                                           config.bind, NodeState.RUNNING))
        self.state = ClusterState.RECOVERING
        self.pt = None
        self.lastTid = 0
        self.lastOid = 0
        self.tids = TidAllocator(reactor)
        self.transactions = TransactionTable()
        #: Transactions finished in direct mode (L{finish}) and not yet
        #: committed here, and the C{(pending, Deferred)} of those who wait
        #: for them (L{whenCommitted}).
        self._direct = set()
        self._directWaiters = []
        self.startAllowed = False
        self._recovered = set()
        self._generation = 0
        self._numbers = {}
        self._lastStorageNid = 0
        self._shutdownCallback = shutdownCallback
        self._stopping = None
        self._stateWaiters = {}
        listener = ListenerService(
            reactor, config.bind,
            ProtocolFactory(lambda proto: MasterHandler(self, proto),
                            self.connectionLost),
            config.addressFile)
        listener.setName("listener")
        listener.setServiceParent(self)

    def startService(self):
        super().startService()
        listener = self.getServiceNamed("listener")
        listener.whenListening().addCallbacks(self._listening, self._cannotListen)

    def _listening(self, address):
        self.me.address = address
        self.logRunning(address)

    def _cannotListen(self, failure):
        self.fatal(f"cannot listen on {formatAddress(self.config.bind)}:"
                   f" {failure.getErrorMessage()}")

    def stopService(self):
        self._generation += 1
        self.state = ClusterState.STOPPING
        for entry in self.nodes:
            if entry.proto is not None:
                entry.proto.close()
        return super().stopService()

    # -- Nodes --------------------------------------------------------------

    def _newNid(self, nodeType):
        if nodeType is NodeType.STORAGE:
            # Storage nodes keep their id forever: never give one twice,
            # even if its first owner left before being used.
            known = [e.nid for e in self.nodes.byType(NodeType.STORAGE)]
            if self.pt is not None:
                known.extend(self.pt.nids())
            self._lastStorageNid = max(known + [self._lastStorageNid]) + 1
            return self._lastStorageNid
        number = self._numbers.get(nodeType, 0) + 1
        self._numbers[nodeType] = number
        return makeNid(nodeType.value, number)

    def identify(self, proto, protocolVersion, cluster, nodeType, nid,
                 address):
        """Check and register a node that connected to us; see L{c.Identify}."""
        peer = proto.transport.getPeer() if proto.transport else None
        where = f"{peer.host}:{peer.port}" if peer else "?"
        if protocolVersion != c.PROTOCOL_VERSION:
            self.log.warn("refused a node from {where}: protocol version"
                          " {theirs}, ours is {ours}", where=where,
                          theirs=protocolVersion, ours=c.PROTOCOL_VERSION)
            raise ProtocolError(
                f"protocol version mismatch: the master speaks version"
                f" {c.PROTOCOL_VERSION}, this node {protocolVersion}")
        if cluster != self.cluster:
            self.log.warn("refused a {type} node from {where}: it belongs to"
                          " cluster {theirs!r}", type=nodeType, where=where,
                          theirs=cluster)
            raise ProtocolError(
                f"wrong cluster name {cluster!r}: this master runs cluster"
                f" {self.cluster!r}")
        if proto.peer is not None:
            raise ProtocolError("this connection is already identified")
        try:
            nodeType = NodeType(nodeType)
        except ValueError:
            raise ProtocolError(f"unknown node type {nodeType!r}")
        address = parseAddress(address) if address else None
        if nodeType is NodeType.STORAGE:
            if nid is not None and (nid <= 0 or nidType(nid) != "STORAGE"):
                raise ProtocolError(f"invalid storage node id {nid}")
            entry = self.nodes.get(nid) if nid is not None else None
            if entry is not None and entry.proto is not None:
                raise ProtocolError(f"{formatNid(nid)} is already connected")
            if self.state is ClusterState.STOPPING:
                raise NotReady("the cluster is stopping")
            if nid is None:
                nid = self._newNid(nodeType)
            self._lastStorageNid = max(self._lastStorageNid, nid)
            if (self.state is ClusterState.RUNNING and self.pt is not None
                    and nid in self.pt.nids()):
                state = NodeState.RUNNING
            else:
                state = NodeState.PENDING
        elif nodeType is NodeType.CLIENT:
            if self.state is not ClusterState.RUNNING:
                raise NotReady(f"the cluster is {self.state.value}")
            nid, state = self._newNid(nodeType), NodeState.RUNNING
        elif nodeType is NodeType.ADMIN:
            nid, state = self._newNid(nodeType), NodeState.RUNNING
        else:
            raise ProtocolError("this cluster runs a single master")
        entry = self.nodes.get(nid)
        if entry is None:
            entry = self.nodes.add(NodeEntry(nid, nodeType, address, state))
        else:
            entry.address, entry.state = address, state
        entry.proto = proto
        proto.peer = entry
        self.log.info("{peer} identified from {where}", peer=formatNid(nid),
                      where=where)
        self.broadcastNodes([entry])
        self.reactor.callLater(0, self._identified, entry)
        return {
            "nodeType": NodeType.MASTER.value, "nid": self.nid,
            "yourNid": nid, "clusterState": self.state,
            "nodes": self._rowsFor(nodeType),
            "partitionTable": self.pt.toJson() if self.pt else None,
        }

    def _identified(self, entry):
        if entry.proto is None or entry.nodeType is not NodeType.STORAGE:
            return
        if self.state is ClusterState.RECOVERING:
            self._askRecovery(entry)
        elif (self.state is ClusterState.RUNNING
              and entry.state is NodeState.RUNNING):
            # A storage node of the partition table came back.
            self._startStorage(entry)

    def _rowsFor(self, nodeType):
        if nodeType is NodeType.CLIENT:
            return [r for r in self.nodes.rows() if r[1] != "CLIENT"]
        return self.nodes.rows()

    def broadcastNodes(self, entries):
        rows = [e.row() for e in entries]
        clientRows = [r for r in rows if r[1] != "CLIENT"]
        for node in self.nodes:
            if node.proto is None:
                continue
            sent = clientRows if node.nodeType is NodeType.CLIENT else rows
            if sent:
                node.proto.notify(c.NotifyNodeInformation, nodes=sent)

    def _broadcast(self, command, types=None, **kwargs):
        for node in self.nodes:
            if node.proto is not None and (types is None
                                           or node.nodeType in types):
                node.proto.notify(command, **kwargs)

    def setState(self, state):
        if state is not self.state:
            self.log.info("cluster state {old} -> {new}", old=self.state.value,
                          new=state.value)
            self.state = state
            self._broadcast(c.NotifyClusterState, state=state)
            for d in self._stateWaiters.pop(state, ()):
                d.callback(state)

    def whenState(self, state) -> defer.Deferred:
        """A Deferred fired when the cluster next reaches C{state}."""
        if state is self.state:
            return defer.succeed(state)
        d = defer.Deferred()
        self._stateWaiters.setdefault(state, []).append(d)
        return d

    def _setNodeState(self, entry, state):
        if entry.state is not state:
            entry.state = state
            self.broadcastNodes([entry])

    def storages(self, state=None):
        return [e for e in self.nodes.byType(NodeType.STORAGE, state)
                if e.proto is not None]

    def runningNids(self):
        return {e.nid for e in self.storages(NodeState.RUNNING)}

    def connectionLost(self, proto):
        entry = proto.peer
        if entry is None or entry.proto is not proto or not self.running:
            return
        entry.proto = None
        if self._stopping is False:
            return  # Shutdown was sent: nodes are expected to leave.
        self.log.info("{peer} disconnected", peer=formatNid(entry.nid))
        if entry.nodeType is NodeType.STORAGE:
            self._storageLost(entry)
        else:
            entry.state = NodeState.UNKNOWN
            self.nodes.remove(entry.nid)
            self.broadcastNodes([entry])
            if entry.nodeType is NodeType.CLIENT:
                self._clientLost(entry)
        self._checkStopped()

    def _storageLost(self, entry):
        wasRunning = entry.state is NodeState.RUNNING
        self._recovered.discard(entry.nid)
        if self.pt is not None and entry.nid in self.pt.nids():
            self._setNodeState(entry, NodeState.DOWN)
        else:
            entry.state = NodeState.UNKNOWN
            self.nodes.remove(entry.nid)
            self.broadcastNodes([entry])
        if self.state is ClusterState.VERIFYING and wasRunning:
            self.enterRecovery(f"{formatNid(entry.nid)} lost during"
                               " verification")
        elif self.state in (ClusterState.RUNNING, ClusterState.STOPPING) \
                and wasRunning:
            if not self.pt.operational(self.runningNids()):
                self.enterRecovery(f"{formatNid(entry.nid)} lost and some"
                                   " partitions have no readable copy left")
                return
            self._sendPartitionChanges(self.pt.outdate(self.runningNids()))
            self._committed(self.transactions.nodeLost(entry.nid))
            self._written()

    def _clientLost(self, entry):
        for txn in self.transactions:
            if txn.clientNid == entry.nid:
                if txn.tid is None:
                    self._abort(txn)
                elif txn.reserved:
                    self._resolve(txn)

    # -- Recovery -----------------------------------------------------------

    def _askRecovery(self, entry):
        generation = self._generation
        d = entry.proto.ask(c.AskRecovery)

        def recovered(answer):
            if generation != self._generation or entry.proto is None:
                return
            doc = answer["partitionTable"]
            if doc["ptid"] and (self.pt is None or doc["ptid"] > self.pt.ptid):
                self.pt = PartitionTable.fromJson(doc)
                self.log.info("recovered partition table {ptid} from {peer}",
                              ptid=doc["ptid"], peer=formatNid(entry.nid))
            self._recovered.add(entry.nid)
            self.checkStart()

        d.addCallbacks(recovered, self._askFailed, errbackArgs=(entry,))

    def _askFailed(self, failure, entry):
        if not failure.check(*CLOSED):
            self.log.failure("request to {peer} failed", failure,
                             peer=formatNid(entry.nid))
            if entry.proto is not None:
                entry.proto.close()

    def checkStart(self) -> str:
        """
        Start the cluster if it may: returns why it does not otherwise.
        """
        if self.state is not ClusterState.RECOVERING:
            return f"the cluster is {self.state.value}"
        pending = [e for e in self.storages() if e.nid in self._recovered]
        if len(pending) != len(self.storages()):
            return "waiting for storage nodes to answer recovery"
        ready = {e.nid for e in pending}
        if self.pt is None:
            if not (self.startAllowed and pending):
                return "no partition table yet: waiting for neoctl start"
            self.pt = PartitionTable(self.config.partitions,
                                     self.config.replicas, self.config.stripe)
            self.pt.make(ready)
            self.log.info("new partition table over {count} storage nodes"
                          " ({partitions} partitions, stripes of {stripe}"
                          " oids)", count=len(ready),
                          partitions=self.pt.partitions,
                          stripe=self.pt.stripe)
        else:
            if self.startAllowed:
                if not self.pt.operational(ready):
                    return ("some partitions have no readable copy on the"
                            " connected storage nodes")
            else:
                missing = self.pt.readableNids() - ready
                if missing:
                    return ("waiting for storage nodes " + ", ".join(
                        formatNid(n) for n in sorted(missing)))
            self._sendPartitionChanges(self.pt.outdate(ready))
        self._verify(
            [e for e in pending if e.nid in self.pt.nids()])
        return "starting"

    def enterRecovery(self, reason):
        self.log.warn("cluster not operational: {reason}", reason=reason)
        self._generation += 1
        self._recovered = set()
        for txn in self.transactions.clear():
            if not txn.finished.called:
                txn.finished.errback(NotReady("the cluster stopped operation"))
        self._directDone(list(self._direct))
        self.setState(ClusterState.RECOVERING)
        for entry in self.nodes:
            if entry.proto is None:
                continue
            if entry.nodeType is NodeType.STORAGE:
                entry.proto.notify(c.StopOperation)
                entry.state = NodeState.PENDING
                self.broadcastNodes([entry])
                self.reactor.callLater(0, self._identified, entry)
            elif entry.nodeType is NodeType.CLIENT:
                entry.proto.close()
        # Automatic restart once the storage nodes are back.
        self.startAllowed = self.startAllowed or self.pt is not None

    # -- Verification -------------------------------------------------------

    @defer.inlineCallbacks
    def _verify(self, storages):
        generation = self._generation
        self.setState(ClusterState.VERIFYING)
        for entry in storages:
            self._setNodeState(entry, NodeState.RUNNING)
        self._broadcast(c.SendPartitionTable, partitionTable=self.pt.toJson())
        try:
            answers = yield self._askAll(storages, c.AskLockedTransactions)
            holders, tids, participants = {}, {}, {}
            for entry, answer in zip(storages, answers):
                for row in answer["transactions"]:
                    ttid, tid = row[:2]
                    holders.setdefault(ttid, []).append(entry)
                    if tid is not None:
                        tids[ttid] = tid
                    if len(row) > 2 and row[2] is not None:
                        participants[ttid] = set(row[2])
            undone = yield self._unwritten(storages, holders, tids,
                                           participants)
            validations = [
                entry.proto.ask(c.ValidateTransaction, ttid=p64(ttid),
                                tid=p64(tid), undo=ttid in undone or None)
                for ttid, tid in sorted(tids.items())
                for entry in holders[ttid]]
            if validations:
                self.log.info("validating {count} interrupted transactions"
                              " ({undone} undone)", count=len(tids),
                              undone=len(undone))
            yield defer.gatherResults(validations, consumeErrors=True)
            answers = yield self._askAll(storages, c.AskLastIDs)
            for answer in answers:
                if answer["lastTid"] is not None:
                    self.lastTid = max(self.lastTid, u64(answer["lastTid"]))
                if answer["lastOid"] is not None:
                    self.lastOid = max(self.lastOid, u64(answer["lastOid"]))
            self.tids.observe(self.lastTid)
            yield self._askAll(storages, c.StartOperation)
        except Exception as e:
            if generation == self._generation:
                self.enterRecovery(f"verification failed: {e}")
            return
        if generation == self._generation:
            self.setState(ClusterState.RUNNING)

    @defer.inlineCallbacks
    def _unwritten(self, storages, holders, tids, participants):
        """
        The ttids of the transactions locked without a durable vote
        (L{c.AskLockedTransactions}) that a participant never wrote: the
        master never unlocked them (each participant had to write its part
        first), and their clients were not told they committed.  A
        participant that has no ttrans row of one either wrote it, and was
        unlocked (it knows the TID), or never did.  A participant that is
        not here cannot tell: its part is assumed written (with no replica
        the cluster does not start without it).  Nor can one with a cell
        out of date: it may have been lost while the transaction committed
        without it.
        """
        outdated = {nid for row in self.pt.rows
                    for nid, state in row.items() if not state.readable}
        byNid = {entry.nid: entry for entry in storages
                 if entry.nid not in outdated}
        undone = set()
        for ttid, nids in sorted(participants.items()):
            tid = tids.get(ttid)
            if tid is None:
                continue
            lacking = sorted(nids - {entry.nid for entry in holders[ttid]})
            asked = [byNid[nid] for nid in lacking if nid in byNid]
            if not asked:
                continue
            answers = yield defer.gatherResults(
                [entry.proto.ask(c.AskKnownTransaction, tid=p64(tid))
                 for entry in asked], consumeErrors=True)
            if not any(answer["known"] for answer in answers):
                self.log.warn(
                    "transaction {tid:#x} is undone: {peers} never wrote"
                    " it", tid=tid, peers=", ".join(
                        formatNid(entry.nid) for entry in asked))
                undone.add(ttid)
        return undone

    def _askAll(self, entries, command, **kwargs):
        for entry in entries:
            if entry.proto is None:
                return defer.fail(NotReady(f"{formatNid(entry.nid)} lost"))
        d = defer.gatherResults([e.proto.ask(command, **kwargs)
                                 for e in entries], consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure)
        return d

    def _startStorage(self, entry):
        """A storage node of the partition table joined a running cluster."""
        entry.proto.notify(c.SendPartitionTable,
                           partitionTable=self.pt.toJson())
        d = entry.proto.ask(c.StartOperation)
        d.addErrback(self._askFailed, entry)

    def _sendPartitionChanges(self, changes):
        if changes:
            self._broadcast(
                c.NotifyPartitionChanges, ptid=self.pt.ptid,
                replicas=self.pt.replicas,
                changes=[[p, nid, state.value] for p, nid, state in changes])

    # -- Transactions -------------------------------------------------------

    def begin(self, entry, tid=None) -> bytes:
        if self.state is not ClusterState.RUNNING:
            raise NotReady(f"the cluster is {self.state.value}")
        if tid is None:
            return p64(self.transactions.begin(self.tids.next(),
                                               entry.nid).ttid)
        tid = u64(tid)
        last = max(self.lastTid, self.transactions.lastQueued())
        if tid <= last:
            raise Denied(f"imposed TID {tid:#x} is not after the last"
                         f" committed one {last:#x}")
        if self.transactions.get(tid) is not None:
            raise Denied(f"TID {tid:#x} is the temporary TID of a"
                         " transaction in progress")
        # Every TID handed out from now on is greater, and the transaction
        # takes its place in the commit queue now: nothing commits after
        # it before it is finished or aborted.
        self.tids.observe(tid)
        self.transactions.reserve(self.transactions.begin(tid, entry.nid))
        return p64(tid)

    def newOids(self, count) -> list:
        if not 0 < count <= MAX_NEW_OIDS:
            raise Denied(f"ask between 1 and {MAX_NEW_OIDS} OIDs")
        first = self.lastOid + 1
        self.lastOid += count
        return [p64(oid) for oid in range(first, self.lastOid + 1)]

    def _finishing(self, entry, ttid, oids, checked, voted, metaPartition):
        """
        The checks of a finish, and what it involves: returns the
        transaction, its metadata partition, the storage nids that take
        part, and the partitions that none of them holds.
        """
        txn = self.transactions.get(u64(ttid))
        if txn is None or txn.clientNid != entry.nid or txn.tid is not None:
            raise TransactionNotFound(
                f"transaction {u64(ttid):#x} is not in progress")
        if self.state is not ClusterState.RUNNING and \
                self.state is not ClusterState.STOPPING:
            raise NotReady(f"the cluster is {self.state.value}")
        pt, running = self.pt, self.runningNids()
        if metaPartition is None:
            metaPartition = pt.tidPartition(txn.ttid)
        elif not 0 <= metaPartition < pt.partitions or (
                txn.imposed and metaPartition != pt.tidPartition(txn.ttid)):
            raise Denied(f"the metadata of transaction {u64(ttid):#x}"
                         f" cannot be in partition {metaPartition}")
        partitions = {pt.partitionOf(o) for o in oids}
        partitions.update(pt.partitionOf(o) for o in checked)
        partitions.add(metaPartition)
        involved, missing = set(), []
        for partition in sorted(partitions):
            nids = set(pt.writable(partition, running))
            if voted is not None:
                # A node the client did not vote on has nothing to lock;
                # and a node voted on as the sole participant kept its
                # vote in memory: it must get the final lock, which
                # commits at once.
                nids.intersection_update(voted)
            if not nids:
                missing.append(partition)
            involved |= nids
        return txn, metaPartition, involved, missing

    def _assignTid(self, txn, oids, metaPartition, involved) -> int:
        """Give a transaction its final TID: it enters the commit queue."""
        if txn.imposed:
            tid = txn.ttid
        else:
            tid = self.tids.next(self.pt.partitions, metaPartition)
        if oids:
            self.lastOid = max(self.lastOid, max(u64(o) for o in oids))
        self.transactions.finishing(txn, tid, oids, involved)
        # A single participant locks and unlocks in one step.
        if len(involved) == 1:
            txn.unlocked = involved
        return tid

    def reserve(self, entry, ttid, oids, checked, voted, beginNext=False,
                metaPartition=None):
        """
        A transaction is being voted: if the nodes voted on are its
        participants and no transaction is being finished, give it its
        final TID now, for its client to finish it at those nodes (see
        L{c.ReserveTransaction}).
        """
        txn, metaPartition, involved, missing = self._finishing(
            entry, ttid, oids, checked, voted, metaPartition)
        answer = {"tid": None}
        if (not txn.imposed and not missing
                and involved == set(voted) and not self.transactions.queue
                and self.state is ClusterState.RUNNING):
            tid = self._assignTid(txn, oids, metaPartition, involved)
            txn.reserved = True
            self._heardFromNode(txn)
            answer["tid"] = p64(tid)
        return self._beginNext(answer, entry) if beginNext else answer

    def finish(self, entry, ttid, oids, checked, voted=None,
               beginNext=False, metaPartition=None, direct=False):
        txn = self.transactions.get(u64(ttid))
        if txn is not None and txn.reserved and not txn.resolving and \
                txn.clientNid == entry.nid:
            # Its node refused the TID reserved: finished again.
            self._unreserve(txn)
        txn, metaPartition, involved, missing = self._finishing(
            entry, ttid, oids, checked, voted, metaPartition)
        if missing:
            self._abort(txn)
            raise NotReady("the storage nodes the transaction was voted on"
                           " were lost (partitions"
                           f" {', '.join(map(str, missing))})")
        tid = self._assignTid(txn, oids, metaPartition, involved)
        final = len(involved) == 1
        # Direct mode: the participants tell the client, one message sooner
        # than we could.  Only when every transaction before is committed:
        # the client was sent their invalidations, before this answer; the
        # others hear of this one from us, and a sync waits for it
        # (whenCommitted).  The client waits for the nodes it voted on: all
        # of them must take part.
        direct = bool(direct and voted is not None
                      and involved == set(voted)
                      and self.transactions.queue[0] is txn)
        if direct:
            self._heardFromNode(txn)
        for nid in involved:
            self._askLock(txn, nid, self.nodes.get(nid).proto, final=final,
                          notify=direct or None)
        if direct:
            answer = {"tid": p64(tid), "direct": True}
            return self._beginNext(answer, entry) if beginNext else answer
        if beginNext:
            return txn.finished.addCallback(self._beginNext, entry)
        return txn.finished

    def _askLock(self, txn, nid, proto, **kwargs):
        """Ask node C{nid} to lock C{txn} under its final TID."""
        d = proto.ask(c.AskLockInformation, ttid=p64(txn.ttid),
                      tid=p64(txn.tid), **kwargs)
        d.addCallbacks(self._locked, self._lockFailed,
                       callbackArgs=(txn, nid), errbackArgs=(txn, nid))

    def _heardFromNode(self, txn):
        """
        The client of C{txn} hears of its commit from its storage node, and
        may tell others before we know: syncs wait for it (L{whenCommitted}).
        Nobody waits for it here.
        """
        self._direct.add(txn)
        txn.finished.addErrback(lambda _: None)

    def _beginNext(self, answer, entry):
        """Begin the client's next transaction along with the answer."""
        if self.state is ClusterState.RUNNING and entry.proto is not None:
            answer = dict(answer, nextTtid=self.begin(entry))
        return answer

    def _locked(self, _, txn, nid):
        self._committed(self.transactions.locked(txn.ttid, nid))
        self._written()

    def _written(self):
        """
        Tell the nodes of the transactions that every participant locked,
        but that an earlier TID keeps from being committed: a node that
        kept its vote in memory keeps its write locks until then, and the
        transaction holding that earlier TID (reserved with its votes) may
        wait for one of them.
        """
        for txn in self.transactions.writtenBehind():
            for nid in txn.involved - txn.unlocked:
                node = self.nodes.get(nid)
                if node is not None and node.proto is not None:
                    node.proto.notify(c.NotifyTransactionWritten,
                                      ttid=p64(txn.ttid))

    def committed(self, entry, ttid, tid):
        """A storage node committed a transaction reserved for its client
        to finish there."""
        txn = self.transactions.get(u64(ttid))
        if txn is None or not txn.reserved or txn.tid != u64(tid) \
                or entry.nid not in txn.involved:
            self.log.warn("{peer} committed {ttid:#x} under {tid:#x}, which"
                          " was not reserved for it", peer=formatNid(
                              entry.nid), ttid=u64(ttid), tid=u64(tid))
            return
        self._locked(None, txn, entry.nid)

    def _resolve(self, txn):
        """
        The client of a reserved transaction was lost, or gave it up after
        asking its nodes to finish it, or the cluster is stopping: it
        commits if one of its nodes was asked to finish it (the others,
        asked at the same time, refuse the client from then on); else it
        is aborted.
        """
        if txn.resolving:
            return
        txn.resolving = True
        nids = sorted(txn.involved)
        protos = []
        for nid in nids:
            node = self.nodes.get(nid)
            if node is None or node.proto is None:
                return  # Lost: the cluster is recovering (_storageLost).
            protos.append(node.proto)

        def resolved(answers):
            for nid, (ok, failure) in zip(nids, answers):
                if not ok:
                    self._lockFailed(failure, txn, nid)
            if self.transactions.get(txn.ttid) is not txn:
                return  # Committed (NotifyCommitted came first) or cleared.
            committed = [ok and answer["committed"] for ok, answer in answers]
            if not any(committed):
                if all(ok for ok, _ in answers):
                    self._abort(txn)
                # Else a node was lost, which may have committed it: the
                # cluster verifies what they hold.
                return
            if len(nids) == 1:
                self._locked(None, txn, nids[0])
                return
            # Those that committed tell us once their lock is durable
            # (NotifyCommitted); the others lock the votes they kept.
            for nid, proto, (ok, _), done in zip(nids, protos, answers,
                                                 committed):
                if ok and not done:
                    self._askLock(txn, nid, proto)

        d = defer.DeferredList(
            [proto.ask(c.AskResolveTransaction, ttid=p64(txn.ttid))
             for proto in protos], consumeErrors=True)
        d.addCallback(resolved)

    def _lockFailed(self, failure, txn, nid):
        # A lost connection is handled by _storageLost.  Any other failure
        # means the node cannot commit: drop it, so that the commit goes on
        # without it or the cluster stops (and verification decides).
        if not failure.check(*CLOSED):
            self.log.failure("{peer} failed to lock {ttid}", failure,
                             peer=formatNid(nid), ttid=txn.ttid)
            node = self.nodes.get(nid)
            if node is not None and node.proto is not None:
                node.proto.close()

    def _committed(self, txns):
        for txn in txns:
            tid = p64(txn.tid)
            self.lastTid = max(self.lastTid, txn.tid)
            for node in self.nodes.byType(NodeType.CLIENT):
                if node.proto is not None and node.nid != txn.clientNid \
                        and txn.oids:
                    node.proto.notify(c.InvalidateObjects, tid=tid,
                                      oids=txn.oids)
            for nid in txn.involved - txn.unlocked:
                node = self.nodes.get(nid)
                if node is not None and node.proto is not None:
                    node.proto.notify(c.NotifyUnlockInformation,
                                      ttid=p64(txn.ttid))
            txn.finished.callback({"tid": tid})
        if txns:
            self._directDone(txns)
            self._checkStopped()

    def whenCommitted(self):
        """
        A Deferred fired once every transaction finished in direct mode so
        far is committed here (its client may know it already, from its
        storage node, and tell others); None if there is none.
        """
        if not self._direct:
            return None
        d = defer.Deferred()
        self._directWaiters.append((set(self._direct), d))
        return d

    def _directDone(self, txns):
        if not self._direct:
            return
        self._direct.difference_update(txns)
        waiting, self._directWaiters = self._directWaiters, []
        for pending, d in waiting:
            pending.difference_update(txns)
            if pending:
                self._directWaiters.append((pending, d))
            else:
                d.callback(None)

    def abort(self, entry, ttid, finishing=False, keep=False):
        txn = self.transactions.get(u64(ttid))
        if txn is None or txn.clientNid != entry.nid:
            return
        if keep:
            if txn.reserved and not txn.resolving:
                self._unreserve(txn)
        elif txn.tid is None:
            self._abort(txn)
        elif txn.reserved:
            if finishing:
                self._resolve(txn)  # The node may have committed it.
            else:
                self._abort(txn)

    def _unreserve(self, txn):
        """A reserved TID given back: the transaction is only begun."""
        committed = self.transactions.unreserve(txn)
        self._directDone([txn])
        self._committed(committed)

    def _abort(self, txn):
        committed = self.transactions.remove(txn.ttid)
        self._directDone([txn])  # a reserved one: syncs wait no more
        for node in self.storages(NodeState.RUNNING):
            node.proto.notify(c.AbortTransaction, ttid=p64(txn.ttid))
        # An imposed TID aborted: what queued behind it may commit.
        self._committed(committed)
        self._checkStopped()

    # -- Administration -----------------------------------------------------

    def setClusterState(self, state) -> str:
        if state is ClusterState.VERIFYING:
            if self.state is not ClusterState.RECOVERING:
                raise Denied(f"the cluster is already {self.state.value}")
            if not self.storages():
                raise Denied("no storage node is connected")
            self.startAllowed = True
            return self.checkStart()
        if state is ClusterState.STOPPING:
            self.stopCluster()
            return "stopping"
        raise Denied(f"the cluster state cannot be set to {state.value}")

    def stopCluster(self):
        if self._stopping is not None:
            return
        self._stopping = True
        self.setState(ClusterState.STOPPING)
        # Transactions not yet in their second phase are aborted; those
        # being finished are waited for; those whose TID was reserved are
        # what their node says (finished there, or aborted).
        for txn in self.transactions:
            if txn.tid is None:
                self._abort(txn)
            elif txn.reserved:
                self._resolve(txn)
        self._checkStopped()

    def _checkStopped(self):
        if self._stopping is not True or len(self.transactions):
            return
        self._stopping = False
        self.log.info("no transaction left: shutting the cluster down")
        # Next turn: the answers of this one (such as the admin's request
        # that stopped the cluster) go out before the connections close.
        self.reactor.callLater(0, self._shutdownNodes)

    def _shutdownNodes(self):
        closed = []
        for node in self.nodes:
            if node.proto is not None:
                node.proto.notify(c.Shutdown)
                closed.append(node.proto.whenDisconnected())
                node.proto.close()
        d = defer.DeferredList(closed, consumeErrors=True)
        d.addTimeout(SHUTDOWN_GRACE, self.reactor)
        d.addBoth(lambda _: self._shutdownCallback and self._shutdownCallback())



class MasterHandler(amp.CommandLocator):
    """The master's responders, for one connection."""

    def __init__(self, node: MasterNode, proto):
        self.node = node
        self.proto = proto

    def _peer(self, *types):
        entry = self.proto.peer
        if entry is None:
            raise ProtocolError("identify first")
        if types and entry.nodeType not in types:
            raise ProtocolError(f"not a command for a {entry.nodeType.value}"
                                " node")
        return entry

    @c.Identify.responder
    def identify(self, protocolVersion, cluster, nodeType, nid=None,
                 address=None):
        return self.node.identify(self.proto, protocolVersion, cluster,
                                  nodeType, nid, address)

    def _synced(self, answer):
        """C{answer}, once a client's sync would see every commit its
        sender may know of (L{MasterNode.whenCommitted})."""
        entry = self.proto.peer
        if entry is not None and entry.nodeType is NodeType.CLIENT:
            d = self.node.whenCommitted()
            if d is not None:
                return d.addCallback(lambda _: answer())
        return answer()

    @c.Ping.responder
    def ping(self):
        return self._synced(dict)

    @c.AskBeginTransaction.responder
    def askBeginTransaction(self, tid=None):
        return {"ttid": self.node.begin(self._peer(NodeType.CLIENT), tid)}

    @c.AskNewOIDs.responder
    def askNewOIDs(self, count):
        self._peer(NodeType.CLIENT)
        return {"oids": self.node.newOids(count)}

    @c.AskFinishTransaction.responder
    def askFinishTransaction(self, ttid, oids, checked, voted=None,
                             beginNext=False, metaPartition=None,
                             direct=False):
        return self.node.finish(self._peer(NodeType.CLIENT), ttid, oids,
                                checked, voted, beginNext, metaPartition,
                                direct)

    @c.ReserveTransaction.responder
    def reserveTransaction(self, ttid, oids, checked, voted, beginNext=False,
                           metaPartition=None):
        return self.node.reserve(self._peer(NodeType.CLIENT), ttid, oids,
                                 checked, voted, beginNext, metaPartition)

    @c.AbortTransaction.responder
    def abortTransaction(self, ttid, finishing=False, keep=False):
        self.node.abort(self._peer(NodeType.CLIENT), ttid, finishing, keep)
        return {}

    @c.NotifyCommitted.responder
    def notifyCommitted(self, ttid, tid):
        self.node.committed(self._peer(NodeType.STORAGE), ttid, tid)
        return {}

    @c.AskLastTransaction.responder
    def askLastTransaction(self):
        self._peer()

        def answer():
            lastTid = self.node.lastTid
            return {"tid": p64(lastTid) if lastTid else None}
        return self._synced(answer)

    @c.SetClusterState.responder
    def setClusterState(self, state):
        self._peer(NodeType.ADMIN)
        return {"message": self.node.setClusterState(state)}

    @c.AskClusterIDs.responder
    def askClusterIDs(self):
        self._peer(NodeType.ADMIN)
        node = self.node
        return {"lastOid": p64(node.lastOid) if node.lastOid else None,
                "lastTid": p64(node.lastTid) if node.lastTid else None,
                "ptid": node.pt.ptid if node.pt else 0}
