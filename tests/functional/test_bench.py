"""The benchmark command still works (a quick run, no timing asserted)."""

import json
import os
import subprocess
import sys
import tempfile
import unittest


class BenchSmokeTests(unittest.TestCase):

    def test_quick(self):
        """neo-bench --quick --compare zeo,filestorage prints the table
        with ratios and writes the JSON results."""
        directory = tempfile.mkdtemp(prefix="neo-bench-test-")
        path = os.path.join(directory, "out.json")
        result = subprocess.run(
            [sys.executable, "-m", "neo.bench", "--quick", "--objects", "50",
             "--transactions", "10", "--compare", "zeo,filestorage",
             "--json", path], capture_output=True, text=True, timeout=600,
            cwd=directory)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        for label in ("add", "update", "cold_read", "warm_read", "small",
                      "concurrent C=2", "conflicts C=2",
                      "large write 1 MiB", "large read 1 MiB"):
            self.assertIn(label, result.stdout)
        self.assertIn("neo/zeo", result.stdout)
        with open(path) as f:
            doc = json.load(f)
        for target in ("neo", "zeo", "filestorage"):
            self.assertGreater(doc["results"][target]["add"]["median"], 0)
        self.assertIsNone(doc["results"]["filestorage"]["concurrent_2"])
        self.assertGreater(doc["results"]["neo"]["concurrent_2"]["median"], 0)
