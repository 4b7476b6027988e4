#!/usr/bin/env python3
"""Least privilege, checked: every verb the chart grants the operator was used.

Run after the integration tests, against the same control plane (make test
does): reads the API server's audit log (cluster/up.sh audits every request
a ServiceAccount makes), keeps the requests of the operators the tests ran
(ServiceAccount op-NS-healing-guard-operator in namespace NS, the chart's
RBAC for release op-NS), renders the chart's RBAC as the tests install it,
and fails on any (API group, resource, verb) granted that no operator ever
used. A request made but not granted would have failed its test already.
"""

import json
import os
import re
import subprocess
import sys
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATOR = re.compile(r"^system:serviceaccount:([^:]+):op-\1-healing-guard-operator$")


def granted():
    """(group, resource, verb) the chart grants, as the tests render it."""
    rendered = subprocess.run(
        ["helm", "template", "op-x", os.path.join(REPO, "charts/healing-guard-operator"),
         "--namespace", "x", "--set", "watchNamespace=x", "--set", "evidence.captureLogs=true",
         "--show-only", "templates/rbac.yaml"],
        check=True, capture_output=True, text=True).stdout
    objects = json.loads(subprocess.run(
        ["kubectl", "create", "--dry-run=client", "-o", "json", "-f", "-"],
        input=rendered, check=True, capture_output=True, text=True).stdout)
    grants = set()
    for role in objects.get("items", [objects]):
        if role.get("kind") not in ("Role", "ClusterRole"):
            continue
        for rule in role.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        grants.add((group, resource, verb))
    return grants


def used(audit_log):
    """(group, resource, verb) the operators under test called, with counts."""
    calls = Counter()
    with open(audit_log, encoding="utf-8") as log:
        for line in log:
            event = json.loads(line)
            if not OPERATOR.match(event.get("user", {}).get("username", "")):
                continue
            ref = event.get("objectRef") or {}
            if "resource" not in ref:
                continue
            resource = ref["resource"]
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            calls[(ref.get("apiGroup", ""), resource, event["verb"])] += 1
    return calls


def main():
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        sys.exit("KUBECONFIG is not set: run this inside cluster/with-cluster.sh")
    audit_log = os.path.join(os.path.dirname(kubeconfig), "audit.log")
    grants, calls = granted(), used(audit_log)
    if not calls:
        sys.exit(f"no request of a test operator in {audit_log}: did the tests run?")
    print("RBAC granted to the operator, and how often the tests' operators used it:")
    for grant in sorted(grants):
        group, resource, verb = grant
        print(f"  {group or 'core':20} {resource:30} {verb:8} {calls.get(grant, 0):>7}")
    unused = sorted(g for g in grants if calls.get(g, 0) == 0)
    if unused:
        print("\ngranted but never used (remove it, or test the code that needs it):")
        for group, resource, verb in unused:
            print(f"  {group or 'core'} {resource} {verb}")
        sys.exit(1)
    print("every grant was used")


if __name__ == "__main__":
    main()
