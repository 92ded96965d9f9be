"""The fast path's hand-written msgpack (clients/_cli_wire.py) against msgpack itself."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prontodb import protocol
from prontodb.clients import _cli_commands, _cli_wire

# The protocol's value types (docs/PROTOCOL.md), at every width msgpack has for each.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.sampled_from(["x" * 40, "y" * 70_000, b"z" * 300, b"w" * 70_000])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(), inner, max_size=20),
    max_leaves=40,
)


def packed(value: object) -> bytes:
    out = bytearray()
    _cli_wire.pack(value, out)
    return bytes(out)


@given(values)
def test_what_it_packs_msgpack_reads_back(value: object) -> None:
    assert msgpack.unpackb(packed(value), raw=False, strict_map_key=False) == value


@given(values)
def test_it_reads_what_msgpack_packs(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    assert _cli_wire.unpack(data) == (value, len(data))


def test_a_single_precision_float_reads_as_msgpack_reads_it() -> None:
    data = msgpack.packb(1.5, use_single_float=True)
    assert _cli_wire.unpack(data) == (1.5, len(data))


@pytest.mark.parametrize("value", ["caf\udce9", {1, 2}, 2**64, -(2**63) - 1, math.pi + 1j])
def test_what_it_cannot_pack_goes_to_the_sync_client(value: object) -> None:
    with pytest.raises(_cli_wire.Declined):
        packed(value)


def test_an_ext_type_is_refused() -> None:
    with pytest.raises(KeyError):
        _cli_wire.unpack(msgpack.packb(msgpack.ExtType(1, b"x")))


def test_the_cli_s_exit_statuses_are_the_error_table_s() -> None:
    table = protocol.ERROR_TABLE
    assert table[protocol.ErrorCode.NOT_FOUND].exit_status == _cli_commands.EXIT_NOT_FOUND
    assert table[protocol.ErrorCode.TIMED_OUT].exit_status == _cli_commands.EXIT_TIMED_OUT


def test_the_cli_s_integer_bounds_are_the_protocol_s() -> None:
    assert (_cli_commands.INT64_MIN, _cli_commands.INT64_MAX) == (
        protocol.INT64_MIN,
        protocol.INT64_MAX,
    )
