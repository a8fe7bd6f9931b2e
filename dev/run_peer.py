#!/usr/bin/env python3
"""run_peer.py: time a PyTorch airbench script on this machine, with our CIFAR-10 files, and
save its runs as an airbench.c run file (schema airbench.c/run-v1) that build/benchstat reads.

  python3 dev/run_peer.py SCRIPT.py [--data DIR] [--work DIR] [--runs N] [--out FILE]
                          [--target ACC] [--python EXE] [--env KEY=VALUE]... [--quiet]

SCRIPT.py is a script of the PyTorch airbench suite (github.com/KellerJordan/cifar10-airbench,
e.g. legacy/airbench94_compiled.py or airbench94_muon.py) or the 2025 94% record
(github.com/hiverge/cifar10-speedrun, cifar10_speedrun.py) that you downloaded yourself; its
code never goes into this repository. The script reads cifar10/train.pt and cifar10/test.pt
from its working directory, so this tool makes them in --work (default build/peers/<stem>)
from the binary files in --data (default data/cifar10), runs the script there, echoes and
logs its output (--work/output.log), and parses the table it prints:

  |  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
  |       0  |      0  |      0.0871  |     0.6670  |   0.6543  |               |              0.8610  |
  ...
  |          |   eval  |      0.0336  |     0.9658  |   0.9383  |       0.9412  |              3.3018  |

The row whose epoch is "eval" ends a run: its tta_val_acc is the run's accuracy and its
total_time_seconds (time_seconds in the Muon script) the run's GPU time. The "warmup" run is
skipped. --runs N stops the script once N timed runs are done (the scripts run 25 or 200).
Scripts without a warm-up run (legacy/airbench94.py, airbench95.py, airbench96.py) pay
one-time setup in their first timed run: --discard 1 drops it (a warning says so).

The run file goes to --out, default runs/peers/<UTC date>-<gpu>-pytorch-<stem>.json, and is
never overwritten. Its variant is "pytorch-<stem>"; seed is null (the scripts draw their own
randomness) and "run" holds the script's run index; each run's epochs list the script's
per-epoch rows, epoch counted from 1, time_s cumulative as the script prints it; wall_s is
the wall time since the previous run finished (absent for a first run with no warm-up).
Exit status: 0 fine, 1 the script failed or printed fewer than 2 runs, 2 bad usage or data.
"""
import argparse
import collections
import datetime
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = "airbench.c/run-v1"
TRAIN_FILES = ["data_batch_%d.bin" % i for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
RECORD_BYTES = 3073  # a label byte, then 3 x 32 x 32 pixel bytes (CHW)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
TIME_COLUMNS = ("total_time_seconds", "time_seconds")


class PeerOutputParser:
    """Reads the airbench table line by line; feed() returns each finished timed run."""

    def __init__(self):
        self.columns = None  # the header's names, once seen
        self.run_label = None  # the last non-empty "run" cell: "warmup", "0", "1", ...
        self.epochs = []
        self.last_finish = None  # time.monotonic() when the previous run (warm-up too) ended
        self.saw_warmup = False

    def _cells(self, line):
        """The cells of a table row. The record script (cifar10_speedrun.py) prints its
        running mean without a newline, so a row may follow other text on its line: once
        the header is known, a row is the line's last len(columns) cells."""
        line = line.strip()
        if len(line) < 2 or line[-1] != "|" or "|" not in line[:-1]:
            return None
        cells = [cell.strip() for cell in line[:-1].split("|")]
        if line[0] == "|":
            return cells[1:]
        if self.columns is not None and len(cells) > len(self.columns):
            return cells[-len(self.columns):]
        return None

    def _is_header(self, cells):
        return "tta_val_acc" in cells and any(c in cells for c in TIME_COLUMNS)

    def feed(self, line, now=None):
        cells = self._cells(line)
        if cells is None:
            return None
        if self._is_header(cells):
            self.columns = cells
            return None
        if self.columns is None or len(cells) != len(self.columns):
            return None
        row = dict(zip(self.columns, cells))
        if row.get("run"):
            self.run_label = row["run"]
        epoch = row.get("epoch", "")
        if epoch == "eval":
            return self._finish_run(row, time.monotonic() if now is None else now)
        if epoch.isdigit():
            self.epochs.append(self._epoch_entry(int(epoch), row))
        return None

    def _time(self, row):
        return next(float(row[c]) for c in TIME_COLUMNS if row.get(c))

    def _epoch_entry(self, epoch, row):
        entry = {"epoch": epoch + 1}  # the scripts count epochs from 0
        for ours, theirs in (("train_loss", "train_loss"), ("train_acc", "train_acc"),
                             ("test_acc", "val_acc")):
            if row.get(theirs):
                entry[ours] = float(row[theirs])
        entry["time_s"] = self._time(row)
        return entry

    def _finish_run(self, row, now):
        label, epochs, previous = self.run_label, self.epochs, self.last_finish
        self.epochs, self.last_finish = [], now
        if label is None or not label.isdigit():  # the warm-up run, or a run with no number
            self.saw_warmup = self.saw_warmup or label == "warmup"
            return None
        run = {"seed": None, "run": int(label), "accuracy": float(row["tta_val_acc"]),
               "time_s": self._time(row)}
        if previous is not None:
            run["wall_s"] = round(now - previous, 3)
        run["epochs"] = epochs
        return run


def parse_peer_output(lines):
    """All timed runs in a captured output (wall_s is meaningless here, so dropped)."""
    parser, runs = PeerOutputParser(), []
    for line in lines:
        run = parser.feed(line, now=0.0)
        if run:
            run.pop("wall_s", None)
            runs.append(run)
    return runs


def target_accuracy(stem):
    """0.94 / 0.95 / 0.96 from a script name such as airbench94_compiled (the 94% record,
    cifar10_speedrun, too); None if unknown."""
    if "speedrun" in stem:
        return 0.94
    match = re.search(r"airbench(9[456])", stem)
    return int(match.group(1)) / 100 if match else None


def summarize(runs):
    accuracies = [r["accuracy"] for r in runs]
    times = [r["time_s"] for r in runs]
    return {"n": len(runs), "n_diverged": 0, "acc_mean": statistics.mean(accuracies),
            "acc_std": statistics.stdev(accuracies), "time_mean": statistics.mean(times),
            "time_min": min(times), "time_max": max(times)}


def build_run_file(variant, target, gpu, command, environment, config, runs, git):
    """The run file, written once when the script is done: so it is always complete (a
    script that fails leaves no file)."""
    return {"schema": SCHEMA, "variant": variant, "target_accuracy": target,
            "git_commit": git["commit"], "git_dirty": git["dirty"], "gpu": gpu,
            "command": command, "environment": environment, "config": config,
            "complete": True, "runs": runs, "summary": summarize(runs)}


def read_split(data_dir, names):
    """Images (N x 32 x 32 x 3 uint8, NHWC) and labels (int64) of the named binary files."""
    import torch
    records = []
    for name in names:
        with open(os.path.join(data_dir, name), "rb") as f:
            raw = f.read()
        if len(raw) % RECORD_BYTES:
            raise ValueError("%s: %d bytes is not a whole number of %d-byte records"
                             % (name, len(raw), RECORD_BYTES))
        records.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8)
                       .view(-1, RECORD_BYTES))
    table = torch.cat(records)
    labels = table[:, 0].to(torch.int64)
    images = table[:, 1:].reshape(-1, 3, 32, 32).permute(0, 2, 3, 1).contiguous()
    return images, labels


