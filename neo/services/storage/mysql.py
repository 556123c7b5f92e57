# -*- test-case-name: tests.backend.test_backend -*-
"""
The MySQL/MariaDB storage backend, through mysqlclient and adbapi.

One database per storage node, InnoDB tables, utf8mb4, autocommit off: each
interaction is one explicit SQL transaction.  Values larger than what one
statement may carry (C{max_allowed_packet}) are split over C{bigdata} rows.
A lost connection ("server has gone away", a server restart) is retried
with a fresh connection: every interaction is atomic and idempotent, so a
retry never half-writes anything.
"""

import re

from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import Logger

from neo.services.storage.database import DatabaseError, Dialect, SQLBackend
from neo.services.storage.pool import SerialConnectionPool

log = Logger()

#: MySQL client errors meaning the connection is gone (CR_SERVER_GONE_ERROR,
#: CR_SERVER_LOST, CR_CONN_HOST_ERROR, CR_CONNECTION_ERROR, ER_SERVER_SHUTDOWN,
#: ER_CONNECTION_KILLED, ER_QUERY_INTERRUPTED during a shutdown).
_CONNECTION_LOST = {2006, 2013, 2003, 2002, 1053, 1927, 4031}
#: How long an interaction keeps retrying while the server is unreachable.
RETRY_FOR = 60.0
_RETRY_DELAY = 0.5
#: The largest piece of a value written in one statement.
MAX_CHUNK = 8 * 1024 * 1024

_DSN = re.compile(r"""
    ^(?:(?P<user>[^:@/]+)(?::(?P<password>[^@]*))?@)?
    (?P<database>[A-Za-z0-9_$]+)
    (?:@(?P<host>[^:/]+|\[[^\]]+\])(?::(?P<port>\d+))?
     |(?P<socket>/.+))?$""", re.VERBOSE)


def parseDSN(dsn: str) -> dict:
    """
    Parse C{[user[:password]@]database[@host[:port]]} or
    C{[user[:password]@]database/path/to/unix_socket} into MySQLdb
    connection arguments.
    """
    dsn = dsn.strip()
    # "name@localhost" reads as a database on a host, not a user's.
    if dsn.count("@") == 1 and re.search(r"@localhost(:\d+)?$", dsn):
        dsn = "root@" + dsn
    match = _DSN.match(dsn)
    if match is None:
        raise ValueError(
            f"invalid MySQL database {dsn!r}: use"
            " [user[:password]@]database[@host[:port]] or"
            " [user[:password]@]database/path/to/unix_socket")
    parts = match.groupdict()
    kwargs = {"db": parts["database"], "user": parts["user"] or "root",
              "passwd": parts["password"] or ""}
    if parts["socket"]:
        kwargs["unix_socket"] = parts["socket"]
    else:
        kwargs["host"] = (parts["host"] or "127.0.0.1").strip("[]")
        kwargs["port"] = int(parts["port"] or 3306)
    return kwargs


def describe(kwargs) -> str:
    where = kwargs.get("unix_socket") or "%s:%s" % (kwargs.get("host"),
                                                    kwargs.get("port"))
    return f"{kwargs['user']}@{kwargs['db']} on {where}"


class MySQLDialect(Dialect):
    name = "MySQL"
    placeholder = "%s"
    _table = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    schema = [
        """CREATE TABLE IF NOT EXISTS config (
            name VARCHAR(255) NOT NULL PRIMARY KEY,
            value MEDIUMTEXT)""" + _table,
        """CREATE TABLE IF NOT EXISTS trans (
            `partition` SMALLINT UNSIGNED NOT NULL,
            tid BIGINT UNSIGNED NOT NULL,
            packed BOOLEAN NOT NULL DEFAULT 0,
            oids MEDIUMBLOB NOT NULL,
            user BLOB NOT NULL,
            description BLOB NOT NULL,
            ext BLOB NOT NULL,
            ttid BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (`partition`, tid))""" + _table,
        """CREATE TABLE IF NOT EXISTS obj (
            `partition` SMALLINT UNSIGNED NOT NULL,
            oid BIGINT UNSIGNED NOT NULL,
            tid BIGINT UNSIGNED NOT NULL,
            data_id BIGINT UNSIGNED NULL,
            value_tid BIGINT UNSIGNED NULL,
            PRIMARY KEY (`partition`, oid, tid),
            KEY (`partition`, tid, oid),
            KEY (data_id))""" + _table,
        """CREATE TABLE IF NOT EXISTS data (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            hash BINARY(20) NOT NULL,
            compression TINYINT UNSIGNED NOT NULL,
            size INT UNSIGNED NOT NULL,
            value LONGBLOB NULL,
            KEY (hash))""" + _table,
        """CREATE TABLE IF NOT EXISTS bigdata (
            id BIGINT UNSIGNED NOT NULL,
            n INT UNSIGNED NOT NULL,
            value MEDIUMBLOB NOT NULL,
            PRIMARY KEY (id, n))""" + _table,
        """CREATE TABLE IF NOT EXISTS ttrans (
            ttid BIGINT UNSIGNED NOT NULL PRIMARY KEY,
            tid BIGINT UNSIGNED NULL,
            `partition` SMALLINT UNSIGNED NOT NULL,
            meta BOOLEAN NOT NULL,
            oids MEDIUMBLOB NOT NULL,
            user BLOB NOT NULL,
            description BLOB NOT NULL,
            ext BLOB NOT NULL,
            participants BLOB)""" + _table,
        """CREATE TABLE IF NOT EXISTS tobj (
            ttid BIGINT UNSIGNED NOT NULL,
            `partition` SMALLINT UNSIGNED NOT NULL,
            oid BIGINT UNSIGNED NOT NULL,
            data_id BIGINT UNSIGNED NULL,
            value_tid BIGINT UNSIGNED NULL,
            PRIMARY KEY (ttid, oid),
            KEY (data_id))""" + _table,
    ]

    def __init__(self, chunkSize):
        super().__init__()
        self.chunkSize = chunkSize


