"""``typing.NamedTuple``'s class syntax without importing ``typing`` at run time.

The CLI imports the protocol on every start, and ``typing`` (with ``re``, which it brings) costs
about 5 ms of a 35 ms ``prontodb get``. Type checkers see ``typing.NamedTuple`` itself; at run time
a class written the same way is built by ``collections.namedtuple``: fields from the annotations,
defaults from the values given, every other attribute (methods, properties, docstring) copied.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    _NOT_COPIED = frozenset({"__annotations__", "__module__", "__qualname__", "_root"})

    class _NamedTupleMeta(type):
        def __new__(mcls, name, bases, namespace):
            if namespace.get("_root"):
                return super().__new__(mcls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            # As with typing, fields with defaults come after those without.
            defaults = [namespace[field] for field in fields if field in namespace]
            cls = collections.namedtuple(
                name, fields, defaults=defaults, module=namespace.get("__module__")
            )
            for key, value in namespace.items():
                if key not in _NOT_COPIED and key not in fields:
                    setattr(cls, key, value)
            cls.__qualname__ = namespace.get("__qualname__", name)
            return cls

    class NamedTuple(metaclass=_NamedTupleMeta):
        _root = True
