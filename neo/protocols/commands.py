# -*- test-case-name: tests.unit.test_protocol -*-
"""
Every command NEO nodes, clients and neoctl send each other.

Versioning rule: a released command never changes its arguments; add an
C{optional=True} argument or a new command, and bump L{PROTOCOL_VERSION}
only when older nodes must be refused.

Conventions: a C{Notify*} command expects no answer; OIDs and TIDs are
8-byte strings; node lists are JSON rows C{[nid, type, address, state]};
partition tables are JSON C{[[nid, state], ...]} rows, one per partition.
"""

import struct

from twisted.protocols import amp

from neo.lib.states import ClusterState
from neo.protocols.arguments import BigBytes, Enum, Json, Oid, OidList, Tid
from neo.protocols.errors import COMMON_ERRORS, FATAL_ERRORS, ProtocolError

PROTOCOL_VERSION = 8


class Command(amp.Command):
    """
    A NEO command: any may fail with the common errors.

    Arguments and answers are converted as L{amp.Command} does, with the
    Python name of each argument worked out once per class instead of
    once per argument of every message.
    """

    errors = COMMON_ERRORS
    fatalErrors = FATAL_ERRORS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._argumentSchema = _schema(cls.arguments)
        cls._argumentNames = {name for _, name, _, _ in cls._argumentSchema}
        cls._required = [name for _, name, argument, _ in cls._argumentSchema
                         if not argument.optional]
        cls._responseSchema = _schema(cls.response)

    def __init__(self, **kw):
        self.structured = kw
        forgotten = [name for name in self._required if name not in kw]
        if forgotten:
            raise amp.InvalidSignature(
                f"forgot {', '.join(forgotten)} for"
                f" {self.commandName.decode()}")

    @classmethod
    def makeArguments(cls, objects, proto):
        for name in objects:
            if name not in cls._argumentNames:
                raise amp.InvalidSignature(f"{name} is not a valid argument")
        return _toBox(cls._argumentSchema, objects, cls.commandType(), proto)

    @classmethod
    def parseArguments(cls, box, proto):
        return _fromBox(cls._argumentSchema, box, proto)

    @classmethod
    def makeResponse(cls, objects, proto):
        return _toBox(cls._responseSchema, objects, cls.responseType(), proto)

    @classmethod
    def parseResponse(cls, box, proto):
        return _fromBox(cls._responseSchema, box, proto)


def _schema(arguments):
    """C{(wire name, Python name, argument, whether it is a plain one)}
    for each argument: a plain one holds one value under its own name."""
    return [(wire, wire.decode("ascii").replace("-", "_"), argument,
             type(argument).fromBox is amp.Argument.fromBox
             and type(argument).toBox is amp.Argument.toBox)
            for wire, argument in arguments]


def _fromBox(schema, box, proto):
    strings = dict(box)
    objects = {}
    for wire, name, argument, plain in schema:
        if not plain:
            argument.fromBox(wire, strings, objects, proto)
        elif argument.optional:
            string = strings.get(wire)
            objects[name] = (None if string is None
                             else argument.fromStringProto(string, proto))
        else:
            objects[name] = argument.fromStringProto(strings[wire], proto)
    return objects


def _toBox(schema, objects, strings, proto):
    for wire, name, argument, plain in schema:
        if not plain:
            argument.toBox(wire, strings, objects, proto)
        elif argument.optional:
            value = objects.get(name)
            if value is not None:
                strings[wire] = argument.toStringProto(value, proto)
        else:
            strings[wire] = argument.toStringProto(objects[name], proto)
    return strings


class Notification(Command):
    """A command that expects no answer."""

    requiresAnswer = False


# -- Identification and cluster information ----------------------------------

class Identify(Command):
    """
    First command on every connection.  The acceptor checks the protocol
    version and the cluster name (closing the connection with a
    L{ProtocolError} that says why when they differ).  A master acceptor
    assigns the node id and answers with its view of the cluster.
    """

    arguments = [
        (b"protocolVersion", amp.Integer()),
        (b"cluster", amp.Unicode()),
        (b"nodeType", amp.Unicode()),
        (b"nid", amp.Integer(optional=True)),
        (b"address", amp.Unicode(optional=True)),
    ]
    response = [
        (b"nodeType", amp.Unicode()),
        (b"nid", amp.Integer(optional=True)),
        (b"yourNid", amp.Integer(optional=True)),
        (b"clusterState", Enum(ClusterState, optional=True)),
        (b"nodes", Json(optional=True)),
        (b"partitionTable", Json(optional=True)),
    ]


