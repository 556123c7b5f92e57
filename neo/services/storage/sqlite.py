# -*- test-case-name: tests.backend.test_backend -*-
"""
The SQLite storage backend: the node's database in one file.

One connection (L{SerialConnectionPool}) keeps statements in submission order
and avoids "database is locked"; a lock file keeps a second process away.
"""

import functools
import os

import zc.lockfile
from twisted.internet import defer
from twisted.logger import Logger

from neo.services.storage.config import SYNC_MODES
from neo.services.storage.database import DatabaseError, Dialect, SQLBackend
from neo.services.storage.pool import SerialConnectionPool

log = Logger()


class SQLiteDialect(Dialect):
    name = "SQLite"
    #: The tables of a new database.  obj and trans are clustered by their
    #: primary key (WITHOUT ROWID: one B-tree fewer to write on every
    #: commit, and loads find a record in one), and data ids are allotted
    #: by the node itself (no AUTOINCREMENT, which writes its counter's
    #: page on every insert).  A database made before keeps its tables,
    #: which answer the same statements the same way.
    schema = [
        """CREATE TABLE IF NOT EXISTS config (
            name TEXT NOT NULL PRIMARY KEY,
            value TEXT)""",
        """CREATE TABLE IF NOT EXISTS trans (
            `partition` INTEGER NOT NULL,
            tid INTEGER NOT NULL,
            packed BOOLEAN NOT NULL DEFAULT 0,
            oids BLOB NOT NULL,
            user BLOB NOT NULL,
            description BLOB NOT NULL,
            ext BLOB NOT NULL,
            ttid INTEGER NOT NULL,
            PRIMARY KEY (`partition`, tid)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS obj (
            `partition` INTEGER NOT NULL,
            oid INTEGER NOT NULL,
            tid INTEGER NOT NULL,
            data_id INTEGER,
            value_tid INTEGER,
            PRIMARY KEY (`partition`, oid, tid)) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS obj_tid ON obj(`partition`, tid, oid)",
        "CREATE INDEX IF NOT EXISTS obj_data ON obj(data_id)",
        """CREATE TABLE IF NOT EXISTS data (
            id INTEGER PRIMARY KEY,
            hash BLOB NOT NULL,
            compression INTEGER NOT NULL,
            size INTEGER NOT NULL,
            value BLOB)""",
        "CREATE INDEX IF NOT EXISTS data_hash ON data(hash)",
        """CREATE TABLE IF NOT EXISTS bigdata (
            id INTEGER NOT NULL,
            n INTEGER NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (id, n))""",
        """CREATE TABLE IF NOT EXISTS ttrans (
            ttid INTEGER NOT NULL PRIMARY KEY,
            tid INTEGER,
            `partition` INTEGER NOT NULL,
            meta BOOLEAN NOT NULL,
            oids BLOB NOT NULL,
            user BLOB NOT NULL,
            description BLOB NOT NULL,
            ext BLOB NOT NULL,
            participants BLOB)""",
        """CREATE TABLE IF NOT EXISTS tobj (
            ttid INTEGER NOT NULL,
            `partition` INTEGER NOT NULL,
            oid INTEGER NOT NULL,
            data_id INTEGER,
            value_tid INTEGER,
            PRIMARY KEY (ttid, oid))""",
        "CREATE INDEX IF NOT EXISTS tobj_data ON tobj(data_id)",
    ]


#: Pages of write-ahead log (4 KiB each) past which a commit checkpoints
#: the log itself, should the checkpoints in the background fall behind.
WAL_PAGES = 8192


def _configure(conn, sync):
    # WAL: readers never block the writer.  Synchronous FULL: each commit
    # syncs the log, and survives a power loss; NORMAL: only checkpoints
    # sync, and a commit survives a crash of the process.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
    conn.text_factory = str


class SQLiteBackend(SQLBackend):
    """
    A storage node's database in one SQLite file.

    Commits append to the write-ahead log; copying it back into the
    database (a checkpoint, which syncs the file to disk: several
    milliseconds here, during which commits are slower) is done in the
    background every L{CHECKPOINT_EVERY} commit steps, or as soon as
    L{CHECKPOINT_BYTES} of records were written, on a connection of its
    own, instead of by the commit that happens to fill the log, which
    would wait for it.
    """

    dialect = SQLiteDialect()

    #: Commit steps between two checkpoints in the background, at most.
    #: After a checkpoint, the log starts again from its beginning: kept
    #: short, it is mostly written over in place, and each commit's sync
    #: is cheaper than when it grows the file (which also syncs the
    #: file's size: 330 to 370 µs instead of 475 to 640 for a commit of
    #: one object here, and a p99 of `small` of 4.5 ms instead of 6.6 to
    #: 11.6).
    CHECKPOINT_EVERY = 128
    #: Bytes of records written from which the log is checkpointed in the
    #: background (a quarter of the log that makes a commit checkpoint it:
    #: L{WAL_PAGES}).
    CHECKPOINT_BYTES = WAL_PAGES * 4096 // 4

    def __init__(self, path, cluster, reactor, sync=SYNC_MODES[0]):
        super().__init__(cluster, reactor)
        if sync not in SYNC_MODES:
            raise ValueError(f"unknown synchronous mode {sync!r}")
        self.path = path
        self.sync = sync
        self._lock = None
        self._checkpointPool = None
        #: The Deferred of the checkpoint in progress, if any.
        self._checkpointing = None
        #: Commit steps since the last checkpoint, and the bytes of
        #: records written before it (L{SQLBackend.written}).
        self._uncheckpointed = 0
        self._checkpointedAt = 0

    def _start(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            return defer.fail(DatabaseError(
                f"directory {directory} does not exist"))
        try:
            self._lock = zc.lockfile.LockFile(self.path + ".lock")
        except zc.lockfile.LockError:
            return defer.fail(DatabaseError(
                f"{self.path} is used by another process"))
        self._pool, self._checkpointPool = (SerialConnectionPool(
            "sqlite3", self.path, check_same_thread=False,
            cp_openfun=functools.partial(_configure, sync=self.sync),
            cp_reactor=self._reactor)
            for _ in range(2))
        return defer.succeed(None)

    def _nextSteps(self):
        self._uncheckpointed += 1
        if (self._checkpointing is None and self._checkpointPool is not None
                and (self._uncheckpointed >= self.CHECKPOINT_EVERY
                     or self.written - self._checkpointedAt
                     >= self.CHECKPOINT_BYTES)):
            self._checkpoint()
        super()._nextSteps()

    def _checkpoint(self):
        self._uncheckpointed = 0
        self._checkpointedAt = self.written
        # PASSIVE: it copies what it can, never making a commit wait.
        d = self._checkpointPool.runOperation("PRAGMA wal_checkpoint(PASSIVE)")
        # A failure is harmless (the next one, or a commit, does it): the
        # log only grows meanwhile.
        d.addErrback(
            lambda f: log.failure("checkpoint of {path} failed ({cluster})",
                                  f, path=self.path, cluster=self.cluster))

        def done(_):
            self._checkpointing = None
        self._checkpointing = d
        d.addCallback(done)

    def close(self):
        if self._checkpointPool is not None:
            self._checkpointPool.close()
            self._checkpointPool = None
        super().close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
