"""Interactive evolution with a person in the loop (`aesthetic studio`): sessions, rounds, picks and ratings.

Each round renders `batch` (32) variants of the session's current design; the critic scores them, ranks them
(rank 1 is the critic's choice) and marks as cruft those `critic.decision.decide` would filter. The person picks
the variant to evolve from (any of them) and may rate any variant 1..10. A pick is also a rating: PICK_RATING
unless the person rated that variant themselves, and it is compared with the critic's choice (the rank the
critic gave it). Ratings are data: each is kept with its PNG until published as a SAC snapshot.

State lives under `$AESTHETIC_HOME/studio/` (root): `sessions/<n>/state.json` (written atomically) and the
variants' PNGs beside it, `raters.json` (a person's name -> their SAC sid). Every change holds `root/.lock`, so
the server and `aesthetic studio publish` never interleave.

SAC ids are integers and ratings merge on (sid, iid). The studio's ids start at ID_BASE (10^12), far above the
public release's (under 10^6) and any later public snapshot's, and are handed out once per studio root:
session n owns gid = ID_BASE + n * SESSION_SPAN and iid = gid + round * ROUND_SPAN + variant (round >= 1);
person k (in order of first appearance) has sid = ID_BASE + k. A snapshot never repeats an (sid, iid).
"""

from __future__ import annotations

import fcntl
import json
import random
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from common.agreement import agreement
from common.atomic import atomic_path, write_atomic
from critic.decision import Thresholds, decide
from critic.designs import Genome, canonical_shape, mutate, random_genome, render
from critic.settings import EvolveSettings

ID_BASE = 10**12
SESSION_SPAN = 10**6  # ids per session: rounds x ROUND_SPAN
ROUND_SPAN = 1000  # ids per round: the variants (batch <= 999)
MAX_ROUNDS = SESSION_SPAN // ROUND_SPAN - 1
MAX_SESSIONS = 999_999  # ids stay under ID_BASE + 10^12
PICK_RATING = 8  # a pick's rating: the person's best of 32, unless they rated it themselves
ANONYMOUS = "anonymous"
MAX_NAME = 64


