"""The operator against hostile or broken input, on the real API server with the shipped RBAC.

Objects it does not own, children the API server refuses, secrets in the spec, deleted
CRs' metrics, and the permissions its owner references need.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cricalgo_localstack.polling import wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_operator_cluster import (  # loaded by conftest.py
    Cluster,
    OperatorProcess,
    cluster,
    cr,
    namespaced_operator,
    status_of,
    wait_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("cad_crd")]
__all__ = ["cluster", "namespaced_operator"]  # fixtures


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in status_of(body).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else {}


def warnings(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [
        e
        for e in items
        if e["involvedObject"].get("name") == "pay"
        and e["reason"] == reason
        and e["type"] == "Warning"
    ]


def foreign_service(cluster: Cluster, name: str) -> None:
    """A Service someone else made, with no owner."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": {"team": "someone-else"}},
            "spec": {"selector": {"app": "someone-else"}, "ports": [{"port": 80}]},
        }
    )


def test_an_object_with_a_childs_name_is_not_taken_over_and_the_cr_says_so(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    foreign_service(cluster, "pay-stable")
    cluster.apply(cr("none"))
    body = wait_status(
        cluster,
        "Degraded=True OwnershipConflict",
        lambda b: condition(b, "Degraded").get("reason") == "OwnershipConflict",
    )
    assert condition(body, "Degraded")["status"] == "True"
    assert "Service/pay-stable" in condition(body, "Degraded")["message"]
    service = cluster.get("service", "pay-stable")
    assert service is not None
    assert not service["metadata"].get("ownerReferences")
    assert service["spec"]["selector"] == {"app": "someone-else"}
    # The rest of the CR's children are there, and the conflict is an Event too.
    wait_for("the app Deployment", lambda: cluster.get("deployment", "pay-app"))
    events = wait_for("a Warning Event", lambda: warnings(cluster, "OwnershipConflict"))
    assert "Service/pay-stable" in events[0]["message"]

    # Once the object is gone, the operator creates its own and the condition clears.
    cluster.kubectl("delete", "service", "pay-stable")
    # The operator retries a conflict every 30 s.
    wait_for(
        "Degraded to clear",
        lambda: condition(cluster.cad(), "Degraded").get("status") == "False",
        timeout=120,
    )
    mine = cluster.get("service", "pay-stable")
    assert mine is not None
    uid = cluster.cad()["metadata"]["uid"]
    assert [r["uid"] for r in mine["metadata"]["ownerReferences"]] == [uid]


def test_pruning_deletes_only_objects_carrying_the_crs_uid(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    cluster.apply(cr("nginx"))
    body = wait_status(
        cluster, "the Ingress applied", lambda b: "Ingress/pay" in status_of(b).get("children", [])
    )
    # status.children is the pruning list; a foreign name slipped into it is not a licence.
    foreign_service(cluster, "bystander")
    children = [*status_of(body)["children"], "Service/bystander"]
    cluster.kubectl(
        "patch",
        "cad",
        "pay",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"children": children}}),
    )
    cluster.apply(cr("none"))  # the Ingress is no longer rendered: pruned
    wait_status(
        cluster,
        "the children list narrowed",
        lambda b: "Ingress/pay" not in status_of(b).get("children", []),
    )
    assert cluster.get("ingress", "pay") is None
    assert cluster.get("service", "bystander") is not None


def test_a_child_the_api_server_refuses_shows_on_the_cr(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    # The CRD keeps resources open (ResourceRequirements); a Deployment refuses a request
    # above its limit (422).
    body = cr("none")
    body["spec"]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    cluster.apply(body)
    got = wait_status(
        cluster,
        "Degraded=True ReconcileFailed",
        lambda b: condition(b, "Degraded").get("reason") == "ReconcileFailed",
    )
    assert condition(got, "Degraded")["status"] == "True"
    assert "422" in condition(got, "Degraded")["message"]
    assert wait_for("a Warning Event", lambda: warnings(cluster, "ReconcileFailed"))


def test_no_literal_env_value_in_the_last_handled_configuration(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    body = cr("none")
    body["spec"]["env"] = [{"name": "PARTNER_API_KEY", "value": "literal-s3cret-value"}]
    cluster.apply(body)
    key = "cricalgo.io/last-handled-configuration"
    annotation = wait_for(
        "Kopf's last-handled configuration",
        lambda: (cluster.cad()["metadata"].get("annotations") or {}).get(key),
    )
    assert "literal-s3cret-value" not in annotation
    assert "valueSha256" in annotation
    # A changed value is still a change: the operator reconciles it.
    body["spec"]["env"] = [{"name": "PARTNER_API_KEY", "value": "another-s3cret"}]
    cluster.apply(body)
    wait_for(
        "the new generation reconciled",
        lambda: status_of(cluster.cad()).get("observedGeneration") == 2,
    )
    annotation = cluster.cad()["metadata"]["annotations"][key]
    assert "another-s3cret" not in annotation


def _series(text: str, namespace: str) -> list[str]:
    return [
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("namespace") == namespace and sample.labels.get("name") == "pay"
    ]


def test_a_deleted_crs_series_are_removed(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    cluster.apply(cr("none"))
    wait_status(cluster, "the first reconcile", lambda b: bool(status_of(b).get("phase")))
    for image in ("registry.local/cricalgo:1.1.0", "registry.local/cricalgo:1.2.0"):
        cluster.apply(cr("none", image=image))
        wait_status(cluster, image, lambda b, i=image: status_of(b).get("canaryImage") == i)
    names = set(_series(namespaced_operator.metrics(), cluster.namespace))
    assert "cricalgo_operator_rollouts_total" in names  # 1.1.0 was superseded
    cluster.kubectl("delete", "cad", "pay", "--wait=true")
    wait_for(
        "the deleted CR's series to go",
        lambda: not _series(namespaced_operator.metrics(), cluster.namespace),
        timeout=60,
    )


def test_the_operator_may_set_block_owner_deletion(
    cluster: Cluster, namespaced_operator: OperatorProcess
) -> None:
    """Hardened clusters (OwnerReferencesPermissionEnforcement, on in the local stack)
    require `update` on the owner's finalizers for blockOwnerDeletion."""
    proc = cluster.kubectl(
        "auth",
        "can-i",
        "update",
        "cricalgodeployments.cricalgo.io",
        "--subresource=finalizers",
        f"--as=system:serviceaccount:{cluster.namespace}:cricalgo-operator",
        check=False,
    )
    assert proc.stdout.strip() == "yes"
    cluster.apply(cr("none"))
    wait_for("the app Deployment", lambda: cluster.get("deployment", "pay-app"))
    refs = cluster.get("deployment", "pay-app")["metadata"]["ownerReferences"]  # type: ignore[index]
    assert refs[0]["blockOwnerDeletion"] is True
