#!/usr/bin/env bash
# Validates everything under deploy/ and docker-compose.yml with the parsers
# available without Docker or a cluster (CI runs this):
#   1. promtool: Prometheus config, rules, and the rule unit tests;
#   2. YAML/JSON parsing of compose, Kubernetes, Grafana files, plus structural
#      checks (probes, grace periods, one KEDA ScaledObject per stage queue, …);
#   3. every engage_* metric named in rules, rule tests and the dashboard is
#      listed in deploy/metrics.txt (generated from the code), label values
#      included, and every rabbitmq_* one is a per-queue series of RabbitMQ's
#      /metrics/per-object endpoint with its labels;
#   4. generated files are up to date (k8s PrometheusRule, Grafana dashboard);
#   5. schemas, offline: docker-compose.yml against the compose-spec schema
#      (check-jsonschema's vendored copy), every Kubernetes manifest against
#      the Kubernetes OpenAPI schemas (kubernetes-validate, strict) and the
#      KEDA / Prometheus Operator objects against deploy/tools/schemas
#      (deploy/tools/check_k8s.py);
#   6. every alert's runbook_url points at a heading of docs/operations.md;
#   7. with a built `engage` (ENGAGE_BIN, default target/debug/engage), the
#      environment of every compose service and Kubernetes worker is accepted
#      by the configuration loader (deploy/tools/check_env.py).
# Needs promtool (Debian: `apt-get install prometheus`), python3 with PyYAML
# (installed with pip if missing) and the validators pinned in
# deploy/tools/requirements.txt (scripts/test --setup installs them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

step() { printf '\n== %s\n' "$*"; }

command -v promtool >/dev/null || {
    echo "promtool not found: apt-get install prometheus (or download promtool)" >&2
    exit 1
}
if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "note: PyYAML missing, installing it with pip" >&2
    python3 -m pip install --quiet pyyaml 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages pyyaml
fi

if ! python3 -c 'import check_jsonschema, kubernetes_validate' 2>/dev/null; then
    echo "check-jsonschema / kubernetes-validate missing: scripts/test --setup" \
        "(or pip install -r deploy/tools/requirements.txt)" >&2
    exit 1
fi

step "promtool check config"
promtool check config deploy/prometheus/prometheus.yml
step "promtool check rules"
promtool check rules deploy/prometheus/rules.yml
step "promtool test rules"
promtool test rules deploy/prometheus/rules_test.yml

step "parse and check compose, Kubernetes, Grafana files; metric names"
python3 - <<'PY'
import glob
import json
import re
import sys

import yaml

errors = []


def fail(msg):
    errors.append(msg)


STAGES = ["clean", "match", "download", "analyze", "aggregate"]

# ---- docker-compose.yml ------------------------------------------------------
compose = yaml.safe_load(open("docker-compose.yml"))
services = compose.get("services", {})
for svc in ["rabbitmq", "redis", "minio", "prometheus", *STAGES]:
    if svc not in services:
        fail(f"docker-compose.yml: service {svc!r} missing")
# A supported RabbitMQ series (4.x) with the management plugin.
if not re.fullmatch(r"rabbitmq:4\.\d+-management", str(services.get("rabbitmq", {}).get("image", ""))):
    fail("docker-compose.yml: rabbitmq must be a rabbitmq:4.x-management image")
rabbit_mounts = services.get("rabbitmq", {}).get("volumes", [])
for mount in ["./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/20-engage.conf:ro",
              "./deploy/rabbitmq/enabled_plugins:/etc/rabbitmq/enabled_plugins:ro"]:
    if mount not in rabbit_mounts:
        fail(f"docker-compose.yml: rabbitmq must mount {mount}")
# Every published port on loopback only.
for svc, spec in services.items():
    for port in spec.get("ports", []):
        if not str(port).startswith("127.0.0.1:"):
            fail(f"docker-compose.yml: {svc} publishes {port!r} on every interface (bind it to 127.0.0.1)")
# No default passwords: every variable is required (`${VAR:?…}`) and written
# by deploy/compose-env.sh, except these optional, non-secret ones.
OPTIONAL_VARS = {"ENGAGE_ANALYZER", "GEMINI_API_KEY"}
compose_text = open("docker-compose.yml").read()
env_script = open("deploy/compose-env.sh").read()
generated = set(re.findall(r"^put (\w+) ", env_script, re.M))
for m in re.finditer(r"(?<!\$)\$\{(\w+)(:?[-?])?([^}]*)\}", compose_text):
    var, op = m.group(1), m.group(2)
    if var in OPTIONAL_VARS:
        continue
    if op != ":?":
        fail(f"docker-compose.yml: ${{{var}}} must be required (${{{var}:?…}}), not defaulted")
    if var not in generated:
        fail(f"docker-compose.yml: {var} is required but deploy/compose-env.sh does not write it")
