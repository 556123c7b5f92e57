# -*- test-case-name: tests.backend.test_backend -*-
"""
The SQL of a storage node, shared by its backends.

Every statement is written once, with C{?} placeholders; a L{Dialect}
holds what differs between SQL engines (placeholders, column types, how
large values are kept).  Interaction functions are module-level, take the
L{Cursor} first, and do no I/O besides SQL; each runs as one SQL
transaction through L{twisted.enterprise.adbapi} (committed on return,
rolled back on error), off the reactor thread, in submission order (one
connection).

Voted data waits in C{tobj}/C{ttrans} until the transaction is unlocked, so
that a crash at any point leaves either the whole transaction or nothing
visible.  Record data is stored once per distinct content (deduplicated by
SHA-1, bytes compared), with the compression flag the client gave.
"""

import hashlib
import json

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from neo.protocols.errors import OidDoesNotExist, OidNotFound
from neo.services.storage.interfaces import IStorageBackend

#: Bumped on every change of the schema.
SCHEMA_VERSION = 2

#: C{{version: statements}} that bring a database of that schema version
#: to the next one.
_UPGRADES = {
    # The participants of a transaction whose lock was written without a
    # durable vote (L{_voteAndLock}).
    1: ["ALTER TABLE ttrans ADD COLUMN participants BLOB"],
}


class DatabaseError(Exception):
    """The database cannot be used (foreign, newer, locked, unreachable)."""


class CommitRefused(DatabaseError):
    """A commit step after one that failed to lock or commit a transaction
    (see L{SQLBackend.broken})."""


class Dialect:
    """
    What differs between SQL engines.  C{schema} lists the statements that
    create the tables (C{{blob}}, C{{bigint}}, ... are filled in).
    """

    name = None
    placeholder = "?"
    #: Values longer than this are split over C{bigdata} rows (None: never).
    chunkSize = None

    def __init__(self):
        self._cache = {}

    def sql(self, statement: str) -> str:
        converted = self._cache.get(statement)
        if converted is None:
            converted = self._cache[statement] = statement.replace(
                "?", self.placeholder)
        return converted


class Cursor:
    """An adbapi transaction seen through a dialect."""

    def __init__(self, txn, dialect):
        self._txn = txn
        self.dialect = dialect

    def execute(self, statement, args=()):
        self._txn.execute(self.dialect.sql(statement), args)

    def executemany(self, statement, rows):
        rows = list(rows)
        if rows:
            self._txn.executemany(self.dialect.sql(statement), rows)

    def fetchone(self):
        return self._txn.fetchone()

    def fetchall(self):
        return self._txn.fetchall()

    @property
    def lastrowid(self):
        return self._txn.lastrowid


_TABLES = ("config", "trans", "obj", "data", "bigdata", "ttrans", "tobj")


def _openSchema(cur, cluster, schema):
    for statement in schema:
        cur.execute(statement)
    cur.execute("SELECT name, value FROM config")
    config = dict(cur.fetchall())
    version = config.get("version")
    if version is None:
        if config:
            raise DatabaseError("the database has no schema version: it was"
                                " not made by a NEO storage node")
        cur.execute("INSERT INTO config VALUES ('version', ?)",
                    (str(SCHEMA_VERSION),))
        cur.execute("INSERT INTO config VALUES ('name', ?)", (cluster,))
        config = {"version": str(SCHEMA_VERSION), "name": cluster}
    elif int(version) > SCHEMA_VERSION:
        raise DatabaseError(
            f"the database has schema version {version}, newer than this"
            f" program's {SCHEMA_VERSION}: upgrade NEO")
    else:
        for old in range(int(version), SCHEMA_VERSION):
            for statement in _UPGRADES[old]:
                cur.execute(statement)
        if int(version) != SCHEMA_VERSION:
            _setConfig(cur, "version", SCHEMA_VERSION)
            config["version"] = str(SCHEMA_VERSION)
    if config.get("name") != cluster:
        raise DatabaseError(
            f"the database belongs to cluster {config.get('name')!r}, not"
            f" {cluster!r} (use --reset to wipe it)")
    return config


def _reset(cur):
    for table in _TABLES:
        cur.execute(f"DROP TABLE IF EXISTS {table}")


def _setConfig(cur, name, value):
    cur.execute("DELETE FROM config WHERE name=?", (name,))
    if value is not None:
        cur.execute("INSERT INTO config VALUES (?, ?)", (name, str(value)))