class Ping(Command):
    """A round trip: once answered, every earlier message was processed."""


class NotifyNodeInformation(Notification):
    """Nodes that appeared or changed state (rows of the node list)."""

    arguments = [(b"nodes", Json())]


class NotifyClusterState(Notification):
    arguments = [(b"state", Enum(ClusterState))]


class SendPartitionTable(Notification):
    """The whole partition table (C{{"ptid", "replicas", "rows"}})."""

    arguments = [(b"partitionTable", Json())]


class NotifyPartitionChanges(Notification):
    """Cells that changed: C{[[partition, nid, state], ...]}."""

    arguments = [(b"ptid", amp.Integer()), (b"replicas", amp.Integer()),
                 (b"changes", Json())]


class Shutdown(Notification):
    """The cluster is stopping: the receiving node must exit."""


# -- Master <-> storage: recovery, verification, operation -------------------

class AskRecovery(Command):
    """The storage's copy of the partition table (ptid is 0 if none)."""

    response = [(b"partitionTable", Json())]


class AskLockedTransactions(Command):
    """
    Voted transactions: C{[[ttid, tid or null, participants or null],
    ...]} as integers.  C{participants}: the nids of the nodes that write
    some of a transaction locked without a durable vote (its vote was
    kept in memory, L{VoteTransaction}); each of them must have it, else
    it was never committed (L{AskKnownTransaction}).
    """

    response = [(b"transactions", Json())]


class AskKnownTransaction(Command):
    """Whether the node locked or committed the transaction of TID C{tid}
    (its transaction has no ttrans row there)."""

    arguments = [(b"tid", Tid())]
    response = [(b"known", amp.Boolean())]


class ValidateTransaction(Command):
    """Commit a voted transaction with the given final TID; with C{undo},
    drop it: a participant never wrote its part."""

    arguments = [(b"ttid", Tid()), (b"tid", Tid()),
                 (b"undo", amp.Boolean(optional=True))]


class AskLastIDs(Command):
    response = [(b"lastTid", Tid(optional=True)),
                (b"lastOid", Oid(optional=True))]


class StartOperation(Command):
    """Start serving clients; answered once the storage is ready."""


class StopOperation(Notification):
    """Stop serving clients: the cluster is no longer operational."""


class AskLockInformation(Command):
    """
    Second phase: lock the voted transaction under its final TID.  With
    C{final} (the node is the transaction's only participant), also unlock
    it: no L{NotifyUnlockInformation} follows; with C{notify} as well, the
    node tells the client that the transaction is committed
    (L{NotifyTransactionFinished}) before it answers.
    """

    arguments = [(b"ttid", Tid()), (b"tid", Tid()),
                 (b"final", amp.Boolean(optional=True)),
                 (b"notify", amp.Boolean(optional=True))]


class NotifyUnlockInformation(Notification):
    """The transaction is committed everywhere: make it visible."""

    arguments = [(b"ttid", Tid())]


class NotifyTransactionWritten(Notification):
    """
    Every participant of the transaction wrote its lock, while an earlier
    TID keeps it from being unlocked: its write locks may go (a vote kept
    in memory with other participants keeps them until then, see
    L{VoteTransaction}), but not its read locks (loads wait for the
    unlock, in TID order).
    """

    arguments = [(b"ttid", Tid())]


class AbortTransaction(Notification):
    """
    Forget a transaction that did not reach the lock phase.  From a client
    to the master, about a transaction whose TID was reserved
    (L{ReserveTransaction}): C{finishing} says that the client asked its
    storage node to finish it (L{FinishTransaction}), so that the node
    decides (L{AskResolveTransaction}); C{keep} gives the TID back but
    keeps the transaction begun, for the retry that usually follows a
    conflict to take it over.
    """

    arguments = [(b"ttid", Tid()), (b"finishing", amp.Boolean(optional=True)),
                 (b"keep", amp.Boolean(optional=True))]


