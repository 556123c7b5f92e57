# -*- test-case-name: tests.zodb.test_storage -*-
"""
The ZODB storage of NEO.

Threads: every method here is called from ZODB's threads, never from the
reactor thread.  Cache hits are answered in the calling thread; everything
else goes through L{neo.client.bridge.Bridge} to L{neo.client.app.ClientApp}
in the reactor thread.  Stores are pipelined: C{store} sends and returns at
once, C{tpc_vote} waits for the answers.  The C{tpc_finish} callback runs
in the reactor thread, as ZODB's own quick cache update.
"""

import threading
import zlib

import zope.interface
from ZODB import POSException
from ZODB.ConflictResolution import ConflictResolvingStorage
from ZODB.interfaces import IMultiCommitStorage, IPrefetchStorage, IStorage
from ZODB.serialize import referencesf
from twisted.internet.error import ConnectionClosed

from neo.client.app import (
    ZLIB, ClientApp, ClientTransaction, ClusterError, uncompressed)
from neo.client.bridge import CALL_TIMEOUT, Bridge
from neo.client.cache import RecordCache
from neo.client.exceptions import ClientDisconnected, NEOStorageError
from neo.lib.config import parseMasters
from neo.lib.ids import ZERO_TID, u64
from neo.protocols.arguments import MAX_RECORD
from neo.protocols.errors import (
    Denied, NotReady, OidDoesNotExist, OidNotFound, ProtocolError,
    TransactionNotFound)

#: OIDs asked from the master at once.
OID_BATCH = 100
#: Stores sent to the reactor at once, at most (records, bytes).
BATCH_RECORDS = 200
BATCH_BYTES = 1024 * 1024
#: Records shorter than this are sent as they are: compressing them saves
#: little (a small pickle has little redundancy) for a call that costs
#: about 10 µs, much of a small store's whole cost.
COMPRESS_MIN = 512
#: From this size on, a record is compressed only if a sample of it
#: compresses well: zlib spends about 35 ms per MiB here to find out that
#: data already compressed (images, archives) does not.
SAMPLE_FROM = 64 * 1024
SAMPLE = 16 * 1024
#: Objects read ahead after a cache miss, at most.
PREFETCH = 100
#: Default size of the record cache, in bytes.
DEFAULT_CACHE_SIZE = 20 * 1024 * 1024


def _compressed(data):
    """C{(compression, bytes)} of a record as it is sent."""
    if len(data) < COMPRESS_MIN:
        return 0, data
    if len(data) >= SAMPLE_FROM:
        middle = len(data) // 2
        sample = data[middle:middle + SAMPLE]
        if len(zlib.compress(sample, 1)) > len(sample) * 0.9:
            return 0, data
    compressed = zlib.compress(data)
    if len(compressed) < len(data):
        return ZLIB, compressed
    return 0, data


def _translate(e):
    """Map an error from the cluster to the ZODB exception to raise."""
    if isinstance(e, (NotReady, ConnectionClosed, ClusterError)):
        return ClientDisconnected(str(e))
    if isinstance(e, (Denied, TransactionNotFound, ProtocolError)):
        return NEOStorageError(str(e))
    return None