def class_names(data_dir):
    path = os.path.join(data_dir, "batches.meta.txt")
    if os.path.exists(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == 10:
            return names
    return CIFAR10_CLASSES


def make_torch_data(data_dir, work_dir):
    """Writes work_dir/cifar10/{train,test}.pt unless they are newer than the binary files."""
    import torch
    out_dir = os.path.join(work_dir, "cifar10")
    os.makedirs(out_dir, exist_ok=True)
    classes = class_names(data_dir)
    for out_name, sources in (("train.pt", TRAIN_FILES), ("test.pt", [TEST_FILE])):
        out_path = os.path.join(out_dir, out_name)
        newest_source = max(os.path.getmtime(os.path.join(data_dir, s)) for s in sources)
        if os.path.exists(out_path) and os.path.getmtime(out_path) >= newest_source:
            continue
        images, labels = read_split(data_dir, sources)
        torch.save({"images": images, "labels": labels, "classes": classes}, out_path + ".tmp")
        os.replace(out_path + ".tmp", out_path)
        print("run_peer: wrote %s (%d images)" % (out_path, len(labels)), flush=True)


def command_output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


TORCH_PROBE = """import json, torch
v = torch.backends.cudnn.version() or 0
print(json.dumps({"name": torch.cuda.get_device_name(0), "torch": torch.__version__,
    "compute_capability": "%d.%d" % torch.cuda.get_device_capability(0),
    "cuda_runtime": torch.version.cuda,
    "cudnn": "%d.%d.%d" % ((v // 10000, v % 10000 // 100, v % 100) if v >= 10000
                           else (v // 1000, v % 1000 // 100, v % 100))}))"""

NVIDIA_SMI_FIELDS = [("driver_version", "gpu_driver"), ("clocks.sm", "gpu_sm_clock_mhz"),
                     ("clocks.mem", "gpu_mem_clock_mhz"), ("clocks.max.sm", "gpu_max_sm_clock_mhz"),
                     ("clocks.max.mem", "gpu_max_mem_clock_mhz"),
                     ("clocks.applications.graphics", "gpu_app_sm_clock_mhz"),
                     ("clocks.applications.memory", "gpu_app_mem_clock_mhz"),
                     ("power.limit", "gpu_power_limit_w"), ("persistence_mode", "gpu_persistence_mode"),
                     ("temperature.gpu", "gpu_temperature_c")]


def gpu_description(python):
    """(gpu object of the run file, environment entries) from torch (in a child process, so
    this one holds no CUDA context) and nvidia-smi."""
    probe = command_output([python, "-c", TORCH_PROBE])
    torch_info = json.loads(probe) if probe else {}
    gpu_index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0] or "0"
    smi = command_output(["nvidia-smi", "-i", gpu_index, "--format=csv,noheader,nounits",
                          "--query-gpu=" + ",".join(f for f, _ in NVIDIA_SMI_FIELDS)])
    values = [v.strip() for v in smi.splitlines()[0].split(",")] if smi else []
    environment = {key: value for (_, key), value in zip(NVIDIA_SMI_FIELDS, values)}
    # The trainer's field names: driver_version is the NVIDIA driver (older peer files said
    # "driver"; benchstat reads both).
    gpu = {"name": torch_info.get("name", "unknown"),
           "compute_capability": torch_info.get("compute_capability", "unknown"),
           "driver_version": environment.get("gpu_driver", "unknown"),
           "cuda_runtime": torch_info.get("cuda_runtime") or "unknown",
           "cudnn": torch_info.get("cudnn", "unknown")}
    environment["torch"] = torch_info.get("torch", "unknown")
    return gpu, environment


