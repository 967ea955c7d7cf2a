"""What a model spec string looks like, without importing anything: a `module:callable` or `file.py:callable`
factory (code that runs, so it needs consent) rather than a file or a torchvision name."""

from __future__ import annotations


def looks_like_factory(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    if not sep or not tail.isidentifier() or len(head) <= 1:  # `C:` drive letters are not factories
        return False
    return head.endswith(".py") or all(p.isidentifier() for p in head.split("."))
