#!/usr/bin/python3
"""Load test for `alexnet serve`, alone or against the FastAPI baseline
(scripts/serve_fastapi.py): throughput, latency, correctness, bad requests, memory
over time and draining on SIGTERM. Standard library only; traffic goes to 127.0.0.1
only, and every run is capped in requests and in seconds.

Targets: --alexnet BINARY starts `BINARY serve --weights W --host 127.0.0.1 --port <free>`,
--fastapi starts the baseline with the same weights (--fastapi-arg=--runtime=openvino: on
OpenVINO), --port P uses a server already
running (it cannot be sampled or stopped). Started servers are ready when GET /ping
answers 200; at the end they get SIGTERM and must exit 0.

Modes (what runs on every target; --soak, --sigterm-under-load and --hostile-mix replace the levels):
  levels (default)     each --clients level for --seconds; with two targets the levels
                       alternate (A then B, then B then A at the next level or repeat) so
                       that noise on the shared machine hits both alike, and the table
                       gives medians over --repeats and the median per-repeat ratio
                       ours/baseline.
  --soak S             --clients' largest level for S seconds, the server's RSS sampled
                       every 5 s: it must stay within 10% of its value after the first minute.
  --sigterm-under-load --clients' largest level, SIGTERM after --sigterm-after seconds:
                       the server must exit 0, requests sent before the signal must get a
                       correct 200, later ones a correct 200, a 503 or a refused connection;
                       a request fully sent and then dropped without an answer fails.
  --hostile-mix        --clients' largest level for --seconds three times: alone; beside
                       --slow-connections connections trickling a header line a second from
                       other loopback addresses (127.0.0.2 on, --slow-per-address each,
                       replaced when the server ends them) and 16 MB header floods from
                       127.0.0.250; beside --reload-burst concurrent POST /reload on the
                       management port. Reports p50/p99 and the server's peak RSS per phase;
                       checks p99 within 2x of alone, no failed request, peak RSS within 1.25x
                       and every flood answered 431.
--bad-mix (levels and soak) makes every tenth request a bad one, in turn an undecodable
body, a body over --max-body-mb and a stalled client (headers and half the body, then
nothing: the server should drop it after its read timeout); bad requests must get a 4xx
or a closed connection, and the server must still answer /ping at the end.

Clients are threads, each with one keep-alive http.client connection (reopened when the
server closes it), sending the --images as raw bodies round robin. Every 200 must be
JSON with a non-empty "top" of {"index", "label", "probability"} sorted by probability;
with --expect (JSON Lines of `alexnet predict --json`, matched by file name) its top-1
index must be the expected one. Latency runs from the request's start (connecting, on
a new connection) to its last byte read; req/s counts correct answers only. A run stops
sending after its seconds or its --max-requests; requests in flight then finish (each
within --timeout).

Exit status: 0 when every check passed, 1 otherwise, 2 for usage errors.

Usage: /usr/bin/python3 scripts/load_test.py [--alexnet BINARY | --port P] [--fastapi]
         [--weights W] --images DIR_OR_FILE... [--clients 1,8,64] [--seconds 20]
         [--max-requests 20000] [--repeats 1] [--threads N] [--topk K] [--expect FILE.jsonl]
         [--bad-mix] [--max-body-mb 20] [--soak SECONDS] [--sigterm-under-load]
         [--alexnet-arg=--max-batch=32 ...] [--fastapi-arg=--runtime=openvino ...] [--json OUT]
"""
import argparse
import collections
import concurrent.futures
import http.client
import itertools
import json
import mimetypes
import os
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"  # the only host this tool sends to
PREDICT_PATH = "/predictions/alexnet"
HERE = os.path.dirname(os.path.abspath(__file__))
FASTAPI_SCRIPT = os.path.join(HERE, "serve_fastapi.py")
FASTAPI_PYTHON = os.path.expanduser("~/.cache/alexnet/venv-pypi/bin/python")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_SECONDS = 3600  # hard cap on any one run (--seconds, --soak)
MAX_REQUESTS = 1_000_000
LEVEL_MAX_REQUESTS = 20_000
BAD_EVERY = 10  # with --bad-mix, request n is bad when n % BAD_EVERY == BAD_EVERY - 1
BAD_KINDS = ("undecodable", "oversized", "stalled")
RSS_INTERVAL_S = 5
RSS_TOLERANCE = 0.10


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- statistics

def percentile(sorted_values, p):
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not sorted_values:
        return None
    x = (len(sorted_values) - 1) * p / 100
    lo = int(x)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (x - lo)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


# ---------------------------------------------------------------- answers

def check_answer(body, want_index=None, topk=None):
    """(problem or None, top-1 index) for the body of a 200 to one image."""
    try:
        obj = json.loads(body)
    except ValueError:
        return "invalid JSON", None
    return check_object(obj, want_index, topk)


def check_object(obj, want_index=None, topk=None):
    if not isinstance(obj, dict) or not isinstance(obj.get("top"), list) or not obj["top"]:
        return "no non-empty 'top' list", None
    last = float("inf")
    for e in obj["top"]:
        if not (isinstance(e, dict) and type(e.get("index")) is int and isinstance(e.get("label"), str)
                and type(e.get("probability")) in (int, float) and 0 <= e["probability"] <= 1):
            return "a 'top' entry without index/label/probability", None
        if e["probability"] > last + 1e-6:
            return "'top' not sorted by probability", None
        last = e["probability"]
    if topk and len(obj["top"]) > topk:
        return f"{len(obj['top'])} classes for topk={topk}", None
    top1 = obj["top"][0]["index"]
    if want_index is not None and top1 != want_index:
        return "wrong top-1", top1
    return None, top1


def read_expect(path):
    """{file name: top-1 index} from JSON Lines of `alexnet predict --json`."""
    want = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                want[os.path.basename(obj["image"])] = int(obj["top"][0]["index"])
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise UsageError(f"--expect {path}:{n}: not an `alexnet predict --json` line ({e})")
    return want


def read_images(specs):
    """[(file name, bytes, content type)] from files and folders (recursively), read once."""
    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            for root, _, files in sorted(os.walk(spec)):
                paths += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(spec):
            paths.append(spec)
        else:
            raise UsageError(f"--images {spec}: no such file or folder")
    if not paths:
        raise UsageError(f"--images {' '.join(specs)}: no image files")
    images = []
    for p in paths[:10000]:
        with open(p, "rb") as f:
            images.append((os.path.basename(p), f.read(), mimetypes.guess_type(p)[0] or "application/octet-stream"))
    return images