# The documented data path: ./data at /data, writable by the cli only, inputs
# under /data/in allowed, and an mc service to copy audio into MinIO.
if "./data:/data" not in services.get("cli", {}).get("volumes", []):
    fail("docker-compose.yml: cli must mount ./data at /data (read-write)")
for stage in STAGES:
    if "./data:/data:ro" not in services.get(stage, {}).get("volumes", []):
        fail(f"docker-compose.yml: {stage} must mount ./data at /data read-only")
prefixes = str(services.get("clean", {}).get("environment", {}).get("ENGAGE_INPUT_PREFIXES", "")).split(",")
if "file:///data/in" not in prefixes:
    fail("docker-compose.yml: ENGAGE_INPUT_PREFIXES must allow file:///data/in")
if "./data:/data:ro" not in services.get("mc", {}).get("volumes", []):
    fail("docker-compose.yml: an mc service must mount ./data to copy audio into MinIO")
for stage in STAGES:
    s = services.get(stage, {})
    if s.get("command") != [f"engage-{stage}"]:
        fail(f"docker-compose.yml: {stage} must run engage-{stage}")
    if "healthcheck" not in s:
        fail(f"docker-compose.yml: {stage} has no healthcheck")
    env = s.get("environment", {})
    for var in ["ENGAGE_AMQP_URL", "ENGAGE_REDIS_URL", "ENGAGE_STORE", "ENGAGE_NAMESPACE"]:
        if var not in env:
            fail(f"docker-compose.yml: {stage} lacks {var}")
if services.get("analyze", {}).get("deploy", {}).get("replicas") != 2:
    fail("docker-compose.yml: analyze must run 2 replicas")
for svc, spec in services.items():
    if "image" not in spec and "build" not in spec:
        fail(f"docker-compose.yml: {svc} has neither image nor build")

