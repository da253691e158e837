#!/usr/bin/env python3
"""Fleet pipeline-overhead benchmark driver (see bench/pipeline/README.md).

Runs, in one go and side by side:

1. the bare RabbitMQ relay baseline (cli/examples/amqp_relay.rs):
   the same number of messages the fleet moved, through quorum queues with
   publisher confirms and manual acks, 256 in flight; once as one queue
   (producer -> queue -> consumer) and once as a chain of five queues with
   four zero-work relays (consume -> publish with confirm -> ack), the fleet's
   worker loop with nothing else in it;
2. the fleet: the five real worker binaries over RabbitMQ, Redis and a
   file:// store, one batch enqueued with `engage enqueue` and timed until
   `engage status --wait` reports it complete, for each concurrency /
   partition setting asked for.

For every fleet run it records the workers' /metrics (engage_jobs_total and
engage_job_duration_seconds deltas, sampled every 0.5 s for per-stage active
spans), CPU seconds of every process involved (workers, redis-server,
RabbitMQ's beam.smp, everything else on the box), Redis commands per item
(INFO commandstats of a private redis-server, so nobody else's traffic is
counted), and the objects the store holds afterwards (each put is a temp
file, an fsync, a rename and a directory fsync). Optionally a system-wide
`perf record` of one run.

Writes the tables between the GENERATED markers of RESULTS.md and prints them.
Everything runs on loopback; the namespaces, queues, Redis keys and store
directories it creates are removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

STAGES = ["clean", "match", "download", "analyze", "aggregate"]
CLK = os.sysconf("SC_CLK_TCK")
BEGIN = "<!-- BEGIN GENERATED (bench/pipeline/run.sh rewrites this block) -->"
END = "<!-- END GENERATED -->"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- helpers ---

class Resp:
    """A minimal Redis (RESP2) client on loopback: enough for INFO, HGET, SCARD, SCAN, DEL."""

    def __init__(self, port: int):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline().rstrip(b"\r\n")
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad RESP line {line!r}")

    def close(self):
        self.s.close()


def cmdstats(r: Resp) -> dict[str, tuple[int, int]]:
    """command -> (calls, usec) from INFO commandstats."""
    out = {}
    for line in r.cmd("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            kv = dict(p.split("=", 1) for p in rest.split(","))
            out[name] = (int(kv["calls"]), int(float(kv["usec"])))
    return out


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), seconds; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return (total - idle) / CLK, total / CLK


def pids_named(name: str) -> list[int]:
    r = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def scrape(addr: str) -> dict[tuple, float]:
    """Prometheus text -> {(name, sorted label pairs): value}."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric_sum(m: dict, name: str, **want) -> float:
    return sum(
        v for (n, labels), v in m.items()
        if n == name and all(dict(labels).get(k) == w for k, w in want.items())
    )


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def histogram_quantile(m: dict, stage: str, q: float) -> float | None:
    """Upper bucket bound under which a fraction q of the stage's jobs fell."""
    buckets = sorted(
        (float(dict(l)["le"]), v) for (n, l), v in m.items()
        if n == "engage_job_duration_seconds_bucket" and dict(l).get("stage") == stage
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    for le, c in buckets:
        if c >= q * total:
            return le
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, timeout: float, f):
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def store_stats(store: Path) -> dict:
    """Objects and bytes in the store, by kind of key."""
    kinds: dict[str, list[int]] = {}
    for dirpath, _, files in os.walk(store):
        rel = Path(dirpath).relative_to(store).parts
        if rel[:1] == ("batches",) and len(rel) >= 3:
            kind = "batches/B/" + rel[2]
        else:
            kind = rel[0] if rel else "."
        for name in files:
            k = kinds.setdefault(kind, [0, 0])
            k[0] += 1
            k[1] += os.path.getsize(os.path.join(dirpath, name))
    return {k: {"objects": v[0], "bytes": v[1]} for k, v in sorted(kinds.items())}


# ------------------------------------------------------------------- redis ---

