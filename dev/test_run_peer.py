#!/usr/bin/env python3
"""Tests of dev/run_peer.py that need no GPU: the table parser on a captured sample
(tests/fixtures/peer_output_sample.txt) and on the Muon script's columns, the streaming run
with early stop on a fake script, the run file (read back by build/benchstat when built),
and, where torch is installed, the .pt conversion. Not part of `make test`:
    python3 dev/test_run_peer.py
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run_peer  # noqa: E402

SAMPLE = os.path.join(REPO, "tests", "fixtures", "peer_output_sample.txt")
BENCHSTAT = os.path.join(REPO, "build", "benchstat")

MUON_SAMPLE = textwrap.dedent("""\
    ---------------------------------------------------------------------------------
    |  run     |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |
    ---------------------------------------------------------------------------------
    |  warmup  |      0  |     0.1000  |   0.1000  |               |        0.5000  |
    |          |   eval  |     0.1000  |   0.1000  |       0.1000  |        0.6000  |
    ---------------------------------------------------------------------------------
    |       0  |      0  |     0.7000  |   0.7100  |               |        0.3000  |
    |          |      1  |     0.8000  |   0.8100  |               |        0.6000  |
    |          |   eval  |     0.8000  |   0.8100  |       0.9401  |        2.5500  |
    ---------------------------------------------------------------------------------
    |       1  |      0  |     0.7000  |   0.7100  |               |        0.3000  |
    this line is not part of the table
    |  a  |  row  |  of another width  |
    |          |   eval  |     0.8000  |   0.8100  |       0.9399  |        2.5600  |
    ---------------------------------------------------------------------------------
    |       2  |      0  |     0.7000  |   0.7100  |               |        0.3000  |
    """)


class ParserTest(unittest.TestCase):
    def test_sample_of_the_compiled_script(self):
        with open(SAMPLE) as f:
            runs = run_peer.parse_peer_output(f)
        self.assertEqual([r["run"] for r in runs], [0, 1, 2])  # the warm-up is skipped
        self.assertEqual([r["accuracy"] for r in runs], [0.9412, 0.9398, 0.9405])
        self.assertEqual([r["time_s"] for r in runs], [3.38, 3.3923, 3.4046])
        self.assertTrue(all(r["seed"] is None and "wall_s" not in r for r in runs))
        epochs = runs[0]["epochs"]
        self.assertEqual([e["epoch"] for e in epochs], list(range(1, 11)))
        self.assertEqual(epochs[0], {"epoch": 1, "train_loss": 1.4, "train_acc": 0.62,
                                     "test_acc": 0.63, "time_s": 0.36})

    def test_muon_columns_and_noise(self):
        runs = run_peer.parse_peer_output(MUON_SAMPLE.splitlines())
        self.assertEqual([(r["run"], r["accuracy"], r["time_s"]) for r in runs],
                         [(0, 0.9401, 2.55), (1, 0.9399, 2.56)])  # run 2 never finished
        self.assertEqual(runs[0]["epochs"][1], {"epoch": 2, "train_acc": 0.8, "test_acc": 0.81,
                                                "time_s": 0.6})

    def test_record_rows_after_the_running_mean(self):
        # the record script prints its running mean without a newline, so rows follow it
        lines = textwrap.dedent("""\
            |  run     |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |
            |  warmup  |   eval  |     0.1111  |   0.0978  |       0.0963  |       40.5124  |
            |       1  |   eval  |     0.9875  |   0.9314  |       0.9401  |        2.0133  |
            Mean accuracy after 1 runs: 0.940100 | Mean time: 2.013260s|       2  |   eval  |     0.9873  |   0.9346  |       0.9407  |        2.0131  |
            Mean accuracy after 2 runs: 0.940400 | Mean time: 2.013200s
            """).splitlines()
        runs = run_peer.parse_peer_output(lines)
        self.assertEqual([(r["run"], r["accuracy"], r["time_s"]) for r in runs],
                         [(1, 0.9401, 2.0133), (2, 0.9407, 2.0131)])

    def test_nothing_before_the_header_counts(self):
        lines = MUON_SAMPLE.splitlines()[3:]  # the header cut off
        self.assertEqual(run_peer.parse_peer_output(lines), [])

    def test_wall_time_between_runs(self):
        parser = run_peer.PeerOutputParser()
        lines = MUON_SAMPLE.splitlines()
        finished = [parser.feed(line, now=10.0 * i) for i, line in enumerate(lines)]
        runs = [r for r in finished if r]
        self.assertEqual([r["wall_s"] for r in runs], [40.0, 50.0])  # rows 4 -> 8 -> 13


class NamesTest(unittest.TestCase):
    def test_target_from_name(self):
        self.assertEqual(run_peer.target_accuracy("airbench94_compiled"), 0.94)
        self.assertEqual(run_peer.target_accuracy("airbench94_muon"), 0.94)
        self.assertEqual(run_peer.target_accuracy("airbench96_faster"), 0.96)
        self.assertEqual(run_peer.target_accuracy("cifar10_speedrun"), 0.94)
        self.assertIsNone(run_peer.target_accuracy("resnet18"))

    def test_gpu_slug(self):
        self.assertEqual(run_peer.gpu_slug("NVIDIA H100 80GB HBM3"), "h100")
        self.assertEqual(run_peer.gpu_slug("NVIDIA A100-SXM4-40GB"), "a100")
        self.assertEqual(run_peer.gpu_slug("NVIDIA GeForce RTX 4090"), "rtx4090")
        self.assertEqual(run_peer.gpu_slug(""), "gpu")


class RunTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.fake = os.path.join(self.dir, "fake_airbench94.py")
        with open(self.fake, "w") as f:  # prints the sample slowly, as a training script would
            f.write("import sys, time\nfor line in open(%r):\n"
                    "    print(line, end='')\n    time.sleep(0.002)\n" % SAMPLE)

    def tearDown(self):
        self.tmp.cleanup()

    def run_fake(self, max_runs, discard=0):
        return run_peer.run_script([sys.executable, self.fake], self.dir, max_runs,
                                   os.path.join(self.dir, "output.log"), False, discard)

    def test_runs_to_the_end(self):
        runs, status, stopped, saw_warmup = self.run_fake(None)
        self.assertEqual((len(runs), status, stopped, saw_warmup), (3, 0, False, True))
        self.assertTrue(all(r["wall_s"] > 0 for r in runs))
        with open(os.path.join(self.dir, "output.log")) as log, open(SAMPLE) as sample:
            self.assertEqual(log.read(), sample.read())

    def test_stops_after_max_runs(self):
        runs, _, stopped, _ = self.run_fake(2)
        self.assertEqual((len(runs), stopped), (2, True))

    def test_discards_first_runs(self):
        runs, _, stopped, _ = self.run_fake(2, discard=1)
        self.assertEqual(([r["run"] for r in runs], stopped), ([1, 2], True))

    def test_run_file_is_read_by_benchstat(self):
        runs = self.run_fake(None).runs
        gpu = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
               "driver_version": "580.159.04", "cuda_runtime": "12.8", "cudnn": "9.10.2"}
        run_file = run_peer.build_run_file("pytorch-airbench94_compiled", 0.94, gpu,
                                           "python3 dev/run_peer.py x.py", {"torch": "2.9"},
                                           {"seed": None}, runs,
                                           {"commit": "unknown", "dirty": None})
        self.assertEqual(run_file["summary"]["n"], 3)
        self.assertIs(run_file["complete"], True)
        self.assertAlmostEqual(run_file["summary"]["acc_mean"], 0.9405)
        out = os.path.join(self.dir, "peers", "x.json")
        self.assertEqual(run_peer.publish(run_file, out), out)
        self.assertEqual(run_peer.publish(run_file, out), out[:-5] + "-2.json")
        self.assertEqual(sorted(os.listdir(os.path.dirname(out))), ["x-2.json", "x.json"])
        with open(out) as f:
            self.assertEqual(json.load(f)["schema"], "airbench.c/run-v1")
        if not os.access(BENCHSTAT, os.X_OK):
            self.skipTest("build/benchstat is not built")
        result = subprocess.run([BENCHSTAT, out], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("pytorch-airbench94_compiled, 3 runs", result.stdout)
        self.assertIn("published airbench94 time of 3.29 s", result.stdout)
        self.assertIn("(driver 580.159.04)", result.stdout)
        self.assertNotIn("incomplete", result.stdout)


class GpuDescriptionTest(unittest.TestCase):
    """gpu_description with a stand-in for the torch probe and for nvidia-smi."""

    def test_trainer_field_names(self):
        with tempfile.TemporaryDirectory() as tmp:
            probe = os.path.join(tmp, "python")
            smi = os.path.join(tmp, "nvidia-smi")
            with open(probe, "w") as f:
                f.write("#!/bin/sh\necho '%s'\n" % json.dumps({
                    "name": "NVIDIA H100 80GB HBM3", "torch": "2.9.0", "compute_capability": "9.0",
                    "cuda_runtime": "12.8", "cudnn": "9.10.2"}))
            with open(smi, "w") as f:
                f.write("#!/bin/sh\necho '580.159.04, 1980, 2619, 1980, 2619, 1755, 2619, 700.00, "
                        "Enabled, 34'\n")
            os.chmod(probe, 0o755)
            os.chmod(smi, 0o755)
            with mock.patch.dict(os.environ, {"PATH": tmp + os.pathsep + os.environ["PATH"]}):
                gpu, environment = run_peer.gpu_description(probe)
        self.assertEqual(gpu, {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                               "driver_version": "580.159.04", "cuda_runtime": "12.8",
                               "cudnn": "9.10.2"})
        self.assertEqual((environment["gpu_driver"], environment["torch"]), ("580.159.04", "2.9.0"))


class TorchDataTest(unittest.TestCase):
    def test_binary_files_to_pt(self):
        try:
            import torch
        except ImportError:
            self.skipTest("torch is not installed")
        with tempfile.TemporaryDirectory() as tmp:
            data, work = os.path.join(tmp, "bin"), os.path.join(tmp, "work")
            os.makedirs(data)
            for i, name in enumerate(run_peer.TRAIN_FILES + [run_peer.TEST_FILE]):
                records = bytearray()
                for label in (i, 9 - i):  # two records per file
                    pixels = bytes((label + c) % 256 for c in range(3) for _ in range(1024))
                    records += bytes([label]) + pixels
                with open(os.path.join(data, name), "wb") as f:
                    f.write(records)
            run_peer.make_torch_data(data, work)
            train = torch.load(os.path.join(work, "cifar10", "train.pt"))
            test = torch.load(os.path.join(work, "cifar10", "test.pt"))
            self.assertEqual(tuple(train["images"].shape), (10, 32, 32, 3))
            self.assertEqual(train["images"].dtype, torch.uint8)
            self.assertEqual(train["labels"].dtype, torch.int64)
            self.assertEqual(train["labels"].tolist(), [0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
            self.assertEqual(train["images"][1, 5, 7].tolist(), [9, 10, 11])  # CHW -> HWC
            self.assertEqual(test["labels"].tolist(), [5, 4])
            self.assertEqual(len(train["classes"]), 10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
