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


def onMySQL(cls):
    """
    The same test case with storage nodes on MySQL: test cases that start
    clusters read their adapter from the C{adapter} class attribute.
    """
    return type(cls.__name__ + "OnMySQL", (cls,),
                {"adapter": "MySQL", "__module__": cls.__module__})


MARIADBD = "/usr/sbin/mariadbd"


def canRestart() -> bool:
    """Whether the tests may restart the local MariaDB server."""
    import shutil
    return (os.geteuid() == 0 and os.path.exists(MARIADBD)
            and shutil.which("start-stop-daemon") is not None
            and available())


def restartServer(timeout=120):
    """Stop the local MariaDB server (SIGTERM, clean shutdown), start it
    again as .ci/run does, and wait until it answers."""
    import signal
    import subprocess
    import time
    pids = [int(p) for p in subprocess.run(
        ["pidof", "mariadbd"], capture_output=True, text=True).stdout.split()]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):
        if time.monotonic() > deadline:
            raise RuntimeError("MariaDB did not stop")
        time.sleep(0.1)  # waiting for another process to exit
    subprocess.run(["start-stop-daemon", "--start", "--oknodo",
                    "--background", "--exec", MARIADBD], check=True)
    while True:
        try:
            connect().close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # waiting for the server to accept connections
