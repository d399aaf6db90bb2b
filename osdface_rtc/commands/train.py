"""`osdface-rtc train` (placeholder until its module lands)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="(not available yet)")
    p.set_defaults(func=lambda args: print("osdface-rtc train is not available yet") or 2)
