#!/usr/bin/python3
"""`alexnet train --distributed` across hosts: network namespaces joined by a switch
(tests/netns.py), one address and host name each, against one process on one host:

- 2 hosts x 1 rank, with no GLOO_SOCKET_IFNAME and each host name resolving to
  127.0.1.1 (the container case), end with the weights of 1 process with double the
  batch (within 1e-5, as tests/distributed_test.py on loopback);
- 2 hosts x 2 ranks (scripts/launch.sh --nnodes) likewise, with 4x the batch;
- torchrun --nnodes 2 (the one of the Python running this test) likewise;
- a rank killed on one host, or one host's cable pulled, ends the other host's rank
  in bounded time with an error that says how to resume; the restart with --resume
  ends with the uninterrupted run's weights;
- a rank that would advertise a loopback address fails every rank in seconds, naming
  the rank, its host and GLOO_SOCKET_IFNAME; an unreachable store says why (a name that
  does not resolve, a refused port, a timeout).

Needs root (for the namespaces; skipped with the reason otherwise), iproute2,
ALEXNET_BINARY built with Gloo, and Debian's dataset-fashion-mnist.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import torch

from fixture import main as fixture_main, once, RemovesWhatEachTestWrote, write_fashion_mnist_subset
import netns

BINARY = os.path.abspath(os.environ.get("ALEXNET_BINARY", "build/app/alexnet"))
SOURCE = os.environ.get("ALEXNET_SOURCE_DIR",
                        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-5           # as on loopback: the sums differ only in their order
STEPS = 6            # training steps of every run (one epoch)
TIMEOUT = 10         # --dist-timeout of the failure tests, seconds
FAIL_SECONDS = 60    # a surviving rank must have given up well within this
# The set-up errors that must not wait for --dist-timeout: they run with SETUP_TIMEOUT and must end
# within SETUP_BOUND, so that ending in time proves "not waiting for the timeout" (an event) while
# leaving a busy 2-core machine minutes of slack (a clock).
SETUP_TIMEOUT = 300  # --dist-timeout of those runs, seconds
SETUP_BOUND = 120    # they end well within this, or they waited for the timeout

WHY_NOT = netns.why_not()


def max_diff(a, b):
    sa, sb = torch.load(a, map_location="cpu"), torch.load(b, map_location="cpu")
    assert sa.keys() == sb.keys()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


def rank_env(rank, world, addr, port, local_rank=0, local_world=1, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GLOO_", "NCCL_", "TORCHELASTIC_", "MASTER_"))}
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
               LOCAL_WORLD_SIZE=str(local_world), MASTER_ADDR=addr, MASTER_PORT=str(port))
    env.update(extra)
    return env


def clean_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("GLOO_", "NCCL_", "TORCHELASTIC_", "MASTER_", "RANK",
                                 "WORLD_SIZE", "LOCAL_"))}


@unittest.skipIf(WHY_NOT is not None, f"skipped: {WHY_NOT}")
class MultiHost(RemovesWhatEachTestWrote, unittest.TestCase):
    port = 29400

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = write_fashion_mnist_subset(os.path.join(cls.tmp.name, "fmnist"), 256, 64)
        # Dropout off: masks are drawn per rank, so only without it is the function
        # the same on both sides. --threads 1: the ranks share this machine's 2 cores.
        # --precision fp32: the comparisons are within TOL of fp32 rounding; train's default,
        # auto, is bf16 on AMX CPUs (and AMD's with AVX512-BF16), whose rounding is a thousand times coarser.
        cls.common = ["--data", "fashion-mnist:" + d, "--dropout", "0", "--lr", "0.02", "--seed", "5",
                      "--workers", "1", "--threads", "1", "--print-freq", "1", "--deterministic",
                      "--precision", "fp32", "--epochs", "1", "--max-steps", str(STEPS)]
        r = subprocess.run([BINARY, "train", *cls.common, "--batch-size", "16",
                            "--output", cls.out("one-16")], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        cls.reference = cls.out("one-16/model.pth")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def out(cls, name):
        return os.path.join(cls.tmp.name, name)

    def next_port(self):
        MultiHost.port += 1
        return MultiHost.port

    def train_argv(self, name, batch, *extra, timeout=60):
        return [BINARY, "train", "--distributed", *self.common, "--batch-size", str(batch),
                "--dist-timeout", str(timeout), "--output", self.out(name), *extra]

    def start_ranks(self, net, name, batch, *extra, timeout=60, env_of=None, port=None):
        """One rank on each host; env_of(rank) adds variables."""
        port = port or self.next_port()
        procs = []
        for r in range(net.count):
            env = rank_env(r, net.count, net.addresses[0], port, **(env_of(r) if env_of else {}))
            procs.append(net.popen(r, self.train_argv(name, batch, *extra, timeout=timeout), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        return procs

    def finish(self, procs, limit=600):
        errs = []
        for p in procs:
            _, err = p.communicate(timeout=limit)
            errs.append(err)
        return errs

    def assert_all_ok(self, procs, errs):
        for r, (p, err) in enumerate(zip(procs, errs)):
            self.assertEqual(p.returncode, 0, f"rank {r}:\n{err[-3000:]}")

    def run_to_error(self, run, limit, why_late):
        """run(limit): a subprocess.run that must end with exit 1 within `limit` seconds; its
        stderr. Still running then: a failure, saying why_late."""
        try:
            r = run(limit)
        except subprocess.TimeoutExpired:
            self.fail(f"still running after {limit} s: {why_late}")
        self.assertEqual(r.returncode, 1, r.stderr)
        return r.stderr

    def test_two_hosts_without_variables_equal_one_process(self):
        # Each host name resolves to 127.0.1.1 on its own host: what Gloo's default
        # device would advertise. The route to MASTER_ADDR gives the right address.
        with netns.Hosts(2, hosts_file_loopback=True) as net:
            procs = self.start_ranks(net, "two-hosts", 8)
            errs = self.finish(procs)
        self.assert_all_ok(procs, errs)
        self.assertIn(f"binds {net.addresses[0]} (eth0), chosen by the route to MASTER_ADDR", errs[0])
        self.assertIn(f"1 host1 {net.addresses[1]} (eth0)", errs[0])
        self.assertLessEqual(max_diff(self.reference, self.out("two-hosts/model.pth")), TOL)

    def test_two_hosts_two_ranks_each_with_launch_script(self):
        port = self.next_port()
        with netns.Hosts(2) as net:
            procs = [net.popen(n, [os.path.join(SOURCE, "scripts", "launch.sh"), "--nnodes", "2",
                                   "--node-rank", str(n), "--master-addr", net.addresses[0],
                                   "--master-port", str(port), "2", *self.common, "--batch-size", "4",
                                   "--dist-timeout", "60", "--output", self.out("2x2")],
                               env=dict(clean_env(), ALEXNET=BINARY), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for n in range(2)]
            errs = self.finish(procs)
        self.assert_all_ok(procs, errs)
        self.assertIn("distributed: 4 processes", errs[0])
        self.assertIn(f"3 host1 {net.addresses[1]} (eth0)", errs[0])
        self.assertLessEqual(max_diff(self.reference, self.out("2x2/model.pth")), TOL)

    def test_torchrun_across_hosts(self):
        # docs/distributed.md's torchrun command, run as printed but for the addresses, with the
        # torchrun of the Python running this test: its store must speak the TCPStore
        # protocol of the binary's LibTorch (1.x and 2.x do not mix, and the binary says
        # so: test_torchrun_of_another_pytorch_is_refused). ctest runs this file with
        # Debian's Python (torchrun 1.13) for the debian flavour and with PyPI's (2.15)
        # for the pypi one, so both torchruns run the documented line.
        with open(os.path.join(SOURCE, "docs", "distributed.md")) as f:
            doc = f.read().replace("\\\n", " ")
        line = re.search(r"^torchrun (--nnodes 2 .*?) --no_python alexnet train --distributed ", doc, re.M)
        self.assertIsNotNone(line, "docs/distributed.md: no 'torchrun --nnodes 2 ... --no_python alexnet train' line")
        flags = line.group(1).split()
        value = lambda flag: flags[flags.index(flag) + 1]
        self.assertEqual(value("--node_rank"), "0")
        nproc = int(value("--nproc_per_node"))
        major = int(torch.__version__.split(".")[0])
        if not self.binary_matches(major):
            self.skipTest(f"skipped: this Python's torch {torch.__version__} is not the binary's LibTorch")
        extra = []
        if major < 2 and sys.version_info >= (3, 11):
            # torchrun 1.13 on Python 3.11 parses its own default "0" for these as None
            # and stops with AttributeError ('NoneType' object has no attribute 'get').
            extra = ["--redirects", "1", "--tee", "1", "--log_dir", self.out("torchrun-logs")]
        port = self.next_port()
        with netns.Hosts(2) as net:
            def node_flags(n):
                given = {"--node_rank": str(n), "--master_addr": net.addresses[0], "--master_port": str(port)}
                return [given.get(flags[i - 1], f) if i > 0 else f for i, f in enumerate(flags)]
            # 2 hosts x nproc ranks at 16 / (2 * nproc) images each: the reference's 16 per step.
            procs = [net.popen(n, [sys.executable, "-m", "torch.distributed.run", *node_flags(n), *extra,
                                   "--no_python", *self.train_argv("torchrun", 16 // (2 * nproc))],
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for n in range(2)]
            outs = [p.communicate(timeout=600)[0] for p in procs]
        for n, (p, out) in enumerate(zip(procs, outs)):
            self.assertEqual(p.returncode, 0, f"node {n}:\n{out[-3000:]}")
        self.assertLessEqual(max_diff(self.reference, self.out("torchrun/model.pth")), TOL)

    def binary_matches(self, major):
        r = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=60)
        return f"LibTorch {major}." in r.stdout + r.stderr

    def test_torchrun_of_another_pytorch_is_refused(self):
        # The agent's store of the other PyTorch generation is refused at once, naming
        # the cure, instead of "Broken pipe" or a wait until the timeout.
        env = rank_env(0, 1, "127.0.0.1", self.next_port(), TORCHELASTIC_USE_AGENT_STORE="True",
                       TORCHELASTIC_RESTART_COUNT="0")
        if self.binary_matches(1):
            env["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGTERM,SIGINT"  # what 2.x's torchrun sets
        else:
            env["NCCL_ASYNC_ERROR_HANDLING"] = "1"  # what 1.x's torchrun sets
        err = self.run_to_error(
            lambda limit: subprocess.run(self.train_argv("mixed", 8, timeout=SETUP_TIMEOUT), env=env,
                                         capture_output=True, text=True, timeout=limit),
            SETUP_BOUND, f"waited for --dist-timeout {SETUP_TIMEOUT}")
        self.assertIn("speaks another protocol", err)

    def interrupted_then_resumed(self, name, cut):
        """Trains on 2 hosts, calls cut(net, procs) after step 3, checks that both ranks
        end (non-zero) within FAIL_SECONDS with an error that says how to resume, then
        resumes and checks the weights against the uninterrupted run."""
        with netns.Hosts(2) as net:
            procs = self.start_ranks(net, name, 8, timeout=TIMEOUT)
            seen = ""
            while "epoch 1 step 3/" not in seen:
                line = procs[0].stderr.readline()
                if not line:
                    break
                seen += line
            self.assertIn("epoch 1 step 3/", seen, "training never started")
            start = time.time()
            cut(net, procs)
            ends = []
            for p in procs:
                try:
                    err = p.communicate(timeout=FAIL_SECONDS)[1]
                except subprocess.TimeoutExpired:
                    self.fail(f"a rank still ran {FAIL_SECONDS} s after the cut")
                ends.append((time.time() - start, p.returncode, err))
            print(f"\n{name}: rank 0 ended {ends[0][0]:.1f} s after the cut, rank 1 {ends[1][0]:.1f} s; "
                  f"rank 0 said: {ends[0][2].strip().splitlines()[-1]}", flush=True)
            self.assertNotEqual(ends[0][1], 0)
            err0 = ends[0][2]
            self.assertIn("error: distributed", err0)
            self.assertIn("rank 0 (host host0)", err0)
            self.assertIn("restart every rank with --resume " + self.out(name + "/checkpoint.pth"), err0)
            self.assertNotIn("terminate called", err0)
            self.assertNotIn("Segmentation", err0)
            ck = torch.load(self.out(name + "/checkpoint.pth"), map_location="cpu")
            self.assertEqual(ck["epoch"], -1, "the checkpoint must be mid-epoch 1")
            self.assertGreaterEqual(ck["epoch_step"], 3)
            net.link(1, True)
            procs = self.start_ranks(net, name, 8, "--resume", self.out(name + "/checkpoint.pth"))
            errs = self.finish(procs)
        self.assert_all_ok(procs, errs)
        self.assertLessEqual(max_diff(self.reference, self.out(name + "/model.pth")), TOL)

    def test_killed_rank_on_other_host(self):
        self.interrupted_then_resumed("killed", lambda net, procs: procs[1].send_signal(signal.SIGKILL))

    def test_cut_link(self):
        # No reset arrives: the other side learns only from --dist-timeout.
        self.interrupted_then_resumed("cut", lambda net, procs: net.link(1, False))

    @once
    def test_loopback_peer_fails_every_rank_fast(self):
        # Every rank ends (within SETUP_BOUND, far below --dist-timeout SETUP_TIMEOUT: none waits
        # for a peer that will never connect) with the same diagnosis.
        with netns.Hosts(2) as net:
            procs = self.start_ranks(net, "loop", 8, timeout=SETUP_TIMEOUT,
                                     env_of=lambda r: {"GLOO_SOCKET_IFNAME": "lo"} if r == 1 else {})
            try:
                errs = self.finish(procs, limit=SETUP_BOUND)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                    p.communicate()
                self.fail(f"a rank still ran after {SETUP_BOUND} s: it waited for --dist-timeout {SETUP_TIMEOUT}")
        for p, err in zip(procs, errs):
            self.assertEqual(p.returncode, 1, err)
            self.assertIn("rank 1 on host host1 advertises 127.0.0.1", err)
            self.assertIn("unset GLOO_SOCKET_IFNAME", err)

    @once
    def test_unreachable_store_says_why(self):
        with netns.Hosts(2) as net:
            def at_once(master):
                """Rank 1 of 2 alone, where waiting cannot help (no address, no route): with
                --dist-timeout SETUP_TIMEOUT, ending within SETUP_BOUND shows it did not wait."""
                return self.run_to_error(
                    lambda limit: net.run(1, self.train_argv("alone", 8, timeout=SETUP_TIMEOUT),
                                          env=rank_env(1, 2, master, self.next_port()),
                                          capture_output=True, text=True, timeout=limit),
                    SETUP_BOUND, f"MASTER_ADDR {master}: waited for --dist-timeout {SETUP_TIMEOUT}")

            def at_timeout(master, **extra):
                """The same where rank 0 might still be starting (nothing answers, or a refusal):
                it tries until --dist-timeout (3 s), then says why."""
                return self.run_to_error(
                    lambda limit: net.run(1, self.train_argv("alone", 8, timeout=3),
                                          env=rank_env(1, 2, master, self.next_port(), **extra),
                                          capture_output=True, text=True, timeout=limit),
                    FAIL_SECONDS, f"MASTER_ADDR {master} {extra}: --dist-timeout 3 did not end it")
            self.assertIn("MASTER_ADDR 'nosuch.invalid' does not resolve", at_once("nosuch.invalid"))
            err = at_once("10.255.255.1")  # outside the subnet, and no default route
            self.assertIn("no route", err)
            err = at_timeout(net.addresses[0])  # nobody serves the store on host0
            self.assertIn("rank 1 on host host1 cannot reach the store", err)
            self.assertIn("refused", err)
            hole = net.addresses[0].rsplit(".", 1)[0] + ".77"
            net.blackhole(1, hole)
            err = at_timeout(hole)  # every packet dropped: no answer, no error
            self.assertIn("timed out", err)
            # The store refuses (as above) until the timeout; then this host's own cause comes first.
            err = at_timeout(net.addresses[0], GLOO_SOCKET_IFNAME="eth9")
            self.assertIn("GLOO_SOCKET_IFNAME=eth9: there is no interface eth9", err)
            # A pulled cable: the kernel's address resolution fails ("No route to host")
            # or the attempt times out first, whichever comes first.
            net.link(1, False)
            err = at_timeout(net.addresses[0])
            self.assertRegex(err, "timed out|no route")


if __name__ == "__main__":
    fixture_main()
