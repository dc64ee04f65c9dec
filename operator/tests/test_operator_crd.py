"""The CricAlgoDeployment CRD on the real API server: defaults, CEL rules, printer columns."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from cricalgo_operator.migrations import render_migration_job
from cricalgo_operator.model import Cad, with_defaults
from cricalgo_operator.render import render

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("cad_crd")]

MINIMAL: dict[str, Any] = {
    "apiVersion": "cricalgo.io/v1alpha1",
    "kind": "CricAlgoDeployment",
    "metadata": {"name": "pay"},
    "spec": {
        "image": "registry.local/cricalgo:1.0.0",
        "database": {"secretRef": {"name": "db"}},
        "redis": {"secretRef": {"name": "redis"}},
    },
}


# Secret references of spec.canary.prometheus.
CA = {"name": "prom-ca", "key": "ca.crt"}
URL = {"name": "notify", "key": "url"}
TOKEN = {"bearerTokenSecret": {"name": "prom", "key": "token"}}
BASIC = {
    "basicAuth": {
        "username": {"name": "prom", "key": "username"},
        "password": {"name": "prom", "key": "password"},
    }
}


def _cr(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(MINIMAL)
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = value
    return body


def _create(kube_cluster: Any, namespace: str, body: dict[str, Any]) -> Any:
    return kube_cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False
    )


def test_minimal_cr_gets_the_documented_defaults(kube_cluster: Any, namespace: str) -> None:
    proc = _create(kube_cluster, namespace, MINIMAL)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(
        kube_cluster.kubectl("get", "cad", "pay", "-n", namespace, "-o", "json").stdout
    )
    # The Python defaults used by rendering are the CRD's, field for field.
    assert got["spec"] == with_defaults(MINIMAL["spec"])


def test_printer_columns(kube_cluster: Any, namespace: str) -> None:
    assert _create(kube_cluster, namespace, MINIMAL).returncode == 0
    header = kube_cluster.kubectl("get", "cad", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "AGE"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"canary": {"steps": [10, 50, 25, 100]}}, "canary.steps must be strictly increasing"),
        ({"canary": {"steps": [10, 10, 100]}}, "canary.steps must be strictly increasing"),
        ({"canary": {"steps": [10, 25, 50]}}, "canary.steps must end at 100"),
        ({"app": {"replicas": {"min": 5, "max": 4}}}, "replicas.min must be less than or equal"),
        ({"worker": {"replicas": {"min": 11}}}, "replicas.min must be less than or equal"),
        ({"traffic": {"provider": "linkerd"}}, 'supported values: "istio", "nginx", "none"'),
        ({"canary": {"stepDuration": "-5m"}}, "must be a positive duration such as 30s"),
        ({"canary": {"analysisInterval": "0s"}}, "must be a positive duration such as 30s"),
        ({"canary": {"stepDuration": "soon"}}, "must be a positive duration such as 30s"),
        (
            {"canary": {"stepDuration": "1m", "analysisInterval": "5m"}},
            "canary.analysisInterval must not be longer than canary.stepDuration",
        ),
        ({"canary": {"analysisInterval": "1ms"}}, "canary.analysisInterval must be at least 1s"),
        ({"canary": {"progressDeadline": "soon"}}, "must be a positive duration such as 30s"),
        (
            {"canary": {"progressDeadline": "30s", "analysisInterval": "1m"}},
            "canary.progressDeadline must not be shorter than canary.analysisInterval",
        ),
        (
            {"canary": {"analysisInterval": "999ms"}},
            "canary.analysisInterval must be at least 1s",
        ),
        (
            {"traffic": {"publicPaths": [{"path": "api/v1/webhooks/deposit"}]}},
            "traffic.publicPaths[].path must start with /",
        ),
        ({"traffic": {"publicPaths": []}}, "spec.traffic.publicPaths"),
        (
            {"traffic": {"publicPaths": [{"path": "/x", "match": "Regex"}]}},
            'supported values: "Exact", "Prefix"',
        ),
        ({"webhook": {"secretRef": {}}}, "spec.webhook.secretRef.name: Required value"),
        ({"image": None}, "spec.image: Required value"),
        ({"app": {"preStopSleepSeconds": 61}}, "spec.app.preStopSleepSeconds"),
        (
            {"traffic": {"provider": "istio"}},
            "traffic.hosts must list at least one host when traffic.provider is istio",
        ),
        (
            {"traffic": {"provider": "nginx", "hosts": ["pay.example.com"]}},
            "traffic.ingressClassName is required when traffic.provider is nginx",
        ),
        (
            {"canary": {"metrics": [{"name": "x", "query": "up"}]}},
            "a canary metric needs min, max or compareTo",
        ),
        (
            {"canary": {"metrics": [{"name": "x", "query": "up", "max": 1, "maxIncrease": 1}]}},
            "maxIncrease and maxRelativeIncrease need compareTo",
        ),
        (
            {"canary": {"metrics": [{"name": "x", "max": 1}]}},
            "a canary metric needs a query, unless it is named after a built-in SLO",
        ),
        ({"canary": {"decision": "vote"}}, 'supported values: "count", "sequential"'),
        (
            {"canary": {"sequential": {"falseRollbackRate": 0.5}}},
            "canary.sequential.falseRollbackRate must be above 0 and below 0.5",
        ),
        (
            {"canary": {"sequential": {"missedFaultRate": 0}}},
            "canary.sequential.missedFaultRate must be above 0 and below 0.5",
        ),
        (
            {"canary": {"sequential": {"faultFactor": 1}}},
            "canary.sequential.faultFactor must be greater than 1",
        ),
        (
            {"canary": {"prometheus": {"url": "https://prom", **TOKEN, **BASIC}}},
            "canary.prometheus takes bearerTokenSecret or basicAuth, not both",
        ),
        (
            {"canary": {"prometheus": TOKEN}},
            "canary.prometheus credentials (bearerTokenSecret, basicAuth, tls) need "
            "canary.prometheus.url",
        ),
        (
            {"canary": {"prometheus": {"url": "http://prom", "tls": {"caSecret": CA}}}},
            "canary.prometheus.tls needs an https:// url",
        ),
        (
            {"canary": {"prometheus": {"url": "https://prom", "tls": {"certSecret": CA}}}},
            "canary.prometheus.tls.certSecret and keySecret go together",
        ),
        (
            {
                "canary": {
                    "prometheus": {
                        "url": "https://prom",
                        "tls": {"caSecret": CA, "insecureSkipVerify": True},
                    }
                }
            },
            "canary.prometheus.tls takes caSecret or insecureSkipVerify, not both",
        ),
        (
            {
                "canary": {
                    "prometheus": {
                        "url": "https://prom",
                        "bearerTokenSecret": {"name": "prom", "key": "a/b"},
                    }
                }
            },
            "a Secret key may hold only letters, digits",
        ),
        (
            {"canary": {"prometheus": {"url": "https://prom", "basicAuth": {"username": CA}}}},
            "spec.canary.prometheus.basicAuth.password: Required value",
        ),
        (
            {"canary": {"notifications": [{"name": "hook", "type": "webhook", "urlSecret": URL}]}},
            "a webhook notification needs signingSecret",
        ),
        (
            {
                "canary": {
                    "notifications": [
                        {"name": "chat", "type": "slack", "urlSecret": URL, "signingSecret": URL}
                    ]
                }
            },
            "signingSecret applies to webhook notifications only",
        ),
        (
            {
                "canary": {
                    "notifications": [
                        {"name": "chat", "type": "slack", "urlSecret": URL, "events": ["Done"]}
                    ]
                }
            },
            'supported values: "Started", "StepAdvanced", "Paused"',
        ),
        (
            {"canary": {"notifications": [{"name": "chat", "type": "teams", "urlSecret": URL}]}},
            'supported values: "webhook", "slack"',
        ),
    ],
)
def test_invalid_cr_is_rejected_with_its_message(
    kube_cluster: Any, namespace: str, spec: dict[str, Any], message: str
) -> None:
    proc = _create(kube_cluster, namespace, _cr(**spec))
    assert proc.returncode != 0
    assert message in proc.stderr


@pytest.mark.parametrize(
    "spec",
    [
        {"traffic": {"provider": "istio", "hosts": ["pay.example.com"], "gateways": ["gw"]}},
        {"traffic": {"provider": "nginx", "ingressClassName": "nginx"}},
        {"canary": {"prometheus": {"url": "https://prom:9090", **TOKEN, "tls": {"caSecret": CA}}}},
        {
            "canary": {
                "notifications": [
                    {"name": "hook", "type": "webhook", "urlSecret": URL, "signingSecret": CA},
                    {"name": "chat", "type": "slack", "urlSecret": URL, "events": ["Promoted"]},
                ]
            }
        },
        {
            "canary": {
                "prometheus": {
                    "url": "https://prom:9090",
                    **BASIC,
                    "tls": {
                        "certSecret": {"name": "prom-client", "key": "tls.crt"},
                        "keySecret": {"name": "prom-client", "key": "tls.key"},
                        "serverName": "prometheus.monitoring.svc",
                    },
                }
            }
        },
        {"canary": {"steps": [100], "stepDuration": "1m30s", "analysisInterval": "30s"}},
        {"canary": {"analysisInterval": "1s", "stepDuration": "3s"}},
        {"canary": {"progressDeadline": "10m"}},
        {
            "traffic": {
                "publicPaths": [
                    {"path": "/api/v1/webhooks/deposit"},
                    {"path": "/api/v1/users", "match": "Prefix"},
                ]
            },
            "webhook": {"secretRef": {"name": "pay-webhook"}},
        },
        {
            "canary": {
                "decision": "sequential",
                "sequential": {"falseRollbackRate": 0.01, "missedFaultRate": 0.2},
                "metrics": [{"name": "errorRate", "compareTo": "stable", "max": 0.02}],
            }
        },
        {
            "canary": {
                "metrics": [
                    {"name": "err", "query": "up{namespace='{namespace}'}", "max": 0.1},
                    {
                        "name": "p50",
                        "query": "x",
                        "compareTo": "stable",
                        "maxRelativeIncrease": 0.2,
                    },
                ]
            }
        },
    ],
)
def test_valid_variants_are_accepted(
    kube_cluster: Any, namespace: str, spec: dict[str, Any]
) -> None:
    proc = _create(kube_cluster, namespace, _cr(**spec))
    assert proc.returncode == 0, proc.stderr


def test_a_name_too_long_for_its_children_is_refused_at_admission(
    kube_cluster: Any, namespace: str
) -> None:
    """NAME-stable / NAME-canary are Services: DNS labels of at most 63 characters."""
    body = copy.deepcopy(MINIMAL)
    body["metadata"]["name"] = "p" * 57
    proc = _create(kube_cluster, namespace, body)
    assert proc.returncode != 0
    assert "metadata.name must be at most 56 characters" in proc.stderr
    body["metadata"]["name"] = "p" * 56
    proc = _create(kube_cluster, namespace, body)
    assert proc.returncode == 0, proc.stderr
    # The longest admitted name still makes valid Service names (DNS labels).
    meta = {"name": "p" * 56, "namespace": namespace, "uid": "u"}
    services = [
        m["metadata"]["name"]
        for m in render(Cad.from_body({**body, "metadata": meta}))
        if m["kind"] == "Service"
    ]
    assert max(len(n) for n in services) == 63
    # ... and a migration Job whose pods the API server accepts: the Job controller labels
    # them with the Job's name, a label value of at most 63 characters.
    migrating = {**body, "metadata": meta}
    migrating["spec"] = {**body["spec"], "migrations": {"enabled": True}}
    job = render_migration_job(Cad.from_body(migrating), "reg/cricalgo:1.1")
    assert len(job["metadata"]["name"]) <= 63
    job["metadata"].pop("ownerReferences", None)
    proc = kube_cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(job),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_webhook_secret_ref_defaults_its_key(kube_cluster: Any, namespace: str) -> None:
    body = _cr(webhook={"secretRef": {"name": "pay-webhook"}})
    assert _create(kube_cluster, namespace, body).returncode == 0
    got = json.loads(
        kube_cluster.kubectl("get", "cad", "pay", "-n", namespace, "-o", "json").stdout
    )
    assert got["spec"]["webhook"]["secretRef"] == {"name": "pay-webhook", "key": "secret"}