def _lastSerial(cur, partition, oid):
    cur.execute("SELECT MAX(tid) FROM obj WHERE `partition`=? AND oid=?",
                (partition, oid))
    return cur.fetchone()[0]


# -- Record data -------------------------------------------------------------

#: Hashes looked up per statement by L{_putDataMany}.
_HASHES_PER_QUERY = 500


def _putDataMany(cur, records):
    """
    The ids of data rows holding each C{(compression, value)} of
    C{records} (None for a deletion: no data row), an identical row's if
    any, in a few statements: identical rows are looked up by hash in
    batches, and the new ones inserted at once, under ids allotted here
    (the node is the only writer of its database).
    """
    digests = [None if value is None else hashlib.sha1(value).digest()
               for _, value in records]
    wanted = sorted({d for d in digests if d is not None})
    found = {}
    for start in range(0, len(wanted), _HASHES_PER_QUERY):
        chunk = wanted[start:start + _HASHES_PER_QUERY]
        cur.execute("SELECT id, hash, compression, size FROM data"
                    f" WHERE hash IN ({', '.join('?' * len(chunk))})", chunk)
        for dataId, digest, compression, size in cur.fetchall():
            found.setdefault((bytes(digest), compression, size),
                             []).append(dataId)
    ids, new, nextId, chunkSize = [], {}, None, cur.dialect.chunkSize
    rows = []
    for (compression, value), digest in zip(records, digests):
        if value is None:
            ids.append(None)
            continue
        key = (digest, compression, len(value))
        dataId = new.get(key + (value,))
        if dataId is None:
            for candidate in found.get(key, ()):
                if _getData(cur, candidate)[1] == value:
                    dataId = candidate
                    break
        if dataId is None:
            if nextId is None:
                cur.execute("SELECT MAX(id) FROM data")
                nextId = (cur.fetchone()[0] or 0) + 1
            dataId, nextId = nextId, nextId + 1
            new[key + (value,)] = dataId
            if chunkSize is None or len(value) <= chunkSize:
                rows.append((dataId, digest, compression, len(value), value))
            else:
                _putBigData(cur, dataId, digest, compression, value)
        ids.append(dataId)
    cur.executemany("INSERT INTO data (id, hash, compression, size, value)"
                    " VALUES (?, ?, ?, ?, ?)", rows)
    return ids


def _putBigData(cur, dataId, digest, compression, value):
    """A data row too large for one statement: its value goes to bigdata
    in pieces."""
    cur.execute("INSERT INTO data (id, hash, compression, size, value)"
                " VALUES (?, ?, ?, ?, NULL)",
                (dataId, digest, compression, len(value)))
    chunk = cur.dialect.chunkSize
    view = memoryview(value)
    for n, start in enumerate(range(0, len(value), chunk)):
        cur.execute("INSERT INTO bigdata VALUES (?, ?, ?)",
                    (dataId, n, bytes(view[start:start + chunk])))


def _getData(cur, dataId):
    """C{(compression, value)} of a data row."""
    cur.execute("SELECT compression, value FROM data WHERE id=?", (dataId,))
    compression, value = cur.fetchone()
    if value is None:
        cur.execute("SELECT value FROM bigdata WHERE id=? ORDER BY n",
                    (dataId,))
        value = b"".join(bytes(v) for (v,) in cur.fetchall())
    return compression, bytes(value)


def _releaseData(cur, dataIds):
    """Delete the data rows no object revision refers to any more."""
    for dataId in set(dataIds):
        if dataId is None:
            continue
        cur.execute("SELECT 1 FROM obj WHERE data_id=? LIMIT 1", (dataId,))
        if cur.fetchone():
            continue
        cur.execute("SELECT 1 FROM tobj WHERE data_id=? LIMIT 1", (dataId,))
        if cur.fetchone():
            continue
        cur.execute("DELETE FROM bigdata WHERE id=?", (dataId,))
        cur.execute("DELETE FROM data WHERE id=?", (dataId,))


# -- Reads -------------------------------------------------------------------