class PrivateRedis:
    """A redis-server of our own on a free loopback port (no persistence), so its
    command statistics and CPU time belong to this benchmark alone."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("redis-server", 10, self._ping)
        self.pid = self.proc.pid

    def _ping(self):
        try:
            r = Resp(self.port)
            ok = r.cmd("PING") == "PONG"
            r.close()
            return ok
        except OSError:
            return False

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def shared_redis_pid(port: int) -> int | None:
    r = Resp(port)
    info = r.cmd("INFO", "server").decode()
    r.close()
    m = re.search(r"process_id:(\d+)", info)
    return int(m.group(1)) if m else None


def delete_redis_keys(port: int, ns: str):
    r = Resp(port)
    for pattern in (f"{{{ns}:*", f"{ns}:*"):
        cursor = b"0"
        while True:
            cursor, keys = r.cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if keys:
                r.cmd("DEL", *keys)
            if cursor == b"0":
                break
    r.close()


class SharedRabbit:
    """The broker at 127.0.0.1:5672."""

    port = 5672
    url = "amqp://guest:guest@127.0.0.1:5672/%2f"

    @staticmethod
    def pids():
        return pids_named("beam.smp")


class PrivateRabbit:
    """A RabbitMQ node of our own (fresh state, loopback only, its own port,
    nofile limit raised), so the measurement neither disturbs nor is disturbed
    by other users of the shared broker, and its CPU time is ours alone."""

    def __init__(self, workdir: Path, cookie: str | None = None):
        """`cookie`: the Erlang cookie to share with other nodes (a cluster)."""
        self.port, dist = free_port(), free_port()
        self.dir = workdir / "rabbitmq"
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if cookie:
            c = self.dir / "home" / ".erlang.cookie"
            c.write_text(cookie)
            c.chmod(0o400)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.node = f"engbench-{uuid.uuid4().hex[:8]}@localhost"
        self.env = dict(os.environ)
        self.env.update({
            "HOME": str(self.dir / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "beam.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        server = shutil.which("rabbitmq-server", path="/usr/lib/rabbitmq/bin") or "rabbitmq-server"
        self.proc = subprocess.Popen(
            ["sh", "-c", f"ulimit -n $(ulimit -Hn); exec {server}"], env=self.env,
            stdout=open(self.dir / "stdout", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait_for(f"RabbitMQ node {self.node}", 120, self._up)
        self.pid = int((self.dir / "beam.pid").read_text().split()[0])
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited: {(self.dir / 'stdout').read_text()[-2000:]}")
        if not (self.dir / "beam.pid").exists():
            return False
        try:
            import pika  # noqa: PLC0415
            c = pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", self.port, blocked_connection_timeout=5, socket_timeout=5))
            c.close()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
            return False

    def pids(self):
        return [self.pid]

    def stop(self):
        ctl = shutil.which("rabbitmqctl", path="/usr/lib/rabbitmq/bin") or "rabbitmqctl"
        subprocess.run([ctl, "-n", self.node, "stop"], env=self.env, capture_output=True,
                       timeout=120, check=False)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()


# Rungs of the wait ladder (engage_runtime::broker::WAIT_RUNGS).
WAIT_RUNGS = 13


def delete_queues(ns: str, port: int, tiers: int = 10):
    try:
        import pika  # noqa: PLC0415
    except ImportError:
        print(f"pika missing: queues of {ns} left in RabbitMQ", file=sys.stderr)
        return
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    names = []
    for s in STAGES:
        names += [f"{ns}.{s}", f"{ns}.{s}.dlq"] + [f"{ns}.{s}.retry.{i}" for i in range(tiers)]
    names += [f"{ns}.wait.{r}" for r in range(WAIT_RUNGS)]
    ch = conn.channel()
    for q in names:
        try:
            ch.queue_delete(q)
        except Exception:  # noqa: BLE001 - a missing queue closes the channel
            ch = conn.channel()
    for x in (f"{ns}.jobs", f"{ns}.wait"):
        try:
            ch.exchange_delete(x)
        except Exception:  # noqa: BLE001
            ch = conn.channel()
    conn.close()


# ------------------------------------------------------------------- relay ---

def run_relay(relay_bin: Path, broker, messages: int, hops: int, inflight: int, body: int) -> dict:
    per_hop = max(1, round(messages / hops))
    cmd = [str(relay_bin), "--messages", str(per_hop), "--hops", str(hops),
           "--inflight", str(inflight), "--body-bytes", str(body), "--amqp", broker.url]
    cpu0 = {p: proc_cpu(p) for p in broker.pids()}
    sys0 = system_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys1 = system_cpu()
    if out.returncode != 0:
        raise RuntimeError(f"amqp_relay failed: {out.stderr.strip()}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["cmd"] = " ".join(["amqp_relay"] + cmd[1:-2])
    r["rabbit_cpu_s"] = sum(proc_cpu(p) - c for p, c in cpu0.items())
    r["client_cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    r["machine_busy_s"] = sys1[0] - sys0[0]
    r["machine_total_s"] = sys1[1] - sys0[1]
    return r


# ------------------------------------------------------------------- fleet ---

class Sampler(threading.Thread):
    """Scrapes every worker's engage_jobs_total every `every` seconds."""

    def __init__(self, addrs: dict[str, str], every: float = 0.5):
        super().__init__(daemon=True)
        self.addrs, self.every = addrs, every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            row = {}
            for s, a in self.addrs.items():
                try:
                    row[s] = metric_sum(scrape(a), "engage_jobs_total")
                except OSError:
                    row[s] = float("nan")
            self.samples.append((t, row))
            self.stop.wait(self.every)


def active_span(samples, stage: str, t0: float) -> tuple[float, float] | None:
    """(first, last) time, relative to t0, at which the stage's job count changed."""
    first = last = None
    prev = None
    for t, row in samples:
        v = row.get(stage)
        if v is None or v != v:
            continue
        if prev is not None and v > prev:
            if first is None:
                first = t - 0.5 * (t - pt)  # midpoint of the interval it changed in
            last = t
        prev, pt = v, t
    if first is None:
        return None
    return first - t0, last - t0


