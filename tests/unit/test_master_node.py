"""
Tests for L{neo.services.master.node}: the master's state machine, driven
by fake storage, client and admin nodes over in-memory connections.

Nothing here uses a socket, a thread or a sleep: every connection is an
L{iosim} pump, time is a L{MemoryReactorClock}, and L{MasterTestCase.settle}
runs the master's C{callLater(0, ...)} follow-ups and moves the bytes until
nothing moves any more.
"""

import dataclasses

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from neo.lib.ids import formatNid, makeNid, nidType, p64, u64
from neo.lib.states import ClusterState, NodeState
from neo.protocols import commands as c
from neo.protocols.base import NodeProtocol
from neo.protocols.errors import (
    Denied, NotReady, ProtocolError, TransactionNotFound)
from neo.services.master.config import MasterConfig
from neo.services.master.node import (
    SHUTDOWN_GRACE, MasterHandler, MasterNode)
from tests.unit.helpers import settled

PARTITIONS = 4
#: Stripes of one oid: consecutive oids on alternate nodes (L{holder}).
CONFIG = MasterConfig(cluster="test", masters=(), bind=("127.0.0.1", 0),
                      partitions=PARTITIONS, replicas=0, stripe=1)
S1, S2, S3 = (makeNid("STORAGE", n) for n in (1, 2, 3))
#: What a storage node without a partition table answers to AskRecovery.
NO_TABLE = {"ptid": 0, "replicas": 0, "rows": []}


def alternating(ptid):
    """A table of 4 partitions, the even ones on S1 and the odd ones on S2
    (what the master makes over S1 and S2), with stripes of one oid."""
    return {"ptid": ptid, "replicas": 0, "stripe": 1,
            "rows": [[[S1 if p % 2 == 0 else S2, "UP_TO_DATE"]]
                     for p in range(PARTITIONS)]}


def holder(oidOrTid):
    """The storage node holding an oid's or a tid's partition in an
    L{alternating} table."""
    if isinstance(oidOrTid, bytes):
        oidOrTid = u64(oidOrTid)
    return S1 if oidOrTid % PARTITIONS % 2 == 0 else S2


def onStorage(nid, count, start=1):
    """C{count} oids from C{start} on whose partitions are on C{nid}."""
    oids = []
    n = start
    while len(oids) < count:
        if holder(n) == nid:
            oids.append(p64(n))
        n += 1
    return oids


def other(nid):
    return S2 if nid == S1 else S1




# -- Fake nodes ---------------------------------------------------------------

class FakeNode(amp.CommandLocator):
    """
    Plays a node connected to the master (an admin as it is): records
    every notification the master sends.

    @ivar received: C{(command name, arguments)} in arrival order.
    """

    def __init__(self):
        self.received = []

    def record(self, name, **kwargs):
        self.received.append((name, kwargs))
        return {}

    def named(self, name) -> list:
        """The arguments of every C{name} received, in order."""
        return [kwargs for n, kwargs in self.received if n == name]

    def names(self) -> list:
        return [n for n, _ in self.received]

    def states(self) -> list:
        """The cluster states announced to this node, in order."""
        return [kw["state"] for kw in self.named("NotifyClusterState")]

    def rows(self) -> list:
        """Every node row announced to this node, in order."""
        return [row for kw in self.named("NotifyNodeInformation")
                for row in kw["nodes"]]

    @c.Ping.responder
    def ping(self):
        return {}

    @c.NotifyNodeInformation.responder
    def notifyNodeInformation(self, nodes):
        return self.record("NotifyNodeInformation", nodes=nodes)

    @c.NotifyClusterState.responder
    def notifyClusterState(self, state):
        return self.record("NotifyClusterState", state=state)

    @c.SendPartitionTable.responder
    def sendPartitionTable(self, partitionTable):
        return self.record("SendPartitionTable", partitionTable=partitionTable)

    @c.NotifyPartitionChanges.responder
    def notifyPartitionChanges(self, ptid, replicas, changes):
        return self.record("NotifyPartitionChanges", ptid=ptid,
                           replicas=replicas, changes=changes)

    @c.Shutdown.responder
    def shutdown(self):
        return self.record("Shutdown")


class FakeClient(FakeNode):
    """Plays a client node: also records invalidations."""

    @c.InvalidateObjects.responder
    def invalidateObjects(self, tid, oids):
        return self.record("InvalidateObjects", tid=tid, oids=oids)


class FakeStorage(FakeNode):
    """
    Plays a storage node.

    @ivar pt: the partition table document answered to AskRecovery; the
        one last received with SendPartitionTable replaces it, as a real
        storage node keeps it in its database.
    @ivar locked: C{[[ttid, tid or None], ...]} answered to
        AskLockedTransactions.
    @ivar holdVerification: when true, AskLockedTransactions is never
        answered.
    @ivar holdLocks: when true, AskLockInformation is answered only when
        the test fires the Deferred kept in C{held[ttid]}.
    """

    def __init__(self, pt=None, locked=(), lastTid=None, lastOid=None,
                 holdLocks=False):
        super().__init__()
        self.pt = pt
        self.locked = [list(t) for t in locked]
        self.lastTid = lastTid
        self.lastOid = lastOid
        self.holdLocks = holdLocks
        self.held = {}
        self.finals = []
        self.notifies = []
        self.holdVerification = False
        #: TIDs answered as known to AskKnownTransaction.
        self.known = set()

    def release(self, ttid):
        """Answer the held AskLockInformation of C{ttid}."""
        self.held.pop(ttid).callback({})

    @c.SendPartitionTable.responder
    def sendPartitionTable(self, partitionTable):
        self.pt = partitionTable
        return self.record("SendPartitionTable", partitionTable=partitionTable)

    @c.AskRecovery.responder
    def askRecovery(self):
        self.record("AskRecovery")
        return {"partitionTable": self.pt or NO_TABLE}

    @c.AskLockedTransactions.responder
    def askLockedTransactions(self):
        self.record("AskLockedTransactions")
        if self.holdVerification:
            return defer.Deferred()
        return {"transactions": self.locked}

    @c.ValidateTransaction.responder
    def validateTransaction(self, ttid, tid, undo=None):
        if undo:
            return self.record("ValidateTransaction", ttid=ttid, tid=tid,
                               undo=True)
        return self.record("ValidateTransaction", ttid=ttid, tid=tid)

    @c.AskKnownTransaction.responder
    def askKnownTransaction(self, tid):
        self.record("AskKnownTransaction", tid=tid)
        return {"known": u64(tid) in self.known}

    @c.AskLastIDs.responder
    def askLastIDs(self):
        self.record("AskLastIDs")
        return {"lastTid": self.lastTid, "lastOid": self.lastOid}

    @c.StartOperation.responder
    def startOperation(self):
        return self.record("StartOperation")

    @c.StopOperation.responder
    def stopOperation(self):
        return self.record("StopOperation")

    @c.AskLockInformation.responder
    def askLockInformation(self, ttid, tid, final=False, notify=False):
        self.record("AskLockInformation", ttid=ttid, tid=tid)
        self.finals.append((ttid, final))
        self.notifies.append((ttid, bool(notify)))
        if self.holdLocks:
            d = self.held[ttid] = defer.Deferred()
            return d
        return {}

    @c.NotifyTransactionWritten.responder
    def notifyTransactionWritten(self, ttid):
        return self.record("NotifyTransactionWritten", ttid=ttid)

    @c.NotifyUnlockInformation.responder
    def notifyUnlockInformation(self, ttid):
        return self.record("NotifyUnlockInformation", ttid=ttid)

    @c.AbortTransaction.responder
    def abortTransaction(self, ttid, finishing=None, keep=None):
        return self.record("AbortTransaction", ttid=ttid)

    #: C{{ttid: committed}}: the answers to L{c.AskResolveTransaction}
    #: (by default, not committed).
    resolutions = None

    @c.AskResolveTransaction.responder
    def askResolveTransaction(self, ttid):
        self.record("AskResolveTransaction", ttid=ttid)
        return {"committed": (self.resolutions or {}).get(ttid, False)}


class Peer:
    """
    A fake node connected to the master.

    @ivar fake: its L{FakeNode}.
    @ivar proto: its end of the connection.
    @ivar server: the master's end.
    @ivar nid: the node id the master gave it (C{None} before).
    @ivar hung: when true, the test stops pumping this connection.
    """

    nid = None
    hung = False

    def __init__(self, fake, proto, server, pump):
        self.fake = fake
        self.proto = proto
        self.server = server
        self.pump = pump


# -- Fixture ------------------------------------------------------------------