def _load(cur, partition, oid, serial, before, maxSize=None):
    query = "SELECT tid, data_id FROM obj WHERE `partition`=? AND oid=?"
    if serial is not None:
        cur.execute(query + " AND tid=?", (partition, oid, serial))
    elif before is not None:
        cur.execute(query + " AND tid<? ORDER BY tid DESC LIMIT 1",
                    (partition, oid, before))
    else:
        cur.execute(query + " ORDER BY tid DESC LIMIT 1", (partition, oid))
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT 1 FROM obj WHERE `partition`=? AND oid=? LIMIT 1",
                    (partition, oid))
        if cur.fetchone() is None:
            raise OidDoesNotExist(f"object {oid:#x} does not exist")
        raise OidNotFound(f"object {oid:#x} has no such revision")
    tid, dataId = row
    cur.execute("SELECT tid FROM obj WHERE `partition`=? AND oid=? AND tid>?"
                " ORDER BY tid LIMIT 1", (partition, oid, tid))
    row = cur.fetchone()
    nextTid = row[0] if row else None
    if dataId is None:
        return tid, nextTid, 0, b"", True
    if maxSize is not None:
        cur.execute("SELECT compression, size FROM data WHERE id=?",
                    (dataId,))
        compression, size = cur.fetchone()
        if size > maxSize:
            return tid, nextTid, compression, None, False  # not read
    compression, value = _getData(cur, dataId)
    return tid, nextTid, compression, value, False


def _loadLatest(cur, objects, maxSize):
    """
    The current revision of each C{(partition, oid)} of C{objects}, as
    L{_load} answers it, or None for an object that does not exist.
    """
    rows = []
    for partition, oid in objects:
        try:
            rows.append(_load(cur, partition, oid, None, None, maxSize))
        except (OidDoesNotExist, OidNotFound):
            rows.append(None)
    return rows


def _lastIds(cur):
    cur.execute("SELECT MAX(tid) FROM trans")
    lastTid = cur.fetchone()[0]
    cur.execute("SELECT MAX(tid), MAX(oid) FROM obj")
    objTid, lastOid = cur.fetchone()
    if objTid is not None and (lastTid is None or objTid > lastTid):
        lastTid = objTid
    return lastTid, lastOid


# -- Commits -----------------------------------------------------------------

def _vote(cur, ttid, partition, metadata, objects):
    # Idempotent: a vote retried after a lost connection replaces itself.
    _deleteTemporary(cur, ttid)
    dataIds = _putDataMany(cur, [(compression, data)
                                 for _, _, compression, data in objects])
    cur.executemany(
        "INSERT INTO tobj VALUES (?, ?, ?, ?, NULL)",
        [(ttid, objPartition, oid, dataId)
         for (objPartition, oid, _, _), dataId in zip(objects, dataIds)])
    _mark(cur, ttid, None, partition, metadata, None)


def _mark(cur, ttid, tid, partition, metadata, participants):
    """The ttrans row of a transaction: voted (no C{tid}) or locked."""
    if metadata is None:
        metadata, meta = (b"", b"", b"", b""), 0
    else:
        meta = 1
    user, description, extension, oids = metadata
    if participants is not None:
        participants = ",".join(map(str, participants)).encode()
    cur.execute("INSERT INTO ttrans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ttid, tid, partition, meta, oids, user, description,
                 extension, participants))


def _commitVoted(cur, ttid, tid, partition, metadata, objects):
    """
    Commit, under its final TID, a transaction voted in memory only (it
    has no other participant): straight into obj and trans.  Idempotent.
    """
    dataIds = _putDataMany(cur, [(compression, data)
                                 for _, _, compression, data in objects])
    cur.executemany(
        "REPLACE INTO obj VALUES (?, ?, ?, ?, NULL)",
        [(objPartition, oid, tid, dataId)
         for (objPartition, oid, _, _), dataId in zip(objects, dataIds)])
    if metadata is not None:
        user, description, extension, oids = metadata
        cur.execute("REPLACE INTO trans VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
                    (partition, tid, oids, user, description, extension,
                     ttid))
    return tid


def _voteAndLock(cur, ttid, tid, partition, metadata, objects,
                 participants=None):
    """
    Vote and lock at once a transaction voted in memory, which has other
    participants: straight into the permanent tables, with the mark of a
    locked transaction (L{_lockTransaction}).  With C{participants} (the
    nids of the nodes that write some of it), the others may not have
    written their part: verification asks them (L{_knows}), and undoes
    it here (L{_undoTransaction}) if one of them has nothing of it.
    Idempotent.
    """
    _deleteTemporary(cur, ttid)
    _commitVoted(cur, ttid, tid, partition, metadata, objects)
    _mark(cur, ttid, tid, partition, metadata, participants)


