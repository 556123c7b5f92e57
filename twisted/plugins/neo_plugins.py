"""twistd plugins of NEO: neo-master, neo-storage, neo-admin."""

from twisted.application.service import ServiceMaker

neoMaster = ServiceMaker(
    "NEO master", "neo.services.master.tap",
    "Run the primary master of a NEO cluster.", "neo-master")
neoStorage = ServiceMaker(
    "NEO storage", "neo.services.storage.tap",
    "Run a NEO storage node.", "neo-storage")
neoAdmin = ServiceMaker(
    "NEO admin", "neo.services.admin.tap",
    "Run the admin node of a NEO cluster (neoctl talks to it).", "neo-admin")
