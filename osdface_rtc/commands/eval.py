"""`osdface-rtc eval` (placeholder until its module lands)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("eval", help="(not available yet)")
    p.set_defaults(func=lambda args: print("osdface-rtc eval is not available yet") or 2)
