"""
MariaDB/MySQL for the tests: a server at 127.0.0.1:3306, user root, no
password (what .ci/run starts).  When NEO_TEST_MYSQL=1 (set by .ci/run
once the server answered) an unreachable server is an error, never a skip.
"""

import itertools
import os
import unittest

HOST, PORT, USER = "127.0.0.1", 3306, "root"
_names = itertools.count(1)
_available = None


def connect(**kwargs):
    import MySQLdb
    return MySQLdb.connect(host=HOST, port=PORT, user=USER, passwd="",
                           connect_timeout=5, **kwargs)


def available() -> bool:
    global _available
    if _available is None:
        try:
            connect().close()
            _available = True
        except Exception as e:
            if os.environ.get("NEO_TEST_MYSQL") == "1":
                raise RuntimeError(
                    f"MySQL tests must run but the server at {HOST}:{PORT}"
                    f" is unreachable: {e}")
            _available = False
    return _available


def requireMySQL(testCase):
    if not available():
        raise unittest.SkipTest(f"no MySQL server at {HOST}:{PORT}")


def newDatabaseName() -> str:
    """A database name unique to this test run (not created)."""
    return f"neotest_{os.getpid()}_{next(_names)}"


def dsn(name) -> str:
    return f"{USER}@{name}@{HOST}:{PORT}"


def dropDatabases(names):
    conn = connect()
    try:
        cursor = conn.cursor()
        for name in names:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()
