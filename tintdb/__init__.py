"""tintdb: an embedding database with Chroma's API.

import tintdb
client = tintdb.PersistentClient(path="./data")
docs = client.get_or_create_collection("docs")
docs.add(ids=["a"], documents=["hello world"])
docs.query(query_texts=["hi"], n_results=1)
"""

__version__ = "0.1.0"

from . import errors
from ._client import (
    AdminClient,
    Client,
    Collection,
    EphemeralClient,
    PersistentClient,
)
from ._http import AsyncHttpClient, HttpClient
from .config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings
from .types import GetResult, QueryResult

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_TENANT",
    "AdminClient",
    "AsyncHttpClient",
    "Client",
    "Collection",
    "EphemeralClient",
    "GetResult",
    "HttpClient",
    "PersistentClient",
    "QueryResult",
    "Settings",
    "__version__",
    "errors",
]

for _name in (
    "AdminClient",
    "AsyncHttpClient",
    "Client",
    "Collection",
    "EphemeralClient",
    "PersistentClient",
    "Settings",
):
    globals()[_name].__module__ = "tintdb"
del _name
