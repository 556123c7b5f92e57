"""
Tests for L{neo.protocols.arguments}, L{neo.protocols.commands} and
L{neo.protocols.base}, over an in-memory connection.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from neo.lib.ids import p64, u64
from neo.lib.states import ClusterState
from neo.protocols import commands as c
from neo.protocols.arguments import (
    MAX_RECORD, BigBytes, Enum, Id8, Json, OidList)
from neo.protocols.base import NodeProtocol, ignoreClosed
from neo.protocols.errors import (
    NotReady, OidNotFound, ProtocolError, RecordTooLarge)
from tests.unit.helpers import settled

OID1, OID2 = p64(1), p64(2)
TID1, TID2 = p64(0x1000), p64(0x2000)
#: A compression code the fake storage refuses as a protocol violation.
BAD_COMPRESSION = 99




class FakeStorage(amp.CommandLocator):
    """
    Answers a few commands like a storage node (and a master) would.

    @ivar objects: C{{oid: (serial, data)}} answered by AskObject.
    @ivar received: C{(command name, arguments)} of every command received.
    @ivar stall: when true, AskObject answers with a Deferred fired only
        through C{stalled}.
    """

    def __init__(self):
        self.objects = {}
        self.received = []
        self.stall = False
        self.stalled = []

    @c.AskObject.responder
    def askObject(self, oid, serial, before):
        self.received.append(("AskObject", oid))
        if self.stall:
            d = defer.Deferred()
            self.stalled.append(d)
            return d
        if oid not in self.objects:
            raise OidNotFound(f"no revision of oid {u64(oid):#x}")
        tid, data = self.objects[oid]
        return {"serial": tid, "nextSerial": None, "compression": 0,
                "data": data, "deleted": False}

    @c.StoreObject.responder
    def storeObject(self, ttid, oid, serial, compression, data):
        if compression == BAD_COMPRESSION:
            raise ProtocolError(f"unknown compression {compression}")
        self.received.append(("StoreObject", (ttid, oid, serial, data)))
        self.objects[oid] = (ttid, data)
        return {"conflict": None}

    @c.Ping.responder
    def ping(self):
        self.received.append(("Ping", None))
        return {}

    @c.AskNewOIDs.responder
    def askNewOIDs(self, count):
        if count == 0:
            raise ValueError("a bug")
        if count < 0:
            return {"oids": "not a list of oids"}
        return {"oids": [p64(n) for n in range(1, count + 1)]}

    @c.AskFinishTransaction.responder
    def askFinishTransaction(self, ttid, oids, checked, **optional):
        self.received.append(("AskFinishTransaction", (oids, checked)))
        return {"tid": TID2}

    @c.AskNodeList.responder
    def askNodeList(self, nodeType):
        return {"nodes": self.nodes}

    @c.SendPartitionTable.responder
    def sendPartitionTable(self, partitionTable):
        self.received.append(("SendPartitionTable", partitionTable))
        return {}

    @c.AskClusterState.responder
    def askClusterState(self):
        return {"state": ClusterState.RUNNING}


class ConnectionTestCase(SynchronousTestCase):
    """A client and a server L{NodeProtocol} connected in memory."""

    def setUp(self):
        self.clock = Clock()
        self.storage = FakeStorage()
        self.peer = FakeStorage()
        self.client, self.server, self.pump = iosim.connectedServerAndClient(
            lambda: NodeProtocol(self.storage),
            lambda: NodeProtocol(self.peer), clock=self.clock)

    def ask(self, command, **kwargs):
        """Ask the server, pump every byte, and return the settled result."""
        d = settled(self.client.ask(command, **kwargs))
        self.pump.flush()
        return d

    def assertUsable(self):
        """A Ping round trip still works on the connection."""
        self.assertTrue(self.client.connected)
        self.assertTrue(self.server.connected)
        self.assertEqual(self.successResultOf(self.ask(c.Ping)), {})


class BigBytesTransferTests(ConnectionTestCase):
    """Records larger than an AMP value travel whole."""

    def storeAndLoad(self, data):
        stored = self.ask(c.StoreObject, ttid=TID1, oid=OID1, serial=TID1,
                          compression=0, data=data)
        self.assertEqual(self.successResultOf(stored), {"conflict": None})
        self.assertEqual(self.storage.received[-1][1][3], data)
        loaded = self.ask(c.AskObject, oid=OID1, serial=None, before=None)
        return self.successResultOf(loaded)

    def test_200KiB(self):
        """A 200 KiB record is stored and loaded back intact."""
        data = bytes(range(256)) * 800
        answer = self.storeAndLoad(data)
        self.assertEqual(answer["data"], data)
        self.assertEqual(answer["serial"], TID1)
        self.assertIsNone(answer["nextSerial"])
        self.assertFalse(answer["deleted"])

    def test_3MiB(self):
        """A 3 MiB record is stored and loaded back intact."""
        data = b"".join(p64(n) for n in range(3 * 1024 * 1024 // 8))
        self.assertEqual(self.storeAndLoad(data)["data"], data)

    def test_empty(self):
        """An empty record is stored and loaded back empty."""
        self.assertEqual(self.storeAndLoad(b"")["data"], b"")

    def test_exactlyOnePiece(self):
        """A record of exactly one AMP value travels intact."""
        data = b"y" * amp.MAX_VALUE_LENGTH
        self.assertEqual(self.storeAndLoad(data)["data"], data)

    def test_tooLarge(self):
        """
        A record over MAX_RECORD fails the call with RecordTooLarge, as a
        failed Deferred, and the connection stays usable.
        """
        d = self.client.ask(c.StoreObject, ttid=TID1, oid=OID1, serial=TID1,
                            compression=0, data=b"\0" * (MAX_RECORD + 1))
        self.failureResultOf(d, RecordTooLarge)
        self.pump.flush()
        self.assertEqual(self.storage.received, [])
        self.assertUsable()


class LargeArgumentTests(ConnectionTestCase):
    """OID lists and JSON documents of any practical size."""

    def test_oidListAnswer(self):
        """An answer of 20000 oids (160 KB) arrives whole and in order."""
        answer = self.successResultOf(self.ask(c.AskNewOIDs, count=20000))
        self.assertEqual(answer["oids"], [p64(n) for n in range(1, 20001)])

    def test_oidListArguments(self):
        """Two arguments of 20000 and 0 oids arrive unchanged."""
        oids = [p64(n * 7) for n in range(20000)]
        answer = self.ask(c.AskFinishTransaction, ttid=TID1, oids=oids,
                          checked=[])
        self.assertEqual(self.successResultOf(answer),
                         {"tid": TID2, "nextTtid": None, "direct": None})
        self.assertEqual(self.storage.received,
                         [("AskFinishTransaction", (oids, []))])

    def test_jsonAnswer(self):
        """A JSON document larger than an AMP value round-trips."""
        self.storage.nodes = [[n, "STORAGE", f"10.0.0.{n % 250}:{n}",
                               "RUNNING", {"name": "n\u00e9o", "x": None}]
                              for n in range(1, 3000)]
        answer = self.successResultOf(self.ask(c.AskNodeList, nodeType=None))
        self.assertEqual(answer["nodes"], self.storage.nodes)

    def test_jsonNotification(self):
        """A notification carrying JSON is received, and gets no answer."""
        table = {"ptid": 3, "replicas": 1,
                 "rows": [[[1, "UP_TO_DATE"], [2, "OUT_OF_DATE"]]]}
        self.assertIsNone(self.client.notify(c.SendPartitionTable,
                                             partitionTable=table))
        self.pump.flush()
        self.assertEqual(self.storage.received,
                         [("SendPartitionTable", table)])
        self.assertUsable()

    def test_enumAnswer(self):
        """An Enum argument arrives as the enum member."""
        answer = self.successResultOf(self.ask(c.AskClusterState))
        self.assertIs(answer["state"], ClusterState.RUNNING)


class ErrorTests(ConnectionTestCase):
    """Declared errors cross the wire; fatal ones close the connection."""

    def test_oidNotFound(self):
        """OidNotFound reaches the caller, message included; the link stays."""
        failure = self.failureResultOf(
            self.ask(c.AskObject, oid=OID2, serial=None, before=None),
            OidNotFound)
        self.assertIn("0x2", str(failure.value))
        self.assertUsable()

    def test_protocolErrorIsFatal(self):
        """A responder's ProtocolError reaches the caller and closes the link."""
        lost = self.client.whenDisconnected()
        failure = self.failureResultOf(
            self.ask(c.StoreObject, ttid=TID1, oid=OID1, serial=TID1,
                     compression=BAD_COMPRESSION, data=b"x"),
            ProtocolError)
        self.assertIn("unknown compression 99", str(failure.value))
        self.successResultOf(lost)
        self.assertFalse(self.client.connected)
        self.assertFalse(self.server.connected)

    def test_unexpectedErrorIsFatal(self):
        """Any other exception of a responder is logged, and closes the
        link after an unknown error answer."""
        lost = self.client.whenDisconnected()
        self.failureResultOf(self.ask(c.AskNewOIDs, count=0),
                             amp.UnknownRemoteError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.successResultOf(lost)

    def test_unserializableAnswerIsFatal(self):
        """So is an answer that does not fit its command."""
        lost = self.client.whenDisconnected()
        self.failureResultOf(self.ask(c.AskNewOIDs, count=-1),
                             amp.UnknownRemoteError)
        self.assertEqual(len(self.flushLoggedErrors(amp.BadLocalReturn)), 1)
        self.successResultOf(lost)

    def test_answeredAtOnce(self):
        """A responder that answers at once is answered without AMP's
        dispatch (and its Deferreds); one that answers later, or fails,
        goes through it."""
        dispatched = []
        dispatch = self.server.dispatchCommand
        self.server.dispatchCommand = lambda box: (
            dispatched.append(box[b"_command"]) or dispatch(box))
        self.storage.objects[OID1] = (TID1, b"x")
        self.assertEqual(self.successResultOf(self.ask(
            c.AskObject, oid=OID1, serial=None, before=None))["data"], b"x")
        self.assertEqual(dispatched, [])
        self.failureResultOf(self.ask(
            c.AskObject, oid=OID2, serial=None, before=None), OidNotFound)
        self.storage.stall = True
        d = self.ask(c.AskObject, oid=OID1, serial=None, before=None)
        self.assertNoResult(d)
        self.storage.stalled.pop().callback(
            {"serial": TID2, "nextSerial": None, "compression": 0,
             "data": b"later", "deleted": False})
        self.pump.flush()
        self.assertEqual(self.successResultOf(d)["data"], b"later")
        self.assertEqual(dispatched, [b"AskObject", b"AskObject"])
        self.assertUsable()

    def test_badIdLength(self):
        """An id that is not 8 bytes fails the call before anything is sent."""
        d = self.client.ask(c.AskObject, oid=b"1234567", serial=None,
                            before=None)
        self.failureResultOf(d, ProtocolError)
        self.pump.flush()
        self.assertEqual(self.storage.received, [])
        self.assertUsable()

    def test_noHandler(self):
        """A peer without handler answers UnhandledCommand, non-fatally."""
        self.server.handler = None
        self.failureResultOf(self.ask(c.Ping), amp.UnhandledCommand)
        self.server.handler = self.storage
        self.assertUsable()

    def test_handlerReplaced(self):
        """Commands go to the handler set at the time they arrive."""
        other = FakeStorage()
        self.server.handler = other
        self.successResultOf(self.ask(c.Ping))
        self.assertEqual(other.received, [("Ping", None)])
        self.assertEqual(self.storage.received, [])


class ConnectionStateTests(ConnectionTestCase):
    """ask(), notify() and whenDisconnected() around connection loss."""

    def test_askWhenNeverConnected(self):
        """ask() on a protocol that never connected fails with NotReady."""
        self.failureResultOf(NodeProtocol().ask(c.Ping), NotReady)

    def test_askAfterDisconnection(self):
        """ask() after the connection is lost fails with NotReady."""
        self.server.close()
        self.pump.flush()
        self.failureResultOf(self.client.ask(c.Ping), NotReady)
        self.assertIsNone(self.client.notify(c.Shutdown))

    def test_whenDisconnected(self):
        """whenDisconnected() fires when the peer closes the connection."""
        lost = []
        self.client.onConnectionLost = lost.append
        d = self.client.whenDisconnected()
        self.assertNoResult(d)
        self.server.close()
        self.pump.flush()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(lost, [self.client])
        self.assertIsNone(self.client.transport)
        self.assertIsNone(self.successResultOf(self.client.whenDisconnected()))

    def test_pendingAskFailsOnDisconnection(self):
        """A call in flight when the connection is lost fails; ignoreClosed
        turns that into None."""
        self.storage.stall = True
        d = settled(self.client.ask(c.AskObject, oid=OID1, serial=None,
                                    before=None))
        self.pump.flush()
        self.assertNoResult(d)
        self.client.close()
        self.pump.flush()
        failure = self.failureResultOf(d)
        self.assertIsNone(ignoreClosed(failure))

    def test_silentPeerTimesOut(self):
        """A call the peer never answers fails after 5 simulated seconds and
        the connection survives, even when the answer comes late."""
        self.storage.stall = True
        self.storage.objects[OID1] = (TID1, b"late")
        d = settled(self.client.ask(c.AskObject, oid=OID1, serial=None,
                                    before=None).addTimeout(5, self.clock))
        self.pump.flush()
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, defer.TimeoutError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The late answer is dropped without harm.
        [late] = self.storage.stalled
        late.callback({"serial": TID1, "nextSerial": None, "compression": 0,
                       "data": b"late", "deleted": False})
        self.pump.flush()
        self.assertUsable()


class ArgumentTests(SynchronousTestCase):
    """The argument types on their own."""

    def test_id8(self):
        """Id8 passes 8-byte values and rejects any other length."""
        arg = Id8()
        self.assertEqual(arg.toString(TID1), TID1)
        self.assertEqual(arg.fromString(TID1), TID1)
        for bad in (b"", b"1234567", b"123456789"):
            self.assertRaises(ProtocolError, arg.toString, bad)
            self.assertRaises(ProtocolError, arg.fromString, bad)

    def test_bigBytesSplit(self):
        """A value is split into AMP-sized pieces named NAME.i."""
        data = b"z" * (2 * amp.MAX_VALUE_LENGTH + 1)
        strings = {}
        BigBytes().toBox(b"data", strings, {"data": data}, None)
        self.assertEqual(strings[b"data"], b"3")
        self.assertEqual([len(strings[b"data.%d" % i]) for i in range(3)],
                         [amp.MAX_VALUE_LENGTH, amp.MAX_VALUE_LENGTH, 1])
        objects = {}
        BigBytes().fromBox(b"data", strings, objects, None)
        self.assertEqual(objects, {"data": data})

    def test_bigBytesPieceCount(self):
        """A value of one AMP value is one piece; an empty one, none."""
        for data, count in ((b"", 0), (b"z", 1),
                            (b"z" * amp.MAX_VALUE_LENGTH, 1)):
            strings = {}
            BigBytes().toBox(b"data", strings, {"data": data}, None)
            self.assertEqual(strings[b"data"], b"%d" % count)
            self.assertEqual(len(strings), count + 1)

    def test_bigBytesAtMaxRecord(self):
        """A value of exactly MAX_RECORD bytes is accepted both ways."""
        data = b"\1" * MAX_RECORD
        strings, objects = {}, {}
        BigBytes().toBox(b"data", strings, {"data": data}, None)
        BigBytes().fromBox(b"data", strings, objects, None)
        self.assertEqual(len(objects["data"]), MAX_RECORD)

    def test_bigBytesTooLargeToSend(self):
        """toBox refuses a value of MAX_RECORD + 1 bytes."""
        self.assertRaises(RecordTooLarge, BigBytes().toBox, b"data", {},
                          {"data": b"\1" * (MAX_RECORD + 1)}, None)

    def test_bigBytesTooManyPieces(self):
        """fromBox refuses a piece count above the maximum."""
        maxPieces = MAX_RECORD // amp.MAX_VALUE_LENGTH + 1
        strings = {b"data.%d" % i: b"" for i in range(maxPieces + 1)}
        strings[b"data"] = b"%d" % (maxPieces + 1)
        self.assertRaises(ProtocolError, BigBytes().fromBox, b"data",
                          strings, {}, None)

    def test_bigBytesBadCount(self):
        """fromBox refuses a negative or non-numeric piece count."""
        for count in (b"-1", b"two", b""):
            self.assertRaises(ProtocolError, BigBytes().fromBox, b"data",
                              {b"data": count}, {}, None)

    def test_bigBytesMissingPiece(self):
        """fromBox refuses a value with a missing piece."""
        strings = {b"data": b"3", b"data.0": b"a", b"data.2": b"c"}
        self.assertRaises(ProtocolError, BigBytes().fromBox, b"data",
                          strings, {}, None)

    def test_bigBytesMissing(self):
        """A missing value is None if optional, else a ProtocolError."""
        objects = {}
        BigBytes(optional=True).fromBox(b"data", {}, objects, None)
        self.assertEqual(objects, {"data": None})
        self.assertRaises(ProtocolError, BigBytes().fromBox, b"data", {}, {},
                          None)
        strings = {}
        BigBytes(optional=True).toBox(b"data", strings, {}, None)
        self.assertEqual(strings, {})
        self.assertRaises(ProtocolError, BigBytes().toBox, b"data", {}, {},
                          None)

    def test_oidListBadLength(self):
        """An id list whose length is not a multiple of 8 is refused."""
        self.assertRaises(ProtocolError, OidList().fromBox, b"oids",
                          {b"oids": b"1", b"oids.0": b"123456789"}, {}, None)

    def test_jsonBadDocument(self):
        """A value that is not JSON is refused."""
        self.assertRaises(ProtocolError, Json().fromBox, b"doc",
                          {b"doc": b"1", b"doc.0": b"{not json"}, {}, None)

    def test_enum(self):
        """Enum sends a member's value and refuses unknown names."""
        arg = Enum(ClusterState)
        self.assertEqual(arg.toString(ClusterState.VERIFYING), b"VERIFYING")
        self.assertEqual(arg.toString("RUNNING"), b"RUNNING")
        self.assertIs(arg.fromString(b"STOPPING"), ClusterState.STOPPING)
        self.assertRaises(ProtocolError, arg.fromString, b"DANCING")


class _FakeSocket:
    """What a TCP connection asks of its socket, recording sends."""

    def __init__(self, accept=None):
        self.sent = []
        #: Bytes accepted by the next send (all if None).
        self.accept = accept

    def setblocking(self, flag):
        pass

    def setsockopt(self, *args):
        pass

    def fileno(self):
        return -1

    def send(self, data):
        n = len(data) if self.accept is None else self.accept
        self.accept = None
        self.sent.append(bytes(data[:n]))
        return n


class _FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.writers = []
        self.triggers = []

    def addSystemEventTrigger(self, phase, event, callable):
        self.triggers.append((phase, event, callable))

    def addWriter(self, writer):
        self.writers.append(writer)

    def removeWriter(self, writer):
        if writer in self.writers:
            self.writers.remove(writer)

    def removeReader(self, reader):
        pass


class CoalescedWriteTests(SynchronousTestCase):
    """On TCP, the boxes of one reactor turn go out together, straight to
    the socket when nothing waits to be written."""

    def connect(self, accept=None):
        from twisted.internet import tcp
        self.reactor = _FakeReactor()
        self.socket = _FakeSocket(accept)
        proto = NodeProtocol()
        transport = tcp.Connection(self.socket, proto, self.reactor)
        transport.getPeer = transport.getHost = lambda: None
        transport.connected = True
        proto.makeConnection(transport)
        return proto

    def test_oneSendPerTurn(self):
        """Several notifications of one turn: one send, at the end of the
        turn, without the reactor watching the socket."""
        proto = self.connect()
        proto.notify(c.Ping)
        proto.notify(c.AskClusterState)
        self.assertEqual(self.socket.sent, [])
        self.reactor.advance(0)
        [data] = self.socket.sent
        self.assertEqual(data.count(b"_command"), 2)
        self.assertEqual(self.reactor.writers, [])

    def test_partialSend(self):
        """What the socket does not take is left to the transport, and
        later boxes queue behind it instead of overtaking it."""
        proto = self.connect(accept=10)
        proto.notify(c.Ping)
        self.reactor.advance(0)
        self.assertEqual(len(self.socket.sent[0]), 10)
        self.assertEqual(self.reactor.writers, [proto.transport])
        proto.notify(c.Ping)
        self.reactor.advance(0)
        self.assertEqual(len(self.socket.sent), 1)

    def test_flushSendsNow(self):
        """flush() sends what the turn queued so far at once; what comes
        after goes at the end of the turn, in a send of its own."""
        proto = self.connect()
        proto.notify(c.Ping)
        proto.flush()
        self.assertEqual(len(self.socket.sent), 1)
        proto.notify(c.AskClusterState)
        self.assertEqual(len(self.socket.sent), 1)
        self.reactor.advance(0)
        self.assertEqual(len(self.socket.sent), 2)
        self.assertIn(b"AskClusterState", self.socket.sent[1])
        proto.flush()  # nothing queued: nothing sent
        self.assertEqual(len(self.socket.sent), 2)

    def test_closeFlushes(self):
        """Closing sends what this turn queued first."""
        proto = self.connect()
        proto.notify(c.Ping)
        proto.close()
        self.assertEqual(len(self.socket.sent), 1)

    def test_shutdownFlushes(self):
        """What is queued when the reactor shuts down is sent before it
        closes the connections."""
        proto = self.connect()
        proto.notify(c.Ping)
        [(phase, event, flush)] = self.reactor.triggers
        self.assertEqual((phase, event), ("before", "shutdown"))
        flush()
        self.assertEqual(len(self.socket.sent), 1)

    def test_answersSentAfterReceiving(self):
        """The answers to the boxes of one read go out together when the
        read is processed."""
        proto = self.connect()
        proto.handler = FakeStorage()
        proto.dataReceived(amp.AmpBox(_command=b"Ping", _ask=b"1").serialize()
                           + amp.AmpBox(_command=b"Ping", _ask=b"2")
                           .serialize())
        [data] = self.socket.sent
        self.assertEqual(data.count(b"_answer"), 2)


class _BoxRecorder:
    def __init__(self):
        self.boxes = []

    def ampBoxReceived(self, box):
        self.boxes.append(dict(box))


class BoxParsingTests(SynchronousTestCase):
    """L{NodeProtocol}'s own parsing of AMP's wire format."""

    def setUp(self):
        self.proto = NodeProtocol()
        self.recorder = _BoxRecorder()
        self.transport = iosim.FakeTransport(self.proto, isServer=False)
        self.proto.makeConnection(self.transport)
        self.proto.ampBoxReceived = self.recorder.ampBoxReceived

    BOXES = [{b"_command": b"Ping", b"_ask": b"1"},
             {b"k": b"", b"empty": b"", b"big": b"v" * 65535},
             {}]

    def wire(self):
        return b"".join(amp.AmpBox(box).serialize() for box in self.BOXES)

    def test_allAtOnce(self):
        """Several boxes in one read are all received, in order."""
        self.proto.dataReceived(self.wire())
        self.assertEqual(self.recorder.boxes, self.BOXES)

    def test_everySplit(self):
        """However the data is cut, the same boxes are received, each once
        it is complete."""
        wire = self.wire()
        first = len(amp.AmpBox(self.BOXES[0]).serialize())
        for cut in list(range(0, 40)) + [first, first + 1, len(wire) - 3]:
            self.setUp()
            self.proto.dataReceived(wire[:cut])
            self.assertEqual(self.recorder.boxes,
                             self.BOXES[:1] if cut >= first else [])
            self.proto.dataReceived(wire[cut:])
            self.assertEqual(self.recorder.boxes, self.BOXES)

    def test_byteByByte(self):
        boxes = [self.BOXES[0], {}, {b"x": b"y" * 300}]
        wire = b"".join(amp.AmpBox(box).serialize() for box in boxes)
        for i in range(len(wire)):
            self.proto.dataReceived(wire[i:i + 1])
        self.assertEqual(self.recorder.boxes, boxes)

    def test_keyTooLong(self):
        """A key over 255 bytes closes the connection, with AMP's reason,
        without reading further."""
        self.proto.dataReceived(b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00")
        self.assertEqual(self.recorder.boxes, [])
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.proto._keyLengthLimitExceeded)


class ConversionTests(SynchronousTestCase):
    """L{c.Command} converts arguments and answers exactly as AMP does."""

    SAMPLES = [
        (c.Identify, "arguments", {
            "protocolVersion": 1, "cluster": "main", "nodeType": "CLIENT",
            "nid": None, "address": "127.0.0.1:1"}),
        (c.Identify, "response", {
            "nodeType": "MASTER", "nid": -3, "yourNid": None,
            "clusterState": ClusterState.RUNNING,
            "nodes": [[1, "STORAGE", "a:1", "RUNNING"]]}),
        (c.AskFinishTransaction, "arguments", {
            "ttid": TID1, "oids": [OID1, OID2], "checked": [],
            "voted": [1, 2], "beginNext": True}),
        (c.AskFinishTransaction, "response", {"tid": TID2}),
        (c.StoreObjects, "arguments", {
            "ttid": TID1, "records": c.packRecords([(OID1, TID1, 0, b"x")])}),
    ]

    def convert(self, command, which, objects, amp_):
        cls = amp.Command if amp_ else command
        if which == "arguments":
            box = cls.makeArguments.__func__(command, objects, None)
            return dict(box), cls.parseArguments.__func__(command, box, None)
        box = cls.makeResponse.__func__(command, objects, None)
        return dict(box), cls.parseResponse.__func__(command, box, None)

    def test_sameAsAMP(self):
        for command, which, objects in self.SAMPLES:
            self.assertEqual(self.convert(command, which, objects, False),
                             self.convert(command, which, objects, True))

    def test_missingArgument(self):
        with self.assertRaises(KeyError):
            c.Identify.makeArguments({"cluster": "main"}, None)
        with self.assertRaises(KeyError):
            c.Identify.parseArguments(amp.AmpBox(cluster=b"main"), None)

    def test_unknownArgument(self):
        with self.assertRaises(amp.InvalidSignature):
            c.Ping.makeArguments({"surprise": 1}, None)

    def test_forgottenArgument(self):
        """A command made without a required argument is refused, naming
        what is missing (optional ones may be left out)."""
        with self.assertRaises(amp.InvalidSignature) as e:
            c.AskLockInformation(ttid=TID1)
        self.assertIn("forgot tid for AskLockInformation", str(e.exception))
        c.AskLockInformation(ttid=TID1, tid=TID2)


class SerializeTests(SynchronousTestCase):
    """L{neo.protocols.base.serialize} writes what AMP reads."""

    def test_roundTrip(self):
        from neo.protocols.base import serialize
        box = {b"_command": b"Ping", b"k": b"", b"v": b"x" * 65535}
        recorder = _BoxRecorder()
        receiver = amp.BinaryBoxProtocol(recorder)
        receiver.dataReceived(serialize(amp.AmpBox(box)))
        self.assertEqual(recorder.boxes, [box])

    def test_keysRemembered(self):
        """A key's wire form is worked out once, and the same boxes come
        out of it the next times; a box is still checked whole (a key
        known already with a value too long is refused)."""
        from neo.protocols import base
        box = amp.AmpBox({b"_command": b"Ping", b"seen-once": b"x"})
        first = base.serialize(box)
        self.assertIn(b"seen-once", base._KEYS)
        self.assertEqual(base.serialize(box), first)
        self.assertEqual(first, box.serialize())
        with self.assertRaises(amp.TooLong):
            base.serialize({b"seen-once": b"v" * 65536})

    def test_keysKeptBounded(self):
        """However many different keys are sent, only so many are kept."""
        from neo.protocols import base
        self.patch(base, "_KEYS", {})
        self.patch(base, "_KEYS_KEPT", 3)
        for i in range(10):
            key = b"k%d" % i
            self.assertEqual(base.serialize({key: b"v"}),
                             amp.AmpBox({key: b"v"}).serialize())
        self.assertEqual(len(base._KEYS), 3)

    def test_refused(self):
        """What AMP refuses to send is refused the same way."""
        from neo.protocols.base import serialize
        with self.assertRaises(TypeError):
            serialize({b"k": "unicode"})
        with self.assertRaises(amp.TooLong):
            serialize({b"k" * 256: b"v"})
        with self.assertRaises(amp.TooLong):
            serialize({b"k": b"v" * 65536})
