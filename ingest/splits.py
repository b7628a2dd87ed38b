"""Deterministic splits from a hash of an id: stable across runs, machines and Python versions."""

from __future__ import annotations

import hashlib


def hash_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by (salt, key); sha256, unlike hash(), is not randomised per process."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def three_way_split(key: str, salt: str, val: float = 0.1, test: float = 0.1) -> str:
    """80/10/10 by default: 'test' for the first `test` of hash space, then 'val', then 'train'."""
    f = hash_fraction(key, salt)
    if f < test:
        return "test"
    if f < test + val:
        return "val"
    return "train"
