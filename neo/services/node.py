# -*- test-case-name: tests.unit.test_node -*-
"""
What every node role shares: the node table, the listening service, the
link to the primary master, and the L{BaseNode} they hang from.
"""

import os

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.endpoints import clientFromString, serverFromString
from zope.interface import implementer
from twisted.internet.interfaces import IStreamClientEndpoint

from twisted.protocols import amp

from neo.cluster.partition_table import PartitionTable
from neo.lib.config import clientEndpoint, formatAddress, serverEndpoint
from neo.lib.ids import formatNid
from neo.lib.logging import NodeLogger
from neo.lib.states import NodeState, NodeType
from neo.protocols import commands
from neo.protocols.base import NodeProtocol
from neo.protocols.errors import NotReady, ProtocolError


class NodeEntry:
    """What a node knows of another node."""

    def __init__(self, nid, nodeType, address=None, state=NodeState.DOWN):
        self.nid = nid
        self.nodeType = NodeType(nodeType)
        self.address = address
        self.state = NodeState(state)
        #: The connection to it, if any.
        self.proto = None

    def row(self) -> list:
        address = formatAddress(self.address) if self.address else None
        return [self.nid, self.nodeType.value, address, self.state.value]

    def __repr__(self):
        return (f"<{formatNid(self.nid)} {self.nodeType.value}"
                f" {formatAddress(self.address)} {self.state.value}>")


class NodeTable:
    """The nodes of the cluster, by node id, as the master announces them."""

    def __init__(self):
        self._nodes = {}

    def __iter__(self):
        return iter(list(self._nodes.values()))

    def __contains__(self, nid):
        return nid in self._nodes

    def get(self, nid):
        return self._nodes.get(nid)

    def add(self, entry: NodeEntry) -> NodeEntry:
        self._nodes[entry.nid] = entry
        return entry

    def remove(self, nid):
        return self._nodes.pop(nid, None)

    def byType(self, nodeType, state=None) -> list:
        return [n for n in self._nodes.values()
                if n.nodeType == nodeType and (state is None or n.state == state)]

    def rows(self, nodeType=None) -> list:
        return [n.row() for n in sorted(self._nodes.values(),
                                        key=lambda n: n.nid)
                if nodeType is None or n.nodeType == nodeType]

    def update(self, rows) -> list:
        """
        Apply node rows received from the master; returns the entries that
        changed.  Nodes announced UNKNOWN are forgotten.
        """
        from neo.lib.config import parseAddress
        changed = []
        for nid, nodeType, address, state in rows:
            address = parseAddress(address) if address else None
            state = NodeState(state)
            entry = self._nodes.get(nid)
            if state is NodeState.UNKNOWN:
                if entry is not None:
                    del self._nodes[nid]
                    entry.state = state
                    changed.append(entry)
                continue
            if entry is None:
                entry = self.add(NodeEntry(nid, nodeType, address, state))
            else:
                entry.address, entry.state = address, state
            changed.append(entry)
        return changed


class ListenerService(service.Service):
    """
    Listens on the node's bind address with a factory, learns the port
    actually bound (port 0 means any free port) and publishes it.

    @ivar address: C{(host, port)} once listening.
    """

    def __init__(self, reactor, bind, factory, addressFile=None):
        self._reactor = reactor
        self._bind = bind
        self._factory = factory
        self._addressFile = addressFile
        self._port = None
        self.address = None
        self._waiting = []
        self._failure = None

    def startService(self):
        super().startService()
        endpoint = serverFromString(self._reactor, serverEndpoint(self._bind))
        d = endpoint.listen(self._factory)
        d.addCallbacks(self._listened, self._failed)

    def whenListening(self) -> defer.Deferred:
        """A Deferred of C{(host, port)} once listening."""
        if self.address is not None:
            return defer.succeed(self.address)
        if self._failure is not None:
            return defer.fail(self._failure)
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def _failed(self, failure):
        self._failure = failure
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)

    def _listened(self, port):
        self._port = port
        host = port.getHost()
        self.address = (host.host, host.port)
        if self._addressFile:
            tmp = self._addressFile + ".tmp"
            with open(tmp, "w") as f:
                f.write(formatAddress(self.address) + "\n")
            os.replace(tmp, self._addressFile)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.address)

    def stopService(self):
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()


