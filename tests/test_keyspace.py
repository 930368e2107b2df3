"""The keyspace: one prefix per cluster, validated names, and no two keys alike."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from itertools import combinations, product

import pytest

from storage.keyspace import Keyspace, valid_cluster_name

# Ids as callers pass them; none holds ":" (a key built from "a:b" reads like one built from "a", "b").
SAMPLE_IDS = ("n1", "n2", "leader", "epoch")
KNOWN_KEYS = {"leader", "epoch", "nodes", "node", "secret_key", "probe"}


@dataclass(frozen=True)
class Builder:
    name: str
    required: int  # positional arguments besides self
    variadic: bool  # takes extra *parts


def builders() -> tuple[list[str], list[Builder]]:
    """Every key property and every key-building method on Keyspace, found by introspection."""
    props: list[str] = []
    funcs: list[Builder] = []
    for name, member in inspect.getmembers(Keyspace):
        if name.startswith("_") or name == "key":
            continue
        if isinstance(member, property):
            props.append(name)
        elif inspect.isfunction(member):
            params = list(inspect.signature(member).parameters.values())[1:]
            required = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
            variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
            assert 1 <= len(required) <= 3, f"Keyspace.{name} takes {params}; teach this test about it"
            funcs.append(Builder(name, len(required), variadic))
    return props, funcs


def all_keys(ks: Keyspace) -> dict[str, str]:
    """Every key `ks` can build, by a readable label: builders are called with every combination of
    sample ids (and, when they take extra parts, with one and two more parts)."""
    props, funcs = builders()
    out: dict[str, str] = {}
    for name in props:
        value = getattr(ks, name)
        assert isinstance(value, str)
        out[name] = value
    for builder in funcs:
        for ids in product(SAMPLE_IDS, repeat=builder.required):
            calls = [ids, (*ids, "p1"), (*ids, "p1", "p2")] if builder.variadic else [ids]
            for args in calls:
                value = getattr(ks, builder.name)(*args)
                assert isinstance(value, str)
                out[f"{builder.name}{args}"] = value
    return out


def test_discovery_finds_every_known_key() -> None:
    props, funcs = builders()
    assert set(props) | {b.name for b in funcs} >= KNOWN_KEYS


def test_default_prefix_is_podium() -> None:
    ks = Keyspace()
    assert ks.cluster == "podium"
    assert ks.leader == "podium:leader"
    for key in all_keys(ks).values():
        assert key.startswith("podium:")


def test_explicit_key_shapes() -> None:
    ks = Keyspace("blue")
    assert ks.key("a", "b") == "blue:a:b"
    assert ks.leader == "blue:leader"
    assert ks.epoch == "blue:epoch"
    assert ks.nodes == "blue:nodes"
    assert ks.node("n7") == "blue:node:n7"
    assert ks.secret_key == "blue:config:secret_key"
    assert ks.probe("x") == "blue:probe:x"


@pytest.mark.parametrize("cluster", ["podium", "a", "Z", "0", "my-cluster_2.prod", "x" * 64, "..", "-"])
def test_every_key_carries_the_prefix(cluster: str) -> None:
    assert valid_cluster_name(cluster)
    ks = Keyspace(cluster)
    for label, key in all_keys(ks).items():
        assert key.startswith(f"{cluster}:"), label


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 65,
        "a b",
        "a:b",
        "a/b",
        "a*",
        "a?",
        "{a}",
        "[a]",
        "é",
        "podium\n",
        "\npodium",
        "po\tdium",
        " podium",
        "podium ",
    ],
)
def test_bad_cluster_names_raise(name: str) -> None:
    assert not valid_cluster_name(name)
    with pytest.raises(ValueError, match="invalid cluster name"):
        Keyspace(name)


def test_every_key_is_distinct() -> None:
    keys = all_keys(Keyspace("c"))
    values = list(keys.values())
    duplicates = {v for v in values if values.count(v) > 1}
    assert not duplicates, duplicates
    # Node records and probes of the same id never meet, nor do they hit the fixed keys.
    ks = Keyspace("c")
    fixed = {ks.leader, ks.epoch, ks.nodes, ks.secret_key}
    for ident in ("leader", "epoch", "nodes", "config", "secret_key"):
        assert ks.node(ident) not in fixed
        assert ks.probe(ident) not in fixed
        assert ks.node(ident) != ks.probe(ident)


CLUSTERS = ["a", "b", "a-b", "a.b", "a_b", "ab", "podium", "podium2", "Podium", "A"]


@pytest.mark.parametrize(("left", "right"), list(combinations(CLUSTERS, 2)))
def test_two_clusters_never_share_keys(left: str, right: str) -> None:
    left_keys = set(all_keys(Keyspace(left)).values())
    right_keys = set(all_keys(Keyspace(right)).values())
    assert not left_keys & right_keys
    # A SCAN for one cluster's prefix never matches the other's keys.
    assert not [k for k in left_keys if k.startswith(f"{right}:")]
    assert not [k for k in right_keys if k.startswith(f"{left}:")]
