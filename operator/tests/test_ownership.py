"""Adopt, write over, prune: only objects carrying the CR's uid are the CR's (pure)."""

from __future__ import annotations

from typing import Any

from cricalgo_operator.ownership import conflicts, describe_owner, may_write, owned_by

UID = "11111111-2222-3333-4444-555555555555"


def obj(*refs: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": "pay-stable", "ownerReferences": list(refs)}}


def ref(uid: str, kind: str = "CricAlgoDeployment", controller: bool = True) -> dict[str, Any]:
    return {"kind": kind, "name": "pay", "uid": uid, "controller": controller}


def test_absent_or_own_objects_may_be_written() -> None:
    assert may_write(None, UID)
    assert may_write(obj(ref(UID)), UID)
    assert may_write(obj(ref("other", "ConfigMap", controller=False), ref(UID)), UID)


def test_an_object_without_owner_is_not_adopted() -> None:
    assert not may_write(obj(), UID)
    assert not may_write({"metadata": {"name": "x"}}, UID)


def test_a_namesake_of_a_previous_cr_of_the_same_name_is_not_adopted() -> None:
    # Same kind and name, another uid: the CR was deleted and created again meanwhile.
    assert not may_write(obj(ref("9999")), UID)
    assert not owned_by(obj(ref(UID)), "")


def test_conflicts_name_the_object_and_its_owner() -> None:
    found = conflicts(
        [
            ("Service/pay-stable", obj(ref("abc", "Deployment"))),
            ("Service/pay", None),
            ("Service/pay-canary", obj(ref(UID))),
            ("Deployment/pay-app", obj()),
        ],
        UID,
    )
    assert [c.child for c in found] == ["Service/pay-stable", "Deployment/pay-app"]
    assert "Service/pay-stable" in found[0].message()
    assert "owned by Deployment/pay (uid abc)" in found[0].message()
    assert describe_owner(obj()) == "no owner"
