"""Tests for L{neo.lib.config} and the node roles' C{Options}."""

import os
import shutil
import tempfile

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from neo.lib.config import (
    clientEndpoint, formatAddress, parseAddress, parseMasters, serverEndpoint)
from neo.services.master.config import MasterConfig
from neo.services.master.tap import Options as MasterOptions
from neo.services.storage.tap import Options as StorageOptions


class ParseAddressTests(SynchronousTestCase):
    """parseAddress reads HOST:PORT and [V6ADDR]:PORT."""

    def test_ipv4(self):
        """An IPv4 address and port become (host, port)."""
        self.assertEqual(parseAddress("10.0.0.1:2000"), ("10.0.0.1", 2000))
        self.assertEqual(parseAddress(" localhost:0 "), ("localhost", 0))

    def test_ipv6(self):
        """A bracketed IPv6 address loses its brackets."""
        self.assertEqual(parseAddress("[::1]:5"), ("::1", 5))
        self.assertEqual(parseAddress("[fe80::1]:65535"), ("fe80::1", 65535))

    def test_defaultHost(self):
        """An empty host is the default host."""
        self.assertEqual(parseAddress(":7"), ("127.0.0.1", 7))
        self.assertEqual(parseAddress(":7", "0.0.0.0"), ("0.0.0.0", 7))

    def test_noPort(self):
        """An address without a port is refused."""
        for text in ("localhost", "[::1]", "[::1]5", ""):
            self.assertRaises(usage.UsageError, parseAddress, text)

    def test_badPort(self):
        """A port that is not a number is refused."""
        for text in ("host:", "host:http", "[::1]:x", "host:1.5"):
            self.assertRaises(usage.UsageError, parseAddress, text)

    def test_portOutOfRange(self):
        """Ports above 65535 or negative are refused."""
        self.assertRaises(usage.UsageError, parseAddress, "host:65536")
        self.assertRaises(usage.UsageError, parseAddress, "host:-1")
        self.assertRaises(usage.UsageError, parseAddress, "[::1]:100000")

    def test_formatAddress(self):
        """formatAddress writes what parseAddress reads."""
        for address in (("10.0.0.1", 2000), ("::1", 5)):
            self.assertEqual(parseAddress(formatAddress(address)), address)
        self.assertEqual(formatAddress(("::1", 5)), "[::1]:5")
        self.assertEqual(formatAddress(None), "-")

    def test_endpoints(self):
        """Endpoint descriptions escape the colons of IPv6 hosts."""
        self.assertEqual(serverEndpoint(("::1", 5)), "tcp:5:interface=\\:\\:1")
        self.assertEqual(clientEndpoint(("h", 5)),
                         "tcp:host=h:port=5:timeout=10")


class ParseMastersTests(SynchronousTestCase):
    """parseMasters reads a list of addresses."""

    def test_spaceSeparated(self):
        """Addresses may be separated by spaces."""
        self.assertEqual(parseMasters("a:1  b:2"), [("a", 1), ("b", 2)])

    def test_commaSeparated(self):
        """Addresses may be separated by commas, with or without spaces."""
        self.assertEqual(parseMasters("a:1,b:2, [::1]:3"),
                         [("a", 1), ("b", 2), ("::1", 3)])

    def test_empty(self):
        """An empty list is refused."""
        for text in ("", "  ", ","):
            self.assertRaises(usage.UsageError, parseMasters, text)

    def test_badAddress(self):
        """One bad address makes the whole list fail."""
        self.assertRaises(usage.UsageError, parseMasters, "a:1 b")