class NotifyCommitted(Notification):
    """
    Storage to master: a transaction reserved for its client to finish at
    this node (L{ReserveTransaction}) is committed here (its read locks
    last until it is in the database); with other participants, once its
    lock is durable here.
    """

    arguments = [(b"ttid", Tid()), (b"tid", Tid())]


class AskResolveTransaction(Command):
    """
    Master to storage: the client of a transaction reserved for it to
    finish at its nodes (L{ReserveTransaction}) was lost, or gave it up
    after asking to finish it, or the cluster is stopping.  Each node
    answers C{committed} if it is being finished there; otherwise it
    refuses to finish it later (and aborts it at once if this node is its
    only participant).  The transaction commits if one of them said so:
    the master locks it on the others, which keep their durable votes
    until it decides; else it aborts it.
    """

    arguments = [(b"ttid", Tid())]
    response = [(b"committed", amp.Boolean())]


# -- Client <-> master --------------------------------------------------------

class AskBeginTransaction(Command):
    arguments = [(b"tid", Tid(optional=True))]
    response = [(b"ttid", Tid())]


class AskNewOIDs(Command):
    arguments = [(b"count", amp.Integer())]
    response = [(b"oids", OidList())]


class AskFinishTransaction(Command):
    """
    Commit a voted transaction.  C{oids} are the objects stored,
    C{checked} those only checked with checkCurrentSerialInTransaction,
    C{voted} the storage nodes the client voted on: only those take part
    in the commit (the others have nothing of the transaction).  With
    C{beginNext}, the answer also holds the temporary TID of a transaction
    begun for the client's next commit (C{nextTtid}, if the cluster can
    begin one), which then needs no round trip of its own.
    C{metaPartition} is the partition the transaction's metadata was voted
    in (by default, the ttid's): the final TID is in that partition.

    With C{direct}, the client can hear of the commit from its only
    storage node: when the master agrees (the node is the only participant
    and every transaction before is committed), it answers at once with
    C{direct} and the final TID, and the node sends the client
    L{NotifyTransactionFinished} once the transaction is committed (the
    commit is not done before that).  The client's other connections hear
    of it from the master as usual.

    A transaction whose reserved TID its node refused (L{FinishTransaction})
    is finished this way, under a new TID.
    """

    arguments = [(b"ttid", Tid()), (b"oids", OidList()),
                 (b"checked", OidList()),
                 (b"voted", amp.ListOf(amp.Integer(), optional=True)),
                 (b"beginNext", amp.Boolean(optional=True)),
                 (b"metaPartition", amp.Integer(optional=True)),
                 (b"direct", amp.Boolean(optional=True))]
    response = [(b"tid", Tid()), (b"nextTtid", Tid(optional=True)),
                (b"direct", amp.Boolean(optional=True))]


class ReserveTransaction(Command):
    """
    Sent along with the votes of a transaction: the arguments are those of
    L{AskFinishTransaction}.  If the nodes voted on are its participants
    and no other transaction is being finished, the master gives the
    transaction its final TID at once (C{tid}), and the client finishes it
    at those nodes itself (L{FinishTransaction}), each of which tells the
    master (L{NotifyCommitted}): a message less on the way of the commit
    than L{AskFinishTransaction}.  Until then, the transactions finished
    after it wait for it, and so do syncs.  Otherwise C{tid} is None and
    nothing is reserved: the client finishes through the master.
    """

    arguments = [(b"ttid", Tid()), (b"oids", OidList()),
                 (b"checked", OidList()),
                 (b"voted", amp.ListOf(amp.Integer())),
                 (b"beginNext", amp.Boolean(optional=True)),
                 (b"metaPartition", amp.Integer(optional=True))]
    response = [(b"tid", Tid(optional=True)),
                (b"nextTtid", Tid(optional=True))]


class AskLastTransaction(Command):
    response = [(b"tid", Tid(optional=True))]


class InvalidateObjects(Notification):
    arguments = [(b"tid", Tid()), (b"oids", OidList())]


# -- Client <-> storage -------------------------------------------------------

class StoreObject(Command):
    """
    Store a revision of an object based on C{serial}.  Answers C{conflict},
    the last committed serial, when it is not C{serial}.
    """

    arguments = [(b"ttid", Tid()), (b"oid", Oid()), (b"serial", Tid()),
                 (b"compression", amp.Integer()), (b"data", BigBytes())]
    response = [(b"conflict", Tid(optional=True))]


