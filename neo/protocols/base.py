# -*- test-case-name: tests.unit.test_protocol -*-
"""
The connection class every role uses.

A L{NodeProtocol} is an AMP connection whose responders live on a
replaceable I{handler} (an L{amp.CommandLocator}): a node swaps handlers as
its phase changes, so that a command legal in one phase is refused in
another.  The protocol itself only translates; decisions are the node's.
"""

import weakref

from twisted.internet import defer, tcp
from twisted.internet.error import ConnectionClosed
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from neo.protocols.errors import NotReady

log = Logger()


class NodeProtocol(amp.AMP):
    """
    An AMP connection to another NEO node.

    @ivar handler: the L{amp.CommandLocator} answering the peer's commands.
    @ivar peer: whatever the owning node attaches once the peer identified
        (typically its node entry); C{None} before.
    @ivar onConnectionLost: called with this protocol when the connection
        is lost.
    """

    handler = None
    peer = None
    onConnectionLost = None
    connected = False
    _receiving = False

    def __init__(self, handler=None):
        super().__init__()
        self.handler = handler
        self._disconnected = []
        #: Boxes to send at the end of this reactor turn (TCP only).
        self._outgoing = None

    @property
    def unwrapped(self):
        """This protocol itself, even when reached through a wrapper (such as
        the proxy ClientService hands to C{prepareConnection}), so that
        identity comparisons work."""
        return self

    def locateResponder(self, name):
        if self.handler is None:
            return None
        return self.handler.locateResponder(name)

    #: The outcome of a responder already called by L{_commandReceived},
    #: for L{dispatchCommand} to hand over to AMP.
    _called = None

    def _commandReceived(self, box):
        """
        AMP's, with a fast path for most questions: a responder of the
        handler that answers at once is answered without a Deferred.
        Whatever else (a Deferred, an error, a notification) goes AMP's
        way, with the same answers and errors.
        """
        handler = self.handler
        entry = None
        if amp.ASK in box:
            dispatch = getattr(handler, "_commandDispatch", None)
            if dispatch is not None:
                entry = dispatch.get(box[amp.COMMAND])
        if entry is None:
            return super()._commandReceived(box)
        command, function = entry
        try:
            kw = command.parseArguments(box, handler)
        except Exception:
            # AMP parses again, and fails the same way.
            return super()._commandReceived(box)
        try:
            result = function(handler, **kw)
        except Exception:
            result = defer.fail()
        if not isinstance(result, defer.Deferred):
            try:
                answer = command.makeResponse(result, handler)
            except Exception:
                result = defer.succeed(result)  # AMP reports it
            else:
                answer[amp.ANSWER] = box[amp.ASK]
                return self._safeEmit(answer)
        self._called = (command, result)
        super()._commandReceived(box)

    def dispatchCommand(self, box):
        called, self._called = self._called, None
        if called is None:
            return super().dispatchCommand(box)
        command, result = called
        respond = self.handler._wrapWithSerialization(lambda **kw: result,
                                                      command)
        return defer.maybeDeferred(respond, box)

    def makeConnection(self, transport):
        # AMP.makeConnection logs every connection at info level; nodes log
        # what matters (identification) themselves.
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionMade(self):
        self.connected = True
        # Requests and answers are small and latency-bound: no Nagle.
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        if isinstance(self.transport, tcp.Connection) and all(
                hasattr(self.transport, name) for name in _TCP_STATE):
            self._outgoing = []
        super().connectionMade()

    def sendBox(self, box):
        """
        Send the boxes of one reactor turn together, straight to the
        socket when nothing else waits to be written: each message would
        otherwise cost the reactor two more system calls (watching the
        socket for writability, then not) and a loop iteration.
        """
        if (self._outgoing is None or self._locked
                or self._startingTLSBuffer is not None):
            return super().sendBox(box)
        if not self._outgoing and not self._receiving:
            _pending(self.transport.reactor).add(self)
            self.transport.reactor.callLater(0, self._flush)
        self._outgoing.append(serialize(box))

    def dataReceived(self, data):
        # The answers to what arrives go out together, right after.
        self._receiving = True
        try:
            if self.innerProtocol is None:
                self._parseBoxes(data)
            else:
                super().dataReceived(data)
        finally:
            self._receiving = False
            if self._outgoing:
                self._flush()

    #: What L{_parseBoxes} has not parsed yet (part of a key or value), the
    #: box being received and the key waiting for its value.
    _rest = b""
    _box = None
    _key = None

    def _parseBoxes(self, data):
        """
        Parse AMP's wire format (16-bit length-prefixed keys and values,
        an empty key ending a box) and hand over every complete box.  This
        is what L{amp.BinaryBoxProtocol} does, string by string through a
        state machine; done here in one loop, it costs a fifth as much,
        and each message is parsed several times on a commit's way.
        Protocol switching (L{amp.ProtocolSwitchCommand}) is not supported.
        """
        self._justStartedTLS = False
        if self._rest:
            data = self._rest + data
        offset, size = 0, len(data)
        box, key = self._box, self._key
        receiver = self.boxReceiver
        while size - offset >= 2 and not self.paused:
            length = (data[offset] << 8) | data[offset + 1]
            if key is None and length > self._MAX_KEY_LENGTH:
                self._rest = b""
                self.lengthLimitExceeded(length)
                return
            end = offset + 2 + length
            if end > size:
                break
            string = data[offset + 2:end]
            offset = end
            if key is not None:
                box[key] = string
                key = None
            elif string:
                key = string
                if box is None:
                    box = amp.AmpBox()
            else:
                received = amp.AmpBox() if box is None else box
                box = None
                receiver.ampBoxReceived(received)
        self._rest = data[offset:]
        self._box, self._key = box, key

    def flush(self):
        """
        Send at once what this reactor turn queued so far on this
        connection, instead of at the end of the turn: for a message that
        the rest of the turn should not hold back (a vote, whose answer
        is waited for, before the other messages of the commit).
        """
        if self._outgoing:
            self._flush()

    def _flush(self):
        if not self._outgoing:
            return
        data = b"".join(self._outgoing)
        del self._outgoing[:]
        transport = self.transport
        if transport is None:
            return
        if not (transport.dataBuffer or transport._tempDataLen
                or transport.disconnecting or transport.TLS):
            try:
                data = data[transport.socket.send(data):]
            except OSError:
                pass  # Twisted's own write sees the error, if any.
        if data:
            transport.write(data)

    def close(self) -> None:
        if self._outgoing:
            self._flush()
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.connected = False
        self._outgoing = None
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
        waiting, self._disconnected = self._disconnected, []
        for d in waiting:
            d.callback(None)
        if self.onConnectionLost is not None:
            self.onConnectionLost(self)

    def whenDisconnected(self) -> defer.Deferred:
        """A Deferred that fires once the connection is closed."""
        if not self.connected:
            return defer.succeed(None)
        d = defer.Deferred()
        self._disconnected.append(d)
        return d

    def ask(self, command, **kwargs) -> defer.Deferred:
        """
        Send a command and return a Deferred of its answer.

        Synchronous failures (a value too large, a closed connection) become
        a failed Deferred, so callers have one error path.
        """
        if not self.connected:
            return defer.fail(NotReady("connection closed"))
        try:
            return self.callRemote(command, **kwargs)
        except Exception:
            return defer.fail(Failure())

    def notify(self, command, **kwargs) -> None:
        """Send a notification; a closed connection silently drops it."""
        if self.connected:
            self.callRemote(command, **kwargs)



