"""Search indexes: the xyOps query syntax over secondary indexes kept in Redis (layout in index.py)."""

from __future__ import annotations

from .index import Indexer, Op, SearchResult
from .query import Query, QueryError, parse
from .spec import Column, IndexSpec, order_from_id

__all__ = ["Column", "IndexSpec", "Indexer", "Op", "Query", "QueryError", "SearchResult", "order_from_id", "parse"]