#: What the answer to stores carries (L{StoreObjects}, and a
#: L{VoteTransaction} with records).
_STORED = [(b"conflicts", OidList(optional=True)),
           (b"committed", BigBytes(optional=True)),
           (b"resolved", OidList(optional=True)),
           (b"resolvedRecords", BigBytes(optional=True)),
           (b"unresolvable", OidList(optional=True))]


class StoreObjects(Command):
    """
    Several stores at once (see L{StoreObject}): C{records} packs, for each,
    oid (8 bytes), serial (8), compression (1), data length (4) and data
    (L{packRecords}).  Answers the conflicts as oid, serial, oid, serial...
    and, in C{committed}, the records of those committed revisions the
    node had at hand (packed the same way): the client resolves the
    conflicts without loading them.  C{resolved} are the oids whose
    conflict the node resolved itself (kept, as based on the last serial);
    C{resolvedRecords} packs those results that are small enough, so that
    the client caches what it committed without loading it again.
    C{unresolvable} are conflicting oids whose resolution failed on the
    node although it could import their class: the client's would fail
    too, so the node gave the transaction up (the client raises the
    conflict and aborts).
    """

    arguments = [(b"ttid", Tid()), (b"records", BigBytes())]
    response = _STORED


_RECORD = struct.Struct(">8s8sBI")


def packRecords(records) -> bytes:
    """Pack C{(oid, serial, compression, data)} tuples for StoreObjects."""
    return b"".join(_RECORD.pack(oid, serial, compression, len(data)) + data
                    for oid, serial, compression, data in records)


def unpackRecords(packed: bytes) -> list:
    records, offset, size = [], 0, _RECORD.size
    view = memoryview(packed)
    while offset < len(packed):
        if offset + size > len(packed):
            raise ProtocolError("truncated store records")
        oid, serial, compression, length = _RECORD.unpack_from(packed, offset)
        offset += size
        if offset + length > len(packed):
            raise ProtocolError("truncated store records")
        records.append((oid, serial, compression,
                        bytes(view[offset:offset + length])))
        offset += length
    return records


class CheckCurrentSerial(Command):
    """Lock C{oid} for the transaction if its last serial is C{serial}."""

    arguments = [(b"ttid", Tid()), (b"oid", Oid()), (b"serial", Tid())]
    response = [(b"conflict", Tid(optional=True))]


class NotifyTransactionFinished(Notification):
    """
    Storage to client: the transaction the master finished in direct mode
    (L{AskFinishTransaction}) is committed under C{tid}.
    """

    arguments = [(b"ttid", Tid()), (b"tid", Tid())]


class FinishTransaction(Command):
    """
    Client to storage: commit, under C{tid}, the transaction voted here,
    whose final TID the master reserved (L{ReserveTransaction}); the
    client asks each node voted on, once every vote is answered (with
    C{shared} if there are several).
    Answered once it is in the database (locked, with other participants),
    with C{committed}; or at once without, when a transaction that held
    one of its locks before got a greater TID meanwhile (commits follow
    the order of the locks, and the vote's C{released} told it already),
    or when the master decided without the client (L{AskResolveTransaction}).
    The client then finishes it through the master
    (L{AskFinishTransaction}), under a new TID.
    """

    arguments = [(b"ttid", Tid()), (b"tid", Tid()),
                 (b"shared", amp.Boolean(optional=True))]
    response = [(b"committed", amp.Boolean())]


class NotifyDeadlock(Notification):
    """
    Storage to client: an older transaction waits for a lock this younger
    transaction holds (unvoted, or voted as C{shared} and pipelined).  A
    client answers with L{RelockObject}, unless every store is answered
    and every node voted (it waits for nothing then).
    """

    arguments = [(b"ttid", Tid()), (b"oid", Oid())]


class RelockObject(Command):
    """
    Give back the lock on C{oid} to the older transaction waiting for it,
    and take it again after it.  Answers like L{StoreObject}.  A soft vote
    (pipelined and C{shared}) is withdrawn: the client votes again.
    """

    arguments = [(b"ttid", Tid()), (b"oid", Oid())]
    response = [(b"conflict", Tid(optional=True))]