@zope.interface.implementer(IStorage, IMultiCommitStorage, IPrefetchStorage)
class Storage(ConflictResolvingStorage):
    """A NEO cluster as a ZODB storage."""

    def __init__(self, master_nodes, name, read_only=False,
                 cache_size=DEFAULT_CACHE_SIZE, compress=True,
                 timeout=CALL_TIMEOUT, prefetch=True, **kwargs):
        if kwargs:
            raise TypeError("unexpected options: " + ", ".join(kwargs))
        if isinstance(master_nodes, str):
            master_nodes = parseMasters(master_nodes)
        self._name = name
        self._readOnly = bool(read_only)
        self._compress = compress
        self._prefetch = prefetch
        self._bridge = Bridge(timeout)
        self._cache = RecordCache(cache_size)
        self._app = ClientApp(self._bridge.reactor, master_nodes, name,
                              self._cache, read_only)
        self._lock = threading.Lock()
        self._txns = {}
        self._oids = []
        self._closed = False
        self._bridge.call(self._app.start)
        # Wait until the cluster serves us, so that a bad configuration
        # fails here rather than at first use.
        self._call(self._app.connected)

    def _call(self, function, *args, **kwargs):
        if self._closed:
            raise ClientDisconnected("the storage is closed")
        try:
            return self._bridge.call(function, *args, **kwargs)
        except (OidNotFound, OidDoesNotExist):
            raise
        except Exception as e:
            translated = _translate(e)
            if translated is None:
                raise
            raise translated from e

    # -- Information ---------------------------------------------------------

    def getName(self):
        return self._name

    def sortKey(self):
        return f"neo:{self._name}"

    def getSize(self):
        return 0

    def __len__(self):
        return 0

    def isReadOnly(self):
        return self._readOnly

    def lastTransaction(self):
        # Waits while a commit or an invalidation is being delivered.
        with self._app.lastTidLock:
            return self._app.lastTid or ZERO_TID

    def registerDB(self, db):
        self._app.db = db

    def sync(self, force=True):
        self._call(self._app.sync)

    def close(self):
        if self._closed:
            return
        try:
            self._bridge.call(self._app.close, timeout=5)
        except Exception:
            pass
        self._closed = True

    def supportsUndo(self):
        return False

    def undo(self, transaction_id, transaction):
        if self._readOnly:
            raise POSException.ReadOnlyError()
        raise POSException.Unsupported("undo is not supported yet")

    def history(self, oid, size=1):
        raise NotImplementedError("history is not supported yet")

    def pack(self, t, referencesf):
        raise NotImplementedError("pack is not supported yet")

    # -- Loads ---------------------------------------------------------------

    def _load(self, oid, serial=None, before=None):
        """
        C{(data, serial, next)} from the cluster, cached (data is None for
        a deletion); raises POSKeyError or OidNotFound.
        """
        try:
            compression, data, serial, next = self._call(
                self._app.load, oid, serial, before)
        except OidDoesNotExist:
            raise POSException.POSKeyError(oid)
        try:
            data = uncompressed(compression, data)
        finally:
            # Decompressed here, in the calling thread, not in the reactor.
            next = self._cache.endLoad(oid, serial, next, data)
        return data, serial, next

    def load(self, oid, version=""):
        hit = self._cache.load(oid)
        if hit is not None:
            return hit
        try:
            data, serial, next = self._load(oid)
        except OidNotFound:
            raise POSException.POSKeyError(oid)
        if data is None:
            raise POSException.POSKeyError(oid)
        return data, serial

    def loadBefore(self, oid, tid):
        hit = self._cache.loadBefore(oid, tid)
        if hit is not None:
            if self._cache.explore(oid):
                # Read ahead one level further down (a BTree's buckets,
                # then their values).
                self._readAhead(hit[0])
            return hit
        try:
            data, serial, next = self._load(oid, before=tid)
        except OidNotFound:
            return None
        if data is None:
            return None
        self._readAhead(data)
        return data, serial, next

    def _readAhead(self, data):
        """
        A miss: fetch what the record refers to, ZODB loads it next.  A
        record larger than those read ahead is not searched: it is most
        likely data, and parsing it would cost more than its load (2 ms
        for 1 MiB).
        """
        if not self._prefetch or len(data) > ClientApp.PREFETCH_LARGEST:
            return
        try:
            oids = referencesf(data)
        except Exception:
            return  # Not a ZODB record we can read: nothing to guess.
        if oids:
            self._bridge.fire(self._app.prefetch, oids[:PREFETCH])

    def prefetch(self, oids, tid):
        """
        Read ahead the current revision of C{oids} (C{Connection.prefetch}),
        without waiting, as after a cache miss.  Whether a revision serves
        a load before C{tid} is for the cache to tell, as for any
        read-ahead.
        """
        self._bridge.fire(self._app.prefetch, list(oids))

    def loadSerial(self, oid, serial):
        data = self._cache.loadSerial(oid, serial)
        if data is not None:
            return data
        try:
            data, serial, next = self._load(oid, serial=serial)
        except OidNotFound:
            raise POSException.POSKeyError(oid)
        if data is None:
            raise POSException.POSKeyError(oid)
        return data

    def getTid(self, oid):
        return self.load(oid)[1]

    # -- Commits -------------------------------------------------------------

    def new_oid(self):
        if self._readOnly:
            raise POSException.ReadOnlyError()
        with self._lock:
            if not self._oids:
                self._oids = self._call(self._app.newOids, OID_BATCH)
                self._oids.reverse()
            return self._oids.pop()

    def _txn(self, transaction, method):
        txn = self._txns.get(transaction)
        if txn is None:
            raise POSException.StorageTransactionError(
                f"{method}: the transaction was not begun on this storage")
        return txn

    def tpc_begin(self, transaction, tid=None, status=" "):
        if self._readOnly:
            raise POSException.ReadOnlyError()
        if transaction in self._txns:
            raise POSException.StorageTransactionError(
                "the transaction is already begun on this storage")
        txn = ClientTransaction(transaction)
        # The temporary TID is asked for (if not begun ahead already) by
        # the first operation that reaches the reactor; an imposed TID is
        # checked at once.
        if tid is not None:
            self._bridge.fire(self._app.begin, txn, tid)
            self._call(self._app.whenBegun, txn)
        self._txns[transaction] = txn

    def store(self, oid, serial, data, version, transaction):
        if self._readOnly:
            raise POSException.ReadOnlyError()
        if version:
            raise POSException.Unsupported("versions are not supported")
        txn = self._txn(transaction, "store")
        self._store(txn, oid, serial, data)

    def _store(self, txn, oid, serial, data):
        if serial is None:
            serial = ZERO_TID
        txn.data[oid] = (serial, data)
        compression, sent = _compressed(data) if self._compress else (0, data)
        if len(sent) > MAX_RECORD:
            raise POSException.StorageError(
                f"object {u64(oid)} is {len(sent)} bytes: more than the"
                f" {MAX_RECORD} bytes a NEO record may have")
        # Stores go in batches: fewer commands, fewer thread hops.
        txn.buffer.append((oid, serial, compression, sent))
        txn.buffered += len(sent)
        if len(txn.buffer) >= BATCH_RECORDS or txn.buffered >= BATCH_BYTES:
            self._flush(txn)

    def _flush(self, txn):
        if txn.buffer:
            buffer, txn.buffer, txn.buffered = txn.buffer, [], 0
            self._bridge.fire(self._app.storeMany, txn, buffer)

    def checkCurrentSerialInTransaction(self, oid, serial, transaction):
        txn = self._txn(transaction, "checkCurrentSerialInTransaction")
        txn.checked[oid] = serial
        self._flush(txn)
        self._bridge.fire(self._app.checkCurrent, txn, oid, serial)

    def tpc_vote(self, transaction):
        txn = self._txn(transaction, "tpc_vote")
        ext = getattr(transaction, "extension_bytes", b"")
        user, description = transaction.user, transaction.description
        if isinstance(user, str):
            user = user.encode("utf-8")
        if isinstance(description, str):
            description = description.encode("utf-8")
        while True:
            # The stores still buffered go with the vote: one hop.
            records, txn.buffer, txn.buffered = txn.buffer, [], 0
            conflicts, readConflicts = self._call(
                self._app.vote, txn, user, description, ext, records)
            for oid, committed in readConflicts.items():
                self._conflicted(txn, committed)
                raise POSException.ReadConflictError(
                    oid=oid, serials=(committed, txn.checked[oid]))
            if not conflicts:
                return list(txn.resolved)
            # Those that cannot be resolved first: no resolution is worth
            # trying then.
            for oid, committed in sorted(
                    conflicts.items(),
                    key=lambda item: item[0] not in txn.unresolvable):
                serial, data = txn.data[oid]
                if oid in txn.unresolvable:
                    self._conflicted(txn, committed)
                    raise POSException.ConflictError(
                        oid=oid, serials=(committed, serial), data=data)
                try:
                    resolved = self.tryToResolveConflict(
                        oid, committed, serial, data,
                        self._committedData(txn, oid, committed))
                except POSException.ConflictError:
                    self._conflicted(txn, committed)
                    raise
                txn.resolved.add(oid)
                self._store(txn, oid, committed, resolved)

    #: Seconds a conflict waits for the invalidations of the transaction
    #: it conflicted with.
    CONFLICT_WAIT = 1.0

    def _conflicted(self, txn, committed):
        """
        A conflict with the commit of C{committed} is about to be raised:
        wait for its invalidations first (the master sends them a moment
        after the storage node saw the commit), so that the retry that
        usually follows sees it, instead of conflicting again.  The storage
        nodes forget the transaction first: the locks it holds there may
        be what that commit waits for, behind a TID reserved for another
        transaction that waits for them.
        """
        self._bridge.fire(self._app.abortAtNodes, txn)
        self._app.waitForTid(committed, self.CONFLICT_WAIT)

    @staticmethod
    def _committedData(txn, oid, serial):
        """The committed record a conflict came with, if it did (else
        conflict resolution loads it)."""
        record = txn.committed.pop(oid, None)
        if record is None or record[0] != serial:
            return b""
        _, compression, data = record
        return uncompressed(compression, data)

    def tpc_finish(self, transaction, f=None):
        txn = self._txn(transaction, "tpc_finish")
        try:
            return self._call(self._app.finish, txn, f)
        finally:
            self._txns.pop(transaction, None)

    def tpc_abort(self, transaction):
        txn = self._txns.pop(transaction, None)
        if txn is not None and not self._closed:
            self._bridge.fire(self._app.abort, txn)
