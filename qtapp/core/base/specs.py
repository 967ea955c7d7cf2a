"""(docstring)"""

from __future__ import annotations


def looks_like_factory(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    if not sep or not tail.isidentifier() or len(head) <= 1:  # `C:` drive letters are not factories
        return False
    return head.endswith(".py") or all(p.isidentifier() for p in head.split("."))
