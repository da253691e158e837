#!/usr/bin/env python3
"""Validates every Kubernetes manifest under deploy/k8s against its API
schema, offline:

- built-in kinds (Deployment, Secret, PodDisruptionBudget, …) with
  kubernetes-validate's bundled OpenAPI schemas in strict mode (unknown
  fields are errors), for every Kubernetes version in KUBERNETES_VERSIONS;
- the custom resources the fleet ships (KEDA ScaledObject and
  TriggerAuthentication; Prometheus Operator PodMonitor, ServiceMonitor and
  PrometheusRule) and the Kustomization with the JSON schemas in
  deploy/tools/schemas/, written from the CRD references (each file's
  $comment names its source);
- kustomization.yaml lists every manifest but the example Secrets, and
  only files that exist.

A kind with no schema is an error, never a silent pass.

    python3 deploy/tools/check_k8s.py [FILE.yaml ...]   # default: deploy/k8s/*.yaml
"""
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
K8S = DEPLOY / "k8s"
SCHEMAS = pathlib.Path(__file__).resolve().parent / "schemas"

# The oldest Kubernetes release the manifests must work on (the fields they
# use exist there) and the newest the validator knows (none was removed).
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]

# (apiVersion, kind) → our schema for the kinds Kubernetes itself does not define.
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring-podmonitor.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring-servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring-prometheusrule.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomization.json",
}

# Manifests kustomization.yaml must not apply: real Secrets never live here.
NOT_APPLIED = {"kustomization.yaml", "secret.example.yaml"}


def registry() -> Registry:
    """Every schema file under its $id, so `urn:engage:k8s:meta#…` resolves offline."""
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def where(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


def check_custom(doc: dict, schema_file: str, reg: Registry) -> list[str]:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema, registry=reg)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    # The deepest reason is the useful one for oneOf/if-then failures.
    # dict: one line per distinct message (an if/then failure repeats its cause).
    return list(dict.fromkeys(f"{where(e)}: {e.message} [{schema_file}]" for e in errors))


def check_builtin(doc: dict) -> list[str]:
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where(e)}: {e.message} [Kubernetes {e.version}, strict]")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{e.message}: no schema (add one to deploy/tools/schemas and CUSTOM)")
    return problems


def check_kustomization(path: pathlib.Path, doc: dict) -> list[str]:
    listed = doc.get("resources", [])
    problems = [f"resources: {r} does not exist" for r in listed if not (path.parent / r).is_file()]
    present = {p.name for p in path.parent.glob("*.yaml")} - NOT_APPLIED
    problems += [f"resources: {name} is not listed" for name in sorted(present - set(listed))]
    problems += [f"resources: {r} must not be applied" for r in listed if r in NOT_APPLIED]
    return problems


def main(argv: list[str]) -> int:
    files = [pathlib.Path(a) for a in argv] or sorted(K8S.glob("*.yaml"))
    reg = registry()
    failures, checked = 0, 0
    for path in files:
        for i, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d is not None):
            checked += 1
            kind = (doc.get("apiVersion"), doc.get("kind"))
            name = (doc.get("metadata") or {}).get("name", f"document {i + 1}")
            label = f"{path.name}: {kind[1]}/{name}"
            if kind in CUSTOM:
                problems = check_custom(doc, CUSTOM[kind], reg)
                if kind[1] == "Kustomization":
                    problems += check_kustomization(path, doc)
            else:
                problems = check_builtin(doc)
            for p in problems:
                print(f"ERROR {label}: {p}", file=sys.stderr)
            failures += bool(problems)
    if failures:
        print(f"{failures} of {checked} Kubernetes objects are invalid", file=sys.stderr)
        return 1
    print(f"ok: {checked} Kubernetes objects valid "
          f"(Kubernetes {', '.join(KUBERNETES_VERSIONS)} strict; CRDs against deploy/tools/schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
