"""The entry points: console scripts, twistd plugins, ZConfig."""

import subprocess
import sys
import unittest

from tests.cluster import InProcessCluster, twistdCommand


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


class HelpTests(unittest.TestCase):

    def test_pluginsHelp(self):
        """Each twistd plugin explains its options with --help."""
        for role, option in (("master", "--partitions"),
                             ("storage", "--database"),
                             ("admin", "--bind")):
            result = run(*twistdCommand(role, "--help"))
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(option, result.stdout)
            self.assertIn("--cluster", result.stdout)

    def test_consoleScripts(self):
        """neomaster, neostorage, neoadmin and neoctl are installed."""
        from shutil import which
        for script in ("neomaster", "neostorage", "neoadmin", "neoctl"):
            path = which(script) or which(
                script, path=__import__("os").path.dirname(sys.executable))
            self.assertIsNotNone(path, f"{script} is not installed")
            result = run(path, "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("--", result.stdout)

    def test_missingCluster(self):
        """A node without --cluster refuses to start and says why."""
        result = run(*twistdCommand("storage", "-d", "x.db"))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--cluster is required", result.stdout + result.stderr)

    def test_neoctlSubcommandHelp(self):
        """Every neoctl command has --help."""
        for args in (["start"], ["print", "pt"], ["print", "node"],
                     ["set", "cluster"]):
            result = run(sys.executable, "-m", "neo.neoctl", *args, "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("neoctl", result.stdout)


class ZConfigTests(unittest.TestCase):

    def test_importNeoClient(self):
        """'%import neo.client' and a <NEOStorage> section open a ZODB
        database on the cluster."""
        import transaction
        import ZODB.config
        cluster = InProcessCluster(storages=1).start()
        self.addCleanup(cluster.stop)
        db = ZODB.config.databaseFromString(f"""
            %import neo.client
            <zodb>
              <NEOStorage>
                master_nodes {cluster.masterAddress}
                name {cluster.name}
                cache-size 1MB
              </NEOStorage>
            </zodb>
            """)
        try:
            self.assertEqual(db.storage.getName(), cluster.name)
            self.assertEqual(db.storage._cache.maxBytes, 1024 * 1024)
            conn = db.open()
            conn.root()["z"] = "config"
            transaction.commit()
            conn.close()
        finally:
            db.close()