def _connectionLost(failure) -> bool:
    import MySQLdb
    error = failure.value
    if isinstance(error, adbapi.ConnectionLost):
        return True
    return (isinstance(error, (MySQLdb.OperationalError,
                               MySQLdb.InterfaceError))
            and error.args and error.args[0] in _CONNECTION_LOST)


def _explainTooLarge(failure):
    """Turn a refused packet into an error saying what to change."""
    import MySQLdb
    error = failure.value
    if (isinstance(error, MySQLdb.MySQLError) and error.args
            and error.args[0] in (1153, 1301, 2020)):
        raise DatabaseError(
            f"the MySQL server refused a statement as too large"
            f" ({error.args[-1]}): raise its max_allowed_packet (for"
            f" example SET GLOBAL max_allowed_packet=67108864, or"
            f" max_allowed_packet=64M in the [mysqld] section of its"
            f" configuration)")


def _serverSettings(txn):
    txn.execute("SELECT @@max_allowed_packet, @@version")
    return txn.fetchone()


def _createDatabase(txn, name):
    txn.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`"
                " CHARACTER SET utf8mb4")


def _configure(conn):
    conn.autocommit(False)
    cursor = conn.cursor()
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    cursor.close()


class MySQLBackend(SQLBackend):
    """A storage node's database in a MySQL/MariaDB database."""

    def __init__(self, dsn, cluster, reactor):
        super().__init__(cluster, reactor)
        try:
            self._kwargs = parseDSN(dsn)
        except ValueError as e:
            raise DatabaseError(str(e))
        self.dialect = None

    def _pool_(self, **kwargs):
        args = dict(self._kwargs, charset="utf8mb4", use_unicode=True,
                    connect_timeout=10)
        args.update(kwargs)
        return SerialConnectionPool(
            "MySQLdb", cp_reconnect=True,
            cp_openfun=_configure, cp_reactor=self._reactor, cp_noisy=False,
            **args)

    @defer.inlineCallbacks
    def _start(self):
        import MySQLdb
        where = describe(self._kwargs)
        pool = self._pool_()
        try:
            settings = yield pool.runInteraction(_serverSettings)
        except MySQLdb.OperationalError as e:
            pool.close()
            # ER_BAD_DB_ERROR, or ER_DBACCESS_DENIED_ERROR for a user
            # without rights on a database that may not exist.
            if e.args and e.args[0] in (1049, 1044):
                yield self._createDatabase()
                pool = self._pool_()
                settings = yield pool.runInteraction(_serverSettings)
            else:
                raise DatabaseError(f"cannot connect to MySQL as {where}:"
                                    f" {e.args[-1]}")
        maxPacket = int(settings[0])
        # A statement carries a piece plus its SQL: leave a margin.
        self.dialect = MySQLDialect(min(MAX_CHUNK, maxPacket // 2))
        self._pool = pool

    @defer.inlineCallbacks
    def _createDatabase(self):
        import MySQLdb
        name = self._kwargs["db"]
        kwargs = {k: v for k, v in self._kwargs.items() if k != "db"}
        pool = SerialConnectionPool(
            "MySQLdb", cp_reactor=self._reactor,
            cp_noisy=False, charset="utf8mb4", connect_timeout=10, **kwargs)
        try:
            yield pool.runInteraction(_createDatabase, name)
        except MySQLdb.MySQLError as e:
            raise DatabaseError(
                f"database {name!r} does not exist and user"
                f" {kwargs['user']!r} cannot create it ({e.args[-1]}):"
                f" create it with CREATE DATABASE `{name}` CHARACTER SET"
                f" utf8mb4, and GRANT ALL ON `{name}`.* to that user")
        finally:
            pool.close()
        log.info("created MySQL database {name}", name=name)

    @defer.inlineCallbacks
    def _run(self, function, *args):
        deadline = self._reactor.seconds() + RETRY_FOR
        while True:
            try:
                result = yield super()._run(function, *args)
                return result
            except Exception:
                from twisted.python.failure import Failure
                failure = Failure()
                _explainTooLarge(failure)
                if (not _connectionLost(failure)
                        or self._pool is None
                        or self._reactor.seconds() > deadline):
                    raise
                log.warn("lost the MySQL connection ({error}): retrying",
                         error=failure.getErrorMessage())
                yield task.deferLater(self._reactor, _RETRY_DELAY,
                                      lambda: None)
