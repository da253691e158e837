#!/usr/bin/env python3
"""Keeps deploy/k8s/prometheus-rule.yaml (a Prometheus Operator PrometheusRule)
identical to deploy/prometheus/rules.yml, the single source of the rules.

    python3 deploy/tools/sync_k8s_rules.py           # rewrite the PrometheusRule
    python3 deploy/tools/sync_k8s_rules.py --check   # exit 1 if it has drifted
"""
import pathlib
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
RULES = DEPLOY / "prometheus" / "rules.yml"
TARGET = DEPLOY / "k8s" / "prometheus-rule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by deploy/tools/sync_k8s_rules.py.
# Do not edit: change rules.yml and rerun the script (deploy/check.sh checks it).
"""


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as `|` blocks."""


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "engage-fleet",
            "namespace": "engage",
            "labels": {"app.kubernetes.io/part-of": "engage-fleet"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


def main() -> int:
    want = render()
    if "--check" in sys.argv[1:]:
        have = TARGET.read_text() if TARGET.exists() else ""
        if yaml.safe_load(have) != yaml.safe_load(want):
            print(f"{TARGET} is out of date: run python3 {pathlib.Path(__file__).relative_to(DEPLOY.parent)}")
            return 1
        return 0
    TARGET.write_text(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
