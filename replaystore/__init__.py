"""replaystore: every kind of continual-learning replay memory in one versioned Lance store."""

import os

os.environ.setdefault("LANCE_LOG", "error")  # Lance's INFO/WARN chatter is not for our users

from replaystore.api import Store, open
from replaystore.errors import (
    BudgetExceededError,
    CommitConflictError,
    NotFoundError,
    ReplayStoreError,
    StoreURIError,
    TableNameError,
    ValidationError,
)
from replaystore.store import DEFAULT_URI, TableInfo, VersionInfo

__all__ = [
    "DEFAULT_URI",
    "BudgetExceededError",
    "CommitConflictError",
    "NotFoundError",
    "ReplayStoreError",
    "Store",
    "StoreURIError",
    "TableInfo",
    "TableNameError",
    "ValidationError",
    "VersionInfo",
    "open",
]
__version__ = "0.1.0"