class VoteTransaction(Command):
    """
    First phase: make the transaction's stores durable.  The nodes that
    hold the transaction's metadata partition also get its metadata
    (C{partition}: by default the ttid's; the client picks one of those it
    stores to, so that a transaction on one node stays on one node).
    Sent once every store and relock is answered (it never waits for a
    lock), or pipelined.
    """

    arguments = [(b"ttid", Tid()),
                 (b"user", BigBytes(optional=True)),
                 (b"description", BigBytes(optional=True)),
                 (b"extension", BigBytes(optional=True)),
                 (b"oids", OidList(optional=True)),
                 (b"pipelined", amp.Boolean(optional=True)),
                 (b"partition", amp.Integer(optional=True)),
                 (b"records", BigBytes(optional=True)),
                 (b"shared", amp.Boolean(optional=True)),
                 (b"participants", amp.ListOf(amp.Integer(),
                                              optional=True))]
    #: With C{pipelined} (sent right after the stores), the node first
    #: waits for the stores and relocks in progress, and does not vote
    #: (C{voted} false) if one conflicted.  With C{records} too, it first
    #: stores them, as L{StoreObjects} does, and answers as it does as
    #: well: the stores and the vote take one message each way.  Without
    #: C{shared} (a transaction on this node only), the vote stays in
    #: memory until the lock, which commits at once.  With C{shared} (other
    #: nodes take part), it is durable, or with C{participants} (the nids
    #: of the nodes that write some of it) kept in memory until the lock,
    #: which writes it but publishes it only once the master unlocks it
    #: (every participant wrote it).  Yet the transaction may still wait
    #: for locks elsewhere: the node tells its client when an older
    #: transaction waits for it (L{NotifyDeadlock}): unless every node has
    #: voted, so that it waits for nothing, that client relocks, which
    #: withdraws the vote.  C{released}: the greatest TID under which
    #: another transaction committed one of its oids here before it took
    #: them; a TID reserved for it (L{ReserveTransaction}) that is not
    #: greater cannot be finished here (L{FinishTransaction}).
    response = [(b"voted", amp.Boolean(optional=True)),
                (b"released", Tid(optional=True))] + _STORED


class AskObject(Command):
    """
    A revision of an object: exactly C{serial} if given, else the newest
    before C{before} if given, else the newest.  C{data} is empty and
    C{deleted} true when the revision deletes the object.
    """

    arguments = [(b"oid", Oid()), (b"serial", Tid(optional=True)),
                 (b"before", Tid(optional=True))]
    response = [(b"serial", Tid()), (b"nextSerial", Tid(optional=True)),
                (b"compression", amp.Integer()), (b"data", BigBytes()),
                (b"deleted", amp.Boolean())]


class AskObjects(Command):
    """
    Read-ahead: the current revision of each of C{oids} (at most
    L{MAX_READ_AHEAD}) that the node has at hand at once, in one answer:
    C{records} packs oid, serial, compression and data as
    L{StoreObjects} does (L{packRecords}).  Left out: the objects being
    committed (the client loads them when it needs them), deleted or
    unknown ones, and records larger than C{maxSize}.
    """

    arguments = [(b"oids", OidList()), (b"maxSize", amp.Integer())]
    response = [(b"records", BigBytes())]


#: The most oids one L{AskObjects} may ask for.
MAX_READ_AHEAD = 1000


# -- Admin relays and neoctl <-> admin ----------------------------------------

class SetClusterState(Command):
    """C{neoctl start} is SetClusterState(VERIFYING)."""

    arguments = [(b"state", Enum(ClusterState))]
    response = [(b"message", amp.Unicode())]


class AskClusterState(Command):
    response = [(b"state", Enum(ClusterState, optional=True))]


class AskNodeList(Command):
    arguments = [(b"nodeType", amp.Unicode(optional=True))]
    response = [(b"nodes", Json())]


class AskPartitionList(Command):
    """The partition table: C{{"ptid", "replicas", "rows"}} (or null)."""

    response = [(b"partitionTable", Json())]


class AskClusterIDs(Command):
    """Last OID, last TID and ptid, as the primary master knows them."""

    response = [(b"lastOid", Oid(optional=True)),
                (b"lastTid", Tid(optional=True)),
                (b"ptid", amp.Integer())]
