#!/usr/bin/env python3
"""Chaos run: one batch through the shipped fleet (several replicas per stage)
while faults are injected, checked against `engage run`'s outputs.

Loopback only, on a private RabbitMQ node and a private Redis (so restarting
them disturbs nobody). Steps:

1. `engage gen-data` (synthetic speech) and `engage run` on it: the reference.
2. A fault-free fleet run of the same batch: the reference wall time.
3. The chaos run: every `--fault-every` seconds, for `--faults-for` seconds or
   until the batch completes, one fault picked at random from `--kinds`:
   `kill` (SIGKILL a random worker, start a new one), `redis` (restart Redis
   empty), `drop` (the broker closes every connection), `broker`
   (`rabbitmqctl stop_app`, 2 s, `start_app`). Then it waits for the batch.
   With `--soak`, a batch that completes is followed by the next one until
   the fault period is over, so faults keep hitting work for all of it.
4. Checks: every batch ends (the last within `--timeout`); its outputs equal the
   reference byte for byte; no work queue holds a message; every dead letter
   carries its reason. Prints a table and exits 1 if a check fails.

With `--analyzer gemini` the analyze workers call the Gemini-wire fake
(`fake-gemini`, 1-3 s per call, occasional 503s and 429s); the reference is
then the fault-free run's outputs, and the table adds the fake's count of
calls per distinct audio (more than one is a paid call repeated, possible
only for an answer lost with a killed worker).

With `--gzip` the log is sent gzip-compressed and the clean pieces are small
(`--gzip-segment-bytes`), so the clean pre-pass cuts it into segments (and is
killed, restarted and resumed from its checkpoint) while the faults go on.

With `--cluster` the fleet runs on a 3-node RabbitMQ cluster (the fleet is
given the three node URLs, comma-separated) and a 6-node Redis Cluster (3
primaries, 3 replicas), all on loopback, and the fault kinds are `kill`,
`drop`, `node` (one RabbitMQ node's `stop_app` for `--node-down-s` seconds,
then `start_app`) and `primary` (SIGKILL one Redis primary; its replica takes
over; the killed node is restarted empty and rejoins as a replica).

    chaos.py --bins target/release --work DIR [--learners 300] [--responses 8]
             [--replicas 2] [--fault-every 1] [--faults-for 60] [--timeout 600]
             [--kinds kill,redis,drop,broker] [--seed 1] [--analyzer acoustic|gemini] [--soak]
             [--delivery-limit 5] [--cluster [--node-down-s 10]] [--gzip]
             [--results FILE]
"""
from __future__ import annotations

import argparse
import filecmp
import gzip
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "pipeline"))
from fleet_bench import PrivateRabbit, fleet_env, free_port, wait_for  # noqa: E402

STAGES = ["clean", "match", "download", "analyze", "aggregate"]
# The outputs compared byte for byte (summary.* also carries run costs such
# as cache hits, which differ between runs by design).
COMPARED = ["matched.csv", "analysis.csv", "report.csv", "report.json"]


class Redis:
    """A redis-server on a fixed loopback port, restartable empty."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.dir = work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("redis", 10, lambda: subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
            text=True).stdout.strip() == "PONG")

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def restart_empty(self):
        self.stop()
        self.start()


class RabbitCluster:
    """Three private RabbitMQ nodes joined into one cluster. Quorum queues
    get members on all three, so one node can stop without losing a
    confirmed message; the fleet is given every node's URL."""

    def __init__(self, work: Path):
        cookie = uuid.uuid4().hex.upper()
        self.nodes: list[PrivateRabbit] = []
        try:
            for i in range(3):
                self.nodes.append(PrivateRabbit(work / f"rmq{i}", cookie=cookie))
            self._join()
        except BaseException:
            self.stop()
            raise

    def _join(self):
        first = self.nodes[0]
        for n in self.nodes[1:]:
            for args in (["stop_app"], ["join_cluster", first.node], ["start_app"]):
                r = ctl(n, *args)
                if r.returncode != 0:
                    raise RuntimeError(f"rabbitmqctl {args} on {n.node}: {r.stderr[-500:]}")
        wait_for("a 3-node RabbitMQ cluster", 60, lambda: ctl(
            first, "cluster_status").stdout.count("@localhost") >= 6)
        self.url = ",".join(n.url for n in self.nodes)
        # queues(), rabbitmqctl() and the final checks use the first node.
        self.node, self.env, self.port = first.node, first.env, first.port

    def stop_one(self, rng: random.Random, down_s: float) -> str:
        """Stops one node's app for `down_s` seconds, then starts it again."""
        n = rng.choice(self.nodes)
        ctl(n, "stop_app")
        time.sleep(down_s)
        ctl(n, "start_app")
        ctl(n, "await_startup")
        return n.node

    def close_all_connections(self, why: str):
        for n in self.nodes:
            ctl(n, "close_all_connections", why)

    def stop(self):
        for n in reversed(self.nodes):
            n.stop()


