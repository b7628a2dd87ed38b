"""The leak search's memory between runs, under $AESTHETIC_HOME/cache/leakage/ (critic/leakage.py uses it).

- Signatures (`SignatureCache`): a crop's dHash, palette or model features, keyed by the sha256 of its bytes (the
  content hash; features also by the model version and checkpoint sha256, in the table's name), so a crop whose
  bytes did not change is never decoded, hashed or run through a model again, by the shards drop or by the
  blocking check.
- Pairs (`PairState`, one file per dataset and rule): the held-out and train content hashes the last search
  covered and the pairs it found among them. A pair's verdict depends on its two crops alone (the exact rule of
  critic/leakage.py), so the next search only has to compare what is new on either side.

Files are numpy .npz tables, rows sorted by `sha` (64 hex digits). Each is replaced whole (written under a
temporary name and renamed: common/atomic.py), so a reader never sees half of one and readers need no lock;
writers merge under an exclusive lock on a sidecar `.lock` file, so two steps adding rows at once lose neither's.
A file that cannot be read, or whose columns do not fit together, is reported in one log line and treated as
empty: the search recomputes what it needs and the next write replaces the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_path

SHA = np.dtype("S64")  # a sha256 as 64 ASCII hex digits (raw digests would lose trailing zero bytes in numpy)
CACHE_DIR = ("cache", "leakage")
Log = Callable[[str], None]


def cache_dir(home: str | Path) -> Path:
    return Path(home).joinpath(*CACHE_DIR)


def content_sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _warn(message: str) -> None:
    logging.getLogger(__name__).warning(message)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write(path: Path, columns: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **columns)


def _read(path: Path, rows_of: Mapping[str, str], log: Log) -> dict[str, np.ndarray] | None:
    """The file's columns, or None when there is none; a file that is not a table of these columns (each
    column's rows counted by the column that `rows_of` names; `sha` columns sorted and unique) is logged and
    read as None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            columns = {name: z[name] for name in z.files}
        if any(columns[name].dtype != SHA for name in ("sha", "query", "train") if name in columns):
            raise ValueError("a content-hash column is not 64 hex digits")
        for name, rows in rows_of.items():
            if name not in columns or len(columns[name]) != len(columns[rows]):
                raise ValueError(f"column {name!r} missing or of the wrong length")
        for name, col in columns.items():
            if col.dtype == SHA and len(col) > 1 and not (col[1:] > col[:-1]).all():
                raise ValueError(f"column {name!r} not sorted and unique")
        return columns
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log(f"leak cache {path} unreadable ({type(exc).__name__}: {str(exc)[:100]}): rebuilt")
        return None


def as_shas(hexes) -> np.ndarray:
    return np.asarray(list(hexes), dtype=SHA)


def positions(table: np.ndarray, shas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, row): whether each of shas is in the sorted table, and its row there (0 where not found)."""
    if len(table) == 0:
        return np.zeros(len(shas), bool), np.zeros(len(shas), np.int64)
    row = np.minimum(np.searchsorted(table, shas), len(table) - 1)
    return table[row] == shas, row


class SignatureCache:
    """Per kind ('dhash', 'palette', 'features-<version>-<checkpoint sha256>'), a table of sha -> `ok` (the bytes
    decoded) and the signature columns. Counts what it served and what it was given: `hits`, `stored`."""

    def __init__(self, root: str | Path, log: Log = _warn) -> None:
        self.root, self.log = Path(root), log
        self.hits, self.stored = 0, 0

    def _path(self, kind: str) -> Path:
        return self.root / f"{kind}.npz"

    def _table(self, kind: str, log: Log | None = None) -> dict[str, np.ndarray] | None:
        return _read(self._path(kind), {"ok": "sha", "value": "sha"}, log or self.log)

    def lookup(self, kind: str, shas: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(found, ok, value) for each of shas: ok and value are read only where found (None when no table)."""
        table = self._table(kind)
        if table is None:
            return np.zeros(len(shas), bool), None, None
        found, row = positions(table["sha"], shas)
        self.hits += int(found.sum())
        return found, table["ok"][row], table["value"][row]

    def store(self, kind: str, shas: np.ndarray, ok: np.ndarray, value: np.ndarray) -> None:
        """Add rows (those already there are kept as they are): merged with the file as it is now, under the
        lock, and written whole."""
        if len(shas) == 0:
            return
        path = self._path(kind)
        with _locked(path):
            old = self._table(kind, lambda _: None)  # its lookup has reported a bad file already
            if old is not None:
                new = ~positions(old["sha"], shas)[0]
                if old["value"].shape[1:] == value.shape[1:]:  # another width: a different model, start over
                    shas, ok, value = (np.concatenate([old[c], x[new]])
                                       for c, x in (("sha", shas), ("ok", ok), ("value", value)))
            shas, first = np.unique(shas, return_index=True)
            _write(path, {"sha": shas, "ok": ok[first], "value": value[first]})
        self.stored += len(first)


@dataclass
class PairState:
    """What one search covered: every (query, train) content-hash pair of these two sorted sets has been
    compared, and `pairs` (indexes into them, with distance and cosine, NaN when none) are the matches."""

    rule: str
    query: np.ndarray
    train: np.ndarray
    qi: np.ndarray
    tj: np.ndarray
    distance: np.ndarray
    cosine: np.ndarray

    @classmethod
    def empty(cls, rule: str) -> PairState:
        z = np.zeros(0, np.int64)
        return cls(rule, as_shas([]), as_shas([]), z, z, z.astype(float), z.astype(float))


def _pair_path(root: Path, dataset: str, rule: str) -> Path:
    return root / "pairs" / f"{dataset}-{hashlib.sha256(rule.encode()).hexdigest()[:16]}.npz"


def load_pairs(root: str | Path, dataset: str, rule: Mapping, log: Log = _warn) -> PairState | None:
    """The last search of dataset under rule (None when there was none, or its file cannot be trusted)."""
    text = json.dumps(dict(rule), sort_keys=True)
    path = _pair_path(Path(root), dataset, text)
    cols = _read(path, {"rule": "rule", "qi": "tj", "distance": "tj", "cosine": "tj"}, log)
    if cols is None:
        return None
    state = PairState(str(cols["rule"][0]), cols["query"], cols["train"], cols["qi"], cols["tj"],
                      cols["distance"], cols["cosine"])
    fits = (state.rule == text and state.query.dtype == SHA and state.train.dtype == SHA
            and all(len(i) == 0 or (0 <= i.min() and i.max() < n)
                    for i, n in ((state.qi, len(state.query)), (state.tj, len(state.train)))))
    if not fits:
        log(f"leak cache {path} does not fit its rule or its sets: rebuilt")
        return None
    return state


def save_pairs(root: str | Path, dataset: str, state: PairState) -> None:
    path = _pair_path(Path(root), dataset, state.rule)
    with _locked(path):
        _write(path, {"rule": np.array([state.rule]), "query": state.query, "train": state.train,
                      "qi": state.qi, "tj": state.tj, "distance": state.distance, "cosine": state.cosine})
