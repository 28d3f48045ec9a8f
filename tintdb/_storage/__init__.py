"""The SQLite layer: the single source of truth.

* ``store``: ``Store``, the connection and its lock; ``read()``, and ``write()``, which
  yields a ``Tx``.
* ``tx``: ``Tx``, one open write, the only holder of the methods that change rows
  (records, metadata index, sparse postings, vector blocks, the change log, the catalog).
* ``catalog``: tenants, databases and collections (reads; changes for ``Tx``).
* ``reads``: records by filter or by seq, their vectors, sparse postings, the log.
* ``blocks``: the vector block rows (the codec itself is ``_vblocks``).
* ``schema``: the tables, the file format version and the named ``MIGRATIONS``.
* ``rows``: how rows are encoded (the collection row, the log's kinds, metadata rows).

Alongside the records, each write appends one row to ``ops``, the change log that the
vector index replays (see ``_local``).
"""

from .rows import OP_DELETE, OP_SET, OP_TOUCH, CollectionRow
from .schema import DB_FILENAME, MIGRATIONS, SCHEMA_VERSION
from .store import Store
from .tx import Tx

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "OP_DELETE",
    "OP_SET",
    "OP_TOUCH",
    "SCHEMA_VERSION",
    "CollectionRow",
    "Store",
    "Tx",
]
