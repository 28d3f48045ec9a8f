"""``tintdb.execution``: chromadb's import path for the Search API builders."""