def fleet_env(ns: str, store: Path, data: Path) -> dict:
    """The environment of a benchmark fleet: this process's, minus any ENGAGE_*
    setting, plus a namespace, a file:// store, the generated data as the S3
    root and the only allowed inputs, and metrics on a free loopback port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    env.update({
        "ENGAGE_NAMESPACE": ns,
        "ENGAGE_STORE": f"file://{store}",
        "ENGAGE_S3_ROOT": str(data / "s3"),
        "ENGAGE_AUDIO_BUCKETS": "learner-audio",
        "ENGAGE_INPUT_PREFIXES": f"file://{data}",
        "ENGAGE_METRICS_ADDR": "127.0.0.1:0",
        "RUST_LOG": "info",
    })
    return env


def run_fleet(cfg: dict, a, bins: Path, data: Path, workdir: Path, broker, redis_port: int,
              redis_pid: int | None, perf: bool) -> dict:
    ns = f"bench-pl-{uuid.uuid4().hex[:8]}"
    d = workdir / ns
    store, logs = d / "store", d / "logs"
    if cfg.get("shm"):
        store = Path("/dev/shm") / workdir.name / ns / "store"
    logs.mkdir(parents=True)
    env = fleet_env(ns, store, data)
    env.update({
        "ENGAGE_AMQP_URL": broker.url,
        "ENGAGE_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
    })
    if cfg.get("concurrency"):
        env["ENGAGE_CONCURRENCY"] = str(cfg["concurrency"])
    if cfg.get("partitions"):
        env["ENGAGE_PARTITIONS"] = str(cfg["partitions"])
    if cfg.get("piece_bytes"):
        env["ENGAGE_CLEAN_PIECE_BYTES"] = str(cfg["piece_bytes"])

    procs: dict[str, subprocess.Popen] = {}
    helpers: list[subprocess.Popen] = []  # status, MONITOR, perf: stopped in `finally`
    files = []
    result: dict = {"config": cfg["name"], "namespace": ns}
    try:
        for s in STAGES:
            logf = open(logs / f"{s}.log", "wb")  # noqa: SIM115 - closed in `finally`
            files.append(logf)
            procs[s] = subprocess.Popen([str(bins / f"engage-{s}")], env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=logf)
        addrs = {}
        for s in STAGES:
            def ready(s=s):
                if procs[s].poll() is not None:
                    raise RuntimeError(f"engage-{s} exited: {(logs / f'{s}.log').read_text()[-2000:]}")
                text = ANSI.sub("", (logs / f"{s}.log").read_text(errors="replace"))
                m = re.search(r"metrics=(\d+\.\d+\.\d+\.\d+:\d+)", text)
                return m.group(1) if m and "consuming" in text else None
            addrs[s] = wait_for(f"engage-{s} to consume", 60, ready)

        rabbit = broker.pids()
        r = Resp(redis_port)
        result["poller_port"] = r.s.getsockname()[1]
        m0 = {s: scrape(addrs[s]) for s in STAGES}
        cpu0 = {s: proc_cpu(p.pid) for s, p in procs.items()}
        rcpu0 = proc_cpu(redis_pid) if redis_pid else 0.0
        qcpu0 = sum(proc_cpu(p) for p in rabbit)
        sys0 = system_cpu()
        cs0 = cmdstats(r)
        load0 = open("/proc/loadavg").read().split()[0]
        sampler = Sampler(addrs)
        sampler.start()
        monitor = None
        if a.redis_monitor:
            files.append(open(d / "monitor.txt", "wb"))  # noqa: SIM115
            monitor = subprocess.Popen(["redis-cli", "-p", str(redis_port), "monitor"],
                                       stdout=files[-1], stderr=subprocess.DEVNULL)
            helpers.append(monitor)
        perf_proc = None
        if perf:
            perf_proc = subprocess.Popen(
                ["perf", "record", "-F", "199", "-a", "-g", "-o", str(d / "perf.data")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            helpers.append(perf_proc)

        t0 = time.monotonic()
        enq = subprocess.run([str(bins / "engage"), "enqueue", "--activity", str(data / "activity.jsonl"),
                              "--sessions", str(data / "sessions.csv")],
                             env=env, capture_output=True, text=True, check=False)
        if enq.returncode != 0:
            raise RuntimeError(f"enqueue failed: {enq.stderr}")
        batch = enq.stdout.strip()
        t_enq = time.monotonic()
        status = subprocess.Popen([str(bins / "engage"), "status", batch, "--wait", "--timeout",
                                   str(a.timeout)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        helpers.append(status)
        # Completion is polled here every 50 ms (engage status polls every 500 ms);
        # the status lines give the per-stage timeline.
        timeline = []

        def read_status():
            for line in status.stdout:
                timeline.append((time.monotonic() - t0, line.strip()))
        reader = threading.Thread(target=read_status, daemon=True)
        reader.start()
        kp = f"{{{ns}:{batch}}}"
        deadline = t0 + a.timeout
        phases: dict[str, float] = {}
        while True:
            now = time.monotonic()
            if r.cmd("HGET", f"{kp}:meta", "complete") == b"1":
                break
            if "registered" not in phases and r.cmd("HGET", f"{kp}:meta", "registered"):
                phases["registered"] = now - t0
            if "registered" in phases and "all_final" not in phases and \
                    r.cmd("SCARD", f"{kp}:all_final") >= r.cmd("SCARD", f"{kp}:all_items"):
                phases["all_final"] = now - t0
            if "all_final" in phases and "aggregated" not in phases and \
                    r.cmd("SCARD", f"{kp}:agg_done") >= r.cmd("SCARD", f"{kp}:learners"):
                phases["aggregated"] = now - t0
            if now > deadline:
                raise TimeoutError(f"batch {batch} not complete after {a.timeout}s")
            if any(p.poll() is not None for p in procs.values()):
                raise RuntimeError("a worker exited during the run")
            time.sleep(0.05)
        t1 = time.monotonic()
        phases["complete"] = t1 - t0
        cpu1 = {s: proc_cpu(p.pid) for s, p in procs.items()}
        rcpu1 = proc_cpu(redis_pid) if redis_pid else 0.0
        qcpu1 = sum(proc_cpu(p) for p in rabbit)
        sys1 = system_cpu()
        cs1 = cmdstats(r)
        if monitor:
            monitor.terminate()
            monitor.wait(10)
        if perf_proc:
            perf_proc.send_signal(signal.SIGINT)
            perf_proc.wait(60)
        status.wait(10)
        reader.join(5)
        time.sleep(1.0)  # the report job's counters are bumped just after the ack
        sampler.stop.set()
        sampler.join(5)
        m1 = {s: scrape(addrs[s]) for s in STAGES}
        p = f"{{{ns}:{batch}}}"
        ledger = {k: r.cmd("SCARD", f"{p}:{k}") for k in
                  ("all_items", "downloaded", "all_final", "learners", "agg_done", "match_done",
                   "pieces_done")}
        ledger["failed"] = r.cmd("HLEN", f"{p}:failed")
        r.close()

        wall = t1 - t0
        stages = {}
        for s in STAGES:
            dm = delta(m1[s], m0[s])
            jobs = metric_sum(dm, "engage_jobs_total", stage=s)
            outcomes = {dict(l)["outcome"]: int(v) for (n, l), v in dm.items()
                        if n == "engage_jobs_total" and v > 0}
            dur_sum = metric_sum(dm, "engage_job_duration_seconds_sum", stage=s)
            span = active_span(sampler.samples, s, t0)
            stages[s] = {
                "jobs": int(jobs),
                "outcomes": outcomes,
                "retries": int(metric_sum(dm, "engage_retries_total")),
                "mean_ms": 1000 * dur_sum / jobs if jobs else None,
                "p50_le_s": histogram_quantile(dm, s, 0.5),
                "p99_le_s": histogram_quantile(dm, s, 0.99),
                "span_s": (span[1] - span[0]) if span else None,
                "span": span,
                "cpu_s": cpu1[s] - cpu0[s],
                "busy_s": dur_sum,
                "ack_frames": {dict(l)["kind"]: int(v) for (n, l), v in dm.items()
                               if n == "engage_ack_frames_total" and v > 0},
            }
        messages = sum(v["jobs"] for v in stages.values())
        analyzed = stages["analyze"]["outcomes"].get("ok", 0)
        cs = {k: (v[0] - cs0.get(k, (0, 0))[0], v[1] - cs0.get(k, (0, 0))[1]) for k, v in cs1.items()}
        cs = {k: v for k, v in cs.items() if v[0] > 0 and k not in ("info",)}
        workers_cpu = sum(v["cpu_s"] for v in stages.values())
        busy = sys1[0] - sys0[0]
        result.update({
            "batch": batch,
            "concurrency": cfg.get("concurrency") or 32,
            "partitions": cfg.get("partitions") or 16,
            "piece_bytes": cfg.get("piece_bytes"),
            "shm": cfg.get("shm", False),
            "wall_s": wall,
            "enqueue_s": t_enq - t0,
            "messages": messages,
            "items": ledger["all_items"],
            "analyzed": analyzed,
            "ledger": ledger,
            "stages": stages,
            "cpu": {
                "workers": workers_cpu,
                "redis": rcpu1 - rcpu0,
                "rabbitmq": qcpu1 - qcpu0,
                "machine_busy": busy,
                "machine_total": sys1[1] - sys0[1],
                "other": busy - workers_cpu - (rcpu1 - rcpu0) - (qcpu1 - qcpu0),
            },
            "redis_cmds": cs,
            "load1_before": load0,
            "phases": phases,
            "timeline": timeline,
        })
    finally:
        for h in helpers:
            if h.poll() is None:
                h.send_signal(signal.SIGINT)  # perf writes its data on SIGINT
                try:
                    h.wait(30)
                except subprocess.TimeoutExpired:
                    h.kill()
                    h.wait()
        for s, pr in procs.items():
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for s, pr in procs.items():
            try:
                pr.wait(30)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()
        for f in files:
            f.close()
    result["store"] = store_stats(store) if store.exists() else {}
    if (d / "monitor.txt").exists():
        result["round_trips"] = monitor_summary(d / "monitor.txt", result.get("poller_port"))
    if perf and (d / "perf.data").exists():
        names = {pr.pid: f"engage-{st}" for st, pr in procs.items()}
        names.update({p: "rabbitmq" for p in broker.pids()})
        if redis_pid:
            names[redis_pid] = "redis"
        result["perf"] = perf_summary(d / "perf.data", names)
    if a.check_outputs and "batch" in result:
        out = d / "report"
        rep = subprocess.run([str(bins / "engage"), "report", result["batch"], "--out", str(out)],
                             env=env, capture_output=True, text=True, check=False)
        if rep.returncode == 0 and (out / "analysis.csv").exists():
            lines = (out / "analysis.csv").read_text().splitlines()[1:]
            result["analysis_rows"] = {
                "ok": sum(1 for x in lines if x.split(",")[1:2] == ["ok"]),
                "failed": sum(1 for x in lines if x.split(",")[1:2] == ["failed"]),
            }
            result["report_rows"] = len((out / "report.csv").read_text().splitlines()) - 1
    delete_queues(ns, broker.port)
    delete_redis_keys(redis_port, ns)
    # Stores are removed only at the very end: deleting ~10^4 files right
    # before the next run would make its file creations slower (ext4 checks
    # recently deleted inodes when it allocates new ones).
    return result


def monitor_summary(path: Path, exclude_port: int | None) -> dict:
    """Commands seen by MONITOR, split into client round trips (by command) and
    commands run inside Lua scripts; a MULTI/pipeline counts each command."""
    client: dict[str, int] = {}
    lua: dict[str, int] = {}
    for line in path.read_bytes().decode(errors="replace").splitlines():
        m = re.match(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
        if not m:
            continue
        if exclude_port and m.group(1).endswith(f":{exclude_port}"):
            continue  # this script's own completion polling
        cmd = m.group(2).lower()
        bucket = lua if m.group(1) == "lua" else client
        bucket[cmd] = bucket.get(cmd, 0) + 1
    return {"client": client, "lua": lua}


def perf_summary(path: Path, names: dict[int, str]) -> dict:
    """Samples of a system-wide `perf record -g` by process (workers, RabbitMQ,
    Redis, other), split into user and kernel time, with the system calls the
    kernel time was spent in (outermost __x64_sys_* frame) and the hottest
    leaf functions."""
    out = subprocess.run(["perf", "script", "-i", str(path), "-F", "pid,tid,comm,ip,sym,dso"],
                         capture_output=True, text=True, check=False).stdout
    total = 0
    procs: dict[str, dict] = {}
    for block in out.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        head = lines[0].split()
        try:
            pid = int(head[-1].split("/")[0])
        except ValueError:
            continue
        frames = [ln.strip().split(None, 1)[1] if len(ln.strip().split(None, 1)) > 1 else "?"
                  for ln in lines[1:]]
        if not frames:
            continue
        total += 1
        name = names.get(pid) or ("idle" if pid == 0 else "other")
        pr = procs.setdefault(name, {"samples": 0, "kernel": 0, "syscalls": {}, "leaf": {}})
        pr["samples"] += 1
        leaf = frames[0]
        if "[kernel.kallsyms]" in leaf:
            pr["kernel"] += 1
            sys_ = [f.split()[0] for f in frames if f.startswith("__x64_sys_")]
            key = sys_[-1][len("__x64_sys_"):] if sys_ else (
                "irq/softirq" if any("irq" in f for f in frames) else "kernel (no syscall)")
            pr["syscalls"][key] = pr["syscalls"].get(key, 0) + 1
        sym = re.sub(r"\+0x[0-9a-f]+", "", leaf)
        pr["leaf"][sym] = pr["leaf"].get(sym, 0) + 1
    return {"total": total, "procs": procs}


# ------------------------------------------------------------------ report ---

def fmt(x, nd=0):
    if x is None:
        return "–"
    if isinstance(x, float) and nd == 0:
        return f"{x:,.0f}"
    return f"{x:,.{nd}f}"


def render(res: dict) -> str:
    fleet, relays, meta = res["fleet"], res["relays"], res["meta"]
    L = []
    L.append(f"Run {meta['date']} on {meta['host']} ({meta['cores']} cores, load before: "
             f"{meta['load']}); dataset `{meta['data']}`: {meta['records']:,} log records, "
             f"{meta['learners']:,} learners, every audio object the same 8 KB WAV.")
    L.append("")
    L.append("Command:")
    L.append("")
    L.append("```")
    L.append(meta["command"])
    L.append("```")
    L.append("")
    base = relays[0]["msgs_per_s"] if relays else None
    L.append("### Side by side")
    L.append("")
    L.append("| run | in flight | messages | items | wall s | messages/s | items/s | × bare relay (messages/s) | machine CPU per message | every repetition | target |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in relays:
        name = "bare relay, 1 quorum queue" if r["hops"] == 1 else \
            f"zero-work chain, {r['hops']} quorum queues ({r['hops'] - 1} relays)"
        L.append(f"| {name} | {r['inflight']} | {r['messages']:,} | – | {r['seconds']:.1f} | "
                 f"{r['msgs_per_s']:,.0f} | – | {r['msgs_per_s'] / base:.2f} | "
                 f"{1e6 * r['machine_busy_s'] / r['messages']:,.0f} µs | "
                 f"{', '.join(f'{x:,.0f}' for x in r.get('all_msgs_per_s', []))} messages/s | – |")
    best = max(fleet, key=lambda f: f["analyzed"] / f["wall_s"]) if fleet else None
    for f in fleet:
        mps = f["messages"] / f["wall_s"]
        ips = f["analyzed"] / f["wall_s"]
        tag = " **(best)**" if f is best else ""
        ok = []
        ok.append("items ≥ 2,500/s: " + ("yes" if ips >= 2500 else f"no ({ips / 2500:.0%})"))
        if base:
            ok.append("≥ ½ relay: " + ("yes" if mps >= base / 2 else f"no ({mps / base:.2f}×)"))
        L.append(f"| fleet `{f['config']}`{tag} | {f['concurrency']}/stage | {f['messages']:,} | "
                 f"{f['analyzed']:,} | {f['wall_s']:.1f} | {mps:,.0f} | {ips:,.0f} | "
                 f"{mps / base:.3f} | {1e6 * f['cpu']['machine_busy'] / f['messages']:,.0f} µs | "
                 f"{', '.join(f'{x:,.0f}' for x in f.get('all_items_per_s', []))} items/s | "
                 f"{'; '.join(ok)} |" if base else "")
    L.append("")
    L.append("items = responses that went through all five stages (analyze ok); messages = jobs "
             "consumed by all stages (each one publish with confirm, one delivery, one ack); wall = "
             "`engage enqueue` until the batch ledger says complete (polled every 50 ms); each row "
             "is the best of its repetitions (all listed); machine CPU = busy CPU time of the whole "
             "box during the run (2 cores), divided by messages.")
    L.append("")
    for f in fleet + res.get("profiled", []):
        prof = " — profiled run (under perf; not in the comparison)" if "perf" in f else ""
        L.append(f"### Fleet `{f['config']}`{prof}: concurrency {f['concurrency']}, partitions "
                 f"{f['partitions']}, piece bytes {f['piece_bytes'] or 'default (256 MiB)'}, store on "
                 f"{'tmpfs (/dev/shm)' if f.get('shm') else 'the ext4 disk'}")
        L.append("")
        lg = f["ledger"]
        L.append(f"Batch {f['batch']}: {lg['all_items']:,} ledger items, {lg['downloaded']:,} downloaded, "
                 f"{lg['all_final']:,} final ({lg['failed']:,} failed), {lg['learners']:,} learners, "
                 f"{lg['match_done']:,} match jobs, {lg['pieces_done']} clean pieces; "
                 f"{f['messages'] / max(f['analyzed'], 1):.2f} messages per analyzed item."
                 + (f" Report check: analysis.csv {f['analysis_rows']}, report.csv {f['report_rows']:,} rows."
                    if "analysis_rows" in f else ""))
        L.append("")
        ph = f.get("phases", {})
        L.append("Phases (s after enqueue): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}" for k, v in ph.items())
            + " (registered = every clean piece and match job recorded; all final = every item "
              "analyzed or failed; aggregated = every learner's rows written; complete = report written).")
        L.append("")
        L.append("| stage | jobs | outcomes | active s (first→last job) | jobs/s over active | jobs/s over wall | mean job ms | p50 ≤ | p99 ≤ | worker CPU s | CPU ms/job | ack frames (multiple/single/requeue) |")
        L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for s in STAGES:
            st = f["stages"][s]
            span = st["span"]
            sp = f"{span[0]:.1f}→{span[1]:.1f}" if span else "–"
            act = st["jobs"] / st["span_s"] if st["span_s"] else None
            L.append(f"| {s} | {st['jobs']:,} | {', '.join(f'{k} {v:,}' for k, v in st['outcomes'].items())} | "
                     f"{sp} | {fmt(act)} | {st['jobs'] / f['wall_s']:,.0f} | {fmt(st['mean_ms'], 1)} | "
                     f"{fmt(st['p50_le_s'], 3)} s | {fmt(st['p99_le_s'], 3)} s | {st['cpu_s']:.1f} | "
                     f"{1000 * st['cpu_s'] / st['jobs'] if st['jobs'] else 0:.2f} | "
                     + "/".join(f"{st.get('ack_frames', {}).get(k, 0):,}"
                                for k in ("multiple", "single", "requeue")) + " |")
        c = f["cpu"]
        n = max(f["analyzed"], 1)
        L.append("")
        L.append(f"CPU during the run ({f['wall_s']:.1f} s × {meta['cores']} cores = "
                 f"{c['machine_total']:.0f} CPU s available): machine busy {c['machine_busy']:.1f} s "
                 f"({c['machine_busy'] / c['machine_total']:.0%}); workers {c['workers']:.1f} s "
                 f"({1000 * c['workers'] / n:.2f} ms/item), RabbitMQ {c['rabbitmq']:.1f} s "
                 f"({1000 * c['rabbitmq'] / n:.2f} ms/item), Redis {c['redis']:.1f} s "
                 f"({1000 * c['redis'] / n:.2f} ms/item), everything else on the box "
                 f"{c['other']:.1f} s.")
        L.append("")
        tot = sum(v[0] for v in f["redis_cmds"].values())
        usec = sum(v[1] for v in f["redis_cmds"].values())
        L.append(f"Redis: {tot:,} commands = {tot / n:.1f} per item ({usec / 1e6:.2f} s inside Redis); "
                 + ", ".join(f"{k} {v[0] / n:.2f}" for k, v in sorted(f["redis_cmds"].items(), key=lambda kv: -kv[1][0])[:8])
                 + " per item.")
        if f.get("round_trips"):
            rt = f["round_trips"]
            L.append("")
            L.append(f"Redis MONITOR (this run was slowed by it): client commands "
                     f"{sum(rt['client'].values()) / n:.2f} per item ("
                     + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(rt["client"].items(), key=lambda kv: -kv[1]))
                     + f"); inside Lua scripts {sum(rt['lua'].values()) / n:.2f} per item.")
        objs = sum(v["objects"] for v in f["store"].values())
        L.append("")
        L.append(f"Store: {objs:,} objects written = {objs / n:.2f} per item, each a temp file + fsync + "
                 f"rename + directory fsync (≈ {2 * objs / n:.1f} fsyncs per item"
                 f"{'; no-ops on tmpfs' if f.get('shm') else ''}); by key: "
                 + ", ".join(f"{k} {v['objects']:,}" for k, v in f["store"].items()) + ".")
        L.append("")
        if f.get("timeline"):
            L.append("<details><summary>engage status timeline</summary>")
            L.append("")
            L.append("```")
            for t, line in f["timeline"]:
                L.append(f"{t:6.1f}s {line}")
            L.append("```")
            L.append("</details>")
            L.append("")
        if f.get("perf"):
            pf = f["perf"]
            tot = max(pf["total"], 1)
            L.append(f"<details><summary>perf record -a -g (199 Hz) of this run: where the CPU went"
                     f"</summary>")
            L.append("")
            L.append("| process | share of all samples | of which kernel | top system calls (share of the process) | hottest leaf functions |")
            L.append("|---|---:|---:|---|---|")
            for name, pr in sorted(pf["procs"].items(), key=lambda kv: -kv[1]["samples"]):
                n_ = pr["samples"]
                if n_ / tot < 0.01:
                    continue
                sc = ", ".join(f"{k} {v / n_:.0%}" for k, v in
                               sorted(pr["syscalls"].items(), key=lambda kv: -kv[1])[:6])
                lf = ", ".join(f"`{k[:60]}` {v / n_:.0%}" for k, v in
                               sorted(pr["leaf"].items(), key=lambda kv: -kv[1])[:4])
                L.append(f"| {name} | {n_ / tot:.1%} | {pr['kernel'] / n_:.0%} | {sc} | {lf} |")
            L.append("</details>")
            L.append("")
    for r in relays:
        L.append(f"Relay `{r['cmd']}`: {r['seconds']:.1f} s (publishes confirmed after "
                 f"{r['publish_seconds']:.1f} s), RabbitMQ CPU {r['rabbit_cpu_s']:.1f} s "
                 f"({1e6 * r['rabbit_cpu_s'] / r['messages']:.0f} µs/message), client (lapin) CPU "
                 f"{r['client_cpu_s']:.1f} s ({1e6 * r['client_cpu_s'] / r['messages']:.0f} µs/message), machine busy "
                 f"{r['machine_busy_s']:.1f} of {r['machine_total_s']:.1f} CPU s.")
        L.append("")
    return "\n".join(L)


def write_results(path: Path, body: str):
    text = path.read_text() if path.exists() else f"# Fleet pipeline-overhead benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")


def parse_config(s: str) -> dict:
    """`default` or CONCURRENCYxPARTITIONS[xPIECE_BYTES], optionally followed by
    `@shm` to put the file:// store on tmpfs (/dev/shm) instead of the disk."""
    spec, _, where = s.partition("@")
    if where not in ("", "shm"):
        raise ValueError(f"unknown store location {where!r} in {s!r} (only @shm)")
    cfg = {"name": s, "shm": where == "shm"}
    if spec == "default":
        return cfg
    parts = spec.split("x")
    cfg.update({"concurrency": int(parts[0]), "partitions": int(parts[1])})
    if len(parts) > 2:
        cfg["piece_bytes"] = int(parts[2])
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--bins", required=True, type=Path, help="target/release")
    ap.add_argument("--relay", required=True, type=Path, help="the amqp_relay example binary")
    ap.add_argument("--configs", default="default,100x16,200x64")
    ap.add_argument("--relay-inflight", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs per fleet config (round-robin); the best is reported")
    ap.add_argument("--repeat-relay", type=int, default=3,
                    help="runs per relay shape; the best is reported")
    ap.add_argument("--relay-hops", default="1,5")
    ap.add_argument("--body-bytes", type=int, default=400)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--perf", default="",
                    help="configs to run once more under perf record -a -g (not compared)")
    ap.add_argument("--shared-rabbitmq", action="store_true",
                    help="use the broker at 127.0.0.1:5672 instead of a private node")
    ap.add_argument("--shared-redis", action="store_true",
                    help="use the Redis at 127.0.0.1:6379 instead of a private one")
    ap.add_argument("--check-outputs", action="store_true", help="engage report after each run")
    ap.add_argument("--keep", action="store_true", help="keep stores and logs")
    ap.add_argument("--redis-monitor", action="store_true",
                    help="record Redis MONITOR during fleet runs to count client round trips "
                         "(slows Redis: use on a separate run)")
    ap.add_argument("--results", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--command", default=" ".join(sys.argv))
    a = ap.parse_args()

    manifest = json.loads((a.data / "manifest.json").read_text())
    workdir = Path(tempfile.mkdtemp(prefix="engage-pipeline-bench-"))
    redis = rabbit = None
    if a.shared_rabbitmq:
        broker = SharedRabbit()
    else:
        print("starting a private RabbitMQ node ...", file=sys.stderr, flush=True)
        broker = rabbit = PrivateRabbit(workdir)
    if a.shared_redis:
        redis_port, redis_pid = 6379, shared_redis_pid(6379)
    else:
        redis = PrivateRedis(workdir)
        redis_port, redis_pid = redis.port, redis.pid
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "host": socket.gethostname(),
        "cores": os.cpu_count(),
        "load": open("/proc/loadavg").read().split()[0],
        "data": str(a.data),
        "records": manifest.get("records", 0),
        "learners": manifest.get("learners", 0),
        "command": a.command,
    }
    fleet, relays, profiled = [], [], []
    try:
        configs = [parse_config(c.strip()) for c in a.configs.split(",")]
        runs: dict[str, list] = {}
        # Repetitions go round-robin over the configs, so a burst of load from
        # another tenant of the machine does not hit every run of one config.
        for rep in range(a.repeat):
            for cfg in configs:
                print(f"fleet {cfg['name']} (run {rep + 1}/{a.repeat}) ...", file=sys.stderr, flush=True)
                f = run_fleet(cfg, a, a.bins, a.data, workdir, broker, redis_port, redis_pid, False)
                print(f"  {f['analyzed']:,} items in {f['wall_s']:.1f} s = "
                      f"{f['analyzed'] / f['wall_s']:,.0f} items/s, "
                      f"{f['messages'] / f['wall_s']:,.0f} messages/s", file=sys.stderr, flush=True)
                runs.setdefault(cfg["name"], []).append(f)
        for cfg in configs:
            rs = runs[cfg["name"]]
            best = max(rs, key=lambda f: f["analyzed"] / f["wall_s"])
            best["all_items_per_s"] = [f["analyzed"] / f["wall_s"] for f in rs]
            fleet.append(best)
        perf_configs = list(filter(None, a.perf.split(",")))
        if perf_configs and not shutil.which("perf"):
            print("perf not found: skipping the profiled runs", file=sys.stderr)
            perf_configs = []
        for c in perf_configs:
            cfg = parse_config(c.strip())
            print(f"profiled fleet {cfg['name']} (perf record -a -g; not in the comparison) ...",
                  file=sys.stderr, flush=True)
            profiled.append(run_fleet(cfg, a, a.bins, a.data, workdir, broker, redis_port,
                                      redis_pid, True))
        messages = max((f["messages"] for f in fleet), default=40_000)
        for h in a.relay_hops.split(","):
            print(f"relay hops={h} messages={messages} ...", file=sys.stderr, flush=True)
            reps = []
            for _ in range(a.repeat_relay):
                reps.append(run_relay(a.relay, broker, messages, int(h), a.relay_inflight,
                                      a.body_bytes))
                print(f"  {reps[-1]['msgs_per_s']:,.0f} messages/s", file=sys.stderr, flush=True)
            r = max(reps, key=lambda r: r["msgs_per_s"])
            r["all_msgs_per_s"] = [x["msgs_per_s"] for x in reps]
            relays.append(r)
    finally:
        if redis:
            redis.stop()
        if rabbit:
            rabbit.stop()
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(Path("/dev/shm") / workdir.name, ignore_errors=True)
    res = {"meta": meta, "fleet": fleet, "relays": relays, "profiled": profiled}
    body = render(res)
    print(body)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str))
    if a.results:
        write_results(a.results, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
