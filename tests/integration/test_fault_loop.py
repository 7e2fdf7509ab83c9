"""The fault loops of tests/faults/fault_loop.py, short: two rounds of each scenario (the
server killed, the disk full, the S3 server gone, smbd restarted mid-upload). `make faults`
runs the long form."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "faults"))
import fault_loop  # noqa: E402


class FaultLoopTest(unittest.TestCase):
    def test_every_scenario_two_rounds(self):
        rounds = os.environ.get("FAULT_ROUNDS_SHORT", "2")
        self.assertEqual(fault_loop.main(["--rounds", rounds]), 0,
                         "a fault loop found a problem (its report is above)")


if __name__ == "__main__":
    unittest.main()
