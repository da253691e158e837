#!/usr/bin/env python3
"""Generates deploy/grafana/engage-fleet.json (the fleet dashboard):

    python3 deploy/tools/gen_dashboard.py > deploy/grafana/engage-fleet.json

Edit the panels here rather than in the JSON; deploy/check.sh checks that the
committed JSON matches this script and only uses metric names from metrics.txt.
"""
import json
DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
pid = [0]
y = [0]

def row(title):
    pid[0] += 1
    panels.append({"type": "row", "id": pid[0], "title": title, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1

x = [0]
def panel(title, targets, unit="short", kind="timeseries", w=8, h=8, desc="", stack=False, thresholds=None):
    pid[0] += 1
    if x[0] + w > 24:
        x[0] = 0
        y[0] += h
    p = {
        "type": kind, "id": pid[0], "title": title, "description": desc, "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x[0], "y": y[0]},
        "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": e, "legendFormat": l, "range": True}
                    for i, (e, l) in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 0,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "showPoints": "never"}
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "value_and_name"}
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
    panels.append(p)
    x[0] += w
    if x[0] >= 24:
        x[0] = 0
        y[0] += h

def newrow(title):
    if x[0] != 0:
        x[0] = 0
        y[0] += 8
    row(title)

R = "$__rate_interval"
WORK = 'queue=~"$ns\\\\.(clean|match|download|analyze|aggregate)"'
DLQ = 'queue=~"$ns\\\\..+\\\\.dlq"'

newrow("Overview")
panel("Ready workers by stage", [('sum by (stage) (engage_ready{stage=~"$stage"})', "{{stage}}")], kind="stat", w=8, h=5,
      desc="Workers that report ready (engage_ready: broker connected, Redis answering, start-up checks done, not draining).",
      thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])
panel("Work queue depth", [(f"sum by (queue) (rabbitmq_queue_messages_ready{{{WORK}}})", "{{queue}}")], kind="stat", w=8, h=5,
      desc="Messages ready in each stage's work queue (RabbitMQ exporter).",
      thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1000}])
panel("Dead-letter queues", [(f"sum by (queue) (rabbitmq_queue_messages_ready{{{DLQ}}})", "{{queue}}")], kind="stat", w=6, h=5,
      desc="Messages waiting in dead-letter queues; inspect with `engage dlq`.",
      thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
panel("Jobs parked by a Gemini pause / s", [(f'sum(rate(engage_delays_total{{stage="analyze",reason="fleet_paused"}}[{R}]))', "parked")], kind="stat", w=2, h=5,
      desc="Above 0 while a Gemini 429 or the daily quota pauses the fleet (`engage status` says until when).",
      thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.001}])

newrow("Throughput")
panel("Completed jobs / s by stage", [(f'sum by (stage) (rate(engage_jobs_total{{stage=~"$stage",outcome=~"ok|duplicate"}}[{R}]))', "{{stage}}")], unit="ops")
panel("Job outcomes / s", [(f'sum by (stage, outcome) (rate(engage_jobs_total{{stage=~"$stage"}}[{R}]))', "{{stage}} {{outcome}}")], unit="ops", stack=True)
panel("Jobs in flight", [('sum by (stage) (engage_jobs_in_flight{stage=~"$stage"})', "{{stage}}")])
panel("Queue depth (ready)", [(f"sum by (queue) (rabbitmq_queue_messages_ready{{{WORK}}})", "{{queue}}")],
      desc="Ready messages per work queue; KEDA scales each stage on this.")
panel("Bytes read / written", [(f'sum by (stage) (rate(engage_bytes_read_total{{stage=~"$stage"}}[{R}]))', "read {{stage}}"),
                              (f'-sum by (stage) (rate(engage_bytes_written_total{{stage=~"$stage"}}[{R}]))', "written {{stage}}")], unit="Bps")
panel("Idempotent skips / s", [(f'sum by (stage) (rate(engage_idempotent_skips_total{{stage=~"$stage"}}[{R}]))', "{{stage}}")], unit="ops",
      desc="Redelivered jobs whose effect was already durable.")

