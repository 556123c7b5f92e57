# -*- test-case-name: tests.unit.test_config -*-
"""
Command-line and configuration-file options shared by every node role.

Every node takes C{-c/--cluster}, C{-m/--masters}, C{-b/--bind}, and
C{-f/--file} with C{-s/--section} to read the same options from an INI file
whose C{[DEFAULT]} holds cluster-wide keys and whose sections hold each
node's own.  Options given on the command line override the file.
"""

import configparser
import os

from twisted.python import usage


def parseAddress(text: str, defaultHost: str = "127.0.0.1"):
    """
    Parse C{HOST:PORT} (C{[V6ADDR]:PORT} for IPv6) into C{(host, port)}.

    @raise usage.UsageError: on malformed input.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise usage.UsageError(f"invalid address {text!r}: want [HOST]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise usage.UsageError(f"invalid address {text!r}: want HOST:PORT")
    host = host or defaultHost
    try:
        port = int(port)
    except ValueError:
        raise usage.UsageError(f"invalid port in address {text!r}")
    if not 0 <= port <= 65535:
        raise usage.UsageError(f"port out of range in address {text!r}")
    return host, port


def parseMasters(text: str):
    """Parse a space- or comma-separated list of master addresses."""
    addresses = [parseAddress(a) for a in text.replace(",", " ").split()]
    if not addresses:
        raise usage.UsageError("at least one master address is needed")
    return addresses


def formatAddress(address) -> str:
    if address is None:
        return "-"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serverEndpoint(address) -> str:
    """A Twisted server endpoint description listening on C{address}."""
    host, port = address
    return "tcp:%d:interface=%s" % (port, host.replace(":", "\\:"))


def clientEndpoint(address) -> str:
    """A Twisted client endpoint description connecting to C{address}."""
    host, port = address
    return "tcp:host=%s:port=%d:timeout=10" % (host.replace(":", "\\:"), port)


class NodeOptions(usage.Options):
    """
    Options every node role has.  Subclasses add theirs to
    C{optParameters} and defaults to C{defaults}; C{None} in
    C{optParameters} means "not given", so that the file may provide it.
    """

    role = "node"
    optParameters = [
        ["cluster", "c", None, "Cluster name (required). Nodes of other"
         " clusters are refused."],
        ["masters", "m", None, "Master addresses, HOST:PORT separated by"
         " spaces [default: 127.0.0.1:10000]."],
        ["bind", "b", None, "HOST:PORT to listen on (port 0: any free port)."],
        ["file", "f", None, "Read options from this INI file."],
        ["section", "s", None, "Section of the INI file for this node"
         " (its [DEFAULT] holds cluster-wide keys)."],
        ["address-file", None, None, "Write the bound HOST:PORT to this file"
         " once listening."],
    ]
    nodeDefaults = {"masters": "127.0.0.1:10000", "bind": "127.0.0.1:0"}
    required = ("cluster",)

    def postOptions(self):
        if self["file"]:
            self._readFile(self["file"], self["section"])
        elif self["section"]:
            raise usage.UsageError("--section needs --file")
        for key, value in self.nodeDefaults.items():
            if self[key] is None:
                self[key] = value
        for key in self.required:
            if not self[key]:
                raise usage.UsageError(f"--{key} is required")
        self["masters"] = parseMasters(self["masters"])
        self["bind"] = parseAddress(self["bind"])
        self.checkOptions()

    def checkOptions(self):
        """Validate role-specific options (override)."""

    def _readFile(self, path, section):
        parser = configparser.ConfigParser()
        try:
            with open(os.path.expanduser(path)) as f:
                parser.read_file(f)
        except (OSError, configparser.Error) as e:
            raise usage.UsageError(f"cannot read {path}: {e}")
        if section is None:
            values = parser.defaults()
        elif parser.has_section(section):
            values = dict(parser.items(section))
        else:
            raise usage.UsageError(f"{path} has no section [{section}]")
        known = {p[0] for p in self.optParameters} - {"file", "section"}
        for key, value in values.items():
            key = key.replace("_", "-")
            if key in known and self[key] is None:
                self[key] = os.path.expanduser(value) if key in (
                    "database", "address-file") else value
