"""`osdface-rtc serve` (placeholder until its module lands)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("serve", help="(not available yet)")
    p.set_defaults(func=lambda args: print("osdface-rtc serve is not available yet") or 2)