@implementer(IStreamClientEndpoint)
class RoundRobinEndpoint:
    """Connects to each of several addresses in turn (the master list)."""

    def __init__(self, reactor, addresses):
        self._reactor = reactor
        self._addresses = list(addresses)
        self._next = 0

    def connect(self, factory):
        address = self._addresses[self._next % len(self._addresses)]
        self._next += 1
        return clientFromString(self._reactor, clientEndpoint(address)).connect(
            factory)


class ProtocolFactory(protocol.Factory):
    """Builds L{NodeProtocol}s whose handler the node chooses."""

    noisy = False

    def __init__(self, makeHandler, onConnectionLost=None):
        self._makeHandler = makeHandler
        self._onConnectionLost = onConnectionLost

    def buildProtocol(self, addr):
        proto = NodeProtocol()
        proto.handler = self._makeHandler(proto)
        proto.onConnectionLost = self._onConnectionLost
        return proto


class MasterLinkService(service.Service):
    """
    Keeps a connection to the primary master: connects (to each known
    master in turn), identifies, and reconnects with backoff when the
    connection fails or is lost.  The node is told through
    C{node.masterIdentified(proto, answer)} (which may return a Deferred)
    and C{node.masterLost(proto)}.  A refusal for a protocol error (wrong
    cluster name or protocol version) is fatal to the node.
    """

    initialDelay = 0.2
    factor = 1.5

    def __init__(self, node, reactor, masters, maxDelay=2.0):
        self._node = node
        self._reactor = reactor
        self._endpoint = RoundRobinEndpoint(reactor, masters)
        self._maxDelay = maxDelay
        self._delay = self.initialDelay
        self._proto = None
        self._retry = None
        self._attempt = None
        self._waiting = []

    def startService(self):
        super().startService()
        self._connect()

    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(NotReady("the master link is stopped"))
        if self._proto is not None:
            closed = self._proto.whenDisconnected()
            self._proto.close()
            return closed

    def whenConnected(self) -> defer.Deferred:
        """The identified connection to the master (when there is one)."""
        if self._proto is not None:
            return defer.succeed(self._proto)
        if not self.running:
            return defer.fail(NotReady("the master link is stopped"))
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def _connect(self):
        self._retry = None
        if not self.running:
            return
        factory = ProtocolFactory(self._node.makeMasterHandler, self._lost)
        d = self._attempt = self._endpoint.connect(factory)
        d.addCallback(self._identify)
        d.addCallbacks(self._identified, self._failed)

    def _identify(self, proto):
        node = self._node
        d = proto.ask(commands.Identify,
                      protocolVersion=commands.PROTOCOL_VERSION,
                      cluster=node.cluster, nodeType=node.nodeType.value,
                      nid=node.nid, address=node.listenAddress())
        d.addCallbacks(lambda answer: node.masterIdentified(proto, answer),
                       self._refused, errbackArgs=(proto,))

        def closed(failure):
            proto.close()
            return failure
        return d.addCallbacks(lambda _: proto, closed)

    def _refused(self, failure, proto):
        proto.close()
        if failure.check(ProtocolError):
            self._node.fatal(f"the master refused this node: {failure.value}")
        elif failure.check(NotReady):
            self._node.log.info("master not ready: {reason}",
                                reason=str(failure.value))
        return failure

    def _identified(self, proto):
        self._attempt = None
        if not self.running:
            proto.close()
            return
        if not proto.connected:
            # Lost while the node took it in: undo, and try again.
            self._node.masterLost(proto)
            self._scheduleRetry()
            return
        self._proto = proto
        self._delay = self.initialDelay
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(proto)

    def _failed(self, failure):
        self._attempt = None
        if failure.check(defer.CancelledError) or not self.running:
            return
        if not failure.check(NotReady, ProtocolError):
            self._node.log.info("cannot reach the master: {reason}",
                                reason=failure.getErrorMessage())
        self._scheduleRetry()

    def _lost(self, proto):
        if proto is self._proto:
            self._proto = None
            self._node.masterLost(proto)
            self._scheduleRetry()

    def _scheduleRetry(self):
        if self.running and self._retry is None and self._attempt is None:
            self._retry = self._reactor.callLater(self._delay, self._connect)
            self._delay = min(self._delay * self.factor, self._maxDelay)


