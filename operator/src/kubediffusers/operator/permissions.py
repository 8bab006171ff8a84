"""The Kubernetes API permissions the operator needs, and why: the source of the chart's RBAC.

The Helm chart's ClusterRole/Role rules must equal these (tests/chart checks the
rendered rules against this list, and checks this list against the requests the real
operator makes to an emulated API server). Nothing here is a wildcard. The operator
never deletes anything: children go away through owner references and the garbage
collector. The one ``delete`` grant (claims) is there because the API server's
OwnerReferencesPermissionEnforcement admission plugin (on by default in OpenShift)
lets only someone who may delete an object change its owner references, and
switching storage.deletePolicy between Delete and Retain does exactly that.

Two scopes:

* ``NAMESPACED``: the pipelines and their children. Cluster-wide watch: in a
  ClusterRole. Namespaced watch: in a Role in each watched namespace.
* ``CLUSTER``: always cluster-scoped, needed by kopf itself whatever it watches.
  ``NAMESPACED_WATCH_ONLY`` is added when the operator watches a list of
  namespaces (kopf observes namespaces only then; cluster-wide it watches each
  resource across all namespaces at once and never lists namespaces).

kopf peering (optional, on by default in the chart): the operator keeps a record in a
peering object (``KUBEDIFFUSERS_OPERATOR_PEERING_NAME``) so that a second operator
on the same pipelines pauses instead of fighting: a ClusterKopfPeering when it
watches all namespaces, a KopfPeering in each watched namespace otherwise. Their
CRDs are in crds/kopf-peering.yaml. Without peering the chart sets
``KUBEDIFFUSERS_OPERATOR_STANDALONE=true`` and these rules are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import GROUP, PLURAL


@dataclass(frozen=True)
class Rule:
    api_group: str  # "" is the core group
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def policy_rule(self) -> dict[str, Any]:
        """As a ``rbac.authorization.k8s.io/v1`` PolicyRule."""
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


CHILD_VERBS = ("get", "list", "watch", "create", "patch")

NAMESPACED: tuple[Rule, ...] = (
    Rule(
        GROUP,
        (PLURAL,),
        ("get", "list", "watch", "patch"),
        "kopf watches pipelines and patches their finalizer and progress annotations; each reconciliation reads its pipeline afresh",
    ),
    Rule(GROUP, (f"{PLURAL}/status",), ("patch",), "reconcile writes status (phase, conditions, replicas, url)"),
    Rule(
        GROUP,
        (f"{PLURAL}/finalizers",),
        ("update",),
        "children carry blockOwnerDeletion owner references; clusters with OwnerReferencesPermissionEnforcement require this",
    ),
    Rule("apps", ("deployments",), CHILD_VERBS, "the runner Deployment: watched for changes, read, created, server-side applied"),
    Rule("", ("services",), CHILD_VERBS, "the Service: watched, read, server-side applied (an apply creates it)"),
    Rule(
        "",
        ("persistentvolumeclaims",),
        (*CHILD_VERBS, "delete"),
        "the model-cache claim (an existingClaim is only read); delete only because OwnerReferencesPermissionEnforcement requires it to add or "
        "remove the claim's owner reference when storage.deletePolicy switches between Delete and Retain (the operator never deletes it)",
    ),
    Rule(
        "networking.k8s.io",
        ("networkpolicies",),
        CHILD_VERBS,
        "the optional per-pipeline NetworkPolicy: watched, read, created, server-side applied (made inert, never deleted, when turned off)",
    ),
    Rule(
        "keda.sh",
        ("scaledobjects",),
        CHILD_VERBS,
        "spec.autoscaling: the KEDA ScaledObject: watched, read, created, server-side applied (paused, never deleted, when turned off); "
        "its collection is read to tell whether KEDA is installed",
    ),
    Rule(
        "http.keda.sh",
        ("httpscaledobjects",),
        CHILD_VERBS,
        "autoscaling.minReplicas 0: the KEDA HTTP add-on's HTTPScaledObject (the interceptor's route): watched, read, created, server-side applied",
    ),
    Rule("", ("pods",), ("list", "watch"), "runner pods: watched, and listed to report download and load progress and failures"),
    Rule(
        "",
        ("secrets",),
        ("get",),
        "tokenSecretRef/authSecretRef are checked to exist and hold the key, so a typo is a clear condition rather than a pod stuck in "
        "CreateContainerConfigError (only key names are kept, never values; KUBEDIFFUSERS_OPERATOR_CHECK_SECRET_KEYS=false skips it)",
    ),
    Rule(
        "",
        ("events",),
        ("create", "list"),
        "kopf posts events on pipelines (phase transitions, handler errors); Warning events of runner pods are listed to say why they do not start",
    ),
)

CLUSTER: tuple[Rule, ...] = (
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch"), "kopf discovers the resources it serves and notices CRD changes"),
)

NAMESPACED_WATCH_ONLY: tuple[Rule, ...] = (
    Rule("", ("namespaces",), ("list", "watch"), "kopf observes which of the watched namespaces exist (namespaced mode only)"),
)


PEERING_VERBS = ("list", "watch", "patch")
CLUSTER_PEERING = Rule(
    "kopf.dev", ("clusterkopfpeerings",), PEERING_VERBS, "kopf peering (cluster-wide watch): sees other operators, keeps its own record alive"
)
NAMESPACED_PEERING = Rule("kopf.dev", ("kopfpeerings",), PEERING_VERBS, "kopf peering (namespaced watch): one KopfPeering per watched namespace")


def cluster_rules(*, cluster_wide: bool, peering: bool = False) -> list[dict[str, Any]]:
    """The ClusterRole's rules."""
    rules = CLUSTER + (NAMESPACED if cluster_wide else NAMESPACED_WATCH_ONLY)
    if peering and cluster_wide:
        rules += (CLUSTER_PEERING,)
    return [rule.policy_rule() for rule in rules]


def namespace_rules(*, peering: bool = False) -> list[dict[str, Any]]:
    """The rules of the Role in each watched namespace (namespaced mode)."""
    return [rule.policy_rule() for rule in NAMESPACED + ((NAMESPACED_PEERING,) if peering else ())]