def multipart(parts):
    """(body, content type) of multipart/form-data with one file part per (name, bytes, type).
    The field names run backwards (image-2, image-1) so that a server which answers
    in field-name order rather than part order is caught."""
    boundary = "alexnet-load-test-" + "".join(random.choices("0123456789abcdef", k=16))
    body = b""
    for i, (name, data, ctype) in enumerate(parts):
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image-{len(parts) - i}\"; "
                 f"filename=\"{name}\"\r\n"
                 f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------- HTTP

Outcome = collections.namedtuple("Outcome", "status body latency error reused headers")


class Client:
    """One keep-alive connection; reopened when the server has closed it."""

    def __init__(self, port, timeout):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        sock = self.conn.sock
        # Readable while idle means the server closed it (or sent something unasked): a
        # request sent now would race that close, so start a new connection instead.
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self.conn.close()
        reused = self.conn.sock is not None
        start = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
        except ConnectionRefusedError:
            return self._fail("refused", reused, start)
        except TimeoutError:
            return self._fail("timeout", reused, start)
        except OSError:
            return self._fail("reset while sending", reused, start)
        try:
            resp = self.conn.getresponse()
            data = resp.read()
        except TimeoutError:
            return self._fail("timeout", reused, start)
        except (OSError, http.client.RemoteDisconnected):
            # Every byte was sent and the connection ended without a response.
            return self._fail("unanswered", reused, start)
        except http.client.HTTPException as e:
            return self._fail(f"bad response ({type(e).__name__})", reused, start)
        return Outcome(resp.status, data, time.perf_counter() - start, None, reused, resp.headers)

    def _fail(self, error, reused, start):
        """latency: how long until the failure."""
        self.conn.close()
        return Outcome(None, b"", time.perf_counter() - start, error, reused, None)

    def close(self):
        self.conn.close()


def get(port, path, timeout=5):
    """One request on a fresh connection."""
    c = Client(port, timeout)
    try:
        return c.request("GET", path, headers={"Connection": "close"})
    finally:
        c.close()


