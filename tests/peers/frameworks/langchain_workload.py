"""LangChain's ``Chroma`` vector store (PyPI ``langchain-chroma``) on each target.

``python langchain_workload.py WORKDIR SERVER_URL`` prints one JSON line; see
``_common.py`` for the targets and ``tests/test_frameworks.py`` for what is checked.
Two stores are driven: one given an embedding function (``MiniLMEmbeddings``, the
adapter that ``docs/integrations.md`` shows) and one without, which leaves the
embedding to the collection's own function.
"""

from __future__ import annotations

from typing import Any

from _common import Steps, Target, embed, main
from langchain_chroma import Chroma
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

TEXTS = [
    ("p1", "The cat sat on the warm windowsill all afternoon.", {"topic": "pets", "year": 2021}),
    ("p2", "Dogs love long walks in the park.", {"topic": "pets", "year": 2019}),
    ("f1", "Sourdough bread needs a lively starter and patience.", {"topic": "food", "year": 2022}),
    ("f2", "A ripe tomato salad with basil and olive oil.", {"topic": "food", "year": 2020}),
    ("s1", "The rocket reached orbit after a flawless launch.", {"topic": "space", "year": 2023}),
]
DOCUMENTS = [
    Document(
        id="s2",
        page_content="Saturn's rings are made mostly of ice particles.",
        metadata={"topic": "space", "year": 2018, "tags": ["planet", "ice"]},
    ),
    Document(
        id="m1",
        page_content="Compound interest rewards saving early.",
        metadata={"topic": "money", "year": 2021, "score": 0.5},
    ),
    Document(id="m2", page_content="Index funds spread risk across many companies.", metadata={}),
]
Q_PETS = "pets that enjoy outdoor exercise"
Q_BREAD = "baking bread at home"
Q_SKY = "planets and moons"