class StudioError(Exception):
    """A request the studio refuses; nothing was changed. status: the HTTP status the API answers with."""

    def __init__(self, status: HTTPStatus, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class SnapshotRows:
    """What a publish writes, in SAC's tables (ingest/sac_studio.py): rows as tuples in column order, the
    picks with the critic's rank of each, and the PNG behind every `paths` row (SAC path -> file)."""

    generations: list[tuple]  # (id, sid, method, prompt, verified)
    images: list[tuple]  # (id, gid, idx)
    paths: list[tuple]  # (iid, path under sac/images/)
    ratings: list[tuple]  # (sid, iid, rating, verified)
    picks: list[tuple]  # (sid, iid, round, critic_iid, critic_rank)
    files: dict[str, Path]


Publisher = Callable[[SnapshotRows, str], str]  # (rows, snapshot name) -> the snapshot's path; idempotent by name


def rater_name(name: object) -> str:
    """A person's name as typed, whitespace collapsed; 1..64 printable characters."""
    if name is None:
        return ANONYMOUS
    if not isinstance(name, str):
        raise StudioError(HTTPStatus.BAD_REQUEST, "bad rater", "rater must be a string")
    clean = " ".join(name.split())
    if not clean or len(clean) > MAX_NAME or not clean.isprintable():
        raise StudioError(HTTPStatus.BAD_REQUEST, "bad rater", f"rater must be 1..{MAX_NAME} printable characters")
    return clean


def _score_value(score: object) -> int:
    if isinstance(score, bool) or not isinstance(score, int | float) or score != int(score) or not 1 <= score <= 10:
        raise StudioError(HTTPStatus.BAD_REQUEST, "bad score", f"score must be an integer 1..10, got {score!r}")
    return int(score)


class Studio:
    """Sessions under root, judged by `critic` (a critic.scoring.Critic). Every public method is one step of
    the JSON API and returns its answer; a StudioError leaves everything as it was."""

    def __init__(self, critic, root: str | Path, settings: EvolveSettings | None = None,
                 thresholds: Thresholds | None = None, default_shape: str = "heart") -> None:
        self.critic, self.root = critic, Path(root)
        self.settings = settings or EvolveSettings()
        if self.settings.batch >= ROUND_SPAN:
            raise ValueError(f"a studio round holds at most {ROUND_SPAN - 1} variants")
        self.thresholds = thresholds or Thresholds()
        self.default_shape = canonical_shape(default_shape)
        (self.root / "sessions").mkdir(parents=True, exist_ok=True)

    # -- files ---------------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _dir(self, n: int) -> Path:
        return self.root / "sessions" / str(n)

    def _load(self, n: int) -> dict:
        if isinstance(n, bool) or not isinstance(n, int) or not (self._dir(n) / "state.json").is_file():
            raise StudioError(HTTPStatus.NOT_FOUND, "unknown session", f"no studio session {n!r}")
        return json.loads((self._dir(n) / "state.json").read_text())

    def _save(self, state: dict) -> None:
        write_atomic(self._dir(state["session"]) / "state.json", json.dumps(state, indent=1).encode())

    def image_path(self, n: int, iid: int) -> Path:
        """The PNG of variant iid of session n; StudioError 404 when there is none."""
        self._load(n)
        path = self._dir(n) / f"{iid}.png"
        if not (isinstance(iid, int) and iid >= ID_BASE and path.is_file()):
            raise StudioError(HTTPStatus.NOT_FOUND, "unknown image", f"no image {iid} in session {n}")
        return path

    def sessions(self) -> list[dict]:
        out = []
        for d in sorted((self.root / "sessions").iterdir(), key=lambda p: (len(p.name), p.name)):
            if d.name.isdigit() and (d / "state.json").is_file():
                s = json.loads((d / "state.json").read_text())
                out.append({"session": s["session"], "shape": s["shape"], "rater": s["rater"], "round": s["round"],
                            "ratings": len(s["ratings"]), "unpublished": len(_unpublished(s))})
        return out

    # -- ids -----------------------------------------------------------------------------------------------
    def _sid(self, name: str) -> int:
        path = self.root / "raters.json"
        raters = json.loads(path.read_text()) if path.is_file() else {}
        key = name.casefold()
        if key not in raters:
            raters[key] = ID_BASE + len(raters) + 1
            write_atomic(path, json.dumps(raters, indent=1, sort_keys=True).encode())
        return raters[key]

    def _new_number(self) -> int:
        taken = [int(d.name) for d in (self.root / "sessions").iterdir() if d.name.isdigit()]
        n = max(taken, default=0) + 1
        if n > MAX_SESSIONS:
            raise StudioError(HTTPStatus.CONFLICT, "studio full", f"the studio id range holds {MAX_SESSIONS} sessions")
        self._dir(n).mkdir()  # exclusive: a number is never handed out twice
        return n

    # -- rounds --------------------------------------------------------------------------------------------
    def _round(self, state: dict, parent: Genome, r: int) -> list[dict]:
        """Render, score and rank the variants of round r; their PNGs are written beside the state."""
        s, n = self.settings, state["session"]
        rng = random.Random(f"{state['seed']}:{r}")
        genomes = [mutate(parent, rng, s.rate, s.strength) for _ in range(s.batch)]
        images = [render(g, s.size) for g in genomes]
        scores = self.critic.score_images(images).scores()
        calibrated = [x.calibrated_mean for x in scores]
        missed = decide(calibrated, calibrated, self.thresholds, [x.percentile for x in scores]).missed
        order = sorted(range(s.batch), key=lambda k: (-calibrated[k], -scores[k].mean, k))
        rank = {k: i + 1 for i, k in enumerate(order)}
        base = ID_BASE + n * SESSION_SPAN + r * ROUND_SPAN
        for k, img in enumerate(images):
            with atomic_path(self._dir(n) / f"{base + k}.png") as tmp:
                # Fastest zlib level: the page waits for 32 of these each round; they stay on this disk.
                img.save(tmp, format="PNG", compress_level=1)
        return [{"id": base + k, "rank": rank[k], "mean": scores[k].mean, "calibrated_mean": calibrated[k],
                 "percentile": scores[k].percentile, "cruft": bool(missed[k]), "genome": genomes[k].as_dict()}
                for k in order]

    def create(self, shape: object = None, rater: object = None, seed: object = None) -> dict:
        """A new session: round 1 holds the variants of a random design of `shape`."""
        try:
            shape = canonical_shape(self.default_shape if shape is None else str(shape))
        except ValueError as exc:
            raise StudioError(HTTPStatus.BAD_REQUEST, "bad shape", str(exc)) from None
        name = rater_name(rater)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise StudioError(HTTPStatus.BAD_REQUEST, "bad seed", "seed must be an integer 0..2^63-1")
        with self._locked():
            n = self._new_number()
            state = {"session": n, "shape": shape, "rater": name, "sid": self._sid(name),
                     "seed": secrets.randbits(63) if seed is None else seed, "model": self.critic.version,
                     "round": 1, "ratings": {}, "picks": [], "published": [], "pending": None}
            start = random_genome(shape, random.Random(f"{state['seed']}:0"))
            state["variants"] = self._round(state, start, 1)
            self._save(state)
        return self.view(state)

    def current(self, n: int) -> dict:
        return self.view(self._load(n))

    def _variant(self, state: dict, variant: object) -> dict:
        for v in state["variants"]:
            if v["id"] == variant and not isinstance(variant, bool):
                return v
        raise StudioError(HTTPStatus.BAD_REQUEST, "unknown variant",
                          f"variant {variant!r} is not one of round {state['round']} of session {state['session']}")

    def pick(self, n: int, variant: object) -> dict:
        """The person evolves from `variant`: recorded (with the critic's rank of it), then the next round."""
        with self._locked():
            state = self._load(n)
            chosen = self._variant(state, variant)
            if state["round"] >= MAX_ROUNDS:
                raise StudioError(HTTPStatus.CONFLICT, "session full",
                                  f"session {n} reached {MAX_ROUNDS} rounds; start a new one")
            r = state["round"]
            critic_choice = state["variants"][0]  # the variants are kept in the critic's order
            state["picks"].append({"round": r, "pick": chosen["id"], "critic_choice": critic_choice["id"],
                                   "pick_rank": chosen["rank"]})
            rating = state["ratings"].setdefault(str(chosen["id"]), {"score": PICK_RATING, "kind": "pick",
                                                                     "round": r, "published": None})
            rating["picked"] = True
            keep = {int(i) for i in state["ratings"]} | {critic_choice["id"]}
            old = state["variants"]
            state["variants"] = self._round(state, Genome.from_dict(chosen["genome"]), r + 1)
            state["round"] = r + 1
            state["last"] = {"round": r, "pick": _shown(chosen), "critic_choice": _shown(critic_choice)}
            self._save(state)
            for v in old:  # renders nobody rated or picked are not data: free their space
                if v["id"] not in keep:
                    (self._dir(n) / f"{v['id']}.png").unlink(missing_ok=True)
        return self.view(state)

    def rate(self, n: int, variant: object, score: object) -> dict:
        value = _score_value(score)
        with self._locked():
            state = self._load(n)
            v = self._variant(state, variant)
            old = state["ratings"].get(str(v["id"]))
            pending = (state["pending"] or {}).get("ids", [])
            if old and (old["published"] or v["id"] in pending):
                raise StudioError(HTTPStatus.CONFLICT, "already published",
                                  f"variant {v['id']} was published with {old['score']}; SAC keeps a first rating")
            state["ratings"][str(v["id"])] = {**(old or {}), "score": value, "kind": "rating",
                                              "round": state["round"], "published": None}
            self._save(state)
        return self.view(state)

    # -- publishing ----------------------------------------------------------------------------------------
    def publish(self, n: int, write: Publisher) -> dict:
        """The session's unpublished ratings as one SAC snapshot, written by `write`. The snapshot's name and
        ratings are recorded before it is written, so a publish killed half-way is finished (under the same
        name, never as a second snapshot) by the next one."""
        with self._locked():
            state = self._load(n)
            if not state["pending"]:
                ids = [int(i) for i in _unpublished(state)]
                if not ids:
                    raise StudioError(HTTPStatus.CONFLICT, "nothing to publish",
                                      f"every rating of session {n} is already published" if state["ratings"]
                                      else f"session {n} has no ratings or picks yet")
                state["pending"] = {"snapshot": f"studio-{n}-{len(state['published']) + 1}", "ids": ids}
                self._save(state)
            name, ids = state["pending"]["snapshot"], state["pending"]["ids"]
            path = write(self._rows(state, ids), name)
            for i in ids:
                state["ratings"][str(i)]["published"] = name
            state["published"].append({"snapshot": path, "ratings": len(ids)})
            state["pending"] = None
            self._save(state)
        return {"snapshot": path, "ratings": len(ids)}

    def publish_all(self, write: Publisher) -> list[dict]:
        """Every session with unpublished ratings (or a publish to finish), one snapshot each."""
        done = []
        for s in self.sessions():
            if s["unpublished"] or self._load(s["session"])["pending"]:
                done.append({"session": s["session"], **self.publish(s["session"], write)})
        return done

    def _rows(self, state: dict, ids: list[int]) -> SnapshotRows:
        n, sid = state["session"], state["sid"]
        gid = ID_BASE + n * SESSION_SPAN
        picks = {p["pick"]: p for p in state["picks"]}
        files = {f"studio/{n}/{i}.png": self._dir(n) / f"{i}.png" for i in ids}
        return SnapshotRows(
            generations=[(gid, sid, "aesthetic studio", f"studio session {n}: {state['shape']}", 1)],
            images=[(i, gid, i - gid) for i in ids],
            paths=[(i, f"studio/{n}/{i}.png") for i in ids],
            ratings=[(sid, i, state["ratings"][str(i)]["score"], 1) for i in ids],
            picks=[(sid, i, picks[i]["round"], picks[i]["critic_choice"], picks[i]["pick_rank"])
                   for i in ids if i in picks],
            files=files)

    # -- answers -------------------------------------------------------------------------------------------
    def view(self, state: dict) -> dict:
        """The API's answer for a session: its current round in the critic's order, the last pick beside the
        critic's choice, and the agreement figures."""
        n = state["session"]
        ratings = state["ratings"]
        return {
            "session": n, "round": state["round"], "shape": state["shape"], "rater": state["rater"],
            "model": state["model"], "pick_rating": PICK_RATING,
            "variants": [{**{k: v[k] for k in ("id", "rank", "mean", "calibrated_mean", "percentile", "cruft")},
                          "image_url": image_url(n, v["id"]),
                          "rating": ratings.get(str(v["id"]), {}).get("score")} for v in state["variants"]],
            "last": {k: ({**v, "image_url": image_url(n, v["id"])} if isinstance(v, dict) else v)
                     for k, v in state["last"].items()} if state.get("last") else None,
            "agreement": agreement([p["pick_rank"] for p in state["picks"]]),
            "ratings": len(ratings), "unpublished": len(_unpublished(state)),
            "published": state["published"],
        }


def _shown(v: dict) -> dict:
    return {k: v[k] for k in ("id", "rank", "mean", "calibrated_mean", "cruft")}


def _unpublished(state: dict) -> list[str]:
    return [i for i, r in state["ratings"].items() if not r["published"]]


def image_url(n: int, iid: int) -> str:
    return f"/api/sessions/{n}/images/{iid}.png"