def raw_request_head(port, length, ctype="application/octet-stream"):
    return (f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def read_status(sock, deadline):
    """('status', code) | ('closed' | 'reset' | 'timeout' | 'garbage', None): how the
    server answered on a raw socket, by deadline (time.monotonic())."""
    buf = b""
    while b"\r\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return "timeout", None
        except OSError:
            return "reset", None
        if not chunk:
            return "closed", None
        buf += chunk
    words = buf.split(b"\r\n", 1)[0].split()
    if len(words) >= 2 and words[0].startswith(b"HTTP/") and words[1].isdigit():
        return "status", int(words[1])
    return "garbage", None


def bad_verdict(how, status):
    """A bad request passes with a 4xx, or with the connection closed without an answer."""
    if how == "status":
        return "4xx" if 400 <= status < 500 else f"http {status}"
    return "dropped" if how in ("closed", "reset") else how


def send_oversized(port, max_body, timeout):
    """Content-Length just over the limit, then the body (zeros) until the server answers
    or closes: it may send 413 without reading the body and close."""
    size = max_body + 1024
    start = time.perf_counter()
    try:
        sock = socket.create_connection((HOST, port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused", None
    except OSError:
        return "connect failed", None
    chunk = memoryview(bytes(64 * 1024))
    try:
        sock.settimeout(min(timeout, 10))  # a server that answered and stopped reading blocks sendall
        sock.sendall(raw_request_head(port, size))
        sent = 0
        while sent < size and not select.select([sock], [], [], 0)[0]:
            n = min(len(chunk), size - sent)
            sock.sendall(chunk[:n])
            sent += n
    except OSError:
        pass  # reset or broken pipe: the server refused the rest; what it said is read below
    how, status = read_status(sock, time.monotonic() + timeout)
    sock.close()
    return bad_verdict(how, status), time.perf_counter() - start


def stall(port, image, limit_s):
    """A client that sends the headers and half the body, then nothing. Returns how the
    server ended it ('closed', 'reset', 'status' with its code) and after how long, or
    'timeout' when it still held the connection after limit_s."""
    try:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.sendall(raw_request_head(port, len(image)) + image[:len(image) // 2])
    except OSError as e:
        return {"how": f"could not send ({e})", "status": None, "after_s": None}
    start = time.monotonic()
    how, status = read_status(sock, start + limit_s)
    sock.close()
    return {"how": how, "status": status, "after_s": round(time.monotonic() - start, 3)}


# ---------------------------------------------------------------- hostile mix

def loopback_address(i):
    """The i-th loopback address after 127.0.0.1 (127.0.0.2, ...): other "hosts" on this machine."""
    i += 2
    return f"127.0.{i // 254}.{i % 254 + 1}" if i >= 254 else f"127.0.0.{i}"


class SlowSwarm:
    """count connections from loopback addresses other than 127.0.0.1 (per_address on each), each
    sending a request line and then one short header line per second, never finishing. One
    connection the server ends (408, a refusal, a reset) is replaced by a new one, so the count
    holds for the whole run. One thread, non-blocking sockets."""

    def __init__(self, port, count, per_address):
        self.port, self.count, self.per_address = port, count, per_address
        self.outcomes = collections.Counter()  # how the server ended connections
        self.opened = 0
        self.thread = None

    def _open(self, slot):
        sock = socket.socket()
        try:
            sock.bind((loopback_address(slot // self.per_address), 0))
            sock.settimeout(5)
            sock.connect((HOST, self.port))
            sock.setblocking(False)
            sock.send(f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: {HOST}\r\n".encode())
            self.opened += 1
            return sock
        except OSError as e:
            self.outcomes[f"connect failed ({type(e).__name__})"] += 1
            sock.close()
            return None

    def _ended(self, sock):
        try:
            head = sock.recv(64)
        except BlockingIOError:
            return False
        except OSError:
            self.outcomes["reset"] += 1
            return True
        words = head.split(b"\r\n", 1)[0].split()
        self.outcomes[f"http {words[1].decode()}" if len(words) >= 2 and words[1].isdigit() else "closed"] += 1
        return True

    def run(self, stop):
        socks = [self._open(i) for i in range(self.count)]
        log(f"slow swarm: {sum(s is not None for s in socks)} of {self.count} connections open, "
            f"{self.per_address} per address from {loopback_address(0)} on")
        line = 0
        while not stop.wait(1.0):
            line += 1
            for i, sock in enumerate(socks):
                if sock is not None and select.select([sock], [], [], 0)[0] and self._ended(sock):
                    sock.close()
                    sock = None
                if sock is None:
                    sock = socks[i] = self._open(i)
                    continue
                try:
                    sock.send(f"X-Slow-{line}: y\r\n".encode())
                except BlockingIOError:
                    pass
                except OSError:
                    self.outcomes["reset"] += 1
                    sock.close()
                    socks[i] = None
        for sock in socks:
            if sock is not None:
                sock.close()

    def start(self, stop):
        self.thread = threading.Thread(target=self.run, args=(stop,), daemon=True)
        self.thread.start()


def header_floods(port, stop, results, megabytes=16):
    """Until stop: a connection from 127.0.0.250 sends a request line and then `megabytes` MB of
    short header lines, until the server answers; results counts the answers' statuses."""
    line = b"X-Flood: 1\r\n"
    chunk = line * (65536 // len(line))
    while not stop.is_set():
        try:
            sock = socket.socket()
            sock.bind(("127.0.0.250", 0))
            sock.settimeout(10)
            sock.connect((HOST, port))
            sock.sendall(b"GET /ping HTTP/1.1\r\n")
            sent = 0
            try:
                while sent < megabytes << 20 and not select.select([sock], [], [], 0)[0]:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            how, status = read_status(sock, time.monotonic() + 10)
            results[f"http {status}" if how == "status" else how] += 1
            sock.close()
        except OSError as e:
            results[f"connect failed ({type(e).__name__})"] += 1
        stop.wait(0.5)


class PeakRss:
    """The server's largest VmRSS over a phase, sampled every 0.2 s."""

    def __init__(self, target):
        self.target, self.peak, self.stop = target, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            self.peak = max(self.peak, self.target.rss_kb() or 0)
            if self.stop.wait(0.2):
                return

    def done(self):
        self.stop.set()
        self.thread.join()
        return self.peak


def reload_burst(target, count, answers):
    """count POST /reload at once on the management port; answers gets their statuses."""
    def one(_):
        c = Client(target.management_port, 120)
        try:
            out = c.request("POST", "/reload", b"", {"Connection": "close"})
            return out.status or out.error
        finally:
            c.close()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        answers.extend(pool.map(one, range(count)))


def run_hostile(target, cfg, checks, results):
    """Three phases of --seconds, the same real clients in each (--clients' largest level): alone,
    beside --slow-connections slow connections and header floods, and beside a burst of
    --reload-burst reloads. p50/p99 and the server's peak RSS per phase, and the checks of the
    targets: p99 within 2x of alone and no failed request in both, RSS within 1.25x of alone."""
    clients = max(cfg.clients)
    phases = {}
    for phase in ("alone", "hostile", "reloads"):
        stop, extra_threads = threading.Event(), []
        swarm, floods, reloads = None, collections.Counter(), []
        if phase == "hostile":
            swarm = SlowSwarm(target.port, cfg.slow_connections, cfg.slow_per_address)
            swarm.start(stop)
            flood = threading.Thread(target=header_floods, args=(target.port, stop, floods), daemon=True)
            flood.start()
            extra_threads += [swarm.thread, flood]
            time.sleep(3)  # the swarm is open before the clients start
        if phase == "reloads" and target.management_port:
            burst = threading.Thread(target=lambda: (stop.wait(cfg.seconds / 4), reload_burst(target, cfg.reload_burst,
                                                                                               reloads)), daemon=True)
            burst.start()
            extra_threads.append(burst)
        rss = PeakRss(target)
        records, elapsed, extra = run_load(target, clients, cfg.seconds, cfg.max_requests or LEVEL_MAX_REQUESTS, cfg,
                                           f"{target.name} {phase} {clients} clients")
        peak = rss.done()
        if phase == "reloads":
            for th in extra_threads:
                th.join(300)
        stop.set()
        for th in extra_threads:
            th.join(60)
        s = summarize(target, clients, 0, records, elapsed, extra)
        s["peak_rss_mb"] = round(peak / 1024, 1)
        if swarm:
            s["slow_connections"] = {"count": cfg.slow_connections, "opened": swarm.opened,
                                     "ended": dict(swarm.outcomes)}
            s["header_floods"] = dict(floods)
        if phase == "reloads":
            s["reload_answers"] = reloads
        phases[phase] = s
        log(describe_level(s) + f", peak RSS {s['peak_rss_mb']} MB")
    alone = phases["alone"]
    for phase in ("hostile", "reloads"):
        s = phases[phase]
        ratio = s["p99_ms"] / alone["p99_ms"] if s["p99_ms"] and alone["p99_ms"] else None
        checks.add(f"{target.name}: {phase}: real clients' p99 within 2x of alone", ratio is not None and ratio <= 2,
                   f"p99 {fmt(s['p99_ms'])} ms against {fmt(alone['p99_ms'])} ms ({fmt(ratio, 2)}x)")
        checks.add(f"{target.name}: {phase}: no real request failed", s["errors"] == 0 and s["ok"] > 0,
                   f"{s['ok']} ok, errors {s['error_kinds']}")
    hostile = phases["hostile"]
    checks.add(f"{target.name}: hostile: peak RSS within 1.25x of alone",
               hostile["peak_rss_mb"] <= 1.25 * alone["peak_rss_mb"],
               f"{hostile['peak_rss_mb']} MB against {alone['peak_rss_mb']} MB")
    checks.add(f"{target.name}: hostile: header floods answered 431",
               hostile["header_floods"] and set(hostile["header_floods"]) == {"http 431"},
               str(hostile["header_floods"]))
    if target.management_port:
        answers = phases["reloads"]["reload_answers"]
        checks.add(f"{target.name}: reloads: {cfg.reload_burst} concurrent reloads answered 200",
                   answers == [200] * cfg.reload_burst, str(collections.Counter(answers)))
    results.setdefault("hostile", []).append(phases)
    lines = ["", f"| phase | requests | errors | p50 ms | p99 ms | p99 / alone | peak RSS MB |", "|---" * 7 + "|"]
    for phase, s in phases.items():
        ratio = s["p99_ms"] / alone["p99_ms"] if s["p99_ms"] and alone["p99_ms"] else None
        lines.append(f"| {phase} | {s['requests']} | {s['errors']} | {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | "
                     f"{fmt(ratio, 2)} | {s['peak_rss_mb']} |")
    print("\n".join(lines))


# ---------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Target:
    """A server under test: started here (name 'alexnet' or 'fastapi') or already running."""

    def __init__(self, name, port, cmd=None, log_dir=None, management_port=None):
        self.name, self.port, self.cmd, self.management_port = name, port, cmd, management_port
        self.proc = None
        self.log_path = os.path.join(log_dir, f"{name}.log") if log_dir else None
        self.exit_code = None
        self.stall_thread = None
        self.stalls = []  # results of stall()
        self.top1 = {}  # image name -> first top-1 index seen
        self.top1_changed = set()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout):
        log(f"{self.name}: starting {' '.join(self.cmd)} (log {self.log_path})")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                                   + self.log_tail())
            if get(self.port, "/ping", timeout=2).status == 200:
                log(f"{self.name}: ready on port {self.port} after {time.monotonic() - start:.1f} s, pid {self.pid}")
                return time.monotonic() - start
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: GET /ping not 200 after {timeout} s:\n" + self.log_tail())

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def rss_kb(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, TypeError):
            return None

    def cpu_s(self):
        """User + system CPU seconds of the server process, all threads."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, TypeError, IndexError):
            return None

    def stop(self, timeout):
        """SIGTERM and wait: the exit status, or None when it had to be killed."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.exit_code = None
        return self.exit_code

    def start_stall(self, image, limit_s):
        """At most one stalled client per server at a time: True when one was started."""
        if self.stall_thread is not None and self.stall_thread.is_alive():
            return False
        self.stall_thread = threading.Thread(target=lambda: self.stalls.append(stall(self.port, image, limit_s)),
                                             daemon=True)
        self.stall_thread.start()
        return True

    def join_stall(self):
        if self.stall_thread is not None:
            self.stall_thread.join()


# ---------------------------------------------------------------- load

Record = collections.namedtuple("Record", "t kind verdict latency reused")


def run_load(target, clients, seconds, max_requests, cfg, label, bad_mix=False, stop=None, stop_on_refused=False,
             start=None):
    """clients threads sending to target until seconds have passed, max_requests were
    sent or stop is set. Records' times are seconds since start (time.perf_counter(),
    now by default). Returns (records, elapsed seconds, extra numbers)."""
    stop = stop or threading.Event()
    tickets = itertools.count()
    path = PREDICT_PATH + (f"?topk={cfg.topk}" if cfg.topk is not None else "")
    start = start or time.perf_counter()
    deadline = start + seconds
    per_worker = [[] for _ in range(clients)]
    progress = [[0, 0] for _ in range(clients)]  # per worker: requests done, good ones not ok
    cpu0, rusage0 = target.cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    garbage = random.Random(0).randbytes(4096)
    capped = threading.Event()

    def worker(w):
        client = Client(target.port, cfg.timeout)
        records = per_worker[w]
        while not stop.is_set() and time.perf_counter() < deadline:
            n = next(tickets)
            if n >= max_requests:
                capped.set()
                break
            name, image, ctype = cfg.images[n % len(cfg.images)]
            kind = "good"
            if bad_mix and n % BAD_EVERY == BAD_EVERY - 1:
                kind = BAD_KINDS[(n // BAD_EVERY) % len(BAD_KINDS)]
                if kind == "stalled" and not target.start_stall(cfg.images[0][1], cfg.stall_seconds):
                    kind = "undecodable"  # one stalled client per server at a time
            t = time.perf_counter() - start
            if kind == "stalled":
                continue
            if kind == "oversized":
                verdict, latency = send_oversized(target.port, cfg.max_body, cfg.timeout)
                records.append(Record(t, kind, verdict, latency, False))
                continue
            body = b"not an image\n" + garbage if kind == "undecodable" else image
            out = client.request("POST", path, body, {"Content-Type": "application/octet-stream"
                                                       if kind == "undecodable" else ctype})
            if kind == "undecodable":
                verdict = (bad_verdict("status", out.status) if out.status is not None
                           else "dropped" if out.error in ("unanswered", "reset while sending") else out.error)
            elif out.error:
                verdict = out.error
            elif out.status != 200:
                verdict = f"http {out.status}"
            else:
                problem, top1 = check_answer(out.body, cfg.expect.get(name), cfg.topk)
                verdict = problem or "ok"
                if top1 is not None and target.top1.setdefault(name, top1) != top1:
                    target.top1_changed.add(name)
            records.append(Record(t, kind, verdict, out.latency, out.reused))
            if kind == "good":
                progress[w][0] += 1
                progress[w][1] += verdict != "ok"
            if stop_on_refused and out.error == "refused":
                break
        client.close()

    def report_progress(done):
        while not done.wait(cfg.progress):
            elapsed = time.perf_counter() - start
            n = sum(p[0] for p in progress)
            log(f"{label}: {elapsed:.0f} s, {n} requests, {n / elapsed:.1f} req/s, "
                f"{sum(p[1] for p in progress)} errors")

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    done = threading.Event()
    reporter = threading.Thread(target=report_progress, args=(done,), daemon=True)
    reporter.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - start
    done.set()
    if capped.is_set():
        log(f"{label}: stopped at {max_requests} requests (--max-requests) after {elapsed:.1f} s")
    cpu1, rusage1 = target.cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    records = sorted((r for rs in per_worker for r in rs), key=lambda r: r.t)
    ok = sum(r.kind == "good" and r.verdict == "ok" for r in records)
    extra = {
        "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 3),
        "server_cpu_ms_per_ok": None if cpu0 is None or cpu1 is None or not ok else round(1000 * (cpu1 - cpu0) / ok, 2),
        "load_generator_cpu_s": round(rusage1.ru_utime + rusage1.ru_stime - rusage0.ru_utime - rusage0.ru_stime, 3),
        "server_rss_mb": None if target.rss_kb() is None else round(target.rss_kb() / 1024, 1),
        "stopped_at_max_requests": capped.is_set(),
    }
    return records, elapsed, extra


def summarize(target, clients, repeat, records, elapsed, extra):
    good = [r for r in records if r.kind == "good"]
    latencies = sorted(1000 * r.latency for r in good if r.verdict == "ok")
    errors = collections.Counter(r.verdict for r in good if r.verdict != "ok")
    bad = {k: dict(collections.Counter(r.verdict for r in records if r.kind == k)) for k in BAD_KINDS[:2]}
    return {
        "target": target.name, "clients": clients, "repeat": repeat, "seconds": round(elapsed, 3),
        "requests": len(good), "ok": len(latencies), "errors": sum(errors.values()), "error_kinds": dict(errors),
        "req_s": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90), "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        "bad": bad if any(bad.values()) else None,
        "failures": [{"sent_s": round(r.t, 3), "verdict": r.verdict, "reused_connection": r.reused,
                      "latency_s": None if r.latency is None else round(r.latency, 3)}
                     for r in good if r.verdict != "ok"][:100],
        **extra,
        "latencies_ms": [round(v, 3) for v in latencies],
    }


def describe_level(s):
    errors = ", ".join(f"{k} x{v}" for k, v in s["error_kinds"].items())
    repeat = f" (repeat {s['repeat']})" if s["repeat"] else ""
    return (f"{s['target']} {plural(s['clients'], 'client')}{repeat}: {s['requests']} requests in "
            f"{s['seconds']:.1f} s, {s['req_s']:.1f} req/s, p50 {fmt(s['p50_ms'])} p90 {fmt(s['p90_ms'])} "
            f"p99 {fmt(s['p99_ms'])} ms, {s['errors']} errors" + (f" ({errors})" if errors else ""))


# ---------------------------------------------------------------- checks

class Checks:
    def __init__(self):
        self.items = []

    def add(self, name, ok, detail=""):
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        log(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))

    @property
    def passed(self):
        return all(c["ok"] for c in self.items)


def smoke(target, cfg, checks):
    """The API once: /ping, /models, one raw image, two as multipart, topk, bad topk."""
    n = target.name
    out = get(target.port, "/ping")
    checks.add(f"{n}: GET /ping", out.status == 200 and b"Healthy" in out.body, f"{out.status} {out.body[:80]!r}")
    out = get(target.port, "/models")
    try:
        ok = out.status == 200 and isinstance(json.loads(out.body), (dict, list))
    except ValueError:
        ok = False
    checks.add(f"{n}: GET /models", ok, f"{out.status} {out.body[:120]!r}")
    if target.name != "fastapi":
        out = get(target.port, "/metrics")
        ctype = out.headers.get("Content-Type", "") if out.headers else ""
        checks.add(f"{n}: GET /metrics", out.status == 200 and ctype.startswith("text/plain"),
                   f"{out.status} {ctype}, {len(out.body)} bytes")
    c = Client(target.port, cfg.timeout)
    name, image, ctype = cfg.images[0]
    out = c.request("POST", PREDICT_PATH + "?topk=1", image, {"Content-Type": ctype})
    problem = f"{out.status or out.error}" if out.status != 200 else check_answer(out.body, cfg.expect.get(name), 1)[0]
    if problem is None and len(json.loads(out.body)["top"]) != 1:
        problem = "topk=1 gave more than one class"
    checks.add(f"{n}: POST one image ?topk=1", problem is None, problem or json.loads(out.body)["top"][0]["label"])
    parts = [cfg.images[i % len(cfg.images)] for i in range(2)]
    if parts[0][0] == parts[1][0]:
        parts[1] = (parts[0][0] + ".copy",) + parts[1][1:]  # the answer's order must be visible
    body, mtype = multipart(parts)
    out = c.request("POST", PREDICT_PATH, body, {"Content-Type": mtype})
    problem = None
    if out.status != 200:
        problem = f"{out.status or out.error} {out.body[:120]!r}"
    else:
        try:
            arr = json.loads(out.body)
        except ValueError:
            arr = None
        sent = [p[0] for p in parts]
        got = [obj.get("image") if isinstance(obj, dict) else None for obj in arr] if isinstance(arr, list) else None
        if got is None or len(got) != len(parts):
            problem = f"not an array of {len(parts)}: {out.body[:120]!r}"
        elif got != sent:
            problem = f"images {got} for parts {sent} (field names image-2, image-1): not in part order"
        else:
            for (pname, _, _), obj in zip(parts, arr):
                problem = problem or check_object(obj, cfg.expect.get(pname))[0]
    checks.add(f"{n}: POST multipart, 2 files", problem is None, problem or "array of 2 in order")
    for query in ("topk=-1", "topk=abc"):
        out = c.request("POST", f"{PREDICT_PATH}?{query}", image, {"Content-Type": ctype})
        try:
            ok = out.status == 400 and "error" in json.loads(out.body)
        except ValueError:
            ok = False
        checks.add(f"{n}: POST ?{query} is 400 with an error", ok, f"{out.status or out.error} {out.body[:100]!r}")
    for _ in range(cfg.warmup):
        c.request("POST", PREDICT_PATH, image, {"Content-Type": ctype})
    c.close()


def check_level_errors(target, levels, checks):
    mine = [s for s in levels if s["target"] == target.name]
    kinds = collections.Counter()
    for s in mine:
        kinds.update(s["error_kinds"])
    requests = sum(s["requests"] for s in mine)
    checks.add(f"{target.name}: every good request answered 200 with a correct answer",
               not kinds, f"{sum(kinds.values())} errors in {requests} requests"
               + (f" ({', '.join(f'{k} x{v}' for k, v in kinds.items())})" if kinds else ""))


def check_bad_mix(target, records_list, cfg, checks):
    for kind in BAD_KINDS[:2]:
        verdicts = collections.Counter(r.verdict for rs in records_list for r in rs if r.kind == kind)
        wrong = {k: v for k, v in verdicts.items() if k not in ("4xx", "dropped")}
        checks.add(f"{target.name}: {kind} bodies got a 4xx or a closed connection", verdicts and not wrong,
                   ", ".join(f"{k} x{v}" for k, v in verdicts.items()) or "none sent")
    target.join_stall()
    dropped = [s for s in target.stalls if s["how"] in ("closed", "reset", "status")
               and (s["status"] is None or 400 <= s["status"] < 500)]
    times = [s["after_s"] for s in dropped]
    detail = (f"{len(dropped)} of {len(target.stalls)} dropped"
              + (f" after {min(times):.1f}-{max(times):.1f} s" if times else "")
              + (f"; others: {', '.join(sorted({s['how'] for s in target.stalls if s not in dropped}))}"
                 f" (limit {cfg.stall_seconds:.0f} s)" if len(dropped) < len(target.stalls) else ""))
    checks.add(f"{target.name}: stalled clients dropped", target.stalls and len(dropped) == len(target.stalls), detail)
    out = get(target.port, "/ping")
    checks.add(f"{target.name}: alive after the bad mix (GET /ping 200)", out.status == 200, str(out.status or out.error))


# ---------------------------------------------------------------- modes

def run_levels(targets, cfg, checks, results):
    levels = []
    all_records = collections.defaultdict(list)
    for repeat in range(1, cfg.repeats + 1):
        for i, clients in enumerate(cfg.clients):
            # Who goes first alternates from level to level and, for a level, from repeat to repeat.
            for t in (targets[::-1] if (i + repeat) % 2 == 0 else targets):
                label = f"{t.name} {plural(clients, 'client')}"
                records, elapsed, extra = run_load(t, clients, cfg.seconds, cfg.max_requests or LEVEL_MAX_REQUESTS,
                                                   cfg, label, cfg.bad_mix)
                s = summarize(t, clients, repeat, records, elapsed, extra)
                log(describe_level(s))
                levels.append(s)
                all_records[t.name].append(records)
    results["levels"] = levels
    for t in targets:
        check_level_errors(t, levels, checks)
        if cfg.bad_mix:
            check_bad_mix(t, all_records[t.name], cfg, checks)
        if t.top1_changed:
            log(f"note: {t.name}: the top-1 class of {len(t.top1_changed)} images changed between requests "
                f"(near ties and batch-size-dependent rounding can do that): {sorted(t.top1_changed)[:5]}")
    print(levels_table(targets, levels, cfg))


def levels_table(targets, levels, cfg):
    def cell(t, clients, key):
        return median(s[key] for s in levels if s["target"] == t.name and s["clients"] == clients)

    def ratio(a, b, clients, key):
        rs = []
        for r in range(1, cfg.repeats + 1):
            x = [s[key] for s in levels if s["target"] == a.name and s["clients"] == clients and s["repeat"] == r]
            y = [s[key] for s in levels if s["target"] == b.name and s["clients"] == clients and s["repeat"] == r]
            if x and y and x[0] is not None and y[0]:
                rs.append(x[0] / y[0])
        return median(rs)

    def errors(t, clients):
        return sum(s["errors"] for s in levels if s["target"] == t.name and s["clients"] == clients)

    lines = [f"\nMedians of {cfg.repeats} repeat(s), {cfg.seconds:g} s per level, {len(cfg.images)} images"
             + (", every tenth request bad" if cfg.bad_mix else "") + "."]
    if len(targets) == 2:
        a, b = targets
        lines += [f"Ratios are {a.name}/{b.name}, medians of per-repeat ratios: req/s above 1 and latency "
                  f"below 1 favour {a.name}.\n",
                  f"| clients | {a.name} req/s | {b.name} req/s | req/s ratio | {a.name} p50 / p90 / p99 ms "
                  f"| {b.name} p50 / p90 / p99 ms | p50 ratio | p99 ratio | {a.name} CPU ms/img | "
                  f"{b.name} CPU ms/img | errors |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in cfg.clients:
            lat = [" / ".join(fmt(cell(t, c, k)) for k in ("p50_ms", "p90_ms", "p99_ms")) for t in (a, b)]
            lines.append(f"| {c} | {fmt(cell(a, c, 'req_s'))} | {fmt(cell(b, c, 'req_s'))} | "
                         f"{fmt(ratio(a, b, c, 'req_s'), 2)} | {lat[0]} | {lat[1]} | "
                         f"{fmt(ratio(a, b, c, 'p50_ms'), 2)} | {fmt(ratio(a, b, c, 'p99_ms'), 2)} | "
                         f"{fmt(cell(a, c, 'server_cpu_ms_per_ok'))} | {fmt(cell(b, c, 'server_cpu_ms_per_ok'))} | "
                         f"{errors(a, c)} / {errors(b, c)} |")
    else:
        lines += ["", "| target | clients | requests | errors | req/s | p50 ms | p90 ms | p99 ms | CPU ms/img |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t in targets:
            for c in cfg.clients:
                requests = median(s["requests"] for s in levels if s["target"] == t.name and s["clients"] == c)
                lines.append(f"| {t.name} | {c} | {fmt(requests, 0)} | {errors(t, c)} | {fmt(cell(t, c, 'req_s'))} | "
                             + " | ".join(fmt(cell(t, c, k)) for k in ("p50_ms", "p90_ms", "p99_ms",
                                                                      "server_cpu_ms_per_ok")) + " |")
    return "\n".join(lines)


def run_soak(target, cfg, checks, results):
    clients = max(cfg.clients)
    samples = []  # (seconds since start, RSS kB)
    done = threading.Event()

    def sample():
        start = time.monotonic()
        while True:
            rss = target.rss_kb()
            if rss is not None:
                samples.append((round(time.monotonic() - start, 1), rss))
            if done.wait(RSS_INTERVAL_S):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    records, elapsed, extra = run_load(target, clients, cfg.soak, cfg.max_requests or MAX_REQUESTS, cfg,
                                       f"{target.name} soak {clients} clients", cfg.bad_mix)
    done.set()
    sampler.join()
    s = summarize(target, clients, 0, records, elapsed, extra)
    log(describe_level(s))
    # The reference is the RSS after the first minute (warm-up, allocator pools filled);
    # a soak shorter than two minutes takes its midpoint instead.
    ref_t = 60 if cfg.soak >= 120 else cfg.soak / 2
    after = [kb for t, kb in samples if t >= ref_t]
    ref = after[0] if after else None
    peak = max(after) if after else None
    ok = ref is not None and peak <= ref * (1 + RSS_TOLERANCE)
    detail = (f"RSS at {ref_t:.0f} s {ref / 1024:.1f} MB, max after it {peak / 1024:.1f} MB, last "
              f"{after[-1] / 1024:.1f} MB ({100 * (after[-1] - ref) / ref:+.1f}%), {len(samples)} samples"
              if ref else f"no RSS sample after {ref_t:.0f} s")
    checks.add(f"{target.name}: soak {cfg.soak:g} s at {clients} clients, RSS within "
               f"{100 * RSS_TOLERANCE:.0f}% of its value at {ref_t:.0f} s", ok, detail)
    check_level_errors(target, [s], checks)
    if cfg.bad_mix:
        check_bad_mix(target, [records], cfg, checks)
    s["rss_samples_kb"] = samples
    results.setdefault("soak", []).append(s)


def run_sigterm(target, cfg, checks, results):
    clients = max(cfg.clients)
    stop = threading.Event()
    sig = {}
    pings = []  # (seconds after SIGTERM, status or error)

    def terminate():
        time.sleep(cfg.sigterm_after)
        sig["t"] = time.perf_counter()
        target.proc.send_signal(signal.SIGTERM)
        log(f"{target.name}: SIGTERM under load ({clients} clients)")
        pinger = threading.Thread(target=ping_while_draining, daemon=True)
        pinger.start()
        try:
            target.exit_code = target.proc.wait(cfg.drain_timeout)
            sig["drain_s"] = time.perf_counter() - sig["t"]
        except subprocess.TimeoutExpired:
            target.proc.kill()
            target.proc.wait()
            target.exit_code = None
        stop.set()
        pinger.join()

    def ping_while_draining():
        while not stop.is_set():
            out = get(target.port, "/ping", timeout=2)
            pings.append((round(time.perf_counter() - sig["t"], 3), out.status or out.error))
            if out.error == "refused":
                return
            time.sleep(0.05)

    killer = threading.Thread(target=terminate, daemon=True)
    start = time.perf_counter()
    killer.start()
    records, elapsed, extra = run_load(target, clients, cfg.sigterm_after + cfg.drain_timeout,
                                       cfg.max_requests or MAX_REQUESTS, cfg, f"{target.name} SIGTERM {clients} clients",
                                       stop=stop, stop_on_refused=True, start=start)
    killer.join()
    t_sig = sig["t"] - start
    before = [r for r in records if r.t < t_sig]
    after = [r for r in records if r.t >= t_sig]
    bad_before = collections.Counter(r.verdict for r in before if r.verdict != "ok")
    fine_after = ("ok", "http 503", "refused", "reset while sending")
    verdicts_after = collections.Counter(r.verdict for r in after)
    bad_after = {k: v for k, v in verdicts_after.items() if k not in fine_after}
    unanswered_reused = sum(r.verdict == "unanswered" and r.reused for r in after)
    checks.add(f"{target.name}: requests sent before SIGTERM answered 200 correctly", not bad_before,
               f"{len(before) - sum(bad_before.values())} of {len(before)}"
               + (f" ({', '.join(f'{k} x{v}' for k, v in bad_before.items())})" if bad_before else ""))
    checks.add(f"{target.name}: requests sent while draining got 200, 503 or a refused connection", not bad_after,
               (", ".join(f"{k} x{v}" for k, v in verdicts_after.items()) or "none sent")
               + (f"; {unanswered_reused} of the unanswered on a reused keep-alive connection whose last response "
                  "had no 'Connection: close' (the server closed it as the next request arrived)" if unanswered_reused
                  else ""))
    code = target.exit_code
    checks.add(f"{target.name}: exit status 0 after SIGTERM", code == 0,
               f"exit {code} after {sig['drain_s']:.2f} s" if "drain_s" in sig
               else f"still running after {cfg.drain_timeout:g} s: killed")
    changes = [p for i, p in enumerate(pings) if i == 0 or p[1] != pings[i - 1][1]]
    log(f"{target.name}: GET /ping after SIGTERM: "
        + (", ".join(f"{status} from +{t:.2f} s" for t, status in changes) or "not tried"))
    results.setdefault("sigterm", []).append({
        "target": target.name, "clients": clients, "sigterm_at_s": round(t_sig, 3),
        "drain_s": round(sig["drain_s"], 3) if "drain_s" in sig else None, "exit_code": code,
        "before": dict(collections.Counter(r.verdict for r in before)), "after": dict(verdicts_after),
        "unanswered_on_reused_connection": unanswered_reused, "pings": pings,
        "not_ok_after": [{"sent_s": round(r.t - t_sig, 3), "verdict": r.verdict, "reused": r.reused,
                          "latency_s": None if r.latency is None else round(r.latency, 3)}
                         for r in after if r.verdict != "ok"], **extra})


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = Parser(description="Load test for alexnet serve against the FastAPI baseline (127.0.0.1 only).")
    p.add_argument("--alexnet", metavar="BINARY", help="start BINARY serve (build/app/alexnet)")
    p.add_argument("--fastapi", action="store_true", help="start scripts/serve_fastapi.py (the baseline)")
    p.add_argument("--port", type=int, help="a server already running on 127.0.0.1:PORT")
    p.add_argument("--host", default=HOST, help="only 127.0.0.1 is accepted: this tool loads local servers only")
    p.add_argument("--weights", help="weights for the servers this script starts")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_FILE", help="images, read once")
    p.add_argument("--clients", default="1,8,64", help="concurrency levels, comma separated (default 1,8,64)")
    p.add_argument("--seconds", type=float, default=20, help="seconds per level (default 20)")
    p.add_argument("--max-requests", type=int, help=f"requests per run at most (default {LEVEL_MAX_REQUESTS} "
                   f"per level, {MAX_REQUESTS} for --soak and --sigterm-under-load)")
    p.add_argument("--repeats", type=int, default=1, help="repeat the levels, report medians (default 1)")
    p.add_argument("--threads", type=int, help="--threads for the servers started here")
    p.add_argument("--topk", type=int, help="send ?topk=K (default: the server's, 5)")
    p.add_argument("--expect", help="JSON Lines of `alexnet predict --json`: top-1 per image file name")
    p.add_argument("--bad-mix", action="store_true", help="every tenth request bad (undecodable, oversized, stalled)")
    p.add_argument("--max-body-mb", type=float, help="the servers' body limit in MiB (default 20); "
                   "given, it is passed on to the servers started here")
    p.add_argument("--stall-seconds", type=float, default=30,
                   help="how long a stalled client waits to be dropped (default 30)")
    p.add_argument("--soak", type=float, metavar="SECONDS", help="soak at the largest --clients level")
    p.add_argument("--sigterm-under-load", action="store_true", help="SIGTERM while the largest level runs")
    p.add_argument("--hostile-mix", action="store_true",
                   help="the largest level alone, then beside slow connections and header floods, then beside "
                        "a burst of reloads: p50/p99 and peak RSS of each")
    p.add_argument("--slow-connections", type=int, default=1000,
                   help="slow connections of --hostile-mix (default 1000)")
    p.add_argument("--slow-per-address", type=int, default=50,
                   help="slow connections per loopback address, 127.0.0.2 on (default 50)")
    p.add_argument("--reload-burst", type=int, default=20, help="concurrent reloads of --hostile-mix (default 20)")
    p.add_argument("--sigterm-after", type=float, default=3, help="seconds of load before SIGTERM (default 3)")
    p.add_argument("--drain-timeout", type=float, default=30, help="seconds to exit after SIGTERM (default 30)")
    p.add_argument("--timeout", type=float, default=60, help="socket timeout per request, seconds (default 60)")
    p.add_argument("--start-timeout", type=float, default=120, help="seconds for /ping to answer 200 (default 120)")
    p.add_argument("--warmup", type=int, default=5, help="requests per server before measuring (default 5)")
    p.add_argument("--progress", type=float, default=5, help="seconds between progress lines (default 5)")
    p.add_argument("--fastapi-python", default=FASTAPI_PYTHON, help=f"Python for the baseline ({FASTAPI_PYTHON})")
    p.add_argument("--alexnet-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for alexnet serve, repeatable: --alexnet-arg=--max-batch=32")
    p.add_argument("--fastapi-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the baseline, repeatable: --fastapi-arg=--runtime=openvino")
    p.add_argument("--json", metavar="OUT", help="write every number (latencies included) here")
    a = p.parse_args(argv)

    if a.host not in (HOST, "localhost"):
        raise UsageError(f"--host {a.host}: this tool sends traffic to 127.0.0.1 only")
    if a.alexnet and a.port:
        raise UsageError("--alexnet and --port both name the server under test: give one")
    if not (a.alexnet or a.fastapi or a.port):
        raise UsageError("no server: give --alexnet BINARY, --fastapi and/or --port P")
    if (a.alexnet or a.fastapi) and not a.weights:
        raise UsageError("--weights is needed to start servers")
    if a.weights and not os.path.isfile(a.weights):
        raise UsageError(f"--weights {a.weights}: no such file")
    if a.alexnet and not os.access(a.alexnet, os.X_OK):
        raise UsageError(f"--alexnet {a.alexnet}: not an executable file")
    if a.fastapi and not os.access(a.fastapi_python, os.X_OK):
        raise UsageError(f"--fastapi-python {a.fastapi_python}: not found (scripts/setup makes the venv)")
    if a.port is not None and not 0 < a.port < 65536:
        raise UsageError(f"--port {a.port}: not a port")
    if (a.soak or a.sigterm_under_load or a.hostile_mix) and not (a.alexnet or a.fastapi):
        raise UsageError("--soak, --sigterm-under-load and --hostile-mix need a server started here "
                         "(its PID and exit status)")
    if not 1 <= a.slow_connections <= 10000 or not 1 <= a.slow_per_address <= 1000:
        raise UsageError("--slow-connections must be 1 to 10000, --slow-per-address 1 to 1000")
    if not 1 <= a.reload_burst <= 100:
        raise UsageError("--reload-burst must be 1 to 100")
    try:
        a.clients = [int(c) for c in a.clients.split(",")]
    except ValueError:
        raise UsageError(f"--clients {a.clients}: not a comma separated list of integers")
    if not all(1 <= c <= 1024 for c in a.clients):
        raise UsageError("--clients: each level must be 1 to 1024")
    for flag, v in (("--seconds", a.seconds), ("--soak", a.soak), ("--stall-seconds", a.stall_seconds),
                    ("--sigterm-after", a.sigterm_after), ("--drain-timeout", a.drain_timeout)):
        if v is not None and not 0 < v <= MAX_SECONDS:
            raise UsageError(f"{flag} {v:g}: must be above 0 and at most {MAX_SECONDS}")
    if a.max_requests is not None and not 1 <= a.max_requests <= MAX_REQUESTS:
        raise UsageError(f"--max-requests must be 1 to {MAX_REQUESTS}")
    if not 1 <= a.repeats <= 100:
        raise UsageError("--repeats must be 1 to 100")
    if a.topk is not None and a.topk < 0:
        raise UsageError("--topk must be 0 (all classes) or positive")
    if a.max_body_mb is not None and a.max_body_mb <= 0:
        raise UsageError("--max-body-mb must be positive")
    a.max_body = int((a.max_body_mb or 20) * 1024 * 1024)
    a.images = read_images(a.images)
    a.expect_path = a.expect
    a.expect = read_expect(a.expect) if a.expect else {}
    known = sum(name in a.expect for name, _, _ in a.images)
    if a.expect and not known:
        raise UsageError(f"--expect names none of the {len(a.images)} images")
    if a.expect:
        log(f"--expect {a.expect_path}: top-1 known for {known} of {len(a.images)} images")
    return a


def make_targets(cfg, log_dir):
    targets = []
    common = ["--weights", cfg.weights, "--host", HOST]
    common += ["--threads", str(cfg.threads)] if cfg.threads else []
    common += ["--max-body-mb", f"{cfg.max_body_mb:g}"] if cfg.max_body_mb else []
    if cfg.alexnet:
        port, management = free_port(), free_port()
        targets.append(Target("alexnet", port, [cfg.alexnet, "serve", *common, "--port", str(port),
                                                "--management-port", str(management), *cfg.alexnet_arg], log_dir,
                              management))
    if cfg.port:
        targets.append(Target(f"port-{cfg.port}", cfg.port))
    if cfg.fastapi:
        port = free_port()
        targets.append(Target("fastapi", port, [cfg.fastapi_python, FASTAPI_SCRIPT, *common, "--port", str(port),
                                                 *cfg.fastapi_arg],
                              log_dir))
    return targets


def main(argv):
    try:
        cfg = parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Every connection is a descriptor: --hostile-mix opens a thousand or more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    checks = Checks()
    results = {"config": {k: v for k, v in vars(cfg).items() if k not in ("images", "expect")},
               "images": [n for n, _, _ in cfg.images]}
    log_dir = tempfile.mkdtemp(prefix="alexnet-load-test-")
    targets = make_targets(cfg, log_dir)
    try:
        for t in targets:
            if t.cmd:
                results.setdefault("start_s", {})[t.name] = round(t.start(cfg.start_timeout), 3)
            else:
                out = get(t.port, "/ping")
                if out.status != 200:
                    print(f"error: GET http://{HOST}:{t.port}/ping: {out.status or out.error}", file=sys.stderr)
                    return 1
            smoke(t, cfg, checks)
        if cfg.hostile_mix:
            for t in targets:
                if t.cmd:
                    run_hostile(t, cfg, checks, results)
        elif not (cfg.soak or cfg.sigterm_under_load):
            run_levels(targets, cfg, checks, results)
        if cfg.soak:
            for t in targets:
                run_soak(t, cfg, checks, results)
        if cfg.sigterm_under_load:
            for t in targets:
                run_sigterm(t, cfg, checks, results)
    except RuntimeError as e:
        checks.add("servers start", False, str(e))
    except KeyboardInterrupt:
        checks.add("run finished", False, "interrupted")
    finally:
        for t in targets:
            if t.proc is not None and t.proc.poll() is None:
                t.join_stall()
                code = t.stop(cfg.drain_timeout)
                checks.add(f"{t.name}: exit status 0 after SIGTERM at the end", code == 0,
                           f"exit {code}" if code is not None else "did not exit: killed")
            if t.proc is not None and t.proc.returncode not in (0, None):
                log(f"{t.name} log ({t.log_path}), last lines:\n{t.log_tail()}")
    results["stalled_clients"] = {t.name: t.stalls for t in targets if t.stalls}
    results["checks"] = checks.items
    results["passed"] = checks.passed
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(results, f, indent=1)
    failed = [c for c in checks.items if not c["ok"]]
    if not failed:
        shutil.rmtree(log_dir, ignore_errors=True)
    elif any(t.cmd for t in targets):
        log(f"server logs: {log_dir}")
    print(f"\n{len(checks.items) - len(failed)} of {len(checks.items)} checks passed"
          + "".join(f"\nFAIL {c['name']}: {c['detail']}" for c in failed))
    return 0 if checks.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
