"""``collection.search`` against a plain-Python reference, on random collections,
filters and rank expressions.

The reference is written from the semantics (docs/search.md), not from the engine: it
walks each record through the filter, finds each Knn's list by brute force (dense) or
by dot products (sparse), decides per record whether the rank expression scores it,
and folds the arithmetic left to right from each operator's identity, as the algebra
defines. Grouping, paging and selection follow.

The data avoids ties in dense distances (embeddings ``[x, 1]`` with distinct integers
``x``, queries ``[q + 0.25, 1]``: every distance is a distinct multiple of 1/16), so
the k nearest are one set; sparse scores and rank scores may tie, and ties go to the
earlier record, in both.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from _profiles import examples
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tintdb
from tintdb import Schema, SparseVectorIndexConfig, VectorIndexConfig

WORDS = ["alpha", "beta", "gamma", "delta", "omega"]
GROUPS = ["a", "b", "c"]
SPARSE_DIMS = 6


# ---------------------------------------------------------------- data


@st.composite
def collections(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 18) | st.integers(6, 18))
    xs = draw(st.lists(st.integers(-30, 30), min_size=n, max_size=n, unique=True))
    records = []
    for i, x in enumerate(xs):
        md: dict[str, Any] = {}
        if draw(st.booleans()):
            md["g"] = draw(st.sampled_from(GROUPS))
        if draw(st.booleans()):
            md["n"] = draw(st.integers(0, 5))
        if draw(st.booleans()):
            md["tags"] = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
        if draw(st.integers(0, 3)):
            dims = sorted(draw(st.sets(st.integers(0, SPARSE_DIMS - 1), min_size=1, max_size=4)))
            vals = [float(draw(st.integers(1, 3))) for _ in dims]
            md["sp"] = {"#type": "sparse_vector", "indices": dims, "values": vals}
        doc = None
        if draw(st.integers(0, 4)):
            doc = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)))
        records.append({"id": f"r{i}", "x": x, "md": md or None, "doc": doc})
    return {"space": draw(st.sampled_from(["l2", "ip"])), "records": records}


def meta_leaf(draw: Any) -> dict[str, Any]:
    key = draw(st.sampled_from(["g", "n", "tags"]))
    if key == "g":
        op = draw(st.sampled_from(["$eq", "$ne", "$in", "$nin"]))
        if op in ("$in", "$nin"):
            return {"g": {op: draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2))}}
        return {"g": {op: draw(st.sampled_from(GROUPS))}}
    if key == "n":
        op = draw(st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]))
        if op in ("$in", "$nin"):
            return {"n": {op: draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))}}
        return {"n": {op: draw(st.integers(0, 5))}}
    op = draw(st.sampled_from(["$contains", "$not_contains"]))
    return {"tags": {op: draw(st.integers(0, 3))}}


@st.composite
def filters(draw: Any, depth: int = 0) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["meta", "doc", "id", "and", "or"] if depth < 2 else ["meta", "doc", "id"])
    )
    if kind == "meta":
        return meta_leaf(draw)
    if kind == "doc":
        op = draw(st.sampled_from(["$contains", "$not_contains"]))
        return {"#document": {op: draw(st.sampled_from(WORDS))}}
    if kind == "id":
        op = draw(st.sampled_from(["$eq", "$ne", "$in", "$nin"]))
        ids = [f"r{i}" for i in draw(st.lists(st.integers(0, 20), min_size=1, max_size=4))]
        return {"#id": {op: ids if op in ("$in", "$nin") else ids[0]}}
    parts = draw(st.lists(filters(depth + 1), min_size=2, max_size=3))
    return {f"${kind}": parts}


@st.composite
def knns(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"limit": draw(st.integers(1, 8))}
    if draw(st.booleans()):
        out["query"] = [draw(st.integers(-30, 30)) + 0.25, 1.0]
        out["key"] = "#embedding"
    else:
        dims = sorted(draw(st.sets(st.integers(0, SPARSE_DIMS - 1), min_size=1, max_size=3)))
        out["query"] = {
            "#type": "sparse_vector",
            "indices": dims,
            "values": [float(draw(st.integers(1, 2))) for _ in dims],
        }
        out["key"] = "sp"
    if draw(st.booleans()):
        out["default"] = float(draw(st.integers(-2, 50)))
    if draw(st.booleans()):
        out["return_rank"] = True
    return {"$knn": out}


@st.composite
def ranks(draw: Any, depth: int = 0) -> dict[str, Any]:
    if depth >= 2:
        return draw(st.one_of(knns(), st.builds(lambda v: {"$val": float(v)}, st.integers(-3, 3))))
    op = draw(
        st.sampled_from(
            [
                "knn",
                "val",
                "$sum",
                "$mul",
                "$max",
                "$min",
                "$sub",
                "$div",
                "$abs",
                "$exp",
                "$log",
                "rrf",
            ]
        )
    )
    if op == "knn":
        return draw(knns())
    if op == "val":
        return {"$val": float(draw(st.integers(-3, 3)))}
    if op in ("$sum", "$mul", "$max", "$min"):
        return {op: draw(st.lists(ranks(depth + 1), min_size=2, max_size=3))}
    if op in ("$sub", "$div"):
        return {op: {"left": draw(ranks(depth + 1)), "right": draw(ranks(depth + 1))}}
    if op in ("$abs", "$exp", "$log"):
        return {op: draw(ranks(depth + 1))}
    members = [dict(k) for k in draw(st.lists(knns(), min_size=1, max_size=3))]
    for m in members:
        m["$knn"]["return_rank"] = True
    weights = draw(
        st.none()
        | st.lists(st.integers(0, 3).map(float), min_size=len(members), max_size=len(members))
    )
    rrf = tintdb.Rrf(
        [tintdb.Knn(**m["$knn"]) for m in members],
        k=draw(st.integers(1, 60)),
        weights=weights,
        normalize=bool(weights) and sum(weights) > 0 and draw(st.booleans()),
    )
    return rrf.to_dict()


def has_knn(node: Any) -> bool:
    if isinstance(node, dict):
        return "$knn" in node or any(has_knn(v) for v in node.values())
    if isinstance(node, list):
        return any(has_knn(v) for v in node)
    return False


@st.composite
def searches(draw: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        payload["filter"] = draw(filters())
    if draw(st.integers(0, 4)):
        rank = draw(ranks())
        if has_knn(rank):
            payload["rank"] = rank
    if "rank" in payload and draw(st.integers(0, 2)) == 0:
        keys = draw(st.sampled_from([["g"], ["n"], ["g", "n"]]))
        agg_keys = draw(st.sampled_from([["#score"], ["n", "#score"], ["n"]]))
        payload["group_by"] = {
            "keys": keys,
            "aggregate": {
                draw(st.sampled_from(["$min_k", "$max_k"])): {
                    "keys": agg_keys,
                    "k": draw(st.integers(1, 3)),
                }
            },
        }
    limit: dict[str, Any] = {"offset": draw(st.integers(0, 4))}
    if draw(st.booleans()):
        limit["limit"] = draw(st.integers(1, 6))
    payload["limit"] = limit
    payload["select"] = {
        "keys": draw(
            st.lists(
                st.sampled_from(["#document", "#metadata", "#score", "#embedding", "g", "n"]),
                unique=True,
            )
        )
    }
    return payload


# ---------------------------------------------------------------- the reference


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def matches(clause: dict[str, Any], rec: dict[str, Any]) -> bool:
    key, cond = next(iter(clause.items()))
    if key == "$and":
        return all(matches(c, rec) for c in cond)
    if key == "$or":
        return any(matches(c, rec) for c in cond)
    op, arg = next(iter(cond.items()))
    if key == "#id":
        listed = arg if isinstance(arg, list) else [arg]
        inside = rec["id"] in listed
        return inside if op in ("$eq", "$in") else not inside
    if key == "#document":
        found = rec["doc"] is not None and arg in rec["doc"]
        return found if op == "$contains" else not found
    md = rec["md"] or {}
    has = key in md
    value = md.get(key)
    if op == "$eq":
        return has and not isinstance(value, list) and same_value(value, arg)
    if op == "$ne":
        return not (has and not isinstance(value, list) and same_value(value, arg))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not has or isinstance(value, (bool, str, list)):
            return False
        return {"$gt": value > arg, "$gte": value >= arg, "$lt": value < arg, "$lte": value <= arg}[
            op
        ]
    if op == "$in":
        return has and not isinstance(value, list) and any(same_value(value, a) for a in arg)
    if op == "$nin":
        return not (has and not isinstance(value, list) and any(same_value(value, a) for a in arg))
    inside = has and isinstance(value, list) and any(same_value(v, arg) for v in value)
    return inside if op == "$contains" else not inside


def knn_list(
    spec: dict[str, Any], recs: list[tuple[int, dict[str, Any]]], space: str
) -> list[tuple[int, float]]:
    scored = []
    for seq, rec in recs:
        if spec["key"] == "#embedding":
            x, q = float(rec["x"]), spec["query"][0]
            measure = (x - q) ** 2 if space == "l2" else 1.0 - (x * q + 1.0)
        else:
            sp = (rec["md"] or {}).get("sp")
            if sp is None:
                continue
            weights = dict(zip(sp["indices"], sp["values"], strict=True))
            shared = [d for d in spec["query"]["indices"] if d in weights]
            if not shared:
                continue  # no posting on a query dimension: not a candidate
            dot = 0.0
            for d, w in zip(spec["query"]["indices"], spec["query"]["values"], strict=True):
                dot += w * weights.get(d, 0.0)
            measure = 1.0 - dot
        scored.append((measure, seq))
    scored.sort()
    return [
        (seq, float(i) if spec.get("return_rank") else m)
        for i, (m, seq) in enumerate(scored[: spec["limit"]])
    ]


def ieee(fn: Any, *args: float) -> float:
    try:
        return fn(*args)
    except (ValueError, ZeroDivisionError, OverflowError):
        if fn is math.log:
            return -math.inf if args[0] == 0 else math.nan
        if fn is math.exp:
            return math.inf
        a, b = args
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def pick(a: float, b: float, which: Any) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return which(a, b)


OPS = {
    "$sum": (0.0, lambda a, b: a + b),
    "$mul": (1.0, lambda a, b: a * b),
    "$max": (-math.inf, lambda a, b: pick(a, b, max)),
    "$min": (math.inf, lambda a, b: pick(a, b, min)),
}


class Ref:
    """Per-record evaluation of one rank expression."""

    def __init__(
        self, rank: dict[str, Any], recs: list[tuple[int, dict[str, Any]]], space: str
    ) -> None:
        self.rank, self.recs, self.space = rank, recs, space
        self.lists: dict[int, dict[int, float]] = {}

    def knn(self, node: dict[str, Any]) -> dict[int, float]:
        if id(node) not in self.lists:
            self.lists[id(node)] = dict(knn_list(node["$knn"], self.recs, self.space))
        return self.lists[id(node)]

    def has_default(self, node: dict[str, Any]) -> bool:
        op, arg = next(iter(node.items()))
        if op == "$knn":
            return arg.get("default") is not None
        if op == "$val":
            return True
        if op in ("$abs", "$exp", "$log"):
            return self.has_default(arg)
        if op in ("$sub", "$div"):
            return self.has_default(arg["left"]) and self.has_default(arg["right"])
        return all(self.has_default(c) for c in arg)

    def present(self, node: dict[str, Any], seq: int) -> bool:
        """Whether the expression scores record ``seq`` (it is in its support)."""
        op, arg = next(iter(node.items()))
        if op == "$knn":
            return seq in self.knn(node)
        if op == "$val":
            return False
        if op in ("$abs", "$exp", "$log"):
            return self.present(arg, seq)
        if op in ("$sub", "$div"):
            return self.joined(
                (self.has_default(arg["left"]), self.present(arg["left"], seq)),
                (self.has_default(arg["right"]), self.present(arg["right"], seq)),
            )[1]
        acc = (True, False)  # a fold starts from its identity: a default, no records
        for child in arg:
            acc = self.joined(acc, (self.has_default(child), self.present(child, seq)))
        return acc[1]

    @staticmethod
    def joined(left: tuple[bool, bool], right: tuple[bool, bool]) -> tuple[bool, bool]:
        """(has a default, record present) of two terms combined by an operator."""
        (ld, lp), (rd, rp) = left, right
        if ld and rd:
            return True, lp or rp
        if ld:
            return False, rp
        if rd:
            return False, lp
        return False, lp and rp

    def value(self, node: dict[str, Any], seq: int) -> float:
        op, arg = next(iter(node.items()))
        if op == "$knn":
            found = self.knn(node)
            return found[seq] if seq in found else float(arg["default"])
        if op == "$val":
            return float(arg)
        if op == "$abs":
            return abs(self.value(arg, seq))
        if op == "$exp":
            return ieee(math.exp, self.value(arg, seq))
        if op == "$log":
            return ieee(math.log, self.value(arg, seq))
        if op == "$sub":
            return self.value(arg["left"], seq) - self.value(arg["right"], seq)
        if op == "$div":
            return ieee(
                lambda a, b: a / b, self.value(arg["left"], seq), self.value(arg["right"], seq)
            )
        acc, fn = OPS[op]
        for child in arg:
            acc = fn(acc, self.value(child, seq))
        return acc


def order_key(value: Any) -> tuple[Any, ...]:
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, math.inf if math.isnan(value) else value)
    if isinstance(value, str):
        return (3, value)
    return (4, tuple(order_key(v) for v in value))


def reference(coll: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    live = [(seq, rec) for seq, rec in enumerate(coll["records"]) if rec is not None]
    where = payload.get("filter")
    cand = [(seq, rec) for seq, rec in live if where is None or matches(where, rec)]
    limit = payload["limit"]
    lo, n = limit["offset"], limit.get("limit")
    rank = payload.get("rank")
    if rank is None:
        page = cand[lo : None if n is None else lo + n]
        scored = [(seq, rec, float(i)) for i, (seq, rec) in enumerate(page)]
    else:
        ref = Ref(rank, cand, coll["space"])
        ranked = [(seq, rec, ref.value(rank, seq)) for seq, rec in cand if ref.present(rank, seq)]
        ranked.sort(key=lambda t: (math.isnan(t[2]), 0.0 if math.isnan(t[2]) else t[2], t[0]))
        group = payload.get("group_by")
        if group:
            ((agg, spec),) = group["aggregate"].items()

            def field(rec: dict[str, Any], key: str, score: float) -> tuple[Any, ...]:
                if key == "#score":
                    return order_key(score)
                return order_key((rec["md"] or {}).get(key))

            buckets: dict[Any, list[Any]] = {}
            for item in ranked:
                gkey = tuple(field(item[1], k, item[2]) for k in group["keys"])
                buckets.setdefault(gkey, []).append(item)
            kept = []
            for members in buckets.values():
                members = sorted(
                    members,
                    key=lambda t: tuple(field(t[1], k, t[2]) for k in spec["keys"]),
                    reverse=agg == "$max_k",
                )
                kept.extend(members[: spec["k"]])
            kept.sort(key=lambda t: (math.isnan(t[2]), 0.0 if math.isnan(t[2]) else t[2], t[0]))
            ranked = kept
        scored = ranked[lo : None if n is None else lo + n]
    keys = set(payload["select"]["keys"])
    fields = {k for k in keys if not k.startswith("#")}

    def metadata(rec: dict[str, Any]) -> Any:
        md = dict(rec["md"] or {})
        if "#metadata" not in keys:
            md = {k: v for k, v in md.items() if k in fields}
        return {
            k: tintdb.SparseVector(v["indices"], v["values"]) if isinstance(v, dict) else v
            for k, v in md.items()
        } or None

    return {
        "ids": [rec["id"] for _, rec, _ in scored],
        "documents": [rec["doc"] for _, rec, _ in scored] if "#document" in keys else None,
        "embeddings": [[float(rec["x"]), 1.0] for _, rec, _ in scored]
        if "#embedding" in keys
        else None,
        "metadatas": [metadata(rec) for _, rec, _ in scored]
        if "#metadata" in keys or fields
        else None,
        "scores": [v if math.isfinite(v) else None for _, _, v in scored]
        if "#score" in keys
        else None,
    }


def same_scores(got: list[Any] | None, want: list[Any] | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return len(got) == len(want) and all(
        (g is None and w is None)
        or (g is not None and w is not None and g == pytest.approx(w, rel=1e-9, abs=1e-12))
        for g, w in zip(got, want, strict=True)
    )


@st.composite
def histories(draw: Any) -> dict[str, Any]:
    """A collection after some deletes and metadata updates (the sparse postings of
    updated and deleted records must follow)."""
    coll = draw(collections())
    n = len(coll["records"])
    coll["deleted"] = (
        sorted(draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n // 3))) if n else []
    )
    updates = {}
    for i in draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n // 3)) if n else []:
        if i in coll["deleted"]:
            continue
        dims = sorted(draw(st.sets(st.integers(0, SPARSE_DIMS - 1), min_size=1, max_size=3)))
        updates[i] = {
            "sp": {"#type": "sparse_vector", "indices": dims, "values": [2.0] * len(dims)}
        }
    coll["updates"] = updates
    return coll


def build(coll: dict[str, Any]) -> Any:
    client = tintdb.EphemeralClient()
    col = client.create_collection(
        "prop",
        schema=Schema()
        .create_index(VectorIndexConfig(space=coll["space"]))
        .create_index(SparseVectorIndexConfig(), key="sp"),
        embedding_function=None,
    )
    recs = coll["records"]
    if recs:
        col.add(
            ids=[r["id"] for r in recs],
            embeddings=[[float(r["x"]), 1.0] for r in recs],
            metadatas=[r["md"] for r in recs],
            documents=[r["doc"] for r in recs],
        )
    for i in coll.get("deleted", []):
        col.delete(ids=[recs[i]["id"]])
        recs[i] = None
    for i, md in coll.get("updates", {}).items():
        col.update(ids=[recs[i]["id"]], metadatas=[md])
        recs[i] = {**recs[i], "md": {**(recs[i]["md"] or {}), **md}}
    return col


@settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(coll=histories(), batch=st.lists(searches(), min_size=1, max_size=3))
def test_search_matches_the_reference(coll: dict[str, Any], batch: list[dict[str, Any]]) -> None:
    col = build(coll)
    got = col.search(batch)
    assert len(got["ids"]) == len(batch)
    for i, payload in enumerate(batch):
        want = reference(coll, payload)
        where = f"search {i}: {payload}"
        event(f"rank={'rank' in payload} group={'group_by' in payload} hits={bool(want['ids'])}")
        assert got["ids"][i] == want["ids"], where
        assert got["documents"][i] == want["documents"], where
        assert got["embeddings"][i] == want["embeddings"], where
        assert got["metadatas"][i] == want["metadatas"], where
        assert same_scores(got["scores"][i], want["scores"]), (
            where,
            got["scores"][i],
            want["scores"],
        )