class OptionsTestMixin:
    """Helpers to parse options and write INI files."""

    def setUp(self):
        # trial runs tests in _trial_temp, but pytest runs them in the
        # project directory, where mktemp() would leave its files: work in
        # a directory removed after the test.
        here = os.getcwd()
        directory = tempfile.mkdtemp(prefix="neo-test-config-")
        os.chdir(directory)
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.addCleanup(os.chdir, here)

    def parse(self, optionsClass, *argv):
        options = optionsClass()
        options.parseOptions(list(argv))
        return options

    def writeFile(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path


class MasterOptionsTests(OptionsTestMixin, SynchronousTestCase):
    """The options of neo-master."""

    def test_clusterRequired(self):
        """Without --cluster, parsing fails."""
        e = self.assertRaises(usage.UsageError, self.parse, MasterOptions)
        self.assertIn("--cluster", str(e))

    def test_defaults(self):
        """A master has 12 partitions, no replica, stripes of 16 oids, and
        binds 127.0.0.1:10000."""
        options = self.parse(MasterOptions, "--cluster", "test")
        self.assertEqual(options["cluster"], "test")
        self.assertEqual(options["partitions"], 12)
        self.assertEqual(options["replicas"], 0)
        self.assertEqual(options["stripe"], 16)
        self.assertEqual(MasterConfig.fromOptions(options).stripe, 16)
        self.assertEqual(options["bind"], ("127.0.0.1", 10000))
        self.assertEqual(options["masters"], [("127.0.0.1", 10000)])

    def test_commandLine(self):
        """Options given on the command line are parsed and typed."""
        options = self.parse(MasterOptions, "-c", "x", "-p", "5", "-r", "2",
                             "--stripe", "1", "-b", "[::1]:4", "-m", "h:1,h:2")
        self.assertEqual((options["partitions"], options["replicas"]), (5, 2))
        self.assertEqual(MasterConfig.fromOptions(options).stripe, 1)
        self.assertEqual(options["bind"], ("::1", 4))
        self.assertEqual(options["masters"], [("h", 1), ("h", 2)])

    def test_badNumbers(self):
        """Partitions and stripes must be positive integers, replicas not
        negative."""
        for argv in (["-p", "0"], ["-p", "x"], ["-r", "-1"], ["-r", "1.5"],
                     ["--stripe", "0"], ["--stripe", "x"]):
            self.assertRaises(usage.UsageError, self.parse, MasterOptions,
                              "-c", "x", *argv)

    def test_badBind(self):
        """An invalid --bind address is refused."""
        self.assertRaises(usage.UsageError, self.parse, MasterOptions,
                          "-c", "x", "-b", "nowhere")

    def test_fileDefaultSection(self):
        """Without --section, the file's [DEFAULT] keys are used."""
        path = self.writeFile("[DEFAULT]\ncluster = prod\npartitions = 24\n"
                              "masters = m1:1 m2:2\n")
        options = self.parse(MasterOptions, "--file", path)
        self.assertEqual(options["cluster"], "prod")
        self.assertEqual(options["partitions"], 24)
        self.assertEqual(options["masters"], [("m1", 1), ("m2", 2)])

    def test_fileSection(self):
        """A node's section overrides [DEFAULT] and adds its own keys."""
        path = self.writeFile(
            "[DEFAULT]\ncluster = prod\nreplicas = 1\n"
            "[master1]\nbind = 10.0.0.1:3000\nreplicas = 2\n"
            "address_file = /tmp/m.addr\n")
        options = self.parse(MasterOptions, "-f", path, "-s", "master1")
        self.assertEqual(options["cluster"], "prod")
        self.assertEqual(options["bind"], ("10.0.0.1", 3000))
        self.assertEqual(options["replicas"], 2)
        self.assertEqual(options["address-file"], "/tmp/m.addr")

    def test_commandLineOverridesFile(self):
        """An option given on the command line wins over the file."""
        path = self.writeFile("[DEFAULT]\ncluster = prod\npartitions = 24\n"
                              "[m]\nbind = 10.0.0.1:3000\n")
        options = self.parse(MasterOptions, "-f", path, "-s", "m",
                             "-c", "other", "-b", "127.0.0.1:9")
        self.assertEqual(options["cluster"], "other")
        self.assertEqual(options["bind"], ("127.0.0.1", 9))
        self.assertEqual(options["partitions"], 24)

    def test_unknownKeysIgnored(self):
        """Keys of other roles in the file (e.g. database) are ignored."""
        path = self.writeFile("[DEFAULT]\ncluster = c\ndatabase = x.db\n")
        options = self.parse(MasterOptions, "-f", path)
        self.assertNotIn("database", options)

    def test_unknownSection(self):
        """A section missing from the file is an error."""
        path = self.writeFile("[DEFAULT]\ncluster = prod\n")
        e = self.assertRaises(usage.UsageError, self.parse, MasterOptions,
                              "-f", path, "-s", "nope")
        self.assertIn("[nope]", str(e))

    def test_sectionWithoutFile(self):
        """--section without --file is an error."""
        e = self.assertRaises(usage.UsageError, self.parse, MasterOptions,
                              "-c", "x", "-s", "master1")
        self.assertIn("--file", str(e))

    def test_missingFile(self):
        """A file that cannot be read is a usage error."""
        self.assertRaises(usage.UsageError, self.parse, MasterOptions,
                          "-c", "x", "-f", self.mktemp())

    def test_malformedFile(self):
        """A file that is not INI is a usage error."""
        path = self.writeFile("cluster = nosection\n")
        self.assertRaises(usage.UsageError, self.parse, MasterOptions,
                          "-f", path)

    def test_fileWithoutCluster(self):
        """--cluster is still required when the file does not give it."""
        path = self.writeFile("[DEFAULT]\npartitions = 3\n")
        self.assertRaises(usage.UsageError, self.parse, MasterOptions,
                          "-f", path)


class StorageOptionsTests(OptionsTestMixin, SynchronousTestCase):
    """The options of neo-storage."""

    def test_databaseRequired(self):
        """A storage node needs --database."""
        e = self.assertRaises(usage.UsageError, self.parse, StorageOptions,
                              "-c", "x")
        self.assertIn("--database", str(e))

    def test_defaults(self):
        """The adapter is SQLite, the bind address any free port."""
        options = self.parse(StorageOptions, "-c", "x", "-d", "s.db")
        self.assertEqual(options["adapter"], "SQLite")
        self.assertEqual(options["database"], "s.db")
        self.assertEqual(options["bind"], ("127.0.0.1", 0))
        self.assertEqual(options["masters"], [("127.0.0.1", 10000)])
        self.assertFalse(options["reset"])

    def test_adapterCaseInsensitive(self):
        """The adapter name is matched whatever its case."""
        options = self.parse(StorageOptions, "-c", "x", "-d", "s.db",
                             "-a", "sqlite")
        self.assertEqual(options["adapter"], "SQLite")

    def test_unknownAdapter(self):
        """An unknown adapter is refused."""
        e = self.assertRaises(usage.UsageError, self.parse, StorageOptions,
                              "-c", "x", "-d", "s.db", "-a", "MySQL")
        self.assertIn("MySQL", str(e))

    def test_fileSection(self):
        """Each storage node reads its database from its own section."""
        path = self.writeFile(
            "[DEFAULT]\ncluster = prod\nmasters = 10.0.0.1:10000\n"
            "[storage1]\ndatabase = /var/neo/s1.db\nbind = :4001\n"
            "[storage2]\ndatabase = /var/neo/s2.db\nadapter = SQLITE\n")
        one = self.parse(StorageOptions, "-f", path, "-s", "storage1")
        two = self.parse(StorageOptions, "-f", path, "-s", "storage2")
        self.assertEqual((one["cluster"], one["database"], one["bind"]),
                         ("prod", "/var/neo/s1.db", ("127.0.0.1", 4001)))
        self.assertEqual((two["database"], two["adapter"]),
                         ("/var/neo/s2.db", "SQLite"))
        self.assertEqual(two["masters"], [("10.0.0.1", 10000)])

    def test_fileDatabaseRequired(self):
        """A section without a database fails like the command line."""
        path = self.writeFile("[DEFAULT]\ncluster = prod\n[s1]\n")
        self.assertRaises(usage.UsageError, self.parse, StorageOptions,
                          "-f", path, "-s", "s1")

    def test_sync(self):
        """
        SQLite syncs every commit by default; --sync NORMAL (any case) only
        its checkpoints; other modes are refused, and so is --sync with
        MySQL, whose server decides.
        """
        from neo.services.storage.config import StorageConfig
        options = self.parse(StorageOptions, "-c", "x", "-d", "s.db")
        self.assertEqual(options["sync"], "FULL")
        self.assertEqual(StorageConfig.fromOptions(options).sync, "FULL")
        options = self.parse(StorageOptions, "-c", "x", "-d", "s.db",
                             "--sync", "normal")
        self.assertEqual(StorageConfig.fromOptions(options).sync, "NORMAL")
        e = self.assertRaises(usage.UsageError, self.parse, StorageOptions,
                              "-c", "x", "-d", "s.db", "--sync", "off")
        self.assertIn("FULL, NORMAL", str(e))
        e = self.assertRaises(usage.UsageError, self.parse, StorageOptions,
                              "-c", "x", "-d", "root@neo", "-a", "MySQL",
                              "--sync", "FULL")
        self.assertIn("innodb_flush_log_at_trx_commit", str(e))
        options = self.parse(StorageOptions, "-c", "x", "-d", "root@neo",
                             "-a", "MySQL")
        self.assertIsNone(options["sync"])

    def test_reset(self):
        """--reset is a flag."""
        options = self.parse(StorageOptions, "-c", "x", "-d", "s.db",
                             "--reset")
        self.assertTrue(options["reset"])

    def test_nodeResolution(self):
        """Storage nodes resolve conflicts unless --no-node-resolution."""
        from neo.services.storage.config import StorageConfig
        options = self.parse(StorageOptions, "-c", "x", "-d", "s.db")
        self.assertTrue(StorageConfig.fromOptions(options).resolveConflicts)
        options = self.parse(StorageOptions, "-c", "x", "-d", "s.db",
                             "--no-node-resolution")
        self.assertFalse(StorageConfig.fromOptions(options).resolveConflicts)