class MiniLMEmbeddings(Embeddings):
    """LangChain's ``Embeddings`` interface over tintdb's default model (offline)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return embed(texts)

    def embed_query(self, text: str) -> list[float]:
        return embed([text])[0]


def docs(found: list[Document]) -> list[dict[str, Any]]:
    return [{"id": d.id, "text": d.page_content, "metadata": d.metadata} for d in found]


def scored(found: list[tuple[Document, float]]) -> list[dict[str, Any]]:
    return [{**docs([d])[0], "score": float(s)} for d, s in found]


def with_vectors(found: list[tuple[Document, Any]]) -> list[dict[str, Any]]:
    return [{**docs([d])[0], "vector": [float(x) for x in v]} for d, v in found]


def scenario(target: Target, step: Steps) -> None:
    client = target.open()
    emb = MiniLMEmbeddings()
    qvec = emb.embed_query(Q_BREAD)

    # ------------------------------------------------ a store with an embedding function
    store = step(
        "create", lambda: Chroma(client=client, collection_name="lc_main", embedding_function=emb)
    )
    ids, texts, metas = zip(*TEXTS, strict=True)
    step("add_texts", lambda: store.add_texts(list(texts), metadatas=list(metas), ids=list(ids)))
    step("add_documents", lambda: store.add_documents(DOCUMENTS))
    step("count", lambda: store._collection.count())
    step("search", lambda: docs(store.similarity_search(Q_PETS, k=3)))
    step("search_score", lambda: scored(store.similarity_search_with_score(Q_BREAD, k=4)))
    step(
        "search_relevance",
        lambda: scored(store.similarity_search_with_relevance_scores(Q_SKY, k=3)),
    )
    step(
        "search_filter",
        lambda: docs(store.similarity_search(Q_PETS, k=3, filter={"topic": "food"})),
    )
    step(
        "search_filter_and",
        lambda: scored(
            store.similarity_search_with_score(
                Q_SKY,
                k=5,
                filter={"$and": [{"topic": {"$in": ["pets", "space"]}}, {"year": {"$gte": 2020}}]},
            )
        ),
    )
    step(
        "search_filter_or_ne",
        lambda: docs(
            store.similarity_search(
                Q_BREAD, k=5, filter={"$or": [{"topic": {"$ne": "food"}}, {"year": {"$lt": 2021}}]}
            )
        ),
    )
    step(
        "search_filter_list",
        lambda: docs(store.similarity_search(Q_SKY, k=5, filter={"tags": {"$contains": "ice"}})),
    )
    step(
        "search_where_document",
        lambda: scored(
            store.similarity_search_with_score(Q_PETS, k=5, where_document={"$contains": "the"})
        ),
    )
    step(
        "search_filter_and_document",
        lambda: docs(
            store.similarity_search(
                Q_PETS,
                k=5,
                filter={"topic": "pets"},
                where_document={"$not_contains": "cat"},
            )
        ),
    )
    step(
        "search_where_document_regex",
        lambda: docs(store.similarity_search(Q_SKY, k=5, where_document={"$regex": "^[SD]"})),
    )
    step("search_by_vector", lambda: docs(store.similarity_search_by_vector(qvec, k=2)))
    step(
        "search_by_vector_relevance",
        lambda: scored(store.similarity_search_by_vector_with_relevance_scores(qvec, k=2)),
    )
    step(
        "search_with_vectors",
        lambda: with_vectors(store.similarity_search_with_vectors(Q_SKY, k=2)),
    )
    step(
        "mmr",
        lambda: docs(store.max_marginal_relevance_search(Q_PETS, k=3, fetch_k=6, lambda_mult=0.3)),
    )
    step(
        "mmr_filter",
        lambda: docs(
            store.max_marginal_relevance_search(
                Q_SKY, k=2, fetch_k=4, lambda_mult=0.5, filter={"topic": {"$ne": "money"}}
            )
        ),
    )
    step("mmr_by_vector", lambda: docs(store.max_marginal_relevance_search_by_vector(qvec, k=2)))
    step("get_ids", lambda: store.get(ids=["f2", "p1", "zz"]))
    step("get_where", lambda: store.get(where={"topic": "space"}, include=["metadatas"]))
    step("get_limit_offset", lambda: store.get(limit=3, offset=2, include=[]))
    step("get_by_ids", lambda: docs(store.get_by_ids(["m1", "p2"])))
    step(
        "update_document",
        lambda: store.update_document(
            "p2",
            Document(page_content="Dogs sleep all day by the fire.", metadata={"topic": "home"}),
        ),
    )
    step(
        "update_documents",
        lambda: store.update_documents(
            ["f1", "f2"],
            [
                Document(
                    page_content="Rye bread keeps for a week.",
                    metadata={"topic": "food", "year": 2024},
                ),
                Document(
                    page_content="Gazpacho is a cold tomato soup.",
                    metadata={"topic": "food", "year": 2024},
                ),
            ],
        ),
    )
    step("after_update_get", lambda: store.get(ids=["p2", "f1", "f2"]))
    step("after_update_search", lambda: scored(store.similarity_search_with_score(Q_BREAD, k=3)))
    step(
        "after_update_filter_new",
        lambda: docs(store.similarity_search(Q_PETS, k=5, filter={"topic": "home"})),
    )
    step(
        "after_update_filter_old",
        lambda: docs(store.similarity_search(Q_PETS, k=5, filter={"topic": "pets"})),
    )
    step(
        "after_update_where_document",
        lambda: docs(store.similarity_search(Q_BREAD, k=5, where_document={"$contains": "bread"})),
    )
    step(
        "upsert_existing",
        lambda: store.add_texts(
            ["The cat now naps on the sofa."], metadatas=[{"topic": "pets"}], ids=["p1"]
        ),
    )
    step("after_upsert_get", lambda: store.get(ids=["p1"]))
    step("delete_ids", lambda: store.delete(ids=["m2", "nope"]))
    step("delete_where", lambda: store.delete(where={"topic": "money"}))
    step("after_delete_get", lambda: store.get(include=["documents"]))
    step(
        "nested_metadata",
        lambda: store.add_texts(["nested"], metadatas=[{"a": {"b": 1}}], ids=["bad"]),
    )
    step("after_nested_count", lambda: store._collection.count())

    # ------------------------------------------------ relevance scores in cosine space
    cos = step(
        "create_cosine",
        lambda: Chroma(
            client=client,
            collection_name="lc_cosine",
            embedding_function=emb,
            collection_configuration={"hnsw": {"space": "cosine"}},
        ),
    )
    step("cosine_add", lambda: cos.add_texts(list(texts), metadatas=list(metas), ids=list(ids)))
    step(
        "cosine_relevance",
        lambda: scored(cos.similarity_search_with_relevance_scores(Q_BREAD, k=3)),
    )
    step("cosine_space", lambda: cos._collection.configuration.get("hnsw", {}).get("space"))

    from_texts = step(
        "from_texts",
        lambda: Chroma.from_texts(
            list(texts),
            emb,
            metadatas=list(metas),
            ids=list(ids),
            client=client,
            collection_name="lc_from",
        ),
    )
    step("from_texts_search", lambda: docs(from_texts.similarity_search(Q_SKY, k=2)))
    step("delete_collection", lambda: from_texts.delete_collection())
    step("list_after_delete", lambda: sorted(c.name for c in client.list_collections()))

    # ------------------------------------------------ a store without an embedding function
    bare = step("noef_create", lambda: Chroma(client=client, collection_name="lc_noef"))
    step("noef_add", lambda: bare.add_texts(list(texts), metadatas=list(metas), ids=list(ids)))
    step("noef_search", lambda: docs(bare.similarity_search(Q_PETS, k=3)))
    step("noef_search_score", lambda: scored(bare.similarity_search_with_score(Q_BREAD, k=3)))
    step(
        "noef_filter",
        lambda: scored(
            bare.similarity_search_with_score(Q_SKY, k=3, filter={"year": {"$gt": 2020}})
        ),
    )
    step(
        "noef_where_document",
        lambda: docs(bare.similarity_search(Q_SKY, k=3, where_document={"$contains": "o"})),
    )
    step("noef_by_vector", lambda: docs(bare.similarity_search_by_vector(qvec, k=2)))
    step("noef_mmr", lambda: docs(bare.max_marginal_relevance_search(Q_PETS, k=2)))
    step(
        "noef_mmr_by_vector", lambda: docs(bare.max_marginal_relevance_search_by_vector(qvec, k=2))
    )
    step(
        "noef_update_document",
        lambda: bare.update_document(
            "p1", Document(page_content="Cats purr.", metadata={"topic": "pets"})
        ),
    )
    step("noef_delete", lambda: bare.delete(ids=["s1"]))
    step("noef_count", lambda: bare._collection.count())

    # ------------------------------------------------ reopen: a new client, same data
    target.close(client)
    client = target.open()
    again = step(
        "reopen_create",
        lambda: Chroma(client=client, collection_name="lc_main", embedding_function=emb),
    )
    step("reopen_count", lambda: again._collection.count())
    step("reopen_get", lambda: again.get(include=["documents", "metadatas"]))
    step("reopen_search", lambda: scored(again.similarity_search_with_score(Q_SKY, k=3)))
    step(
        "reopen_filter",
        lambda: docs(again.similarity_search(Q_PETS, k=3, filter={"topic": "home"})),
    )
    bare_again = step(
        "reopen_noef_create", lambda: Chroma(client=client, collection_name="lc_noef")
    )
    step("reopen_noef_search", lambda: scored(bare_again.similarity_search_with_score(Q_PETS, k=2)))
    step("reset_collection", lambda: again.reset_collection())
    step("after_reset_count", lambda: again._collection.count())
    target.close(client)


if __name__ == "__main__":
    main(scenario)
