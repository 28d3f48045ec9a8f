"""``SearchResult``: what ``Collection.search`` returns, column-major as Chroma's."""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["SearchResult", "SearchResultRow"]


class SearchResultRow(TypedDict, total=False):
    """One record of one search; ``id`` always, the other fields when selected."""

    id: str
    document: str | None
    embedding: list[float] | None
    metadata: dict[str, Any] | None
    score: float | None


class SearchResult(dict[str, Any]):
    """One entry per search in each field: ``ids[i]`` the records of search i, best
    first; ``documents``/``embeddings``/``metadatas``/``scores`` ``[i]`` their fields, or
    None when search i did not select them; ``select[i]`` the keys it selected."""

    def rows(self) -> list[list[SearchResultRow]]:
        """The same answer row by row: per search, one dict per record."""
        ids = self.get("ids") or []
        out: list[list[SearchResultRow]] = []
        for i, batch in enumerate(ids):
            columns = {
                name: (self.get(field) or [None] * len(ids))[i]
                for name, field in (
                    ("document", "documents"),
                    ("embedding", "embeddings"),
                    ("metadata", "metadatas"),
                    ("score", "scores"),
                )
            }
            rows: list[SearchResultRow] = []
            for j, record_id in enumerate(batch):
                row: SearchResultRow = {"id": record_id}
                for name, values in columns.items():
                    if values is not None and values[j] is not None:
                        row[name] = values[j]  # type: ignore[literal-required]
                rows.append(row)
            out.append(rows)
        return out