class MasterTestCase(SynchronousTestCase):
    """A master node, and fake nodes to connect to it."""

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.shutdowns = []
        self.master = MasterNode(
            CONFIG, self.clock,
            shutdownCallback=lambda: self.shutdowns.append(
                self.clock.seconds()))
        # As if started (the master ignores connection losses while it is
        # not running), without the listener these tests do not need.
        self.master.running = True
        self.peers = []
        self._ports = iter(range(2001, 3000))
        self._clientPorts = iter(range(40001, 50000))

    def connect(self, fake) -> Peer:
        """Connect C{fake} to the master, as the master's listener would."""
        master = self.master

        def serverProtocol():
            proto = NodeProtocol()
            proto.handler = MasterHandler(master, proto)
            proto.onConnectionLost = master.connectionLost
            return proto

        # TCP addresses: the master logs where nodes connect from.
        port = next(self._clientPorts)
        here = IPv4Address("TCP", "127.0.0.1", 10000)
        there = IPv4Address("TCP", "127.0.0.1", port)
        proto, server, pump = iosim.connectedServerAndClient(
            serverProtocol, lambda: NodeProtocol(fake),
            clientTransportFactory=lambda p: iosim.FakeTransport(
                p, isServer=False, hostAddress=there, peerAddress=here),
            serverTransportFactory=lambda p: iosim.FakeTransport(
                p, isServer=True, hostAddress=here, peerAddress=there),
            clock=self.clock)
        peer = Peer(fake, proto, server, pump)
        self.peers.append(peer)
        return peer

    def settle(self):
        """
        Run the master's C{callLater(0, ...)} follow-ups and pump every
        connection (but hung ones) until nothing moves any more.
        """
        for _ in range(100):
            moved = False
            for peer in self.peers:
                if not peer.hung:
                    moved = peer.pump.flush() or moved
            self.clock.advance(0)
            due = [call for call in self.clock.getDelayedCalls()
                   if call.getTime() <= self.clock.seconds()]
            if not moved and not due:
                return
        self.fail("the master never settles")

    def ask(self, peer, command, **kwargs) -> defer.Deferred:
        """Send a command from C{peer}, settle, and return the settled
        result (errback attached before any answer can arrive)."""
        d = settled(peer.proto.ask(command, **kwargs))
        self.settle()
        return d

    def notify(self, peer, command, **kwargs):
        peer.proto.notify(command, **kwargs)
        self.settle()

    def identify(self, peer, nodeType, nid=None, address=None, **changes):
        """Identify C{peer} as a C{nodeType} node; the settled answer."""
        arguments = dict(protocolVersion=c.PROTOCOL_VERSION, cluster="test",
                         nodeType=nodeType, nid=nid, address=address)
        arguments.update(changes)
        return self.ask(peer, c.Identify, **arguments)

    def join(self, fake, nodeType, nid=None, address=None) -> Peer:
        """Connect and identify a fake node, which must be accepted."""
        peer = self.connect(fake)
        answer = self.successResultOf(
            self.identify(peer, nodeType, nid, address))
        peer.nid = answer["yourNid"]
        return peer

    def addStorage(self, fake=None, nid=None) -> Peer:
        return self.join(fake or FakeStorage(), "STORAGE", nid,
                         f"127.0.0.1:{next(self._ports)}")

    def addClient(self) -> Peer:
        return self.join(FakeClient(), "CLIENT")

    def addAdmin(self) -> Peer:
        return self.join(FakeNode(), "ADMIN")

    def disconnect(self, peer):
        peer.proto.close()
        self.settle()

    def start(self):
        """What C{neoctl start} does."""
        message = self.master.setClusterState(ClusterState.VERIFYING)
        self.settle()
        return message

    def startCluster(self, **storageOptions):
        """A new cluster over two storage nodes, started and RUNNING."""
        self.s1 = self.addStorage(FakeStorage(**storageOptions))
        self.s2 = self.addStorage(FakeStorage(**storageOptions))
        self.start()
        self.assertIs(self.master.state, ClusterState.RUNNING)

    def storagePeer(self, nid):
        return {self.s1.nid: self.s1, self.s2.nid: self.s2}[nid]

    def assertNoPendingCalls(self):
        self.assertEqual(self.clock.getDelayedCalls(), [])


# -- 1. Identification ----------------------------------------------------------

class IdentificationTests(MasterTestCase):
    """Identify is checked first, and gives each node its id."""

    def assertRefused(self, peer, d, *fragments):
        failure = self.failureResultOf(d, ProtocolError)
        for fragment in fragments:
            self.assertIn(fragment, str(failure.value))
        self.assertFalse(peer.proto.connected)
        self.assertFalse(peer.server.connected)

    def test_wrongProtocolVersion(self):
        """A node speaking another protocol version is refused with a
        ProtocolError naming both versions, and disconnected."""
        peer = self.connect(FakeStorage())
        d = self.identify(peer, "STORAGE",
                          protocolVersion=c.PROTOCOL_VERSION + 41)
        self.assertRefused(peer, d, "protocol version",
                           f"version {c.PROTOCOL_VERSION}",
                           str(c.PROTOCOL_VERSION + 41))
        self.assertEqual(self.master.storages(), [])
        self.assertEqual(self.master.nodes.rows("STORAGE"), [])

    def test_wrongCluster(self):
        """A node of another cluster is refused with a ProtocolError naming
        both clusters, and disconnected."""
        peer = self.connect(FakeStorage())
        d = self.identify(peer, "STORAGE", cluster="elsewhere")
        self.assertRefused(peer, d, "'elsewhere'", "'test'")
        self.assertEqual(self.master.nodes.rows("STORAGE"), [])

    def test_clientWhileRecovering(self):
        """A client cannot identify while the cluster is RECOVERING: it gets
        NotReady saying so, and is not registered."""
        peer = self.connect(FakeClient())
        failure = self.failureResultOf(self.identify(peer, "CLIENT"),
                                       NotReady)
        self.assertIn("RECOVERING", str(failure.value))
        self.assertEqual(self.master.nodes.rows("CLIENT"), [])
        self.assertIsNone(peer.server.peer)

    def test_storageNids(self):
        """New storage nodes get node ids 1 then 2 (S1, S2), start PENDING,
        and learn the master's id and the cluster state."""
        first = self.connect(FakeStorage())
        answer = self.successResultOf(
            self.identify(first, "STORAGE", address="127.0.0.1:2000"))
        self.assertEqual(answer["yourNid"], S1)
        self.assertEqual(formatNid(answer["yourNid"]), "S1")
        self.assertEqual(answer["nid"], self.master.nid)
        self.assertEqual(answer["nodeType"], "MASTER")
        self.assertIs(answer["clusterState"], ClusterState.RECOVERING)
        self.assertIsNone(answer["partitionTable"])
        self.assertIn([S1, "STORAGE", "127.0.0.1:2000", "PENDING"],
                      answer["nodes"])
        second = self.addStorage()
        self.assertEqual(formatNid(second.nid), "S2")
        self.assertEqual(
            [e.state for e in self.master.storages()],
            [NodeState.PENDING, NodeState.PENDING])

    def test_storageKeepsItsNid(self):
        """A storage node identifying with the id it was given keeps it."""
        peer = self.addStorage(nid=S3)
        self.assertEqual(peer.nid, S3)
        self.assertEqual(self.addStorage().nid, makeNid("STORAGE", 4))

    def test_storageNidAlreadyConnected(self):
        """A second connection claiming a connected storage's id is
        refused and closed; the first one is kept."""
        first = self.addStorage()
        peer = self.connect(FakeStorage())
        d = self.identify(peer, "STORAGE", nid=first.nid)
        self.assertRefused(peer, d, "S1 is already connected")
        self.assertTrue(first.proto.connected)
        self.assertIs(self.master.nodes.get(S1).proto, first.server)

    def test_adminNid(self):
        """An admin gets an id in the admin namespace (A1, A2), even while
        the cluster is RECOVERING."""
        self.assertEqual(formatNid(self.addAdmin().nid), "A1")
        second = self.addAdmin()
        self.assertEqual(nidType(second.nid), "ADMIN")
        self.assertEqual(formatNid(second.nid), "A2")

    def test_clientNid(self):
        """Once the cluster runs, clients get ids in the client namespace
        (C1, C2), and the node list they receive has no client in it."""
        self.startCluster()
        first = self.connect(FakeClient())
        answer = self.successResultOf(self.identify(first, "CLIENT"))
        self.assertEqual(nidType(answer["yourNid"]), "CLIENT")
        self.assertEqual(formatNid(answer["yourNid"]), "C1")
        self.assertIs(answer["clusterState"], ClusterState.RUNNING)
        self.assertEqual(answer["partitionTable"], alternating(1))
        self.assertEqual({row[1] for row in answer["nodes"]},
                         {"MASTER", "STORAGE"})
        second = self.addClient()
        self.assertEqual(formatNid(second.nid), "C2")
        # Clients are not told about each other.
        self.assertNotIn("NotifyNodeInformation", first.fake.names())

    def test_secondIdentifyRefused(self):
        """Identifying twice on one connection is a ProtocolError that
        closes it; the node is then forgotten."""
        peer = self.addStorage()
        d = self.identify(peer, "STORAGE", nid=peer.nid)
        self.assertRefused(peer, d, "already identified")
        self.assertNotIn(peer.nid, self.master.nodes)

    def test_commandBeforeIdentify(self):
        """A command other than Identify or Ping before identification is a
        ProtocolError that closes the connection; Ping is answered."""
        peer = self.connect(FakeClient())
        self.assertEqual(self.successResultOf(self.ask(peer, c.Ping)), {})
        d = self.ask(peer, c.AskBeginTransaction, tid=None)
        self.assertRefused(peer, d, "identify first")

    def test_commandOfAnotherRole(self):
        """An identified storage node may not begin a transaction."""
        peer = self.addStorage()
        d = self.ask(peer, c.AskBeginTransaction, tid=None)
        self.assertRefused(peer, d, "not a command for a STORAGE node")

    def test_masterRefused(self):
        """Another master is refused: this cluster runs a single master."""
        peer = self.connect(FakeNode())
        d = self.identify(peer, "MASTER")
        self.assertRefused(peer, d, "single master")


# -- 2. Node information ----------------------------------------------------------