def _steps(cur, steps):
    """Several commit steps in one SQL transaction (group commit)."""
    return [function(cur, *args) for function, args in steps]


def _deleteTemporary(cur, ttid):
    cur.execute("SELECT data_id FROM tobj WHERE ttid=?", (ttid,))
    dataIds = [dataId for (dataId,) in cur.fetchall()]
    cur.execute("DELETE FROM tobj WHERE ttid=?", (ttid,))
    cur.execute("DELETE FROM ttrans WHERE ttid=?", (ttid,))
    _releaseData(cur, dataIds)


def _lockTransaction(cur, ttid, tid):
    """
    Record the final TID (the durable commit decision), and write the
    transaction to the permanent tables at once: its ttrans row stays, as
    the mark of a locked transaction (verification commits such a
    transaction on the nodes that only voted it), until L{_forget}.  Loads
    of its objects wait for the master's unlock, in memory.
    """
    cur.execute("UPDATE ttrans SET tid=? WHERE ttid=?", (tid, ttid))
    _publish(cur, ttid)


def _publish(cur, ttid):
    """Write a locked transaction's rows to the permanent tables (again:
    idempotent); returns its TID, None if it is not locked here."""
    cur.execute("SELECT tid, meta FROM ttrans WHERE ttid=?", (ttid,))
    row = cur.fetchone()
    if row is None or row[0] is None:
        return None  # Unknown here, or already unlocked.
    tid, meta = row
    cur.execute("REPLACE INTO obj SELECT `partition`, oid, ?, data_id,"
                " value_tid FROM tobj WHERE ttid=?", (tid, ttid))
    if meta:
        cur.execute("REPLACE INTO trans SELECT `partition`, ?, 0, oids, user,"
                    " description, ext, ttid FROM ttrans WHERE ttid=?",
                    (tid, ttid))
    cur.execute("DELETE FROM tobj WHERE ttid=?", (ttid,))
    return tid


def _unlockTransaction(cur, ttid):
    tid = _publish(cur, ttid)
    if tid is not None:
        cur.execute("DELETE FROM ttrans WHERE ttid=?", (ttid,))
    return tid


def _forget(cur, ttids):
    """Drop the marks of locked transactions (L{_lockTransaction}) that
    the master unlocked."""
    cur.executemany("DELETE FROM ttrans WHERE ttid=? AND tid IS NOT NULL",
                    [(ttid,) for ttid in ttids])


def _commitTransaction(cur, ttid, tid):
    """Lock and unlock at once (a transaction with no other participant)."""
    _lockTransaction(cur, ttid, tid)
    return _unlockTransaction(cur, ttid)


def _abortTransaction(cur, ttid):
    cur.execute("SELECT tid FROM ttrans WHERE ttid=?", (ttid,))
    row = cur.fetchone()
    if row is not None and row[0] is not None:
        return False  # Locked: the commit decision is taken.
    _deleteTemporary(cur, ttid)
    return True


def _lockedTransactions(cur):
    cur.execute("SELECT ttid, tid, participants FROM ttrans ORDER BY ttid")
    return [(ttid, tid, None if participants is None else
             [int(nid) for nid in bytes(participants).split(b",")])
            for ttid, tid, participants in cur.fetchall()]


def _inPartitions(partitions):
    return f"`partition` IN ({', '.join('?' * len(partitions))})"


def _knows(cur, tid, partitions):
    """Whether a transaction is committed here, in one of C{partitions}
    (its ttrans mark gone), or locked."""
    where = _inPartitions(partitions)
    for table in ("trans", "obj"):
        cur.execute(f"SELECT 1 FROM {table} WHERE {where} AND tid=? LIMIT 1",
                    list(partitions) + [tid])
        if cur.fetchone():
            return True
    return False


def _undoTransaction(cur, ttid, tid, partitions):
    """
    Drop what this node wrote of a transaction locked without a durable
    vote (L{_voteAndLock}), which another participant never wrote: it was
    never committed (nobody was unlocked, nobody loaded it).  A mere vote
    is dropped too.
    """
    cur.execute("SELECT tid FROM ttrans WHERE ttid=?", (ttid,))
    row = cur.fetchone()
    if row is not None and row[0] == tid:
        where = _inPartitions(partitions)
        args = list(partitions) + [tid]
        cur.execute(f"SELECT data_id FROM obj WHERE {where} AND tid=?", args)
        dataIds = [dataId for (dataId,) in cur.fetchall()]
        cur.execute(f"DELETE FROM obj WHERE {where} AND tid=?", args)
        cur.execute(f"DELETE FROM trans WHERE {where} AND tid=?", args)
        _releaseData(cur, dataIds)
    _deleteTemporary(cur, ttid)