# ---- Kubernetes --------------------------------------------------------------
docs = []
for path in sorted(glob.glob("deploy/k8s/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if doc is None:
            continue
        required = ["apiVersion", "kind"] + ([] if doc.get("kind") == "Kustomization" else ["metadata"])
        for key in required:
            if key not in doc:
                fail(f"{path}: a document lacks {key}")
        docs.append((path, doc))
by_kind = {}
for path, doc in docs:
    by_kind.setdefault(doc.get("kind"), []).append(doc)

config = next((d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"] == "engage-config"), None)
if config is None:
    fail("k8s: ConfigMap engage-config missing")
    ns, drain = "engage", 30
else:
    ns = config["data"].get("ENGAGE_NAMESPACE", "engage")
    drain = int(config["data"].get("ENGAGE_DRAIN_TIMEOUT_S", "30"))

deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
# Every stage talks to broker and Redis, and reads or writes the store with
# its own S3 keys (engage-s3-STAGE); only analyze holds the Gemini key.
STAGE_SECRETS = ["engage-connections"]
WORKER_SECRETS = STAGE_SECRETS + ["engage-gemini"] + [f"engage-s3-{s}" for s in STAGES]
for stage in STAGES:
    name = f"engage-{stage}"
    dep = deployments.get(name)
    if dep is None:
        fail(f"k8s: Deployment {name} missing")
        continue
    pod = dep["spec"]["template"]["spec"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < drain:
        fail(f"k8s: {name} terminationGracePeriodSeconds {grace} < drain timeout {drain}")
    (c,) = pod["containers"]
    if f"engage-{stage}" not in c.get("command", []):
        fail(f"k8s: {name} does not run engage-{stage}")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        fail(f"k8s: {name} readiness probe must GET /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        fail(f"k8s: {name} liveness probe must GET /healthz")
    res = c.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        fail(f"k8s: {name} needs resource requests and limits")
    if "replicas" in dep["spec"]:
        fail(f"k8s: {name} sets replicas, which KEDA owns")
    # Services named engage-* would inject ENGAGE_*_SERVICE_* variables, which
    # the config loader refuses.
    if pod.get("enableServiceLinks") is not False:
        fail(f"k8s: {name} must set enableServiceLinks: false")
    # Each stage gets exactly the Secrets it reads.
    secrets = sorted(e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e)
    want = sorted(STAGE_SECRETS + [f"engage-s3-{stage}"] + (["engage-gemini"] if stage == "analyze" else []))
    if secrets != want:
        fail(f"k8s: {name} mounts Secrets {secrets}, expected {want}")

scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind.get("ScaledObject", [])}
for stage in STAGES:
    so = scaled.get(f"engage-{stage}")
    if so is None:
        fail(f"k8s: ScaledObject for engage-{stage} missing")
        continue
    queues = [t["metadata"].get("queueName") for t in so["spec"]["triggers"] if t["type"] == "rabbitmq"]
    if queues != [f"{ns}.{stage}"]:
        fail(f"k8s: ScaledObject engage-{stage} must scale on queue {ns}.{stage}, has {queues}")

if not (by_kind.get("PodMonitor") or by_kind.get("ServiceMonitor")):
    fail("k8s: no PodMonitor/ServiceMonitor")
# The queue rules and panels read RabbitMQ's per-object series.
endpoints = [e for m in by_kind.get("PodMonitor", []) for e in m["spec"].get("podMetricsEndpoints", [])]
endpoints += [e for m in by_kind.get("ServiceMonitor", []) for e in m["spec"].get("endpoints", [])]
if not any(e.get("path") == "/metrics/per-object" for e in endpoints):
    fail("k8s: no monitor scrapes RabbitMQ's /metrics/per-object (queue alerts and panels need it)")
# KEDA reads the broker with its own Secret, which no worker mounts.
for ta in by_kind.get("TriggerAuthentication", []):
    for ref in ta["spec"].get("secretTargetRef", []):
        if ref["name"] in WORKER_SECRETS:
            fail(f"k8s: TriggerAuthentication {ta['metadata']['name']} reads worker Secret {ref['name']}")

# ---- Grafana -----------------------------------------------------------------
dashboard = json.load(open("deploy/grafana/engage-fleet.json"))
for p in dashboard.get("panels", []):
    if p.get("type") != "row" and not p.get("targets"):
        fail(f"dashboard: panel {p.get('title')!r} has no query")
for path in glob.glob("deploy/grafana/provisioning/**/*.yml", recursive=True):
    yaml.safe_load(open(path))

# ---- metric names and labels (deploy/metrics.txt: the generated contract) ----
# Each line: NAME TYPE [LABEL=V1|V2|... ...]; `*` = values also from data.
known = {}
for line in open("deploy/metrics.txt"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _type, *labels = line.split()
    known[name] = {k: set(v.split("|")) for k, v in (l.split("=", 1) for l in labels)}

# Labels every series has once scraped, and histogram bucket labels.
SCRAPE_LABELS = {"instance", "job", "le", "namespace", "pod", "container", "service"}

ident = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
selector = re.compile(r"(engage_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
matcher = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")


def engage_metrics(text):
    """engage_* identifiers, ignoring recording-rule names (they contain ':')."""
    for tok in ident.findall(text):
        if tok.startswith("engage_") and ":" not in tok:
            yield tok


def base(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name


sources = {
    "deploy/prometheus/rules.yml": open("deploy/prometheus/rules.yml").read(),
    "deploy/prometheus/rules_test.yml": open("deploy/prometheus/rules_test.yml").read(),
    "deploy/grafana/engage-fleet.json": "\n".join(
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
    ),
}
used = set()
for path, text in sources.items():
    for name in engage_metrics(text):
        used.add(base(name))
        if base(name) not in known:
            fail(f"{path}: metric {name} is not exported (deploy/metrics.txt)")
    # Every label matcher names a label the family has, and an exact value
    # one the code can emit (regex values: each alternative that is a plain word).
    for m in selector.finditer(text.replace("{{", "{").replace("}}", "}")):
        name, body = base(m.group(1)), m.group(2)
        labels = known.get(name)
        if labels is None:
            continue
        for label, op, value in matcher.findall(body):
            if label in SCRAPE_LABELS:
                continue
            if label not in labels:
                fail(f"{path}: {name} has no label {label!r}")
                continue
            allowed = labels[label]
            if "*" in allowed or value.startswith("$"):
                continue
            words = [value] if op in ("=", "!=") else value.split("|")
            for w in words:
                if re.fullmatch(r"[A-Za-z0-9_:]+", w) and w not in allowed:
                    fail(f"{path}: {name}{{{label}{op}\"{value}\"}}: {w!r} is never emitted "
                         f"(values: {'|'.join(sorted(allowed))})")
# RabbitMQ's series: the queue families of the rabbitmq_prometheus plugin's
# /metrics/per-object endpoint (prefix rabbitmq_, labels vhost and queue;
# prometheus_rabbitmq_core_metrics_collector.erl, queue_coarse_metrics,
# queue_consumer_count and queue_metrics). /metrics aggregates the queue
# label away and /metrics/detailed prefixes rabbitmq_detailed_, so any other
# name or label would leave a rule or panel empty.
RABBITMQ_PER_OBJECT = {
    "rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queue_messages",
    "rabbitmq_queue_consumers", "rabbitmq_queue_consumer_capacity", "rabbitmq_queue_consumer_utilisation",
    "rabbitmq_queue_messages_bytes", "rabbitmq_queue_messages_ready_bytes",
    "rabbitmq_queue_messages_unacked_bytes", "rabbitmq_queue_head_message_timestamp",
    "rabbitmq_queue_process_memory_bytes",
}
rabbit_selector = re.compile(r"(rabbitmq_[A-Za-z0-9_]+)\s*(?:\{([^}]*)\})?")
for path, text in sources.items():
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    for m in rabbit_selector.finditer(code.replace("{{", "{").replace("}}", "}")):
        name, body = m.group(1), m.group(2) or ""
        if name not in RABBITMQ_PER_OBJECT:
            fail(f"{path}: {name} is not a per-queue series of RabbitMQ's /metrics/per-object")
        for label, _op, _value in matcher.findall(body):
            if label not in {"vhost", "queue"} | SCRAPE_LABELS:
                fail(f"{path}: {name} has no label {label!r} (per-object queue series: vhost, queue)")
unused = sorted(set(known) - used)
if unused:
    print("note: metrics in metrics.txt not used by rules or dashboard:", ", ".join(unused))

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"ok: compose, {len(docs)} Kubernetes objects, dashboard, {len(used)} metric names")
PY

step "generated files are up to date"
python3 deploy/tools/sync_k8s_rules.py --check
python3 deploy/tools/gen_dashboard.py | diff -q - deploy/grafana/engage-fleet.json >/dev/null || {
    echo "deploy/grafana/engage-fleet.json is out of date:" \
        "python3 deploy/tools/gen_dashboard.py > deploy/grafana/engage-fleet.json" >&2
    exit 1
}
echo "ok"

step "runbooks: every alert has a runbook_url into docs/operations.md, and it exists"
python3 - <<'PY'
import re
import sys

import yaml

DOC = "docs/operations.md"


def slug(heading):
    """The anchor GitHub renders for a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


anchors = set()
seen = {}
for line in open(DOC):
    m = re.match(r"#{1,6}\s+(.*)", line)
    if m:
        a = slug(re.sub(r"`", "", m.group(1)))
        n = seen.get(a, 0)
        seen[a] = n + 1
        anchors.add(a if n == 0 else f"{a}-{n}")

errors = []
sources = {
    "deploy/prometheus/rules.yml": yaml.safe_load(open("deploy/prometheus/rules.yml"))["groups"],
    "deploy/k8s/prometheus-rule.yaml": yaml.safe_load(open("deploy/k8s/prometheus-rule.yaml"))["spec"]["groups"],
}
alerts = 0
for path, groups in sources.items():
    for g in groups:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            alerts += 1
            url = (r.get("annotations") or {}).get("runbook_url", "")
            m = re.fullmatch(re.escape(DOC) + r"#([\w-]+)", url)
            if not m:
                errors.append(f"{path}: {r['alert']}: runbook_url {url!r} is not {DOC}#<anchor>")
            elif m.group(1) not in anchors:
                errors.append(f"{path}: {r['alert']}: {url} names no heading of {DOC}")
# The guide's own links between sections must land too.
for a in re.findall(r"\]\(#([\w-]+)\)", open(DOC).read()):
    if a not in anchors:
        errors.append(f"{DOC}: link to #{a}, which is no heading")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"ok: {alerts} alerts (rules.yml and PrometheusRule) link to existing runbooks")
PY

step "schemas: compose-spec, Kubernetes (strict), KEDA and Prometheus Operator CRDs"
python3 -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
python3 deploy/tools/check_k8s.py

step "environments: the config loader accepts what compose and Kubernetes set"
engage_bin="${ENGAGE_BIN:-target/debug/engage}"
if [[ -x "$engage_bin" ]]; then
    python3 deploy/tools/check_env.py "$engage_bin"
else
    echo "skipped: no $engage_bin (scripts/test runs this check after building)"
fi

printf '\nall deploy checks passed\n'