class NodeInformationTests(MasterTestCase):
    """The master tells every node about the others."""

    def test_adminToldOfNewStorage(self):
        """An identified admin receives the row of a storage node that
        identifies afterwards: PENDING while RECOVERING."""
        admin = self.addAdmin()
        self.assertEqual(admin.fake.rows(),
                         [[admin.nid, "ADMIN", None, "RUNNING"]])
        storage = self.addStorage()
        self.assertEqual(admin.fake.rows()[1:],
                         [[storage.nid, "STORAGE", "127.0.0.1:2001",
                           "PENDING"]])

    def test_storageNotInTableLost(self):
        """A storage node that is in no partition table disappears when it
        disconnects: the admin receives its row as UNKNOWN."""
        admin = self.addAdmin()
        storage = self.addStorage()
        self.disconnect(storage)
        self.assertEqual(admin.fake.rows()[-1],
                         [S1, "STORAGE", "127.0.0.1:2001", "UNKNOWN"])
        self.assertNotIn(S1, self.master.nodes)
        self.assertIs(self.master.state, ClusterState.RECOVERING)

    def test_storageInTableLost(self):
        """A storage node of the partition table that disconnects is kept
        as DOWN, and the admin is told so."""
        admin = self.addAdmin()
        storage = self.addStorage(FakeStorage(pt=alternating(3)), nid=S1)
        self.assertEqual(self.master.pt.ptid, 3)
        self.disconnect(storage)
        self.assertEqual(admin.fake.rows()[-1],
                         [S1, "STORAGE", "127.0.0.1:2001", "DOWN"])
        self.assertIs(self.master.nodes.get(S1).state, NodeState.DOWN)
        self.assertIsNone(self.master.nodes.get(S1).proto)

    def test_adminLost(self):
        """An admin that disconnects is forgotten, and others are told."""
        first, second = self.addAdmin(), self.addAdmin()
        self.disconnect(first)
        self.assertEqual(second.fake.rows()[-1],
                         [first.nid, "ADMIN", None, "UNKNOWN"])
        self.assertNotIn(first.nid, self.master.nodes)


# -- 3. Recovery, verification and start -------------------------------------------

class RecoveryTests(MasterTestCase):
    """RECOVERING until a partition table is there, then VERIFYING, then
    RUNNING."""

    def test_newClusterWaitsForStart(self):
        """Storage nodes without a table are asked for one, and the cluster
        stays RECOVERING without a table until neoctl start."""
        s1, s2 = self.addStorage(), self.addStorage()
        self.assertEqual(s1.fake.named("AskRecovery"), [{}])
        self.assertEqual(s2.fake.named("AskRecovery"), [{}])
        self.clock.advance(60)
        self.settle()
        self.assertIs(self.master.state, ClusterState.RECOVERING)
        self.assertIsNone(self.master.pt)
        self.assertIn("neoctl start", self.master.checkStart())
        self.assertEqual(s1.fake.named("SendPartitionTable"), [])
        self.assertEqual(s1.fake.named("StartOperation"), [])

    def test_start(self):
        """neoctl start makes a table spreading 4 partitions over the 2
        storage nodes, goes VERIFYING then RUNNING, sends the table and
        StartOperation to the storage nodes, and broadcasts the states."""
        admin = self.addAdmin()
        s1, s2 = self.addStorage(), self.addStorage()
        message = self.master.setClusterState(ClusterState.VERIFYING)
        self.assertEqual(message, "starting")
        self.assertIs(self.master.state, ClusterState.VERIFYING)
        self.settle()
        self.assertIs(self.master.state, ClusterState.RUNNING)
        pt = self.master.pt
        self.assertEqual(pt.toJson(), alternating(1))
        self.assertEqual([pt.readable(p) for p in range(PARTITIONS)],
                         [[S1], [S2], [S1], [S2]])
        for peer in (s1, s2):
            self.assertEqual(peer.fake.named("SendPartitionTable"),
                             [{"partitionTable": alternating(1)}])
            self.assertEqual(peer.fake.named("StartOperation"), [{}])
            self.assertEqual(peer.fake.states(), [ClusterState.VERIFYING,
                                                  ClusterState.RUNNING])
            # The table comes before the storage is asked to operate.
            names = peer.fake.names()
            self.assertLess(names.index("SendPartitionTable"),
                            names.index("StartOperation"))
        self.assertEqual(admin.fake.states(), [ClusterState.VERIFYING,
                                               ClusterState.RUNNING])
        self.assertEqual(admin.fake.named("SendPartitionTable"),
                         [{"partitionTable": alternating(1)}])
        self.assertEqual(
            admin.fake.rows()[-2:],
            [[S1, "STORAGE", "127.0.0.1:2001", "RUNNING"],
             [S2, "STORAGE", "127.0.0.1:2002", "RUNNING"]])
        self.assertEqual(self.master.runningNids(), {S1, S2})
        self.assertNoPendingCalls()

    def test_startWithoutStorage(self):
        """neoctl start with no storage node connected is Denied."""
        self.addAdmin()
        exc = self.assertRaises(Denied, self.master.setClusterState,
                                ClusterState.VERIFYING)
        self.assertIn("no storage node", str(exc))
        self.assertIs(self.master.state, ClusterState.RECOVERING)
        self.assertIsNone(self.master.pt)

    def test_startTwice(self):
        """neoctl start on a running cluster is Denied."""
        self.startCluster()
        self.assertRaises(Denied, self.master.setClusterState,
                          ClusterState.VERIFYING)

    def test_startOverAdminLink(self):
        """SetClusterState(VERIFYING) from an admin starts the cluster."""
        admin = self.addAdmin()
        self.addStorage()
        answer = self.successResultOf(
            self.ask(admin, c.SetClusterState, state=ClusterState.VERIFYING))
        self.assertEqual(answer, {"message": "starting"})
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertEqual(self.master.pt.readable(3), [S1])

    def test_newTableStripe(self):
        """A new table has the stripe of the master's configuration (by
        default, 16 consecutive oids to a partition), and sends it."""
        self.master.config = dataclasses.replace(CONFIG, stripe=16)
        s1, s2 = self.addStorage(), self.addStorage()
        self.master.setClusterState(ClusterState.VERIFYING)
        self.settle()
        pt = self.master.pt
        self.assertEqual(pt.stripe, 16)
        self.assertEqual(pt.stripe, MasterConfig(
            cluster="test", masters=(), bind=("127.0.0.1", 0)).stripe)
        self.assertEqual([pt.readable(pt.partitionOf(p64(oid)))
                          for oid in (1, 15, 16, 31, 32)],
                         [[S1], [S1], [S2], [S2], [S1]])
        for peer in (s1, s2):
            [sent] = peer.fake.named("SendPartitionTable")
            self.assertEqual(sent["partitionTable"]["stripe"], 16)

    def test_tableMadeBeforeStripes(self):
        """A table saved before stripes (no stripe in it) keeps its objects
        where they are, whatever the master's configuration: one oid per
        stripe."""
        self.master.config = dataclasses.replace(CONFIG, stripe=16)
        old = alternating(3)
        del old["stripe"]
        self.addStorage(FakeStorage(pt=old), nid=S1)
        s2 = self.addStorage(FakeStorage(pt=old), nid=S2)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertEqual(self.master.pt.stripe, 1)
        self.assertEqual(self.master.pt.toJson(), alternating(3))
        self.assertEqual(self.master.pt.readable(
            self.master.pt.partitionOf(p64(1))), [S2])
        self.assertEqual(s2.fake.named("NotifyPartitionChanges"), [])

    def test_existingTableStartsAlone(self):
        """When the storage nodes have a table, the master starts by itself
        once every node of it is connected, not before."""
        s1 = self.addStorage(FakeStorage(pt=alternating(3)), nid=S1)
        self.assertIs(self.master.state, ClusterState.RECOVERING)
        self.assertEqual(self.master.pt.ptid, 3)
        self.assertIn("waiting for storage nodes S2",
                      self.master.checkStart())
        self.assertEqual(s1.fake.named("StartOperation"), [])
        s2 = self.addStorage(FakeStorage(pt=alternating(3)), nid=S2)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertEqual(self.master.pt.toJson(), alternating(3))
        for peer in (s1, s2):
            self.assertEqual(peer.fake.named("StartOperation"), [{}])
            self.assertEqual(peer.fake.named("NotifyPartitionChanges"), [])

    def test_startWithMissingNode(self):
        """neoctl start with a storage node of the table missing is
        refused while some partition has no readable copy."""
        self.addStorage(FakeStorage(pt=alternating(3)), nid=S1)
        message = self.master.setClusterState(ClusterState.VERIFYING)
        self.assertIn("no readable copy", message)
        self.settle()
        self.assertIs(self.master.state, ClusterState.RECOVERING)

    def test_newestTableWins(self):
        """The table with the greatest ptid among the storage nodes is the
        one recovered."""
        older = alternating(2)
        older["rows"][0] = [[S2, "UP_TO_DATE"]]
        self.addStorage(FakeStorage(pt=alternating(5)), nid=S1)
        self.addStorage(FakeStorage(pt=older), nid=S2)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertEqual(self.master.pt.toJson(), alternating(5))

    def test_validation(self):
        """A transaction locked with its tid on one storage node and only
        voted (no tid) on the other is validated on both, with 8-byte ids;
        a transaction voted nowhere with a tid is not validated."""
        ttid, tid, votedOnly = 0x1000, 0x1003, 0x2000
        s1 = self.addStorage(FakeStorage(
            pt=alternating(3), locked=[[ttid, tid], [votedOnly, None]]),
            nid=S1)
        s2 = self.addStorage(FakeStorage(
            pt=alternating(3), locked=[[ttid, None]]), nid=S2)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        for peer in (s1, s2):
            self.assertEqual(peer.fake.named("ValidateTransaction"),
                             [{"ttid": p64(ttid), "tid": p64(tid)}])
            names = peer.fake.names()
            self.assertLess(names.index("ValidateTransaction"),
                            names.index("StartOperation"))

    def test_undoUnwritten(self):
        """
        A transaction locked without a durable vote on one participant,
        of which the other participant knows nothing, is undone there;
        known to it (unlocked, its mark dropped), it is validated.
        """
        unwritten, written = (0x1000, 0x1003), (0x2000, 0x2003)
        s1 = self.addStorage(FakeStorage(
            pt=alternating(3), locked=[list(unwritten) + [[S1, S2]],
                                       list(written) + [[S1, S2]]]),
            nid=S1)
        stranger = FakeStorage(pt=alternating(3))
        stranger.known = {written[1]}
        s2 = self.addStorage(stranger, nid=S2)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertEqual(s2.fake.named("AskKnownTransaction"),
                         [{"tid": p64(unwritten[1])},
                          {"tid": p64(written[1])}])
        self.assertEqual(s1.fake.named("ValidateTransaction"),
                         [{"ttid": p64(unwritten[0]),
                           "tid": p64(unwritten[1]), "undo": True},
                          {"ttid": p64(written[0]),
                           "tid": p64(written[1])}])
        self.assertEqual(s2.fake.named("ValidateTransaction"), [])

    def test_outdatedParticipantNotTrusted(self):
        """A participant with a cell out of date (the transaction may have
        committed without it) is not asked: the transaction is
        validated."""
        ttid, tid = 0x1000, 0x1003
        table = {"ptid": 3, "replicas": 1,
                 "rows": [[[S1, "UP_TO_DATE"], [S2, "OUT_OF_DATE"]]
                          if p % 2 == 0 else [[S2, "UP_TO_DATE"]]
                          for p in range(PARTITIONS)]}
        s1 = self.addStorage(FakeStorage(
            pt=table, locked=[[ttid, tid, [S1, S2]]]), nid=S1)
        s2 = self.addStorage(FakeStorage(pt=table), nid=S2)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertEqual(s2.fake.named("AskKnownTransaction"), [])
        self.assertEqual(s1.fake.named("ValidateTransaction"),
                         [{"ttid": p64(ttid), "tid": p64(tid)}])

    def test_allWrittenNotAsked(self):
        """Every participant holding the mark: validated, nobody asked."""
        ttid, tid = 0x1000, 0x1003
        peers = [self.addStorage(FakeStorage(
            pt=alternating(3), locked=[[ttid, tid, [S1, S2]]]), nid=nid)
            for nid in (S1, S2)]
        self.assertIs(self.master.state, ClusterState.RUNNING)
        for peer in peers:
            self.assertEqual(peer.fake.named("AskKnownTransaction"), [])
            self.assertEqual(peer.fake.named("ValidateTransaction"),
                             [{"ttid": p64(ttid), "tid": p64(tid)}])

    def test_lastIds(self):
        """The last TID and OID are the greatest the storage nodes know,
        and new TIDs come after that last TID."""
        high = 0x03C0_0000_0000_0000
        self.addStorage(FakeStorage(pt=alternating(3), lastTid=p64(high),
                                    lastOid=p64(7)), nid=S1)
        self.addStorage(FakeStorage(pt=alternating(3), lastTid=p64(high - 5),
                                    lastOid=p64(9)), nid=S2)
        self.assertEqual((self.master.lastTid, self.master.lastOid),
                         (high, 9))
        client = self.addClient()
        answer = self.successResultOf(
            self.ask(client, c.AskBeginTransaction, tid=None))
        self.assertGreater(u64(answer["ttid"]), high)
        oids = self.successResultOf(self.ask(client, c.AskNewOIDs, count=1))
        self.assertEqual(oids["oids"], [p64(10)])

    def test_storageLostDuringVerification(self):
        """A storage node lost during verification sends the cluster back
        to RECOVERING, and the other one is asked to recover again."""
        s1 = self.addStorage(FakeStorage(pt=alternating(3)), nid=S1)
        stalled = FakeStorage(pt=alternating(3))
        stalled.holdVerification = True
        s2 = self.addStorage(stalled, nid=S2)
        self.assertIs(self.master.state, ClusterState.VERIFYING)
        self.assertEqual(s2.fake.named("AskLockedTransactions"), [{}])
        self.disconnect(s2)
        self.assertIs(self.master.state, ClusterState.RECOVERING)
        self.assertEqual(s1.fake.states(), [ClusterState.VERIFYING,
                                            ClusterState.RECOVERING])
        self.assertEqual(s1.fake.named("StopOperation"), [{}])
        self.assertEqual(s1.fake.named("StartOperation"), [])
        self.assertEqual(len(s1.fake.named("AskRecovery")), 2)
        self.assertIs(self.master.nodes.get(S2).state, NodeState.DOWN)