newrow("Errors")
panel("Error ratio (retry + dead letter)", [(f'sum by (stage) (rate(engage_jobs_total{{stage=~"$stage",outcome=~"retry|dead_letter"}}[{R}])) / sum by (stage) (rate(engage_jobs_total{{stage=~"$stage"}}[{R}]))', "{{stage}}")], unit="percentunit")
panel("Retries / s by error class", [(f'sum by (stage, error_class) (rate(engage_retries_total{{stage=~"$stage"}}[{R}]))', "{{stage}} {{error_class}}")], unit="ops")
panel("Dead-lettered / s by reason", [(f'sum by (stage, reason) (rate(engage_dead_lettered_total{{stage=~"$stage"}}[{R}]))', "{{stage}} {{reason}}")], unit="ops")
panel("Dead-letter queue depth", [(f"sum by (queue) (rabbitmq_queue_messages_ready{{{DLQ}}})", "{{queue}}")])
panel("Failed items / s by reason", [(f'sum by (stage, reason) (rate(engage_failed_items_total{{stage=~"$stage"}}[{R}]))', "{{stage}} {{reason}}")], unit="ops",
      desc="Items recorded as failed (the batch still completes).")
panel("Rejected records / s by reason", [(f'sum by (stage, reason) (rate(engage_rejected_records_total{{stage=~"$stage"}}[{R}]))', "{{stage}} {{reason}}")], unit="ops")
panel("Reconnects", [(f'sum by (stage, service) (increase(engage_reconnects_total{{stage=~"$stage"}}[{R}]))', "{{stage}} {{service}}")])

newrow("Latency")
panel("Job duration p50", [(f'histogram_quantile(0.5, sum by (stage, le) (rate(engage_job_duration_seconds_bucket{{stage=~"$stage"}}[{R}])))', "{{stage}}")], unit="s", w=12)
panel("Job duration p95", [(f'histogram_quantile(0.95, sum by (stage, le) (rate(engage_job_duration_seconds_bucket{{stage=~"$stage"}}[{R}])))', "{{stage}}")], unit="s", w=12)

newrow("Gemini")
panel("Tokens / s", [(f"sum by (kind) (rate(engage_gemini_tokens_total[{R}]))", "{{kind}}")], unit="short", stack=True)
panel("Requests sent / s and 429s / s", [(f"sum(rate(engage_ratelimit_permits_total[{R}]))", "sent"), (f"sum by (quota) (rate(engage_gemini_429_total[{R}]))", "429 {{quota}}")], unit="reqps")
panel("429s / s by quota", [(f"sum by (quota) (rate(engage_gemini_429_total[{R}]))", "{{quota}}")], unit="reqps",
      desc="rpm / tpm / rpd / unknown; rpd means the daily quota is gone.")
panel("Rate-limit permits / s", [(f"sum(rate(engage_ratelimit_permits_total[{R}]))", "permits")], unit="ops", w=12)
panel("Permit wait p50 / p95", [(f"histogram_quantile(0.5, sum by (le) (rate(engage_ratelimit_wait_seconds_bucket[{R}])))", "p50"),
                                (f"histogram_quantile(0.95, sum by (le) (rate(engage_ratelimit_wait_seconds_bucket[{R}])))", "p95")], unit="s", w=12)

dash = {
    "uid": "engage-fleet", "title": "Engage fleet", "tags": ["engage"], "timezone": "utc",
    "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
    "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
    "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                              "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                              "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0, "refresh": 1},
        {"name": "ns", "label": "Namespace (queue prefix)", "type": "textbox", "query": "engage",
         "current": {"text": "engage", "value": "engage"}, "hide": 0},
        {"name": "stage", "label": "Stage", "type": "query", "datasource": DS,
         "query": {"query": "label_values(engage_jobs_total, stage)", "refId": "stage"},
         "definition": "label_values(engage_jobs_total, stage)",
         "includeAll": True, "multi": True, "allValue": ".*",
         "current": {"text": "All", "value": "$__all"}, "refresh": 2, "sort": 1, "hide": 0},
    ]},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