class RedisCluster:
    """A 6-node Redis Cluster on loopback (3 primaries with a replica each),
    failover after 5 s (`cluster-node-timeout`), no persistence."""

    def __init__(self, work: Path):
        self.cluster = True
        self.procs: dict[int, subprocess.Popen] = {}
        self.dirs: dict[int, Path] = {}
        try:
            self._create(work)
        except BaseException:
            self.stop()
            raise

    def _create(self, work: Path):
        for _ in range(6):
            port = cluster_port(set(self.procs))
            self.dirs[port] = work / f"redis-{port}"
            self.dirs[port].mkdir(parents=True, exist_ok=True)
            self.start(port)
        ports = list(self.procs)
        r = subprocess.run(["redis-cli", "--cluster", "create",
                            *(f"127.0.0.1:{p}" for p in ports),
                            "--cluster-replicas", "1", "--cluster-yes"],
                           capture_output=True, text=True, timeout=60)
        if "All 16384 slots covered" not in r.stdout:
            raise RuntimeError(f"redis-cli --cluster create: {r.stdout[-800:]} {r.stderr[-400:]}")
        self.wait_ok()
        self.url = ",".join(f"redis://127.0.0.1:{p}" for p in ports)

    def start(self, port: int):
        d = self.dirs[port]
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", str(d), "--cluster-enabled", "yes",
             "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "5000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"redis {port}", 10, lambda: self.cli(port, "ping") == "PONG")

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, timeout: float = 60):
        wait_for("the Redis Cluster to be ok", timeout, lambda: all(
            "cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.alive()))

    def primaries(self) -> list[int]:
        lines = self.cli(self.alive()[0], "cluster", "nodes").splitlines()
        return [int(ln.split()[1].split("@")[0].rsplit(":", 1)[1]) for ln in lines
                if " master " in f" {ln.split()[2].replace(',', ' ')} "
                and "fail" not in ln.split()[2]]

    def kill_primary(self, rng: random.Random) -> int:
        """SIGKILLs one primary that has an in-sync replica, waits for the
        replica to take over, and restarts the killed node empty; it rejoins
        as a replica, and the next kill waits until it is in sync."""
        synced = [p for p in self.primaries()
                  if "state=online" in self.cli(p, "info", "replication")]
        if not synced:
            raise RuntimeError("no Redis primary has an in-sync replica")
        port = rng.choice(synced)
        self.procs[port].kill()
        self.procs[port].wait()
        wait_for("a replica to take over", 120,
                 lambda: port not in self.primaries() and len(self.primaries()) == 3)
        self.wait_ok()
        self.start(port)
        wait_for("the restarted node to sync as a replica", 120,
                 lambda: "master_link_status:up" in self.cli(port, "info", "replication"))
        return port

    def stop(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


def cluster_port(taken: set[int]) -> int:
    """A free port for a Redis Cluster node: at most 55535 (its cluster bus
    listens 10000 higher) with the bus port free too."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 45000)
        if port in taken or port + 10000 in taken:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


def ctl(node: PrivateRabbit, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("rabbitmqctl", path="/usr/lib/rabbitmq/bin") or "rabbitmqctl"
    return subprocess.run([exe, "-n", node.node, *args], env=node.env, capture_output=True,
                          text=True, timeout=120)


class FakeGemini:
    """The Gemini-wire fake as a process: slow answers, a few faults."""

    def __init__(self, bins: Path, log: Path):
        self.proc = subprocess.Popen(
            [str(bins / "fake-gemini"), "--latency-ms", "1000", "--latency-max-ms", "3000",
             "--p503", "0.02", "--p429", "0.01", "--seed", "3"],
            stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)  # noqa: SIM115
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"fake-gemini did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].strip()

    def stop(self) -> dict:
        """Stops the fake; its statistics (calls, calls per audio)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        for line in out.splitlines():
            if line.startswith("{"):
                return json.loads(line)
        return {}


class Fleet:
    def __init__(self, bins: Path, env: dict, logs: Path, replicas: int):
        self.bins, self.env, self.logs = bins, env, logs
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.n = 0
        for s in STAGES:
            for _ in range(replicas):
                self.start(s)

    def start(self, stage: str):
        self.n += 1
        log = open(self.logs / f"{stage}-{self.n}.log", "wb")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen([str(self.bins / f"engage-{stage}")], env=self.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append((stage, p))

    def kill_one(self, rng: random.Random) -> str:
        alive = [(s, p) for s, p in self.procs if p.poll() is None]
        stage, p = rng.choice(alive)
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.procs.remove((stage, p))
        self.start(stage)
        return stage

    def stop(self):
        for _, p in self.procs:
            p.terminate()
        for _, p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def engage(bins: Path, env: dict, *args: str, check: bool = True) -> str:
    r = subprocess.run([str(bins / "engage"), *args], env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"engage {' '.join(args)}: {r.stderr[-2000:]}")
    return r.stdout


def queues(rabbit: PrivateRabbit, ns: str) -> dict[str, int]:
    """Messages in each of the namespace's queues, read with a passive
    declare (exact, unlike the CLI's periodically updated statistics)."""
    import pika  # noqa: PLC0415 - installed by .ci/run

    ctl = shutil.which("rabbitmqctl", path="/usr/lib/rabbitmq/bin") or "rabbitmqctl"
    names = subprocess.run([ctl, "-n", rabbit.node, "-q", "list_queues", "name"],
                           env=rabbit.env, capture_output=True, text=True).stdout.split()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbit.port))
    found = {}
    try:
        for q in names:
            if q.startswith(ns + "."):
                ch = conn.channel()
                found[q] = ch.queue_declare(q, passive=True).method.message_count
                ch.close()
    finally:
        conn.close()
    return found


def rabbitmqctl(rabbit: PrivateRabbit, *args: str):
    ctl = shutil.which("rabbitmqctl", path="/usr/lib/rabbitmq/bin") or "rabbitmqctl"
    subprocess.run([ctl, "-n", rabbit.node, *args], env=rabbit.env, capture_output=True,
                   timeout=120)


def same_outputs(a: Path, b: Path) -> list[str]:
    """Names of files that differ or exist on one side only."""
    return [n for n in COMPARED
            if not ((a / n).is_file() and (b / n).is_file()
                    and filecmp.cmp(a / n, b / n, shallow=False))]


def final_state_problems(out: Path, reference: Path) -> list[str]:
    """Each item in exactly one final state: every analyzed or failed item of
    the reference appears once in analysis.csv, none twice, none extra, and
    none is final as dead-lettered (a dead letter is work the fleet lost)."""
    import csv  # noqa: PLC0415

    def rows(p: Path) -> list[dict]:
        with (p / "analysis.csv").open(newline="") as f:
            return list(csv.DictReader(f))

    got, want = rows(out), {r["response_id"] for r in rows(reference)}
    seen: dict[str, int] = {}
    for r in got:
        seen[r["response_id"]] = seen.get(r["response_id"], 0) + 1
    problems = []
    twice = sorted(k for k, n in seen.items() if n > 1)
    if twice:
        problems.append(f"{len(twice)} items with more than one final state (e.g. {twice[0]})")
    missing, extra = want - seen.keys(), seen.keys() - want
    if missing:
        problems.append(f"{len(missing)} items without a final state")
    if extra:
        problems.append(f"{len(extra)} final states of items the reference does not have")
    dead = [r["response_id"] for r in got if r.get("error", "").startswith("dead_lettered")]
    if dead:
        problems.append(f"{len(dead)} items final as dead-lettered")
    return problems


def activity_name(a) -> str:
    """The activity log a batch names: plain JSON Lines, or gzip (`--gzip`)."""
    return "activity.jsonl.gz" if a.gzip else "activity.jsonl"


def run_batch(a, data: Path, rabbit, redis, work: Path, faults: bool) -> dict:
    ns = f"chaos-{uuid.uuid4().hex[:8]}"
    d = work / ns
    (d / "logs").mkdir(parents=True)
    env = fleet_env(ns, d / "store", data)
    env.update({
        "ENGAGE_AMQP_URL": rabbit.url,
        "ENGAGE_REDIS_URL": redis.url if isinstance(redis, RedisCluster)
        else f"redis://127.0.0.1:{redis.port}",
        "ENGAGE_REDIS_CLUSTER": "true" if isinstance(redis, RedisCluster) else "false",
        "ENGAGE_RETRY_DELAYS_MS": "200,1000,3000",
        "ENGAGE_MAX_ATTEMPTS": "20",
        # SIGKILLs return every prefetched message: each kill is one delivery
        # of the limit for all of them (the product's default is 5).
        "ENGAGE_DELIVERY_LIMIT": str(a.delivery_limit),
        "ENGAGE_RECONCILE_EVERY_S": "2",
        "ENGAGE_RECONCILE_STALL_S": "15",
        "ENGAGE_DRAIN_TIMEOUT_S": "5",
    })
    if a.gzip:
        # Small segments: the clean pre-pass cuts the log into many pieces.
        env["ENGAGE_CLEAN_PIECE_BYTES"] = str(a.gzip_segment_bytes)
    fake = None
    if a.analyzer == "gemini":
        fake = FakeGemini(a.bins, d / "logs" / "fake-gemini.log")
        env.update({
            "ENGAGE_ANALYZER": "gemini",
            "GEMINI_API_KEY": "fake-gemini-key",
            "ENGAGE_GEMINI__BASE_URL": fake.url,
            "ENGAGE_GEMINI__MODEL": "gemini-2.5-flash",
            "ENGAGE_GEMINI_RPM": "100000",
            "ENGAGE_GEMINI_TPM": "1000000000",
            "ENGAGE_GEMINI_RPD": "10000000",
        })
    fleet = Fleet(a.bins, env, d / "logs", a.replicas)
    rng = random.Random(a.seed)
    done = {"kill": 0, "redis": 0, "drop": 0, "broker": 0, "node": 0, "primary": 0}
    try:
        time.sleep(2)
        t0 = time.monotonic()
        def enqueue() -> str:
            return engage(a.bins, env, "enqueue", "--activity", str(data / activity_name(a)),
                          "--sessions", str(data / "sessions.csv")).strip()

        batch = enqueue()
        finished: list[str] = []
        end_faults = t0 + a.faults_for
        kinds = a.kinds.split(",")
        while faults and time.monotonic() < end_faults:
            time.sleep(a.fault_every)
            if engage(a.bins, env, "status", batch, check=False).strip().endswith(" complete"):
                if not a.soak:
                    break
                # Soak: the next batch, so that faults keep hitting work.
                finished.append(batch)
                batch = enqueue()
            kind = rng.choice(kinds)
            if kind == "kill":
                fleet.kill_one(rng)
            elif kind == "redis":
                redis.restart_empty()
            elif kind == "drop" and isinstance(rabbit, RabbitCluster):
                rabbit.close_all_connections("chaos: dropped")
            elif kind == "drop":
                rabbitmqctl(rabbit, "close_all_connections", "chaos: dropped")
            elif kind == "node":
                rabbit.stop_one(rng, a.node_down_s)
            elif kind == "primary":
                redis.kill_primary(rng)
            elif kind == "broker":
                rabbitmqctl(rabbit, "stop_app")
                time.sleep(2)
                rabbitmqctl(rabbit, "start_app")
            done[kind] += 1
        st = subprocess.run([str(a.bins / "engage"), "status", batch, "--wait", "--timeout",
                             str(int(a.timeout))], env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        ended = st.returncode == 0 and st.stdout.strip().endswith("complete")
        out = d / "out"
        if ended:
            engage(a.bins, env, "report", batch, "--out", str(out))
        earlier = []
        for i, b in enumerate(finished):
            o = d / f"out-{i}"
            engage(a.bins, env, "report", b, "--out", str(o))
            earlier.append(o)
        q = queues(rabbit, ns)
        work_left = {k: v for k, v in q.items() if not (k.endswith(".dlq") or ".retry." in k) and v}
        dead = {k: v for k, v in q.items() if k.endswith(".dlq") and v}
        last = [line for line in st.stdout.splitlines() if "failed:" in line or "repaired:" in line]
        gemini = fake.stop() if fake else {}
        fake = None
        return {"namespace": ns, "batch": batch, "faults": done, "ended": ended, "gemini": gemini,
                "earlier": earlier,
                "wall_s": round(wall, 1), "out": out if ended else None,
                "work_left": work_left, "dead_letters": dead,
                "status": last[-1] if last else st.stdout.strip()[-300:]}
    finally:
        fleet.stop()
        if fake:
            fake.stop()


def gemini_cell(g: dict) -> str:
    if not g:
        return "–"
    return (f"{g['generate_calls']} calls, {g['successes']} answers for {g['distinct_audio']} "
            f"audio; most answers per audio {g.get('max_successes_per_audio', '?')}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bins", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--learners", type=int, default=300)
    ap.add_argument("--responses", type=int, default=8)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--fault-every", type=float, default=1.0)
    ap.add_argument("--faults-for", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--kinds", default="kill,redis,drop,broker")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--analyzer", choices=["acoustic", "gemini"], default="acoustic")
    ap.add_argument("--delivery-limit", type=int, default=5,
                    help="ENGAGE_DELIVERY_LIMIT of the fleet (the product's default: 5)")
    ap.add_argument("--soak", action="store_true",
                    help="keep enqueueing batches until the fault period is over")
    ap.add_argument("--cluster", action="store_true",
                    help="3-node RabbitMQ cluster and 6-node Redis Cluster; kinds kill,drop,node,primary")
    ap.add_argument("--node-down-s", type=float, default=10.0,
                    help="how long a `node` fault keeps a RabbitMQ node stopped")
    ap.add_argument("--gzip", action="store_true",
                    help="send the log gzip-compressed: the clean pre-pass cuts it into "
                         "segments (of --gzip-segment-bytes) while faults hit it")
    ap.add_argument("--gzip-segment-bytes", type=int, default=16384)
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    if a.cluster and a.kinds == ap.get_default("kinds"):
        a.kinds = "kill,drop,node,primary"
    bad = {"redis", "broker"} & set(a.kinds.split(",")) if a.cluster else \
        {"node", "primary"} & set(a.kinds.split(","))
    if bad:
        ap.error(f"kinds {sorted(bad)} need {'no ' if a.cluster else ''}--cluster")
    a.bins, a.work = a.bins.resolve(), a.work.resolve()
    a.work.mkdir(parents=True, exist_ok=True)
    data = a.work / f"data-{a.learners}-{a.responses}"
    if not (data / "activity.jsonl").exists():
        engage(a.bins, dict(os.environ), "gen-data", "--learners", str(a.learners), "--responses",
               str(a.responses), "--seed", "5", "--out", str(data))
    if a.gzip and not (data / activity_name(a)).exists():
        (data / activity_name(a)).write_bytes(gzip.compress((data / "activity.jsonl").read_bytes()))
    reference = a.work / f"reference-{a.learners}-{a.responses}{'-gz' if a.gzip else ''}"
    if not (reference / "summary.json").exists():
        engage(a.bins, dict(os.environ), "run", "--activity", str(data / activity_name(a)),
               "--sessions", str(data / "sessions.csv"), "--s3-root", str(data / "s3"),
               "--audio-buckets", "learner-audio", "--out", str(reference))
    items = json.loads((reference / "summary.json").read_text())
    if a.cluster:
        rabbit = RabbitCluster(a.work / f"cluster-{uuid.uuid4().hex[:6]}")
        try:
            redis = RedisCluster(a.work / f"rcluster-{uuid.uuid4().hex[:6]}")
        except BaseException:
            rabbit.stop()
            raise
    else:
        rabbit = PrivateRabbit(a.work / f"node-{uuid.uuid4().hex[:6]}")
        redis = Redis(a.work / f"redis-{uuid.uuid4().hex[:6]}")
    try:
        calm = run_batch(a, data, rabbit, redis, a.work, faults=False)
        storm = run_batch(a, data, rabbit, redis, a.work, faults=True)
    finally:
        redis.stop()
        rabbit.stop()
    if a.analyzer == "gemini":
        # engage run analyzes acoustically: the fault-free fleet run is the reference.
        reference = calm["out"] if calm["ended"] else reference
    problems = []
    for name, r in (("fault-free", calm), ("chaos", storm)):
        if not r["ended"]:
            problems.append(f"{name}: the batch did not end within {a.timeout:.0f} s ({r['status']})")
            continue
        for out in [*r["earlier"], r["out"]]:
            diff = same_outputs(reference, out)
            if diff:
                problems.append(f"{name}: {out.name} differs from the reference: {diff}")
            problems += [f"{name}: {out.name}: {p}" for p in final_state_problems(out, reference)]
        if r["work_left"]:
            problems.append(f"{name}: work queues still hold messages: {r['work_left']}")
    rows = [
        "| run | batches | faults | ended | outputs = reference | work left in queues | dead letters "
        "| Gemini | wall (s) |",
        "|---|---:|---|---|---|---|---|---|---:|",
    ]
    for name, r in (("fault-free", calm), ("chaos", storm)):
        faults = ", ".join(f"{k} {v}" for k, v in r["faults"].items() if v) or "none"
        same = "yes" if r["ended"] and not any(
            same_outputs(reference, o) for o in [*r["earlier"], r["out"]]) else "no"
        rows.append(f"| {name} | {len(r['earlier']) + 1} | {faults} | {'yes' if r['ended'] else 'NO'} | {same} | "
                    f"{sum(r['work_left'].values())} | {sum(r['dead_letters'].values())} | "
                    f"{gemini_cell(r['gemini'])} | {r['wall_s']} |")
    body = "\n".join([
        f"Batch: {a.learners} learners x {a.responses} responses "
        f"({items.get('activity', {}).get('kept', '?')} kept responses); "
        f"{a.replicas} replicas per stage; a fault every {a.fault_every:g} s for up to "
        f"{a.faults_for:g} s; kinds {a.kinds}; seed {a.seed}; delivery limit {a.delivery_limit}; "
        f"analyzer {a.analyzer}; "
        f"{'3-node RabbitMQ cluster + 6-node Redis Cluster' if a.cluster else 'one RabbitMQ node, one Redis'} "
        f"(reference: {'the fault-free run' if a.analyzer == 'gemini' else 'engage run'}).",
        "", *rows, "",
        f"Chaos status line: `{storm['status']}`", "",
        "Checks (outputs equal the reference byte for byte; every item in exactly one final "
        "state, none dead-lettered; no work left in any queue): "
        + ("all passed" if not problems else "; ".join(problems)), ""])
    print(body)
    if a.results:
        command = "bench/chaos/chaos.py " + " ".join(sys.argv[1:])
        a.results.write_text(f"# Chaos run (latest)\n\nCommand: `{command}`\n\n{body}")
        # (RESULTS.md keeps one section per analyzer; paste a run into its section.)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