# -- 4. Losing a storage node --------------------------------------------------------

class StorageLossTests(MasterTestCase):
    """Without replicas, losing a storage node stops operation."""

    def test_lostStorageStopsOperation(self):
        """Losing a storage node in RUNNING (replicas 0) sends the cluster
        back to RECOVERING: clients are disconnected, storage nodes get
        StopOperation, the admin sees the node DOWN."""
        self.startCluster()
        admin, client = self.addAdmin(), self.addClient()
        self.disconnect(self.s2)
        self.assertIs(self.master.state, ClusterState.RECOVERING)
        self.assertFalse(client.proto.connected)
        self.assertNotIn(client.nid, self.master.nodes)
        self.assertEqual(self.s1.fake.named("StopOperation"), [{}])
        self.assertEqual(self.s1.fake.states()[-1], ClusterState.RECOVERING)
        self.assertEqual(admin.fake.states(), [ClusterState.RECOVERING])
        self.assertIn([S2, "STORAGE", "127.0.0.1:2002", "DOWN"],
                      admin.fake.rows())
        self.assertIs(self.master.nodes.get(S1).state, NodeState.PENDING)
        # S1 is asked for its table again, but the cluster cannot start.
        self.assertEqual(len(self.s1.fake.named("AskRecovery")), 2)
        self.assertIn("no readable copy", self.master.checkStart())

    def test_restartsWhenStorageBack(self):
        """When the lost storage node identifies again, the cluster runs
        again by itself, with the same table."""
        self.startCluster()
        self.disconnect(self.s2)
        back = self.addStorage(self.s2.fake, nid=S2)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertEqual(self.master.pt.toJson(), alternating(1))
        self.assertEqual(self.master.runningNids(), {S1, S2})
        self.assertEqual(back.fake.named("StartOperation"), [{}, {}])
        self.assertEqual(self.s1.fake.named("StartOperation"), [{}, {}])
        self.assertEqual(self.s1.fake.states()[-3:], [
            ClusterState.RECOVERING, ClusterState.VERIFYING,
            ClusterState.RUNNING])
        client = self.addClient()
        self.assertEqual(formatNid(client.nid), "C1")

    def test_finishingTransactionFailsOnLoss(self):
        """A commit waiting for its lock when operation stops fails with
        NotReady."""
        self.startCluster(holdLocks=True)
        client = self.addClient()
        ttid = self.successResultOf(
            self.ask(client, c.AskBeginTransaction, tid=None))["ttid"]
        d = self.ask(client, c.AskFinishTransaction, ttid=ttid,
                     oids=[p64(1), p64(2)], checked=[])
        self.assertNoResult(d)
        self.disconnect(self.s2)
        self.failureResultOf(d, NotReady)
        self.assertEqual(len(self.master.transactions), 0)

    def test_pendingStorageLost(self):
        """Losing a storage node outside the table changes nothing."""
        self.startCluster()
        client = self.addClient()
        extra = self.addStorage()
        self.assertIs(self.master.nodes.get(extra.nid).state,
                      NodeState.PENDING)
        self.disconnect(extra)
        self.assertIs(self.master.state, ClusterState.RUNNING)
        self.assertTrue(client.proto.connected)
        self.assertNotIn(extra.nid, self.master.nodes)


# -- 5. Transactions -----------------------------------------------------------------

