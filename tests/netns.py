"""Test hosts made of Linux network namespaces (iproute2), for what crosses a network.

    with Hosts(2) as net:            # host0 10.R.S.1, host1 10.R.S.2 on one switch
        net.popen(0, [...], env=...)  # a process inside host0
        net.link(1, up=False)         # pull host1's cable

Each host is a namespace with its own loopback, an `eth0` on a bridge that lives in a
switch namespace, its own host name (a UTS namespace per process) and its own
/etc/hosts (iproute2 bind-mounts /etc/netns/NAME/ over /etc/). The subnet is drawn at
random from 10.0.0.0/8 and the names carry the process id, so parallel runs do not meet.
Everything is removed on exit, processes first. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
"""
import os
import random
import shutil
import subprocess

IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


def why_not():
    """None when namespaces can be made here, else the reason (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs tests as root)"
    if not os.path.exists(IP):
        return "iproute2's ip is not installed"
    if not os.path.exists(UNSHARE):
        return "util-linux's unshare is not installed"
    name = f"alxprobe{os.getpid()}"
    r = subprocess.run([IP, "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        return "cannot make a network namespace: " + r.stderr.strip()
    subprocess.run([IP, "netns", "del", name], capture_output=True)
    return None


def _run(*args, ns=None):
    cmd = ([IP, "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


class Hosts:
    def __init__(self, count, hosts_file_loopback=False):
        """hosts_file_loopback: each host name resolves to 127.0.1.1 on its own host,
        as in many containers and Debian installs, instead of to its own address."""
        self.count = count
        tag = f"{os.getpid() % 100000}{random.randrange(1000):03d}"
        self.switch = f"alxsw{tag}"
        self.names = [f"alxh{tag}n{i}" for i in range(count)]
        self.hostnames = [f"host{i}" for i in range(count)]
        a, b = random.randrange(64, 250), random.randrange(1, 250)
        self.addresses = [f"10.{a}.{b}.{i + 1}" for i in range(count)]
        self.loopback_names = hosts_file_loopback
        self.procs = []

    def __enter__(self):
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _make(self):
        _run(IP, "netns", "add", self.switch)
        _run(IP, "link", "add", "br0", "type", "bridge", ns=self.switch)
        _run(IP, "link", "set", "br0", "up", ns=self.switch)
        for i, ns in enumerate(self.names):
            _run(IP, "netns", "add", ns)
            _run(IP, "link", "set", "lo", "up", ns=ns)
            # The veth pair is made inside the host, then one end moves to the switch.
            _run(IP, "link", "add", "eth0", "type", "veth", "peer", "name", f"port{i}", ns=ns)
            _run(IP, "link", "set", f"port{i}", "netns", self.switch, ns=ns)
            _run(IP, "link", "set", f"port{i}", "master", "br0", ns=self.switch)
            _run(IP, "link", "set", f"port{i}", "up", ns=self.switch)
            _run(IP, "addr", "add", self.addresses[i] + "/24", "dev", "eth0", ns=ns)
            _run(IP, "link", "set", "eth0", "up", ns=ns)
            etc = os.path.join("/etc/netns", ns)
            os.makedirs(etc, exist_ok=True)
            with open(os.path.join(etc, "hosts"), "w") as f:
                f.write("127.0.0.1 localhost\n")
                for j, h in enumerate(self.hostnames):
                    if j == i:
                        f.write(f"{'127.0.1.1' if self.loopback_names else self.addresses[j]} {h}\n")
                    else:
                        f.write(f"{self.addresses[j]} {h}\n")

    def command(self, i, argv):
        """argv run inside host i, under its host name."""
        return [IP, "netns", "exec", self.names[i], UNSHARE, "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', self.hostnames[i], *argv]

    def popen(self, i, argv, **kw):
        p = subprocess.Popen(self.command(i, argv), **kw)
        self.procs.append(p)
        return p

    def run(self, i, argv, **kw):
        return subprocess.run(self.command(i, argv), **kw)

    def link(self, i, up):
        """Plugs (up) or pulls (down) host i's cable, on the switch side: the host's own
        interface stays up, so its routes stay and packets are simply lost."""
        _run(IP, "link", "set", f"port{i}", "up" if up else "down", ns=self.switch)

    def blackhole(self, i, address):
        """On host i, packets to `address` (in the subnet) go to a MAC address that no
        one has: they are lost without an answer, as behind a dropping firewall."""
        _run(IP, "neigh", "replace", address, "lladdr", "02:00:00:00:00:01", "dev", "eth0",
             "nud", "permanent", ns=self.names[i])

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        for ns in self.names + [self.switch]:
            # Killing what is left inside (a grandchild), then the namespace.
            r = subprocess.run([IP, "netns", "pids", ns], capture_output=True, text=True)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run([IP, "netns", "del", ns], capture_output=True)
            shutil.rmtree(os.path.join("/etc/netns", ns), ignore_errors=True)
