"""Helpers shared by the twistd plugins of every role."""

import os
import sys


def processCallbacks(reactor):
    """
    The C{(fatal, shutdown)} callbacks of a node running as a process:
    a fatal error stops the reactor and exits with status 1; a shutdown
    ordered by the cluster stops the reactor (status 0).
    """
    def stop():
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)

    def fatal(reason):
        def exit():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        reactor.addSystemEventTrigger("after", "shutdown", exit)
        stop()

    return fatal, stop


def runTwistd(plugin):
    """Run a twistd plugin in the foreground, logging to standard output."""
    from twisted.scripts.twistd import run
    sys.argv = [sys.argv[0], "--nodaemon", "--pidfile=", plugin] + sys.argv[1:]
    run()


def neomaster():
    runTwistd("neo-master")


def neostorage():
    runTwistd("neo-storage")


def neoadmin():
    runTwistd("neo-admin")