class TransactionTests(MasterTestCase):
    """OIDs, TIDs and the second phase of commits."""

    def setUp(self):
        super().setUp()
        self.startCluster()
        self.client = self.addClient()
        self.other = self.addClient()
        self.admin = self.addAdmin()

    def begin(self, client=None, tid=None) -> bytes:
        d = self.ask(client or self.client, c.AskBeginTransaction, tid=tid)
        return self.successResultOf(d)["ttid"]

    def finish(self, ttid, oids=(), checked=(), client=None, **kwargs):
        return self.ask(client or self.client, c.AskFinishTransaction,
                        ttid=ttid, oids=list(oids), checked=list(checked),
                        **kwargs)

    def holdLocks(self):
        for peer in (self.s1, self.s2):
            peer.fake.holdLocks = True

    def locks(self, peer) -> list:
        return peer.fake.named("AskLockInformation")

    def test_beginIncreasing(self):
        """AskBeginTransaction answers strictly increasing 8-byte ttids."""
        ttids = [self.begin() for _ in range(5)]
        self.assertEqual({len(t) for t in ttids}, {8})
        self.assertEqual(sorted(set(ttids)), ttids)

    def test_newOids(self):
        """AskNewOIDs answers consecutive new oids, never the same twice."""
        first = self.successResultOf(
            self.ask(self.client, c.AskNewOIDs, count=3))["oids"]
        self.assertEqual(first, [p64(1), p64(2), p64(3)])
        second = self.successResultOf(
            self.ask(self.other, c.AskNewOIDs, count=2))["oids"]
        self.assertEqual(second, [p64(4), p64(5)])
        self.failureResultOf(self.ask(self.client, c.AskNewOIDs, count=0),
                             Denied)

    def test_locksOnlyInvolvedStorage(self):
        """When the oids and the ttid are in partitions of one storage node,
        only that node is asked to lock."""
        ttid = self.begin()
        mine = holder(ttid)
        d = self.finish(ttid, oids=onStorage(mine, 2))
        tid = self.successResultOf(d)["tid"]
        self.assertEqual(self.locks(self.storagePeer(mine)),
                         [{"ttid": ttid, "tid": tid}])
        self.assertEqual(self.locks(self.storagePeer(other(mine))), [])

    def test_onlyVotedStoragesLock(self):
        """The nodes voted on that hold none of the partitions written have
        nothing to lock: the one left is the sole participant, asked to
        lock and unlock at once."""
        ttid = self.begin()
        mine = holder(ttid)
        d = self.finish(ttid, oids=onStorage(mine, 2), voted=[S1, S2])
        self.assertEqual(self.locks(self.storagePeer(other(mine))), [])
        self.successResultOf(d)
        self.assertEqual(self.storagePeer(mine).fake.finals, [(ttid, True)])

    def test_votedStoragesLost(self):
        """If no node the client voted on holds a written partition any
        more, the commit fails (nothing is locked) and is aborted."""
        ttid = self.begin()
        mine = holder(ttid)
        d = self.finish(ttid, oids=onStorage(other(mine), 1), voted=[mine])
        failure = self.failureResultOf(d, NotReady)
        self.assertIn("lost", str(failure.value))
        for peer in (self.s1, self.s2):
            self.assertEqual(self.locks(peer), [])
        self.assertIsNone(self.master.transactions.get(u64(ttid)))

    def test_metaPartition(self):
        """The final tid is in the partition the client voted the metadata
        in; an imposed tid keeps its own, and a partition out of the table
        is refused."""
        ttid = self.begin()
        partition = (u64(ttid) + 1) % PARTITIONS
        tid = self.successResultOf(self.finish(
            ttid, oids=[p64(partition)], metaPartition=partition))["tid"]
        self.assertEqual(u64(tid) % PARTITIONS, partition)
        ttid = self.begin()
        self.failureResultOf(self.finish(ttid, metaPartition=PARTITIONS),
                             Denied)
        imposed = p64(self.master.lastTid + 10 ** 9)
        self.begin(tid=imposed)
        self.failureResultOf(self.finish(
            imposed, metaPartition=(u64(imposed) + 1) % PARTITIONS), Denied)

    def test_beginNext(self):
        """With beginNext, the answer holds the ttid of a transaction begun
        for the client's next commit, which it finishes like any other."""
        ttid = self.begin()
        answer = self.successResultOf(self.finish(ttid, beginNext=True))
        nextTtid = answer["nextTtid"]
        self.assertGreater(nextTtid, answer["tid"])
        self.assertEqual(self.master.transactions.get(u64(nextTtid)).clientNid,
                         self.client.nid)
        answer = self.successResultOf(self.finish(nextTtid, oids=[p64(1)]))
        self.assertGreater(answer["tid"], nextTtid)
        self.assertIsNone(answer["nextTtid"])
        self.assertEqual(len(self.master.transactions), 0)

    def test_beginNextWhenStopping(self):
        """No transaction is begun ahead once the cluster is stopping."""
        self.holdLocks()
        ttid = self.begin()
        d = self.finish(ttid, beginNext=True)
        self.master.setClusterState(ClusterState.STOPPING)
        for peer in (self.s1, self.s2):
            if ttid in peer.fake.held:
                peer.fake.release(ttid)
        self.settle()
        self.assertIsNone(self.successResultOf(d)["nextTtid"])

    def test_checkedOidsInvolveTheirStorage(self):
        """Oids only checked (not stored) involve their storage node."""
        ttid = self.begin()
        mine = holder(ttid)
        d = self.finish(ttid, oids=onStorage(mine, 1),
                        checked=onStorage(other(mine), 1))
        tid = self.successResultOf(d)["tid"]
        for peer in (self.s1, self.s2):
            self.assertEqual(self.locks(peer), [{"ttid": ttid, "tid": tid}])

    def test_ttidPartitionInvolvesItsStorage(self):
        """The storage node of the ttid's partition (it has the
        transaction's metadata) locks even when no oid is there."""
        ttid = self.begin()
        mine = holder(ttid)
        d = self.finish(ttid, oids=onStorage(other(mine), 1))
        self.successResultOf(d)
        for peer in (self.s1, self.s2):
            self.assertEqual(len(self.locks(peer)), 1)
        ttid = self.begin()
        self.successResultOf(self.finish(ttid))
        self.assertEqual(len(self.locks(self.storagePeer(holder(ttid)))), 2)
        self.assertEqual(
            len(self.locks(self.storagePeer(other(holder(ttid))))), 1)

    def test_tidInTtidPartition(self):
        """The final tid is after the ttid, in the same partition, and
        becomes the last tid."""
        for _ in range(6):
            ttid = self.begin()
            tid = self.successResultOf(
                self.finish(ttid, oids=[p64(1)]))["tid"]
            self.assertEqual(u64(tid) % PARTITIONS, u64(ttid) % PARTITIONS)
            self.assertGreater(tid, ttid)
            self.assertEqual(self.master.lastTid, u64(tid))
        answer = self.successResultOf(
            self.ask(self.other, c.AskLastTransaction))
        self.assertEqual(answer, {"tid": tid})

    def test_answeredAfterEveryLock(self):
        """The client gets the tid only after every involved storage node
        answered the lock; then other clients are invalidated, the
        committer is not, and involved storage nodes unlock."""
        self.holdLocks()
        ttid = self.begin()
        oids = [p64(1), p64(2)]
        d = self.finish(ttid, oids=oids)
        [lock1], [lock2] = self.locks(self.s1), self.locks(self.s2)
        self.assertEqual(lock1, lock2)
        tid = lock1["tid"]
        self.s1.fake.release(ttid)
        self.settle()
        self.assertNoResult(d)
        self.assertEqual(self.other.fake.named("InvalidateObjects"), [])
        self.assertEqual(self.s1.fake.named("NotifyUnlockInformation"), [])
        self.s2.fake.release(ttid)
        self.settle()
        self.assertEqual(self.successResultOf(d),
                         {"tid": tid, "nextTtid": None, "direct": None})
        self.assertEqual(self.other.fake.named("InvalidateObjects"),
                         [{"tid": tid, "oids": oids}])
        self.assertEqual(self.client.fake.named("InvalidateObjects"), [])
        self.assertNotIn("InvalidateObjects", self.admin.fake.names())
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("NotifyUnlockInformation"),
                             [{"ttid": ttid}])
        self.assertEqual(len(self.master.transactions), 0)

    def test_directFinish(self):
        """
        Asked for direct mode, with one participant and nothing before it
        in the commit queue, the master answers at once (the participant
        tells the client, the lock says so); other clients are invalidated
        once the node answers the lock, and their syncs (Ping,
        AskLastTransaction) wait until then.
        """
        self.holdLocks()
        ttid = self.begin()
        mine = holder(ttid)
        oids = onStorage(mine, 1)
        answer = self.successResultOf(self.finish(
            ttid, oids=oids, voted=[mine], direct=True))
        self.assertTrue(answer["direct"])
        fake = self.storagePeer(mine).fake
        self.assertEqual(fake.notifies, [(ttid, True)])
        self.assertEqual(fake.named("AskLockInformation"),
                         [{"ttid": ttid, "tid": answer["tid"]}])
        ping = self.ask(self.other, c.Ping)
        last = self.ask(self.other, c.AskLastTransaction)
        self.assertNoResult(ping)
        self.assertNoResult(last)
        self.assertEqual(self.other.fake.named("InvalidateObjects"), [])
        # The committer's own sync waits as well; the admin's does not.
        self.assertNoResult(self.ask(self.client, c.Ping))
        self.successResultOf(self.ask(self.admin, c.Ping))
        fake.release(ttid)
        self.settle()
        self.assertEqual(self.other.fake.named("InvalidateObjects"),
                         [{"tid": answer["tid"], "oids": oids}])
        self.successResultOf(ping)
        self.assertEqual(self.successResultOf(last), {"tid": answer["tid"]})
        self.assertEqual(self.master._directWaiters, [])
        self.assertEqual(len(self.master.transactions), 0)
        # Nothing in direct mode: a sync is answered at once.
        self.successResultOf(self.ask(self.other, c.Ping))

    def test_directFinishSeveralParticipants(self):
        """
        Several participants: in direct mode as well when the client voted
        on them all; every lock says so, and the master tells the others
        once both nodes answered.  Not when the nodes voted on are not the
        participants (the client would wait for the wrong ones).
        """
        self.holdLocks()
        ttid = self.begin()
        oids = onStorage(S1, 1) + onStorage(S2, 1)
        answer = self.successResultOf(self.finish(
            ttid, oids=oids, voted=[S1, S2], direct=True))
        self.assertTrue(answer["direct"])
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.notifies, [(ttid, True)])
        self.s1.fake.release(ttid)
        self.settle()
        self.assertEqual(self.other.fake.named("InvalidateObjects"), [])
        self.s2.fake.release(ttid)
        self.settle()
        self.assertEqual(self.other.fake.named("InvalidateObjects"),
                         [{"tid": answer["tid"], "oids": oids}])
        for peer in (self.s1, self.s2):
            peer.fake.holdLocks = False
        ttid = self.begin()
        oids = onStorage(S1, 1)
        d = self.finish(ttid, oids=oids, voted=[S1, S2], direct=True,
                        metaPartition=u64(oids[0]) % PARTITIONS)
        self.settle()
        self.assertIsNone(self.successResultOf(d)["direct"])

    def test_directOnlyAtQueueHead(self):
        """Not in direct mode when a transaction before it is still being
        committed (the client must hear of that one first), nor without
        the nodes voted on, nor unless asked."""
        self.holdLocks()
        first = self.begin(self.other)
        d1 = self.finish(first, oids=[p64(1), p64(2)], client=self.other)
        second = self.begin()
        mine = holder(second)
        d2 = self.finish(second, oids=onStorage(mine, 1), voted=[mine],
                         direct=True)
        self.assertNoResult(d2)
        third = self.begin()
        d3 = self.finish(third, oids=onStorage(mine, 1) + onStorage(
            other(mine), 1), direct=True)
        for peer in (self.s1, self.s2):
            for ttid in (first, second, third):
                if ttid in peer.fake.held:
                    peer.fake.release(ttid)
        self.settle()
        for d in (d1, d2, d3):
            self.assertIsNone(self.successResultOf(d)["direct"])
        for peer in (self.s1, self.s2):
            self.assertNotIn(True, [n for _, n in peer.fake.notifies])
            peer.fake.holdLocks = False
        ttid = self.begin()
        mine = holder(ttid)
        self.assertIsNone(self.successResultOf(self.finish(
            ttid, oids=onStorage(mine, 1), voted=[mine]))["direct"])

    def test_directCommitsOnRecovery(self):
        """Syncs waiting for a transaction in direct mode are answered
        when the cluster leaves operation."""
        self.holdLocks()
        ttid = self.begin()
        mine = holder(ttid)
        self.successResultOf(self.finish(
            ttid, oids=onStorage(mine, 1), voted=[mine], direct=True))
        ping = self.ask(self.other, c.Ping)
        self.assertNoResult(ping)
        self.master.enterRecovery("test")
        self.settle()
        self.successResultOf(ping)
        self.assertEqual(self.master._direct, set())

    # -- TIDs reserved with the vote, finished at the node --------------

    def reserve(self, ttid, oids, voted, client=None, **kwargs):
        """Ask for the TID of C{ttid}, voted on C{voted}, its metadata
        in the partition of its first oid; the settled answer."""
        kwargs.setdefault("metaPartition", u64(oids[0]) % PARTITIONS)
        return self.ask(client or self.client, c.ReserveTransaction,
                        ttid=ttid, oids=list(oids), checked=[],
                        voted=list(voted), **kwargs)

    def reserved(self, client=None):
        """A transaction on S1 only whose TID was reserved: its ttid, oids
        and TID."""
        ttid = self.begin(client)
        oids = onStorage(S1, 2)
        tid = self.successResultOf(self.reserve(ttid, oids, [S1],
                                                client=client))["tid"]
        self.assertIsNotNone(tid)
        return ttid, oids, tid

    def committedBy(self, peer, ttid, tid):
        """The storage node C{peer} says it committed C{ttid}."""
        self.notify(peer, c.NotifyCommitted, ttid=ttid, tid=tid)

    def test_reserveForSoleParticipant(self):
        """
        A transaction voted on its only participant gets its final TID
        with the vote, in that node's partition, and nobody is asked to
        lock it: the node tells when it committed it, and only then are
        the other clients invalidated and the syncs answered.
        """
        ttid, oids, tid = self.reserved()
        self.assertGreater(tid, ttid)
        self.assertEqual(u64(tid) % PARTITIONS, u64(oids[0]) % PARTITIONS)
        self.assertEqual(self.locks(self.s1) + self.locks(self.s2), [])
        ping = self.ask(self.other, c.Ping)
        self.assertNoResult(ping)
        self.committedBy(self.s1, ttid, tid)
        self.successResultOf(ping)
        self.assertEqual(self.other.fake.named("InvalidateObjects"),
                         [{"tid": tid, "oids": oids}])
        self.assertEqual(self.client.fake.named("InvalidateObjects"), [])
        self.assertEqual(self.master.lastTid, u64(tid))
        self.assertEqual(len(self.master.transactions), 0)
        self.assertEqual(self.s1.fake.named("NotifyUnlockInformation"), [])

    def test_reserveRefused(self):
        """No TID is reserved (the client finishes through the master) for
        a transaction with a participant it was not voted on, or not voted
        on its participant, or with an imposed TID, or while another one is
        being finished; nothing is queued then."""
        self.holdLocks()
        ttid = self.begin()
        both = onStorage(S1, 1) + onStorage(S2, 1)
        refusals = [self.reserve(ttid, both, [S1]),
                    self.reserve(ttid, onStorage(S1, 1), [S2])]
        imposed = self.begin(tid=p64(self.master.tids.last + 100))
        refusals.append(self.reserve(
            imposed, onStorage(holder(imposed), 1), [holder(imposed)],
            metaPartition=u64(imposed) % PARTITIONS))
        self.notify(self.client, c.AbortTransaction, ttid=imposed)
        finishing = self.begin(self.other)
        self.finish(finishing, oids=onStorage(S2, 1), client=self.other)
        refusals.append(self.reserve(ttid, onStorage(S1, 1), [S1]))
        for d in refusals:
            self.assertIsNone(self.successResultOf(d)["tid"])
        self.assertEqual([t.ttid for t in self.master.transactions.queue],
                         [u64(finishing)])

    def test_reservedFirstInQueue(self):
        """A transaction finished after a reservation gets a greater TID
        and waits for the reserved one to be committed."""
        ttid, oids, tid = self.reserved()
        later = self.begin(self.other)
        d = self.finish(later, oids=onStorage(S2, 1), client=self.other)
        self.assertNoResult(d)
        self.committedBy(self.s1, ttid, tid)
        self.assertGreater(self.successResultOf(d)["tid"], tid)

    def test_reservedGivenBack(self):
        """A reservation given back (its vote conflicted) lets the commits
        queued behind it go, and the transaction stays begun: it may be
        reserved again, under a new TID."""
        ttid, oids, tid = self.reserved()
        later = self.begin(self.other)
        d = self.finish(later, oids=onStorage(S2, 1), client=self.other)
        self.notify(self.client, c.AbortTransaction, ttid=ttid, keep=True)
        self.successResultOf(d)
        self.assertEqual(self.s1.fake.named("AbortTransaction"), [])
        again = self.successResultOf(self.reserve(ttid, oids, [S1]))["tid"]
        self.assertGreater(again, tid)
        self.committedBy(self.s1, ttid, again)
        self.assertEqual(len(self.master.transactions), 0)

    def test_reservedAborted(self):
        """A reserved transaction that its client aborts without having
        asked its node to finish it is aborted at once."""
        ttid, oids, tid = self.reserved()
        self.notify(self.client, c.AbortTransaction, ttid=ttid)
        self.assertEqual(self.s1.fake.named("AskResolveTransaction"), [])
        self.assertEqual(self.s1.fake.named("AbortTransaction"),
                         [{"ttid": ttid}])
        self.assertEqual(len(self.master.transactions), 0)
        self.assertEqual(self.master._direct, set())

    def test_reservedResolvedByNode(self):
        """
        When its client is lost, or aborts it after asking its node to
        finish it, a reserved transaction is what its node says: committed
        (the others are invalidated) or not (aborted), once.
        """
        for committed in (False, True):
            self.s1.fake.resolutions = {}
            ttid, oids, tid = self.reserved(self.other)
            self.s1.fake.resolutions[ttid] = committed
            self.notify(self.other, c.AbortTransaction, ttid=ttid,
                        finishing=True)
            self.notify(self.other, c.AbortTransaction, ttid=ttid,
                        finishing=True)
            self.assertEqual(self.s1.fake.named("AskResolveTransaction")[-1:],
                             [{"ttid": ttid}])
            self.assertEqual(len(self.master.transactions), 0)
            invalidated = self.client.fake.named("InvalidateObjects")
            self.assertEqual(invalidated[-1:] == [{"tid": tid, "oids": oids}],
                             committed)
        self.assertEqual(len(self.s1.fake.named("AskResolveTransaction")), 2)
        ttid, oids, tid = self.reserved()
        self.disconnect(self.client)
        self.assertEqual(self.s1.fake.named("AskResolveTransaction")[-1],
                         {"ttid": ttid})
        self.assertEqual(len(self.master.transactions), 0)

    def reservedOnBoth(self, client=None):
        """A transaction on S1 and S2 whose TID was reserved: its ttid,
        oids and TID."""
        ttid = self.begin(client)
        oids = onStorage(S1, 1) + onStorage(S2, 1)
        tid = self.successResultOf(self.reserve(ttid, oids, [S1, S2],
                                                client=client))["tid"]
        self.assertIsNotNone(tid)
        return ttid, oids, tid

    def test_reserveForSeveralParticipants(self):
        """
        A transaction voted on all its participants gets its final TID
        with the votes, and nobody is asked to lock it: each node tells
        when it committed it (its lock durable), and once both did, the
        other clients are invalidated and both nodes unlock it.
        """
        ttid, oids, tid = self.reservedOnBoth()
        self.assertEqual(self.locks(self.s1) + self.locks(self.s2), [])
        self.committedBy(self.s2, ttid, tid)
        self.assertEqual(self.other.fake.named("InvalidateObjects"), [])
        self.assertEqual(self.s1.fake.named("NotifyUnlockInformation"), [])
        self.committedBy(self.s1, ttid, tid)
        self.assertEqual(self.other.fake.named("InvalidateObjects"),
                         [{"tid": tid, "oids": oids}])
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("NotifyUnlockInformation"),
                             [{"ttid": ttid}])
        self.assertEqual(len(self.master.transactions), 0)

    def test_reservedOnSeveralResolved(self):
        """
        A reserved transaction on several nodes whose client is lost, or
        aborts it after asking its nodes to finish it, commits if one of
        them says so: the master locks it on the others (which kept their
        votes), and unlocks it once every node's lock is done.  If none
        says so, it is aborted.
        """
        ttid, oids, tid = self.reservedOnBoth(self.other)
        self.s1.fake.resolutions = {ttid: True}
        self.notify(self.other, c.AbortTransaction, ttid=ttid,
                    finishing=True)
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("AskResolveTransaction"),
                             [{"ttid": ttid}])
        self.assertEqual(self.locks(self.s1), [])
        self.assertEqual(self.locks(self.s2), [{"ttid": ttid, "tid": tid}])
        self.assertEqual(self.s2.fake.finals, [(ttid, None)])  # not final
        self.assertEqual(len(self.master.transactions), 1)
        self.committedBy(self.s1, ttid, tid)
        self.assertEqual(len(self.master.transactions), 0)
        self.assertEqual(self.client.fake.named("InvalidateObjects"),
                         [{"tid": tid, "oids": oids}])
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("NotifyUnlockInformation"),
                             [{"ttid": ttid}])
            self.assertEqual(peer.fake.named("AbortTransaction"), [])
        ttid, oids, tid = self.reservedOnBoth()
        self.disconnect(self.client)
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("AskResolveTransaction")[-1],
                             {"ttid": ttid})
            self.assertIn({"ttid": ttid}, peer.fake.named("AbortTransaction"))
        self.assertEqual(len(self.locks(self.s1)), 0)
        self.assertEqual(len(self.locks(self.s2)), 1)  # the first one
        self.assertEqual(len(self.master.transactions), 0)

    def stopWithReserved(self, finishing):
        """Stop the cluster with a transaction reserved, that its node
        finishes or not; returns it, its oids and TID."""
        ttid, oids, tid = self.reserved()
        self.s1.fake.resolutions = {ttid: finishing}
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        self.assertEqual(self.s1.fake.named("AskResolveTransaction"),
                         [{"ttid": ttid}])
        return ttid, oids, tid

    def test_reservedAbortedWhenStopping(self):
        """Stopping the cluster, a reserved transaction that its node is
        not finishing is aborted, as one not in its second phase."""
        ttid, oids, tid = self.stopWithReserved(False)
        self.assertIn({"ttid": ttid}, self.s1.fake.named("AbortTransaction"))
        self.assertEqual(len(self.master.transactions), 0)
        self.assertIn("Shutdown", self.s1.fake.names())

    def test_reservedFinishedWhenStopping(self):
        """Stopping the cluster, a reserved transaction that its node is
        finishing is committed (the node finishes its database step before
        it stops), before the nodes are shut down."""
        ttid, oids, tid = self.stopWithReserved(True)
        self.assertEqual(self.other.fake.named("InvalidateObjects"),
                         [{"tid": tid, "oids": oids}])
        names = self.other.fake.names()
        self.assertLess(names.index("InvalidateObjects"),
                        names.index("Shutdown"))
        self.assertEqual(self.s1.fake.named("AbortTransaction"), [])

    def test_reservedFinishedThroughMaster(self):
        """A reserved transaction whose node refused the TID is finished
        through the master under a new TID, after the commits queued
        behind the reservation."""
        ttid, oids, tid = self.reserved()
        later = self.begin(self.other)
        d = self.finish(later, oids=onStorage(S1, 1), client=self.other)
        self.assertNoResult(d)
        answer = self.successResultOf(self.finish(ttid, oids=oids,
                                                  voted=[S1]))
        laterTid = self.successResultOf(d)["tid"]
        self.assertGreater(laterTid, tid)
        self.assertGreater(answer["tid"], laterTid)
        self.assertEqual(len(self.master.transactions), 0)

    def test_committedNotReserved(self):
        """A node's word on a transaction that was not reserved for it is
        ignored (and logged)."""
        ttid = self.begin()
        self.committedBy(self.s1, ttid, p64(u64(ttid) + 1))
        ttid, oids, tid = self.reserved()
        self.committedBy(self.s2, ttid, tid)
        self.committedBy(self.s1, ttid, p64(u64(tid) + 1))
        self.assertEqual(self.other.fake.named("InvalidateObjects"), [])
        self.assertEqual(len(self.master.transactions), 2)
        self.flushLoggedErrors()

    def test_singleParticipantLocksFinal(self):
        """A storage node that is the only participant locks and unlocks
        at once (final lock): no unlock follows; others are not told."""
        ttid = self.begin()
        mine = holder(ttid)
        self.successResultOf(self.finish(ttid, oids=onStorage(mine, 1)))
        fake = self.storagePeer(mine).fake
        self.assertEqual(fake.finals, [(ttid, True)])
        self.assertEqual(fake.named("NotifyUnlockInformation"), [])
        self.assertEqual(self.storagePeer(other(mine)).fake.named(
            "NotifyUnlockInformation"), [])
        self.assertEqual(self.storagePeer(other(mine)).fake.finals, [])

    def test_severalParticipantsUnlocked(self):
        """With two participants, both lock (not final), then unlock."""
        ttid = self.begin()
        mine = holder(ttid)
        self.successResultOf(self.finish(
            ttid, oids=onStorage(mine, 1) + onStorage(other(mine), 1)))
        for nid in (mine, other(mine)):
            fake = self.storagePeer(nid).fake
            self.assertEqual(fake.finals, [(ttid, False)])
            self.assertEqual(fake.named("NotifyUnlockInformation"),
                             [{"ttid": ttid}])

    def test_noInvalidationWithoutOids(self):
        """A commit storing no object invalidates nothing."""
        ttid = self.begin()
        self.successResultOf(self.finish(ttid))
        self.assertEqual(self.other.fake.named("InvalidateObjects"), [])

    def test_answersInTidOrder(self):
        """Two transactions finishing at once are answered (and
        invalidated) in TID order, even when the storage nodes lock the
        second one first: they are told that it is written meanwhile."""
        self.holdLocks()
        first = self.begin()
        second = self.begin(self.other)
        answers = []
        d1 = self.finish(first, oids=[p64(1), p64(2)])
        d2 = self.finish(second, oids=[p64(3), p64(4)], client=self.other)
        d1.addCallback(lambda a: answers.append(("first", a["tid"])))
        d2.addCallback(lambda a: answers.append(("second", a["tid"])))
        for peer in (self.s1, self.s2):
            peer.fake.release(second)
        self.settle()
        self.assertEqual(answers, [])
        self.assertEqual(self.admin.fake.named("InvalidateObjects"), [])
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("NotifyUnlockInformation"), [])
            # Written everywhere: write locks kept for it may go (the
            # first may wait for one of them).
            self.assertEqual(peer.fake.named("NotifyTransactionWritten"),
                             [{"ttid": second}])
            peer.fake.release(first)
        self.settle()
        self.assertEqual([name for name, _ in answers], ["first", "second"])
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("NotifyTransactionWritten"),
                             [{"ttid": second}])
        self.assertLess(answers[0][1], answers[1][1])
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("NotifyUnlockInformation"),
                             [{"ttid": first}, {"ttid": second}])
        # Each client is invalidated by the other's commit only.
        self.assertEqual(self.other.fake.named("InvalidateObjects"),
                         [{"tid": answers[0][1], "oids": [p64(1), p64(2)]}])
        self.assertEqual(self.client.fake.named("InvalidateObjects"),
                         [{"tid": answers[1][1], "oids": [p64(3), p64(4)]}])

    def test_abortRelayed(self):
        """AbortTransaction from the client is relayed to every running
        storage node, and the transaction is forgotten."""
        ttid = self.begin()
        self.notify(self.client, c.AbortTransaction, ttid=ttid)
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("AbortTransaction"),
                             [{"ttid": ttid}])
        self.assertIsNone(self.master.transactions.get(u64(ttid)))
        self.failureResultOf(self.finish(ttid), TransactionNotFound)

    def test_abortOfAnotherClientIgnored(self):
        """A client cannot abort another client's transaction."""
        ttid = self.begin()
        self.notify(self.other, c.AbortTransaction, ttid=ttid)
        self.assertEqual(self.s1.fake.named("AbortTransaction"), [])
        self.successResultOf(self.finish(ttid))

    def test_clientLostAbortsItsTransactions(self):
        """A client that disconnects has its unfinished transactions
        aborted (and relayed); another client's are kept."""
        mine = [self.begin(), self.begin()]
        theirs = self.begin(self.other)
        self.disconnect(self.client)
        for peer in (self.s1, self.s2):
            self.assertEqual(
                sorted(kw["ttid"] for kw in peer.fake.named(
                    "AbortTransaction")), mine)
        self.assertEqual(len(self.master.transactions), 1)
        self.assertIsNotNone(self.master.transactions.get(u64(theirs)))
        self.successResultOf(self.finish(theirs, client=self.other))

    def test_clientLostWhileFinishing(self):
        """A transaction being finished when its client disconnects is not
        aborted: it is committed and unlocked once the storage nodes
        locked it."""
        self.holdLocks()
        ttid = self.begin()
        self.finish(ttid, oids=[p64(1), p64(2)])
        self.disconnect(self.client)
        self.assertEqual(self.s1.fake.named("AbortTransaction"), [])
        for peer in (self.s1, self.s2):
            peer.fake.release(ttid)
        self.settle()
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("NotifyUnlockInformation"),
                             [{"ttid": ttid}])
        self.assertEqual(len(self.other.fake.named("InvalidateObjects")), 1)
        self.assertEqual(len(self.master.transactions), 0)

    def test_finishUnknown(self):
        """Finishing a ttid that was never begun fails with
        TransactionNotFound, and the connection stays usable."""
        failure = self.failureResultOf(self.finish(p64(12345)),
                                       TransactionNotFound)
        self.assertIn("0x3039", str(failure.value))
        self.assertTrue(self.client.proto.connected)
        self.begin()

    def test_finishOfAnotherClient(self):
        """A client cannot finish another client's transaction."""
        ttid = self.begin()
        self.failureResultOf(self.finish(ttid, client=self.other),
                             TransactionNotFound)

    def test_finishTwice(self):
        """Finishing a transaction already being finished fails with
        TransactionNotFound."""
        self.holdLocks()
        ttid = self.begin()
        self.finish(ttid)
        self.failureResultOf(self.finish(ttid), TransactionNotFound)

    def test_beginWhenNotRunning(self):
        """A begin while the cluster is not RUNNING (here STOPPING, waiting
        for a commit) fails with NotReady."""
        self.holdLocks()
        ttid = self.begin()
        self.finish(ttid)
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        failure = self.failureResultOf(
            self.ask(self.other, c.AskBeginTransaction, tid=None), NotReady)
        self.assertIn("STOPPING", str(failure.value))

    def test_imposedTid(self):
        """A tid imposed at begin is the ttid and the final tid."""
        self.successResultOf(self.finish(self.begin()))
        imposed = p64(self.master.lastTid + 10)
        self.assertEqual(self.begin(tid=imposed), imposed)
        self.assertEqual(self.successResultOf(self.finish(imposed)),
                         {"tid": imposed, "nextTtid": None, "direct": None})
        self.assertEqual(self.master.lastTid, u64(imposed))
        self.assertGreater(self.begin(), imposed)

    def test_imposedTidNotAfterLast(self):
        """An imposed tid that is not after the last committed one is
        Denied."""
        self.successResultOf(self.finish(self.begin()))
        last = self.master.lastTid
        for tid in (last, last - 1):
            d = self.ask(self.client, c.AskBeginTransaction, tid=p64(tid))
            failure = self.failureResultOf(d, Denied)
            self.assertIn(f"{last:#x}", str(failure.value))
        self.assertEqual(len(self.master.transactions), 0)

    def test_imposedTidBesideTransactionsInProgress(self):
        """A tid may be imposed while other transactions are in progress
        (clients keep one begun ahead), but not at or before a TID given
        to a transaction being finished, nor on a ttid in use."""
        self.holdLocks()
        self.begin(self.other)
        imposed = p64(self.master.lastTid + 10 ** 9)
        self.assertEqual(self.begin(tid=imposed), imposed)
        self.notify(self.client, c.AbortTransaction, ttid=imposed)
        self.settle()
        finishing = self.begin(self.other)
        self.finish(finishing, oids=[p64(3)], client=self.other)
        self.settle()
        tid = self.master.transactions.get(u64(finishing)).tid
        for candidate in (tid, tid - 1):
            d = self.ask(self.client, c.AskBeginTransaction,
                         tid=p64(candidate))
            failure = self.failureResultOf(d, Denied)
            self.assertIn(f"{tid:#x}", str(failure.value))
        inUse = self.begin(self.other)
        d = self.ask(self.client, c.AskBeginTransaction, tid=inUse)
        self.assertIn("in progress", str(self.failureResultOf(d, Denied).value))

    def test_imposedTidCommittedInOrder(self):
        """A transaction begun after one with an imposed tid, and finished
        first, is not committed (answered) before it: committed tids only
        grow."""
        imposed = p64(self.master.lastTid + 10)
        self.assertEqual(self.begin(tid=imposed), imposed)
        later = self.begin(self.other)
        d = self.finish(later, oids=[p64(3)], client=self.other)
        self.settle()
        self.assertNoResult(d)
        self.assertEqual(self.master.lastTid, u64(imposed) - 10)
        self.successResultOf(self.finish(imposed, oids=[p64(4)]))
        self.assertGreater(self.successResultOf(d)["tid"], imposed)
        self.assertGreater(self.master.lastTid, u64(imposed))

    def test_imposedTidAborted(self):
        """Transactions finished behind an imposed tid commit once it is
        aborted."""
        imposed = p64(self.master.lastTid + 10)
        self.begin(tid=imposed)
        later = self.begin(self.other)
        d = self.finish(later, oids=[p64(3)], client=self.other)
        self.settle()
        self.assertNoResult(d)
        self.notify(self.client, c.AbortTransaction, ttid=imposed)
        self.settle()
        self.successResultOf(d)
        self.assertIsNone(self.master.transactions.get(u64(imposed)))