def git_state():
    commit = command_output(["git", "-C", REPO, "rev-parse", "HEAD"]) or "unknown"
    status = command_output(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def gpu_slug(name):
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA GeForce RTX 4090' -> 'rtx4090'."""
    words = re.sub(r"nvidia|geforce|tesla", "", name.lower()).replace("-", " ").split()
    if not words:
        return "gpu"
    slug = words[0] + (words[1] if words[0] in ("rtx", "gtx", "titan", "quadro")
                       and len(words) > 1 else "")
    return re.sub(r"[^a-z0-9]", "", slug) or "gpu"


def stop(process):
    """Ends the script and its helpers (torch.compile's workers): its own process group."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


ScriptResult = collections.namedtuple("ScriptResult", "runs status stopped saw_warmup")


def run_script(argv, work_dir, max_runs, log_path, echo, discard=0):
    """Runs argv in work_dir, echoing and logging its output. Drops the first `discard`
    timed runs and stops the script once it has finished max_runs more (None: no limit)."""
    parser, runs, discarded = PeerOutputParser(), [], 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log, subprocess.Popen(
            argv, cwd=work_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True) as process:
        try:
            for line in process.stdout:
                log.write(line)
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                run = parser.feed(line)
                if run and discarded < discard:
                    discarded += 1
                elif run:
                    runs.append(run)
                    if max_runs and len(runs) >= max_runs:
                        stop(process)
                        return ScriptResult(runs, process.returncode, True, parser.saw_warmup)
        except KeyboardInterrupt:
            stop(process)
            raise
        return ScriptResult(runs, process.wait(), False, parser.saw_warmup)


def publish(run_file, out_path):
    """Writes the JSON to out_path, or to out_path with -2, -3, ... when taken (default
    names only): written to a temporary file first, then hard-linked into place, which
    publishes it whole and never replaces an existing file."""
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = out_path + ".%d.tmp" % os.getpid()
    with open(tmp, "w") as f:
        json.dump(run_file, f, indent=1)
        f.write("\n")
    try:
        base, suffix, candidate = out_path[:-len(".json")], 1, out_path
        while True:
            try:
                os.link(tmp, candidate)
                return candidate
            except FileExistsError:
                suffix += 1
                candidate = "%s-%d.json" % (base, suffix)
    finally:
        os.unlink(tmp)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the top of dev/run_peer.py for details.")
    p.add_argument("script", help="the PyTorch airbench script to run")
    p.add_argument("--data", default=os.path.join(REPO, "data", "cifar10"),
                   help="CIFAR-10 binary files (default data/cifar10)")
    p.add_argument("--work", help="working directory (default build/peers/<script stem>)")
    p.add_argument("--runs", type=int, help="stop after this many timed runs")
    p.add_argument("--discard", type=int, default=0, metavar="N",
                   help="drop the first N timed runs (for scripts with no warm-up run, such "
                   "as legacy/airbench94.py, whose first run includes one-time setup)")
    p.add_argument("--out", help="run file to write (default runs/peers/<date>-<gpu>-pytorch-<stem>.json)")
    p.add_argument("--target", type=float, help="target accuracy (default from the name)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the script")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment entry for the run file (repeatable)")
    p.add_argument("--quiet", action="store_true", help="do not echo the script's output")
    args = p.parse_args(argv)
    if not os.path.isfile(args.script):
        p.error("script not found: %s (download it yourself, e.g. from "
                "github.com/KellerJordan/cifar10-airbench)" % args.script)
    missing = [f for f in TRAIN_FILES + [TEST_FILE]
               if not os.path.isfile(os.path.join(args.data, f))]
    if missing:
        p.error("CIFAR-10 files missing in %s: %s (run data/get_cifar10.sh %s, or pass --data)"
                % (args.data, ", ".join(missing), args.data))
    if args.runs is not None and args.runs < 2:
        p.error("--runs must be at least 2 (benchstat needs two runs for a standard deviation)")
    if args.discard < 0:
        p.error("--discard must be >= 0")
    if any("=" not in entry for entry in args.env):
        p.error("--env takes KEY=VALUE")
    return args


def main(argv):
    args = parse_args(argv)
    script = os.path.abspath(args.script)
    stem = os.path.splitext(os.path.basename(script))[0]
    target = args.target if args.target is not None else target_accuracy(stem)
    if target is None:
        sys.exit("run_peer: cannot tell the target accuracy of %s; pass --target" % stem)
    work_dir = os.path.abspath(args.work or os.path.join(REPO, "build", "peers", stem))
    make_torch_data(args.data, work_dir)
    gpu, environment = gpu_description(args.python)
    with open(script, "rb") as f:
        environment["script_sha256"] = hashlib.sha256(f.read()).hexdigest()
    environment.update(hostname=socket.gethostname(), work_dir=work_dir,
                       started_utc=datetime.datetime.now(datetime.timezone.utc).isoformat())
    environment.update(entry.split("=", 1) for entry in args.env)
    child = [args.python, script]
    environment["peer_command"] = shlex.join(child)
    log_path = os.path.join(work_dir, "output.log")

    result = run_script(child, work_dir, args.runs, log_path, not args.quiet, args.discard)
    runs = result.runs
    if result.status != 0 and not result.stopped:
        sys.exit("run_peer: %s exited with %d after %d timed runs; its output is in %s"
                 % (os.path.basename(script), result.status, len(runs), log_path))
    if not result.saw_warmup and args.discard == 0:
        print("run_peer: warning: the script printed no warm-up run, so its first timed run "
              "includes one-time setup (cuDNN autotuning, allocations); consider --discard 1",
              file=sys.stderr)
    if len(runs) < 2:
        sys.exit("run_peer: found %d timed runs in the output (%s); need at least 2. Does the "
                 "script print the airbench table (a header with tta_val_acc and "
                 "total_time_seconds or time_seconds)?" % (len(runs), log_path))

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_path = os.path.abspath(args.out or os.path.join(
        REPO, "runs", "peers", "%s-%s-pytorch-%s.json" % (stamp, gpu_slug(gpu["name"]), stem)))
    if args.out and os.path.exists(out_path):
        sys.exit("run_peer: %s exists; it is never overwritten" % out_path)
    config = {"script": os.path.basename(script), "runs_requested": args.runs,
              "discarded_runs": args.discard, "seed": None}
    run_file = build_run_file("pytorch-" + stem, target, gpu,
                              shlex.join([sys.executable] + sys.argv), environment, config,
                              runs, git_state())
    saved = publish(run_file, out_path)
    print("run_peer: %d runs, mean accuracy %.4f, mean time %.4f s; saved %s"
          % (len(runs), run_file["summary"]["acc_mean"], run_file["summary"]["time_mean"], saved))
    if saved != out_path and args.out:
        print("run_peer: note: %s appeared meanwhile, so the file is %s" % (out_path, saved))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