class BaseNode(service.MultiService):
    """
    A node: a MultiService whose children are started in the order they
    were added and stopped in reverse.

    @ivar nid: the node id the master gave us (C{None} before).
    @ivar fatalCallback: called with a reason when the node cannot go on.
    """

    role = "node"
    nodeType = None
    nid = None

    def __init__(self, cluster, reactor, fatalCallback=None):
        super().__init__()
        self.cluster = cluster
        self.reactor = reactor
        self.log = NodeLogger(self, namespace=f"neo.{self.role}")
        self._fatalCallback = fatalCallback

    def listenAddress(self):
        """Our listening address as C{HOST:PORT}, or None."""
        try:
            listener = self.getServiceNamed("listener")
        except KeyError:
            return None
        return formatAddress(listener.address) if listener.address else None

    def fatal(self, reason: str) -> None:
        self.log.critical("fatal: {reason}", reason=reason)
        # Stop the master link first, so that it does not reconnect.
        try:
            link = self.getServiceNamed("master-link")
        except KeyError:
            link = None
        if link is not None and link.running:
            d = defer.maybeDeferred(link.stopService)
        else:
            d = defer.succeed(None)
        if self._fatalCallback is not None:
            d.addBoth(lambda _: self._fatalCallback(reason))

    def logRunning(self, address):
        self.log.info("neo-{role} running on {address}", address=
                      formatAddress(address))

    def makeMasterHandler(self, proto):
        raise NotImplementedError

    def masterIdentified(self, proto, answer):
        raise NotImplementedError

    def masterLost(self, proto):
        raise NotImplementedError


class ClusterView:
    """
    The master's view of the cluster, as mirrored by a node, an admin or a
    client: the node table, the cluster state and the partition table.
    Subclasses extend the hooks to react (persist, close connections...).
    """

    nodes = None
    pt = None
    clusterState = None

    def nodesUpdated(self, rows) -> list:
        return self.nodes.update(rows)

    def partitionTableReceived(self, doc) -> None:
        self.pt = PartitionTable.fromJson(doc)

    def partitionChangesReceived(self, ptid, replicas, changes) -> None:
        if self.pt is None:
            raise ProtocolError("partition changes without a table")
        self.pt.apply(ptid, replicas, changes)


class MasterViewHandler(amp.CommandLocator):
    """
    Responders for what the master broadcasts to every node, delegating
    to a L{ClusterView}; role handlers add their own commands.
    """

    def __init__(self, view: ClusterView, proto):
        self.view = view
        self.proto = proto

    @commands.Ping.responder
    def ping(self):
        return {}

    @commands.NotifyNodeInformation.responder
    def notifyNodeInformation(self, nodes):
        self.view.nodesUpdated(nodes)
        return {}

    @commands.NotifyClusterState.responder
    def notifyClusterState(self, state):
        self.view.clusterState = state
        return {}

    @commands.SendPartitionTable.responder
    def sendPartitionTable(self, partitionTable):
        self.view.partitionTableReceived(partitionTable)
        return {}

    @commands.NotifyPartitionChanges.responder
    def notifyPartitionChanges(self, ptid, replicas, changes):
        self.view.partitionChangesReceived(ptid, replicas, changes)
        return {}