# -- 6. Stopping ---------------------------------------------------------------------

class StoppingTests(MasterTestCase):
    """STOPPING: finish what is finishing, then shut every node down."""

    def setUp(self):
        super().setUp()
        self.startCluster()
        self.client = self.addClient()
        self.admin = self.addAdmin()

    def everyone(self):
        return [self.s1, self.s2, self.client, self.admin]

    def test_stopIdle(self):
        """With no transaction, STOPPING is broadcast, then every node gets
        Shutdown and is disconnected, then the shutdown callback runs."""
        self.assertEqual(
            self.master.setClusterState(ClusterState.STOPPING), "stopping")
        self.assertEqual(self.shutdowns, [])
        self.settle()
        for peer in self.everyone():
            names = peer.fake.names()
            self.assertEqual(peer.fake.states()[-1], ClusterState.STOPPING)
            self.assertEqual(names[-2:], ["NotifyClusterState", "Shutdown"])
            self.assertFalse(peer.proto.connected)
        self.assertEqual(self.shutdowns, [0])
        self.assertNoPendingCalls()

    def test_stopAbortsUnfinished(self):
        """Transactions not yet finishing are aborted on every storage
        node, before Shutdown."""
        ttid = self.successResultOf(
            self.ask(self.client, c.AskBeginTransaction, tid=None))["ttid"]
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.named("AbortTransaction"),
                             [{"ttid": ttid}])
            names = peer.fake.names()
            self.assertLess(names.index("AbortTransaction"),
                            names.index("Shutdown"))
        self.assertEqual(self.shutdowns, [0])

    def test_stopWaitsForFinishing(self):
        """A transaction waiting for its locks is finished before Shutdown
        is sent to anyone: its client gets its tid first."""
        for peer in (self.s1, self.s2):
            peer.fake.holdLocks = True
        ttid = self.successResultOf(
            self.ask(self.client, c.AskBeginTransaction, tid=None))["ttid"]
        d = self.ask(self.client, c.AskFinishTransaction, ttid=ttid,
                     oids=[p64(1), p64(2)], checked=[])
        d.addCallback(
            lambda answer: self.client.fake.record("answer", **answer))
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        self.clock.advance(SHUTDOWN_GRACE * 2)
        self.settle()
        self.assertIs(self.master.state, ClusterState.STOPPING)
        for peer in self.everyone():
            self.assertEqual(peer.fake.states()[-1], ClusterState.STOPPING)
            self.assertNotIn("Shutdown", peer.fake.names())
            self.assertTrue(peer.proto.connected)
        self.assertEqual(self.s1.fake.named("AbortTransaction"), [])
        self.assertEqual(self.shutdowns, [])
        self.s1.fake.release(ttid)
        self.settle()
        self.assertNotIn("Shutdown", self.s2.fake.names())
        self.s2.fake.release(ttid)
        self.settle()
        names = self.client.fake.names()
        self.assertEqual(names[-2:], ["answer", "Shutdown"])
        for peer in (self.s1, self.s2):
            self.assertEqual(peer.fake.names()[-2:],
                             ["NotifyUnlockInformation", "Shutdown"])
        for peer in self.everyone():
            self.assertFalse(peer.proto.connected)
        self.assertEqual(len(self.shutdowns), 1)
        self.assertNoPendingCalls()

    def test_graceTimeout(self):
        """A node that does not close its connection delays the shutdown
        callback by the grace timeout, no more (and the wait given up is
        not reported as an unhandled error)."""
        self.admin.hung = True
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        self.assertFalse(self.client.proto.connected)
        self.assertEqual(self.shutdowns, [])
        self.clock.advance(SHUTDOWN_GRACE - 0.1)
        self.assertEqual(self.shutdowns, [])
        self.clock.advance(0.1)
        self.assertEqual(self.shutdowns, [SHUTDOWN_GRACE])
        self.assertNoPendingCalls()
        [given] = self.admin.server._disconnected
        self.assertIsNone(given.result)

    def test_stopTwice(self):
        """A second STOPPING request changes nothing."""
        self.master.setClusterState(ClusterState.STOPPING)
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        self.assertEqual(self.s1.fake.names().count("Shutdown"), 1)
        self.assertEqual(self.s1.fake.states().count(ClusterState.STOPPING),
                         1)
        self.assertEqual(len(self.shutdowns), 1)

    def test_noNodeAcceptedWhileStopping(self):
        """While stopping, storage and client nodes are refused with
        NotReady."""
        for peer in (self.s1, self.s2):
            peer.fake.holdLocks = True
        ttid = self.successResultOf(
            self.ask(self.client, c.AskBeginTransaction, tid=None))["ttid"]
        self.ask(self.client, c.AskFinishTransaction, ttid=ttid, oids=[],
                 checked=[])
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        storage = self.connect(FakeStorage())
        self.failureResultOf(self.identify(storage, "STORAGE"), NotReady)
        client = self.connect(FakeClient())
        self.failureResultOf(self.identify(client, "CLIENT"), NotReady)

    def test_stateKeptDuringShutdown(self):
        """Storage nodes disconnecting on Shutdown do not send the cluster
        back to RECOVERING."""
        self.master.setClusterState(ClusterState.STOPPING)
        self.settle()
        self.assertIs(self.master.state, ClusterState.STOPPING)
        for peer in (self.s1, self.s2):
            self.assertNotIn(ClusterState.RECOVERING, peer.fake.states())


class StorageNidTests(MasterTestCase):
    """Storage node ids are kept by the storage nodes forever."""

    def test_nidNeverReused(self):
        """A new storage node never gets the id given to another one, even
        if that one disconnected before the cluster was started."""
        first = self.addStorage()
        self.disconnect(first)
        self.assertNotEqual(self.addStorage().nid, first.nid)
