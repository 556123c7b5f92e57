# -*- test-case-name: tests.unit.test_storage_db -*-
"""
The SQLite storage backend, through L{twisted.enterprise.adbapi}.

One connection (C{cp_min=cp_max=1}): statements run in the order they
were submitted, which the commit path relies on.  Every multi-statement
change is one interaction (committed on return, rolled back on error).
Voted data waits in C{tobj}/C{ttrans} until the transaction is unlocked,
so that a crash at any point leaves either the whole transaction or
nothing visible.
"""

import json
import os

import zc.lockfile
from twisted.enterprise import adbapi
from zope.interface import implementer

from neo.protocols.errors import OidDoesNotExist, OidNotFound
from neo.services.storage.interfaces import IStorageBackend

#: Bumped on every change of the schema.
SCHEMA_VERSION = 1


class DatabaseError(Exception):
    """The database cannot be used (foreign, newer, locked, unreadable)."""


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS config (
        name TEXT NOT NULL PRIMARY KEY,
        value TEXT)""",
    """CREATE TABLE IF NOT EXISTS trans (
        partition INTEGER NOT NULL,
        tid INTEGER NOT NULL,
        packed BOOLEAN NOT NULL DEFAULT 0,
        oids BLOB NOT NULL,
        user BLOB NOT NULL,
        description BLOB NOT NULL,
        ext BLOB NOT NULL,
        ttid INTEGER NOT NULL,
        PRIMARY KEY (partition, tid))""",
    """CREATE TABLE IF NOT EXISTS obj (
        partition INTEGER NOT NULL,
        oid INTEGER NOT NULL,
        tid INTEGER NOT NULL,
        data_id INTEGER,
        value_tid INTEGER,
        PRIMARY KEY (partition, oid, tid))""",
    "CREATE INDEX IF NOT EXISTS obj_tid ON obj(partition, tid, oid)",
    "CREATE INDEX IF NOT EXISTS obj_data ON obj(data_id)",
    """CREATE TABLE IF NOT EXISTS data (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        compression INTEGER NOT NULL,
        value BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ttrans (
        ttid INTEGER NOT NULL PRIMARY KEY,
        tid INTEGER,
        partition INTEGER NOT NULL,
        meta BOOLEAN NOT NULL,
        oids BLOB NOT NULL,
        user BLOB NOT NULL,
        description BLOB NOT NULL,
        ext BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tobj (
        ttid INTEGER NOT NULL,
        partition INTEGER NOT NULL,
        oid INTEGER NOT NULL,
        data_id INTEGER,
        value_tid INTEGER,
        PRIMARY KEY (ttid, oid))""",
]
_TABLES = ("config", "trans", "obj", "data", "ttrans", "tobj")


def _configure(conn):
    # WAL: readers never block the writer; NORMAL: a commit survives a
    # crash of the process (not necessarily a power loss).
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.text_factory = str


def _openSchema(txn, cluster):
    for statement in _SCHEMA:
        txn.execute(statement)
    txn.execute("SELECT name, value FROM config")
    config = dict(txn.fetchall())
    version = config.get("version")
    if version is None:
        if config:
            raise DatabaseError("the database has no schema version: it was"
                                " not made by a NEO storage node")
        txn.execute("INSERT INTO config VALUES ('version', ?)",
                    (str(SCHEMA_VERSION),))
        txn.execute("INSERT INTO config VALUES ('name', ?)", (cluster,))
        config = {"version": str(SCHEMA_VERSION), "name": cluster}
    elif int(version) > SCHEMA_VERSION:
        raise DatabaseError(
            f"the database has schema version {version}, newer than this"
            f" program's {SCHEMA_VERSION}: upgrade NEO")
    if config.get("name") != cluster:
        raise DatabaseError(
            f"the database belongs to cluster {config.get('name')!r}, not"
            f" {cluster!r} (use --reset to wipe it)")
    return config


def _reset(txn):
    for table in _TABLES:
        txn.execute(f"DROP TABLE IF EXISTS {table}")


def _setConfig(txn, name, value):
    if value is None:
        txn.execute("DELETE FROM config WHERE name=?", (name,))
    else:
        txn.execute("REPLACE INTO config VALUES (?, ?)", (name, str(value)))


def _lastSerial(txn, partition, oid):
    txn.execute("SELECT MAX(tid) FROM obj WHERE partition=? AND oid=?",
                (partition, oid))
    return txn.fetchone()[0]


def _load(txn, partition, oid, serial, before):
    query = ("SELECT tid, data_id FROM obj WHERE partition=? AND oid=?")
    if serial is not None:
        txn.execute(query + " AND tid=?", (partition, oid, serial))
    elif before is not None:
        txn.execute(query + " AND tid<? ORDER BY tid DESC LIMIT 1",
                    (partition, oid, before))
    else:
        txn.execute(query + " ORDER BY tid DESC LIMIT 1", (partition, oid))
    row = txn.fetchone()
    if row is None:
        txn.execute("SELECT 1 FROM obj WHERE partition=? AND oid=? LIMIT 1",
                    (partition, oid))
        if txn.fetchone() is None:
            raise OidDoesNotExist(f"object {oid:#x} does not exist")
        raise OidNotFound(f"object {oid:#x} has no such revision")
    tid, dataId = row
    txn.execute("SELECT tid FROM obj WHERE partition=? AND oid=? AND tid>?"
                " ORDER BY tid LIMIT 1", (partition, oid, tid))
    row = txn.fetchone()
    nextTid = row[0] if row else None
    if dataId is None:
        return tid, nextTid, 0, b"", True
    txn.execute("SELECT compression, value FROM data WHERE id=?", (dataId,))
    compression, value = txn.fetchone()
    return tid, nextTid, compression, bytes(value), False


def _vote(txn, ttid, partition, metadata, objects):
    txn.execute("DELETE FROM ttrans WHERE ttid=?", (ttid,))
    _deleteTemporaryObjects(txn, ttid)
    for objPartition, oid, compression, data in objects:
        if data is None:
            dataId = None
        else:
            txn.execute("INSERT INTO data (compression, value) VALUES (?, ?)",
                        (compression, data))
            dataId = txn.lastrowid
        txn.execute("INSERT INTO tobj VALUES (?, ?, ?, ?, NULL)",
                    (ttid, objPartition, oid, dataId))
    if metadata is None:
        txn.execute("INSERT INTO ttrans VALUES (?, NULL, ?, 0, '', '', '', '')",
                    (ttid, partition))
    else:
        user, description, extension, oids = metadata
        txn.execute("INSERT INTO ttrans VALUES (?, NULL, ?, 1, ?, ?, ?, ?)",
                    (ttid, partition, oids, user, description, extension))


def _deleteTemporaryObjects(txn, ttid):
    txn.execute("DELETE FROM data WHERE id IN (SELECT data_id FROM tobj"
                " WHERE ttid=? AND data_id IS NOT NULL)", (ttid,))
    txn.execute("DELETE FROM tobj WHERE ttid=?", (ttid,))


def _lockTransaction(txn, ttid, tid):
    txn.execute("UPDATE ttrans SET tid=? WHERE ttid=?", (tid, ttid))


def _unlockTransaction(txn, ttid):
    txn.execute("SELECT tid, meta FROM ttrans WHERE ttid=?", (ttid,))
    row = txn.fetchone()
    if row is None or row[0] is None:
        return None
    tid, meta = row
    txn.execute("INSERT OR REPLACE INTO obj SELECT partition, oid, ?,"
                " data_id, value_tid FROM tobj WHERE ttid=?", (tid, ttid))
    if meta:
        txn.execute("INSERT OR REPLACE INTO trans SELECT partition, ?, 0,"
                    " oids, user, description, ext, ttid FROM ttrans"
                    " WHERE ttid=?", (tid, ttid))
    txn.execute("DELETE FROM tobj WHERE ttid=?", (ttid,))
    txn.execute("DELETE FROM ttrans WHERE ttid=?", (ttid,))
    return tid


def _abortTransaction(txn, ttid):
    txn.execute("SELECT tid FROM ttrans WHERE ttid=?", (ttid,))
    row = txn.fetchone()
    if row is not None and row[0] is not None:
        return False  # locked: the commit decision is taken
    _deleteTemporaryObjects(txn, ttid)
    txn.execute("DELETE FROM ttrans WHERE ttid=?", (ttid,))
    return True


def _lockedTransactions(txn):
    txn.execute("SELECT ttid, tid FROM ttrans ORDER BY ttid")
    return txn.fetchall()


def _finishRecovery(txn):
    txn.execute("SELECT ttid, tid FROM ttrans ORDER BY tid")
    rows = txn.fetchall()
    for ttid, tid in rows:
        if tid is None:
            _abortTransaction(txn, ttid)
        else:
            _unlockTransaction(txn, ttid)
    # Orphan temporary objects (their ttrans row never written).
    txn.execute("SELECT DISTINCT ttid FROM tobj")
    for (ttid,) in txn.fetchall():
        _deleteTemporaryObjects(txn, ttid)
    return len(rows)


def _lastIds(txn):
    txn.execute("SELECT MAX(tid) FROM trans")
    lastTid = txn.fetchone()[0]
    txn.execute("SELECT MAX(tid), MAX(oid) FROM obj")
    objTid, lastOid = txn.fetchone()
    if objTid is not None and (lastTid is None or objTid > lastTid):
        lastTid = objTid
    return lastTid, lastOid


@implementer(IStorageBackend)
class SQLiteBackend:
    """A storage node's database in one SQLite file."""

    def __init__(self, path, cluster, reactor):
        self.path = path
        self.cluster = cluster
        self._reactor = reactor
        self._pool = None
        self._lock = None
        self.config = {}

    def _start(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise DatabaseError(f"directory {directory} does not exist")
        try:
            self._lock = zc.lockfile.LockFile(self.path + ".lock")
        except zc.lockfile.LockError:
            raise DatabaseError(f"{self.path} is used by another process")
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, cp_min=1, cp_max=1,
            cp_openfun=_configure, cp_reactor=self._reactor)

    def _run(self, function, *args):
        return self._pool.runInteraction(function, *args)

    def open(self):
        try:
            self._start()
        except DatabaseError as e:
            from twisted.internet import defer
            return defer.fail(e)
        d = self._run(_openSchema, self.cluster)

        def opened(config):
            self.config = config
            return self
        return d.addCallback(opened)

    def reset(self):
        if self._pool is None:
            self._start()
        d = self._run(_reset)
        d.addCallback(lambda _: self._run(_openSchema, self.cluster))
        d.addCallback(lambda config: setattr(self, "config", config))
        return d

    def close(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

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

    def load(self, partition, oid, serial=None, before=None):
        return self._run(_load, partition, oid, serial, before)

    def vote(self, ttid, partition, metadata, objects):
        return self._run(_vote, ttid, partition, metadata, objects)

    def lockTransaction(self, ttid, tid):
        return self._run(_lockTransaction, ttid, tid)

    def unlockTransaction(self, ttid):
        return self._run(_unlockTransaction, ttid)

    def abortTransaction(self, ttid):
        return self._run(_abortTransaction, ttid)

    def lockedTransactions(self):
        return self._run(_lockedTransactions)

    def finishRecovery(self):
        return self._run(_finishRecovery)

    def lastIds(self):
        return self._run(_lastIds)
