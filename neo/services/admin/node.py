# -*- test-case-name: tests.functional.test_cluster -*-
"""
The admin node.

It stays connected to the primary master, mirrors the node list, the
partition table and the cluster state from its notifications, answers
neoctl's questions about them, and relays neoctl's orders to the master.
"""

from twisted.protocols import amp

from neo.cluster.partition_table import PartitionTable
from neo.lib.ids import formatNid
from neo.lib.states import NodeType
from neo.protocols import commands as c
from neo.protocols.errors import NotReady, ProtocolError
from neo.services.node import (
    BaseNode, ClusterView, ListenerService, MasterLinkService,
    MasterViewHandler, NodeTable, ProtocolFactory)


class AdminConfig:
    def __init__(self, cluster, masters, bind, addressFile=None):
        self.cluster = cluster
        self.masters = tuple(masters)
        self.bind = bind
        self.addressFile = addressFile

    @classmethod
    def fromOptions(cls, options):
        return cls(options["cluster"], options["masters"], options["bind"],
                   options["address-file"])


class AdminNode(BaseNode, ClusterView):
    role = "admin"
    nodeType = NodeType.ADMIN

    def __init__(self, config, reactor, fatalCallback=None,
                 shutdownCallback=None):
        super().__init__(config.cluster, reactor, fatalCallback)
        self.config = config
        self.master = None
        self.nodes = NodeTable()
        self.pt = None
        self.clusterState = None
        self._shutdownCallback = shutdownCallback
        listener = ListenerService(
            reactor, config.bind,
            ProtocolFactory(lambda proto: NeoctlHandler(self, proto)),
            config.addressFile)
        listener.setName("listener")
        listener.setServiceParent(self)

    def startService(self):
        super().startService()
        self.getServiceNamed("listener").whenListening().addCallbacks(
            self._listening, lambda f: self.fatal(
                f"cannot listen: {f.getErrorMessage()}"))

    def _listening(self, address):
        link = MasterLinkService(self, self.reactor, self.config.masters)
        link.setName("master-link")
        link.setServiceParent(self)
        self.logRunning(address)

    def listenAddress(self):
        # neoctl connects to us; other nodes never do.
        return None

    def makeMasterHandler(self, proto):
        return MasterHandler(self, proto)

    def masterIdentified(self, proto, answer):
        self.master = proto
        self.nid = answer["yourNid"]
        self.nodes = NodeTable()
        self.nodes.update(answer["nodes"] or [])
        self.clusterState = answer["clusterState"]
        doc = answer["partitionTable"]
        self.pt = PartitionTable.fromJson(doc) if doc else None
        self.log.info("identified to the master as {me}",
                      me=formatNid(self.nid))

    def masterLost(self, proto):
        if proto is self.master:
            self.master = None
            self.clusterState = None
            self.log.warn("lost the primary master")

    def relay(self, command, **kwargs):
        if self.master is None:
            raise NotReady("not connected to a primary master")
        return self.master.ask(command, **kwargs)


class MasterHandler(MasterViewHandler):
    """What the admin node answers to the master."""

    @c.Shutdown.responder
    def shutdown(self):
        self.view.log.info("the cluster is stopping")
        if self.view._shutdownCallback is not None:
            self.view._shutdownCallback()
        return {}


class NeoctlHandler(amp.CommandLocator):
    """neoctl's commands."""

    def __init__(self, node, proto):
        self.node = node

    @c.Ping.responder
    def ping(self):
        return {}

    @c.AskClusterState.responder
    def askClusterState(self):
        return {"state": self.node.clusterState}

    @c.AskNodeList.responder
    def askNodeList(self, nodeType=None):
        if nodeType is not None:
            try:
                nodeType = NodeType(nodeType.upper())
            except ValueError:
                raise ProtocolError(f"unknown node type {nodeType!r}")
        if self.node.master is None:
            raise NotReady("not connected to a primary master")
        return {"nodes": self.node.nodes.rows(nodeType)}

    @c.AskPartitionList.responder
    def askPartitionList(self):
        if self.node.master is None:
            raise NotReady("not connected to a primary master")
        pt = self.node.pt
        return {"partitionTable": pt.toJson() if pt else None}

    @c.AskClusterIDs.responder
    def askClusterIDs(self):
        return self.node.relay(c.AskClusterIDs)

    @c.SetClusterState.responder
    def setClusterState(self, state):
        return self.node.relay(c.SetClusterState, state=state)
