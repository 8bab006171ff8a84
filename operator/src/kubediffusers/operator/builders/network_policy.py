"""The NetworkPolicy ``<name>`` on the runner pods (spec.networkPolicy).

Enabled, it admits to the runner's HTTP port only pods of the chosen namespaces
(optionally only those with chosen labels); everything else is refused by the
network plugin. NetworkPolicies add up, so a namespace's own default-deny stays
in force either way.

Turned off again, the policy is not deleted (the operator never deletes, see
permissions.py) but made inert: its pod selector matches no pod, so it neither
allows nor denies anything. Switching it on again re-applies the real one.
"""

from __future__ import annotations

from typing import Any

from .. import names
from ..pipeline import Pipeline
from .meta import object_meta, with_hash

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server
INERT_ANNOTATION = "kubediffusers.io/network-policy"


def build_network_policy(pipeline: Pipeline, *, inert: bool = False) -> dict[str, Any]:
    spec = pipeline.spec.network_policy
    meta = object_meta(pipeline, pipeline.name)
    if inert:
        instance = "app.kubernetes.io/instance"
        # In and NotIn on the same key: no pod can match.
        selector: dict[str, Any] = {
            "matchExpressions": [
                {"key": instance, "operator": "In", "values": [pipeline.name]},
                {"key": instance, "operator": "NotIn", "values": [pipeline.name]},
            ]
        }
        meta["annotations"] = {INERT_ANNOTATION: "disabled: spec.networkPolicy.enabled is false; this policy selects no pod"}
        body: dict[str, Any] = {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": []}
    else:
        peers = []
        for namespace in spec.allowed_namespaces or [pipeline.namespace]:
            peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}
            if spec.allowed_pod_labels:
                peer["podSelector"] = {"matchLabels": dict(spec.allowed_pod_labels)}  # same peer: namespace AND labels
            peers.append(peer)
        body = {
            "podSelector": {"matchLabels": names.selector_labels(pipeline.name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": names.RUNNER_PORT}]}],
        }
    return with_hash({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": body})
