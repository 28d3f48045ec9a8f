"""LlamaIndex's ``ChromaVectorStore`` (PyPI ``llama-index-vector-stores-chroma``) on each target.

``python llamaindex_workload.py WORKDIR SERVER_URL`` prints one JSON line; see
``_common.py`` for the targets and ``tests/test_frameworks.py`` for what is checked.
Two ways in: a ``VectorStoreIndex`` with an embedding model (``MiniLMEmbedding``, the
adapter that ``docs/integrations.md`` shows), and the vector store alone with fixed
vectors and no model at all.
"""

from __future__ import annotations

from typing import Any

from _common import Steps, Target, embed, main
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.vector_stores.chroma import ChromaVectorStore

Q_PETS = "pets that enjoy outdoor exercise"
Q_BREAD = "baking bread at home"
Q_SKY = "planets and moons"


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex's embedding interface over tintdb's default model (offline)."""

    model_name: str = "all-MiniLM-L6-v2"

    def _get_query_embedding(self, query: str) -> list[float]:
        return embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return embed(texts)


def node(
    node_id: str, text: str, doc: str, embedding: list[float] | None = None, **meta: Any
) -> TextNode:
    return TextNode(
        id_=node_id,
        text=text,
        metadata=meta,
        embedding=embedding,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)},
    )


def nodes() -> list[TextNode]:
    return [
        node(
            "p1",
            "The cat sat on the warm windowsill all afternoon.",
            "doc-pets",
            topic="pets",
            year=2021,
        ),
        node("p2", "Dogs love long walks in the park.", "doc-pets", topic="pets", year=2019),
        node(
            "f1",
            "Sourdough bread needs a lively starter and patience.",
            "doc-food",
            topic="food",
            year=2022,
        ),
        node(
            "f2",
            "A ripe tomato salad with basil and olive oil.",
            "doc-food",
            topic="food",
            year=2020,
        ),
        node(
            "s1",
            "The rocket reached orbit after a flawless launch.",
            "doc-space",
            topic="space",
            year=2023,
        ),
        node(
            "s2",
            "Saturn's rings are made mostly of ice particles.",
            "doc-space",
            topic="space",
            year=2018,
        ),
        node(
            "m1", "Compound interest rewards saving early.", "doc-money", topic="money", year=2021
        ),
    ]


def hits(found: list[NodeWithScore]) -> list[dict[str, Any]]:
    return [
        {
            "id": h.node.node_id,
            "text": h.node.get_content(),
            "metadata": h.node.metadata,
            "score": h.score,
        }
        for h in found
    ]


def result(res: VectorStoreQueryResult) -> dict[str, Any]:
    return {
        "ids": res.ids,
        "similarities": res.similarities,
        "texts": [n.get_content() for n in res.nodes or []],
        "metadatas": [n.metadata for n in res.nodes or []],
        "ref_docs": [n.ref_doc_id for n in res.nodes or []],
    }


def node_list(found: list[Any]) -> list[dict[str, Any]]:
    return [{"id": n.node_id, "text": n.get_content(), "metadata": n.metadata} for n in found]


def where(
    *filters: MetadataFilter, condition: FilterCondition = FilterCondition.AND
) -> MetadataFilters:
    return MetadataFilters(filters=list(filters), condition=condition)


def scenario(target: Target, step: Steps) -> None:
    client = target.open()
    emb = MiniLMEmbedding()

    # ------------------------------------------------ a VectorStoreIndex with an embedding model
    collection = step("create", lambda: client.get_or_create_collection("li_main"))
    store = step("store", lambda: ChromaVectorStore(chroma_collection=collection))
    index = step(
        "index_nodes",
        lambda: VectorStoreIndex(
            nodes(),
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=emb,
        ),
    )
    step("count", lambda: collection.count())
    step("retrieve", lambda: hits(index.as_retriever(similarity_top_k=3).retrieve(Q_PETS)))
    step("retrieve_bread", lambda: hits(index.as_retriever(similarity_top_k=2).retrieve(Q_BREAD)))
    step(
        "retrieve_filter_eq",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=3, filters=where(MetadataFilter(key="topic", value="food"))
            ).retrieve(Q_PETS)
        ),
    )
    step(
        "retrieve_filter_and",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=5,
                filters=where(
                    MetadataFilter(
                        key="topic", operator=FilterOperator.IN, value=["pets", "space"]
                    ),
                    MetadataFilter(key="year", operator=FilterOperator.GTE, value=2020),
                ),
            ).retrieve(Q_SKY)
        ),
    )
    step(
        "retrieve_filter_or",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=5,
                filters=where(
                    MetadataFilter(key="topic", operator=FilterOperator.NE, value="pets"),
                    MetadataFilter(key="year", operator=FilterOperator.LT, value=2020),
                    condition=FilterCondition.OR,
                ),
            ).retrieve(Q_PETS)
        ),
    )
    step(
        "retrieve_filter_nin",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=3,
                filters=where(
                    MetadataFilter(
                        key="topic", operator=FilterOperator.NIN, value=["food", "space"]
                    )
                ),
            ).retrieve(Q_BREAD)
        ),
    )
    step(
        "retrieve_where_document",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=5, vector_store_kwargs={"where_document": {"$contains": "the"}}
            ).retrieve(Q_SKY)
        ),
    )
    step(
        "retrieve_mmr",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=3,
                vector_store_query_mode="mmr",
                vector_store_kwargs={"mmr_threshold": 0.4},
            ).retrieve(Q_PETS)
        ),
    )
    step(
        "retrieve_mmr_filter",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=2,
                vector_store_query_mode="mmr",
                filters=where(
                    MetadataFilter(key="topic", operator=FilterOperator.NE, value="money")
                ),
            ).retrieve(Q_SKY)
        ),
    )
    step("get_nodes_ids", lambda: node_list(store.get_nodes(node_ids=["s2", "p1"])))
    step(
        "get_nodes_filter",
        lambda: node_list(
            store.get_nodes(
                None,
                filters=where(MetadataFilter(key="year", operator=FilterOperator.GT, value=2021)),
            )
        ),
    )
    step("query_no_embedding", lambda: result(store.query(VectorStoreQuery(similarity_top_k=2))))
    step(
        "query_no_embedding_filter",
        lambda: result(
            store.query(
                VectorStoreQuery(
                    similarity_top_k=10, filters=where(MetadataFilter(key="topic", value="space"))
                )
            )
        ),
    )
    step(
        "add_existing_node",
        lambda: store.add(
            [
                node(
                    "p1",
                    "A different cat.",
                    "doc-pets",
                    embed(["A different cat."])[0],
                    topic="pets",
                )
            ]
        ),
    )
    step("after_add_existing", lambda: node_list(store.get_nodes(node_ids=["p1"])))
    # update, LlamaIndex's way: replace the nodes of one source document
    step("update_delete_ref_doc", lambda: index.delete_ref_doc("doc-food"))
    step(
        "update_insert_nodes",
        lambda: index.insert_nodes(
            [
                node("f1", "Rye bread keeps for a week.", "doc-food", topic="food", year=2024),
                node("f3", "Gazpacho is a cold tomato soup.", "doc-food", topic="food", year=2024),
            ]
        ),
    )
    step("after_update_count", lambda: collection.count())
    step(
        "after_update_retrieve",
        lambda: hits(index.as_retriever(similarity_top_k=2).retrieve(Q_BREAD)),
    )
    step(
        "after_update_filter",
        lambda: hits(
            index.as_retriever(
                similarity_top_k=5, filters=where(MetadataFilter(key="year", value=2024))
            ).retrieve(Q_BREAD)
        ),
    )
    step("delete_nodes_ids", lambda: store.delete_nodes(node_ids=["p2"]))
    step(
        "delete_nodes_filter",
        lambda: store.delete_nodes(filters=where(MetadataFilter(key="topic", value="money"))),
    )
    step("delete_ref_doc", lambda: store.delete("doc-space"))
    step("after_delete_ids", lambda: sorted(collection.get(include=[])["ids"]))

    # ------------------------------------------------ the vector store alone, fixed vectors
    vcol = step("vectors_create", lambda: client.get_or_create_collection("li_vectors"))
    vstore = step("vectors_store", lambda: ChromaVectorStore(chroma_collection=vcol))
    fixed = [
        node("v1", "north", "doc-a", [1.0, 0.0, 0.0, 0.0], kind="a", n=1),
        node("v2", "north by east", "doc-a", [0.9, 0.1, 0.0, 0.0], kind="a", n=2),
        node("v3", "east", "doc-b", [0.0, 1.0, 0.0, 0.0], kind="b", n=3),
        node("v4", "up", "doc-b", [0.0, 0.0, 1.0, 0.0], kind="b", n=4),
        node("v5", "up and out", "doc-c", [0.0, 0.0, 0.7, 0.7], kind="c", n=5),
    ]
    step("vectors_add", lambda: vstore.add(fixed))
    probe = [1.0, 0.05, 0.0, 0.0]
    step(
        "vectors_query",
        lambda: result(vstore.query(VectorStoreQuery(query_embedding=probe, similarity_top_k=3))),
    )
    step(
        "vectors_query_filter",
        lambda: result(
            vstore.query(
                VectorStoreQuery(
                    query_embedding=probe,
                    similarity_top_k=3,
                    filters=where(MetadataFilter(key="n", operator=FilterOperator.GTE, value=3)),
                )
            )
        ),
    )
    step(
        "vectors_query_where_document",
        lambda: result(
            vstore.query(
                VectorStoreQuery(query_embedding=probe, similarity_top_k=5),
                where_document={"$contains": "east"},
            )
        ),
    )
    step(
        "vectors_mmr",
        lambda: result(
            vstore.query(
                VectorStoreQuery(
                    query_embedding=probe, similarity_top_k=2, mode=VectorStoreQueryMode.MMR
                ),
                mmr_threshold=0.3,
            )
        ),
    )
    step("vectors_get", lambda: result(vstore.query(VectorStoreQuery(similarity_top_k=10))))
    step("vectors_delete_nodes", lambda: vstore.delete_nodes(node_ids=["v2", "v4"]))
    step(
        "vectors_after_delete",
        lambda: result(vstore.query(VectorStoreQuery(query_embedding=probe, similarity_top_k=5))),
    )
    step("vectors_clear", lambda: vstore.clear())
    step("vectors_count", lambda: vcol.count())

    # ------------------------------------------------ reopen: a new client, same data
    target.close(client)
    client = target.open()
    again = step(
        "reopen_store",
        lambda: ChromaVectorStore(chroma_collection=client.get_collection("li_main")),
    )
    reindex = step(
        "reopen_index", lambda: VectorStoreIndex.from_vector_store(again, embed_model=emb)
    )
    step("reopen_count", lambda: client.get_collection("li_main").count())
    step(
        "reopen_retrieve", lambda: hits(reindex.as_retriever(similarity_top_k=3).retrieve(Q_BREAD))
    )
    step(
        "reopen_filter",
        lambda: hits(
            reindex.as_retriever(
                similarity_top_k=3, filters=where(MetadataFilter(key="topic", value="pets"))
            ).retrieve(Q_PETS)
        ),
    )
    step(
        "from_collection",
        lambda: ChromaVectorStore.from_collection(client.get_collection("li_main")),
    )
    target.close(client)


if __name__ == "__main__":
    main(scenario)