def _finishRecovery(cur):
    cur.execute("SELECT ttid, tid FROM ttrans ORDER BY tid")
    rows = cur.fetchall()
    for ttid, tid in rows:
        if tid is None:
            _abortTransaction(cur, ttid)
        else:
            _unlockTransaction(cur, ttid)
    # Temporary objects whose ttrans row was never written.
    cur.execute("SELECT DISTINCT ttid FROM tobj")
    for (ttid,) in cur.fetchall():
        _deleteTemporary(cur, ttid)
    return len(rows)


def _ignored():
    """A Deferred whose failure is of no consequence."""
    return defer.Deferred().addErrback(lambda _: None)


#: The commit steps of a transaction the master decided to commit.
_DECIDED = frozenset([_commitVoted, _voteAndLock, _lockTransaction,
                      _unlockTransaction, _commitTransaction])


@implementer(IStorageBackend)
class SQLBackend:
    """
    What every SQL backend shares; subclasses provide C{dialect},
    C{_start()} (making C{self._pool}) and may wrap C{_run}.
    """

    dialect = None

    def __init__(self, cluster, reactor):
        self.cluster = cluster
        self._reactor = reactor
        self._pool = None
        self.config = {}
        #: Commit steps waiting for the one in progress: C{[(function,
        #: args, Deferred)]}, or None when none is in progress.
        self._waiting = None
        #: Ttids of transactions locked and unlocked, whose marks are to
        #: be dropped (L{forgetLater}), and the call that will if nothing
        #: else does.
        self._forgotten = []
        self._forgetCall = None
        #: Why commit steps are refused: a step that locks or commits a
        #: decided transaction failed.  Its write locks were released
        #: before (L{TransactionManager.lock}), so later transactions may
        #: have been checked or resolved against it: none may commit now.
        self.broken = None
        #: Called once with the failure that broke the backend.
        self.onBroken = None
        #: Deferreds fired once no commit step runs (L{whenSettled}).
        self._settledWaiters = []

    def _start(self):
        raise NotImplementedError

    def _run(self, function, *args):
        dialect = self.dialect
        return self._pool.runInteraction(
            lambda txn: function(Cursor(txn, dialect), *args))

    def _commitStep(self, function, *args):
        """
        Run a step of the commit protocol (vote, lock, unlock, abort).
        Group commit: the steps asked while one is in the database run
        next, together, in one SQL transaction; each is idempotent, and
        should the group fail they are run again one by one, in order, so
        that one step's failure is its own.  Once a step of a decided
        transaction fails, no step runs any more (L{broken}).
        """
        if self.broken is not None:
            return defer.fail(self._refusal())
        d = defer.Deferred()
        if self._waiting is None:
            self._waiting = []
            self._runSteps([(function, args, d)])
        else:
            self._waiting.append((function, args, d))
        return d

    def _runSteps(self, steps):
        if self._forgotten:
            # The marks of unlocked transactions go with the next step.
            ttids, self._forgotten = self._forgotten, []
            steps.insert(0, (_forget, (ttids,), _ignored()))
        if len(steps) == 1:
            function, args, _ = steps[0]
            run = self._run(function, *args).addCallback(lambda r: [r])
        else:
            run = self._run(_steps, [(f, a) for f, a, _ in steps])
        run.addBoth(self._stepsDone, steps)
        run.addBoth(lambda _: self._nextSteps())

    def whenSettled(self) -> defer.Deferred:
        """A Deferred fired once no commit step runs (at once if none
        does)."""
        if self._waiting is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._settledWaiters.append(d)
        return d

    def _nextSteps(self):
        steps, self._waiting = self._waiting, None
        if steps and self.broken is not None:
            for _, _, d in steps:
                d.errback(self._refusal())
            steps = None
        if not steps:
            waiters, self._settledWaiters = self._settledWaiters, []
            for d in waiters:
                d.callback(None)
            return
        self._waiting = []
        self._runSteps(steps)

    def _stepsDone(self, results, steps):
        if not isinstance(results, Failure):
            for (_, _, d), result in zip(steps, results):
                d.callback(result)
        elif len(steps) == 1:
            self._stepFailed(results, steps[0])
        else:
            return self._oneByOne(steps)

    @defer.inlineCallbacks
    def _oneByOne(self, steps):
        for step in steps:
            function, args, d = step
            if self.broken is not None:
                d.errback(self._refusal())
                continue
            try:
                result = yield self._run(function, *args)
            except Exception:
                self._stepFailed(Failure(), step)
            else:
                d.callback(result)

    def _stepFailed(self, failure, step):
        function, _, d = step
        if function in _DECIDED and self.broken is None:
            self.broken = failure
            if self.onBroken is not None:
                self.onBroken(failure)
        d.errback(failure)

    def _refusal(self):
        return CommitRefused("an earlier commit failed in the database: "
                             + self.broken.getErrorMessage())

    @defer.inlineCallbacks
    def open(self):
        if self._pool is None:
            yield self._start()
        self.config = yield self._run(_openSchema, self.cluster,
                                      self.dialect.schema)
        return self

    @defer.inlineCallbacks
    def reset(self):
        if self._pool is None:
            yield self._start()
        yield self._run(_reset)

    def close(self):
        if self._forgetCall is not None:
            self._forgetCall.cancel()
            self._forgetCall = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def setConfig(self, name, value):
        if value is None:
            self.config.pop(name, None)
        else:
            self.config[name] = str(value)
        return self._run(_setConfig, name, value)

    def partitionTable(self):
        text = self.config.get("pt")
        return json.loads(text) if text else None

    def savePartitionTable(self, doc):
        return self.setConfig("pt", json.dumps(doc, separators=(",", ":")))

    def lastSerial(self, partition, oid):
        return self._run(_lastSerial, partition, oid)

    def load(self, partition, oid, serial=None, before=None, maxSize=None):
        return self._run(_load, partition, oid, serial, before, maxSize)

    def loadLatest(self, objects, maxSize=None):
        return self._run(_loadLatest, objects, maxSize)

    #: Bytes of records given to commit steps so far.
    written = 0

    def _writing(self, objects):
        self.written += sum(len(o[3]) for o in objects if o[3] is not None)

    def vote(self, ttid, partition, metadata, objects):
        self._writing(objects)
        return self._commitStep(_vote, ttid, partition, metadata, objects)

    def commitVoted(self, ttid, tid, partition, metadata, objects):
        self._writing(objects)
        return self._commitStep(_commitVoted, ttid, tid, partition, metadata,
                                objects)

    def voteAndLock(self, ttid, tid, partition, metadata, objects,
                    participants=None):
        self._writing(objects)
        return self._commitStep(_voteAndLock, ttid, tid, partition, metadata,
                                objects, participants)

    def lockTransaction(self, ttid, tid):
        return self._commitStep(_lockTransaction, ttid, tid)

    def unlockTransaction(self, ttid):
        return self._commitStep(_unlockTransaction, ttid)

    #: Seconds after which the marks of unlocked transactions are dropped
    #: by a step of their own, if no commit step took them along before.
    FORGET_DELAY = 1.0

    def forgetLater(self, ttid):
        """
        The master unlocked a transaction that L{lockTransaction} wrote:
        drop its mark with the next commit step (or after
        L{FORGET_DELAY}), instead of in a database step of its own.  A
        mark left behind by a crash is harmless: verification commits the
        transaction again, which changes nothing.
        """
        self._forgotten.append(ttid)
        if self._forgetCall is None:
            self._forgetCall = self._reactor.callLater(self.FORGET_DELAY,
                                                       self._forgetNow)

    def _forgetNow(self):
        self._forgetCall = None
        if self._forgotten and self._pool is not None:
            ttids, self._forgotten = self._forgotten, []
            self._commitStep(_forget, ttids).addErrback(lambda _: None)

    def commitTransaction(self, ttid, tid):
        return self._commitStep(_commitTransaction, ttid, tid)

    def abortTransaction(self, ttid):
        return self._commitStep(_abortTransaction, ttid)

    def lockedTransactions(self):
        return self._run(_lockedTransactions)

    def knows(self, tid, partitions):
        return self._run(_knows, tid, partitions)

    def undoTransaction(self, ttid, tid, partitions):
        return self._commitStep(_undoTransaction, ttid, tid, partitions)

    def finishRecovery(self):
        return self._run(_finishRecovery)

    def lastIds(self):
        return self._run(_lastIds)