#: The wire form of each key serialized so far (its length, then itself):
#: boxes use the same few keys over and over.
_KEYS = {}
_KEYS_KEPT = 4096


def serialize(box) -> bytes:
    """
    L{amp.AmpBox.serialize}, with the same checks, in a fifth of the time
    (keys in insertion order: AMP does not need them sorted).
    """
    parts = []
    append = parts.append
    keys = _KEYS
    for key, value in box.items():
        prefix = keys.get(key)
        if prefix is None:
            if type(key) is not bytes:
                # Let AMP say what is wrong (unicode, ...).
                return amp.AmpBox(box).serialize()
            if len(key) > amp.MAX_KEY_LENGTH:
                raise amp.TooLong(True, True, key, None)
            prefix = len(key).to_bytes(2, "big") + key
            if len(keys) < _KEYS_KEPT:
                keys[key] = prefix
        if type(value) is not bytes:
            return amp.AmpBox(box).serialize()
        if len(value) > amp.MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, value, key)
        append(prefix)
        append(len(value).to_bytes(2, "big"))
        append(value)
    append(b"\0\0")
    return b"".join(parts)


#: What L{NodeProtocol._flush} reads of a TCP transport (else it leaves
#: writing to the transport, as usual).
_TCP_STATE = ("dataBuffer", "_tempDataLen", "disconnecting", "TLS",
              "socket", "reactor")

_PENDING = {}


def _pending(reactor):
    """
    The connections of a reactor with boxes waiting for the end of the
    turn: sent before the reactor shuts down (which closes connections
    without writing anything more).
    """
    pending = _PENDING.get(reactor)
    if pending is None:
        pending = _PENDING[reactor] = weakref.WeakSet()

        def flushAll():
            for proto in list(pending):
                proto._flush()
        reactor.addSystemEventTrigger("before", "shutdown", flushAll)
    return pending


#: The failures of an ask whose connection was (or got) closed.
CLOSED = (NotReady, ConnectionClosed, amp.ProtocolSwitched)


def ignoreClosed(failure):
    """An errback for asks whose connection may be closed meanwhile."""
    failure.trap(*CLOSED)
    return None
