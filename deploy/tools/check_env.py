#!/usr/bin/env python3
"""Checks that the environments the deploy files give each process are
accepted by the fleet's strict configuration loader: runs `engage config
show --json` (which refuses an unknown ENGAGE_* variable and reports a
refused value per section; only the sections the process uses count) with

- each docker-compose.yml service's environment (variables interpolated from
  a throwaway .env written by deploy/compose-env.sh), and
- each Kubernetes worker's environment: the engage-config ConfigMap plus the
  example Secrets that stage mounts (deploy/k8s/secret.example.yaml).

    python3 deploy/tools/check_env.py [PATH/TO/engage]   # default: target/debug/engage

A schema cannot see this: a variable the loader refuses is valid YAML.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "deploy" / "k8s"


def compose_envs() -> dict[str, dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        env_file = pathlib.Path(tmp) / ".env"
        subprocess.run(
            ["bash", str(ROOT / "deploy" / "compose-env.sh")],
            env={**os.environ, "ENGAGE_COMPOSE_ENV": str(env_file)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        values = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
        )
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

    def interpolate(value) -> str:
        return re.sub(
            r"\$\{(\w+)(?::?[-?]([^}]*))?\}",
            lambda m: values.get(m.group(1), m.group(2) or ""),
            str(value),
        )

    envs = {}
    for name, svc in compose["services"].items():
        command = svc.get("command") or []
        runs_engage = any(str(c).startswith("engage") for c in command)
        if runs_engage:
            envs[f"compose {name}"] = {
                k: interpolate(v) for k, v in (svc.get("environment") or {}).items()
            }
    return envs


def k8s_envs() -> dict[str, dict[str, str]]:
    docs = [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
    envs = {}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = {}
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    env.update(config_maps[src["configMapRef"]["name"]])
                elif "secretRef" in src:
                    # An optional Secret the example does not show is left out.
                    env.update(secrets.get(src["secretRef"]["name"], {}))
            env.update({e["name"]: e.get("value", "") for e in c.get("env", [])})
            envs[f"k8s {d['metadata']['name']}"] = env
    return envs


# The sections every process validates, and those of each stage
# (crates/runtime/src/config/mod.rs, Section::for_stage).
COMMON = ["fleet", "broker", "redis", "store", "limits", "telemetry"]
STAGE_SECTIONS = {
    "clean": ["clean"],
    "match": [],
    "download": ["download"],
    "analyze": ["analyze", "gemini"],
    "aggregate": ["aggregate"],
}


def stage_of(env: dict[str, str], label: str) -> str:
    """The stage a labelled process runs (`compose analyze`, `k8s engage-analyze`)."""
    return label.split()[-1].removeprefix("engage-")


def main(argv: list[str]) -> int:
    engage = pathlib.Path(argv[0] if argv else ROOT / "target" / "debug" / "engage")
    if not engage.is_file():
        print(f"{engage} not found: build it first (cargo build -p engage)", file=sys.stderr)
        return 2
    envs = {**compose_envs(), **k8s_envs()}
    failures = 0
    for label, env in envs.items():
        run = subprocess.run(
            [str(engage), "config", "show", "--json"],
            env={"PATH": os.environ.get("PATH", ""), **env},
            capture_output=True,
            text=True,
        )
        try:
            sections = json.loads(run.stdout)["sections"]
        except (json.JSONDecodeError, KeyError):
            # Refused before any section (an unknown ENGAGE_* variable, a bad file).
            failures += 1
            print(f"ERROR {label}: {run.stderr.strip()}", file=sys.stderr)
            continue
        # Only the sections this process validates (FleetConfig::load_for_stage);
        # config show checks every one, e.g. [gemini] in a clean worker.
        uses = COMMON + STAGE_SECTIONS.get(stage_of(env, label), [])
        for sec in sections:
            if sec["section"] in uses and sec.get("error"):
                failures += 1
                print(f"ERROR {label}: [{sec['section']}] {sec['error']}", file=sys.stderr)
    if failures:
        return 1
    print(f"ok: the configuration loader accepts all {len(envs)} deploy environments")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
