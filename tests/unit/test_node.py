"""Tests for L{neo.services.node.MasterLinkService}: deterministic, with a
fake endpoint over iosim and a Clock."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from neo.lib.states import NodeType
from neo.protocols import commands as c
from neo.protocols.base import NodeProtocol
from neo.protocols.errors import NotReady, ProtocolError
from neo.services.node import MasterLinkService


class FakeMaster(amp.CommandLocator):
    """Answers Identify as told: an answer dict or an exception."""

    def __init__(self, behaviour):
        self.behaviour = behaviour

    @c.Identify.responder
    def identify(self, protocolVersion, cluster, nodeType, nid=None,
                 address=None):
        if isinstance(self.behaviour, Exception):
            raise self.behaviour
        return self.behaviour


ANSWER = {"nodeType": "MASTER", "nid": -0x10000000 + 1, "yourNid": 5,
          "clusterState": None, "nodes": [], "partitionTable": None}


class FakeNode:
    cluster = "test"
    nodeType = NodeType.STORAGE
    nid = None

    def __init__(self):
        self.identified, self.lost, self.fatals = [], [], []

    def listenAddress(self):
        return "127.0.0.1:1"

    def makeMasterHandler(self, proto):
        return amp.CommandLocator()

    def masterIdentified(self, proto, answer):
        self.identified.append(answer["yourNid"])

    def masterLost(self, proto):
        self.lost.append(proto)

    def fatal(self, reason):
        self.fatals.append(reason)

    class log:
        @staticmethod
        def info(*args, **kwargs):
            pass


class FakeEndpoint:
    """Connects the link's protocols to a FakeMaster over iosim."""

    def __init__(self):
        self.behaviour = ANSWER
        self.pumps = []

    def connect(self, factory):
        master = NodeProtocol()
        master.handler = FakeMaster(self.behaviour)
        client, server, pump = iosim.connectedServerAndClient(
            lambda: master, lambda: factory.buildProtocol(None),
            greet=False)
        self.pumps.append(pump)
        return defer.succeed(client)


class MasterLinkTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.node = FakeNode()
        self.link = MasterLinkService(self.node, self.clock,
                                      [("127.0.0.1", 9)])
        self.endpoint = self.link._endpoint = FakeEndpoint()

    def flush(self):
        for pump in self.endpoint.pumps:
            pump.flush()

    def test_identifies(self):
        """The link identifies and hands over the connection."""
        self.link.startService()
        d = self.link.whenConnected()
        self.flush()
        proto = self.successResultOf(d)
        self.assertTrue(proto.connected)
        self.assertEqual(self.node.identified, [5])

    def test_notReadyRetriesWithBackoff(self):
        """A refusal because the cluster is not ready is retried later,
        each time a little later, and the link connects in the end."""
        self.endpoint.behaviour = NotReady("cluster RECOVERING")
        self.link.startService()
        d = self.link.whenConnected()
        self.flush()
        self.assertNoResult(d)
        self.assertEqual(len(self.endpoint.pumps), 1)
        first = self.clock.getDelayedCalls()[0].getTime()
        self.clock.advance(first)
        self.flush()
        self.assertEqual(len(self.endpoint.pumps), 2)
        second = self.clock.getDelayedCalls()[0].getTime() - first
        self.assertGreater(second, first)
        self.endpoint.behaviour = ANSWER
        self.clock.advance(second)
        self.flush()
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_protocolErrorIsFatal(self):
        """A wrong cluster name is fatal: no retry."""
        self.endpoint.behaviour = ProtocolError("wrong cluster name 'x'")
        self.link.startService()
        self.flush()
        self.assertEqual(len(self.node.fatals), 1)
        self.assertIn("wrong cluster name", self.node.fatals[0])

    def test_lostReconnects(self):
        """A lost connection is reported and a new one is made."""
        self.link.startService()
        self.flush()
        proto = self.successResultOf(self.link.whenConnected())
        proto.transport.loseConnection()
        self.flush()
        self.assertEqual(self.node.lost, [proto])
        d = self.link.whenConnected()
        self.assertNoResult(d)
        self.clock.advance(self.link.initialDelay)
        self.flush()
        self.assertIsNot(self.successResultOf(d), proto)
        self.assertEqual(self.node.identified, [5, 5])

    def test_stop(self):
        """Stopping fails the waiters and leaves no retry pending."""
        self.endpoint.behaviour = NotReady("no")
        self.link.startService()
        d = self.link.whenConnected()
        self.flush()
        self.link.stopService()
        self.failureResultOf(d, NotReady)
        self.assertEqual(self.clock.getDelayedCalls(), [])
