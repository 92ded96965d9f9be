"""The state machine of one database: keys, revisions, conditional writes, counters, transactions.

No I/O and no clock: callers pass ``now`` and make the returned records durable before they answer.
"""

from . import _recipes as recipes
from ._claims import Claim
from ._conditions import Compare, OpKind, Target, TxnOp, TxnResult
from ._engine import (
    DEAD_PREFIX,
    DEFAULT_LEASE,
    MISSING,
    Applied,
    ChangeKind,
    Claimed,
    Engine,
    EngineCounters,
    EngineLimits,
)
from ._entry import Entry
from ._history import Batch, Change, HistoryLimits, change_cost
from ._keys import parent_of, validate_key, validate_prefix
from ._queues import ItemOptions, QueueConfig
from ._quotas import Quota
from ._records import Record, RecordKind, ReplayError
from ._sessions import SessionInfo

__all__ = [
    "DEAD_PREFIX",
    "DEFAULT_LEASE",
    "MISSING",
    "Applied",
    "Batch",
    "Change",
    "ChangeKind",
    "Claim",
    "Claimed",
    "Compare",
    "Engine",
    "EngineCounters",
    "EngineLimits",
    "Entry",
    "HistoryLimits",
    "ItemOptions",
    "QueueConfig",
    "Quota",
    "OpKind",
    "Record",
    "RecordKind",
    "ReplayError",
    "SessionInfo",
    "change_cost",
    "parent_of",
    "recipes",
    "Target",
    "TxnOp",
    "TxnResult",
    "validate_key",
    "validate_prefix",
]
