"""The DataChannel protocol as a schema: every client message is checked before it is used.

A message is a JSON text of at most ``max_bytes`` bytes holding one object whose ``"type"``
names one of :data:`SCHEMAS`; every field must have exactly the declared JSON type and lie in
its range, unknown fields are refused. :func:`parse_message` returns the checked fields or
raises :class:`MessageError` with a reason meant for the client (sent back as
``{"type": "error", "message": reason}``). JSON booleans only are booleans (``"false"`` is a
string, not false); integers are compared exactly (a 400-digit number is out of range, never an
``OverflowError``); NaN/Infinity and nesting deeper than ``max_depth`` are refused.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


class MessageError(ValueError):
    """A client message that does not follow the protocol (the reason goes back to the client)."""


@dataclass(frozen=True)
class Field:
    kind: str  # "bool" | "number" | "string"
    lo: float | None = None  # numbers: inclusive range
    hi: float | None = None
    max_len: int = 256  # strings
    nullable: bool = False  # JSON null allowed (kept as None)


#: message type -> allowed fields (all optional). ``type`` itself is implicit.
SCHEMAS: dict[str, dict[str, Field]] = {
    "config": {
        "enabled": Field("bool"),
        "strength": Field("number", 0.0, 1.0),
        "budget_ms": Field("number", 0.0, 1000.0),
        "compare": Field("number", 0.0, 1.0, nullable=True),  # before/after split, null = off
    },
    "ping": {"t": Field("number", -1e15, 1e15)},
    "stats": {},  # ask for a stats message now
}

#: What the DataChannel accepts by default (the SCTP layer itself advertises 256 KiB).
MAX_MESSAGE_BYTES = 4096
MAX_DEPTH = 4


def loads_limited(data: str | bytes, max_bytes: int, max_depth: int = MAX_DEPTH, what: str = "message") -> Any:
    """``json.loads`` with a size cap, a nesting cap and only clean errors (:class:`MessageError`).

    Never raises anything else: deep nesting (RecursionError), huge integer literals
    (ValueError), bad UTF-8 and NaN/Infinity all become a reason.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise MessageError(f"{what} too large ({size} bytes, limit {max_bytes})")
    if _depth(data) > max_depth:
        raise MessageError(f"{what} nested too deeply (limit {max_depth} levels)")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except MessageError:
        raise
    except RecursionError:
        raise MessageError(f"{what} nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise MessageError(f"{what} is not valid JSON: {_short(exc)}") from None


def _no_constant(name: str) -> Any:
    raise MessageError(f"{name} is not allowed (JSON numbers must be finite)")


def _depth(data: str | bytes) -> int:
    """Deepest ``[``/``{`` nesting outside strings (cheap scan before the recursive parser)."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
    if "[" not in text and "{" not in text:
        return 0
    depth = deepest = 0
    in_str = escape = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _short(exc: BaseException, limit: int = 120) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def check_fields(kind: str, msg: dict, schema: dict[str, Field]) -> dict[str, Any]:
    """The fields of ``msg`` (minus ``type``) checked against ``schema``."""
    out: dict[str, Any] = {}
    for key, value in msg.items():
        if key == "type":
            continue
        spec = schema.get(key)
        if spec is None:
            allowed = ", ".join(sorted(schema)) or "none"
            raise MessageError(f"{kind}: unknown field {key[:40]!r} (allowed: {allowed})")
        out[key] = _check(kind, key, value, spec)
    return out


def _check(kind: str, key: str, value: Any, spec: Field) -> Any:
    name = f"{kind}.{key}"
    if value is None and spec.nullable:
        return None
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise MessageError(f"{name} must be true or false (a JSON boolean), got {_show(value)}")
        return value
    if spec.kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MessageError(f"{name} must be a number, got {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise MessageError(f"{name} must be finite")
        # Exact comparison for ints: no float() of a huge integer (OverflowError).
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            raise MessageError(f"{name} must be between {spec.lo:g} and {spec.hi:g}, got {_show(value)}")
        return float(value)
    if spec.kind == "string":
        if not isinstance(value, str):
            raise MessageError(f"{name} must be a string, got {_show(value)}")
        if len(value) > spec.max_len:
            raise MessageError(f"{name} longer than {spec.max_len} characters")
        return value
    raise AssertionError(spec.kind)


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    text = json.dumps(value) if isinstance(value, (str, bool, int, float)) or value is None else type(value).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def parse_message(data: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[str, dict[str, Any]]:
    """``(type, checked fields)`` of one DataChannel message, or :class:`MessageError`."""
    if isinstance(data, (bytes, bytearray)):
        raise MessageError("binary messages are not accepted: send JSON text")
    msg = loads_limited(data, max_bytes)
    if not isinstance(msg, dict):
        raise MessageError("messages must be JSON objects with a \"type\"")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise MessageError(f"unknown message type {_show(kind)} (known: {', '.join(sorted(SCHEMAS))})")
    return kind, check_fields(kind, msg, SCHEMAS[kind])
