"""`aesthetic studio`: the JSON API on a real server on 127.0.0.1, sessions on disk, publishing SAC snapshots,
and every forged or cross-site request refused without a change."""

from __future__ import annotations

import hashlib
import http.client
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from cli.main import _studio_publisher, build_parser, build_studio, main
from critic.decision import Thresholds
from critic.scoring import Critic
from critic.service import Limits
from critic.settings import EvolveSettings
from critic.studio import ID_BASE, PICK_RATING, ROUND_SPAN, SESSION_SPAN, Studio, StudioError
from critic.studio_app import StudioService
from ingest.sac_studio import studio_summary
from tests.helpers.critic_models import make_model, save_test_checkpoint

# Rounds of 8 variants of 64 px designs and a 64 px model input keep the module short on two shared cores; the
# page's 32 are the default (the command-line test below, tests/test_e2e_studio.py).
SETTINGS = EvolveSettings(size=64, batch=8)
LIMITS = Limits(max_bytes=4096)


@pytest.fixture(scope="module")
def critic() -> Critic:
    return Critic(make_model(), image_size=64, version="test-studio")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("studio")
    return {"root": base / "home" / "studio", "raw": base / "raw"}


@pytest.fixture(scope="module")
def server(critic, dirs) -> Iterator[StudioService]:
    studio = Studio(critic, dirs["root"], SETTINGS, Thresholds(top_fraction=0.5))
    with StudioService(studio, _studio_publisher(dirs["raw"]), "127.0.0.1", 0, LIMITS) as srv:
        yield srv


def call(srv: StudioService, method: str, path: str, body: object = None, headers: dict | None = None,
         raw: bytes | None = None) -> tuple[int, object]:
    host, port = srv.server_address
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        sent = {"Content-Type": "application/json"} if method == "POST" else {}
        data = raw if raw is not None else (json.dumps(body).encode() if method == "POST" else None)
        conn.request(method, path, body=data, headers={**sent, **(headers or {})})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(payload)
        return resp.status, payload
    finally:
        conn.close()


def new_session(srv: StudioService, rater: str = "Ann", shape: str = "star") -> dict:
    status, body = call(srv, "POST", "/api/sessions", {"shape": shape, "rater": rater})
    assert status == 201, body
    return body


def state_bytes(srv: StudioService) -> dict[str, str]:
    """A digest of every file under the studio root, to show that a refused request changed nothing."""
    root = srv.studio.root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_round_lists_the_variants_in_the_critics_order_with_scores_cruft_marks_and_images(server) -> None:
    body = new_session(server)
    variants = body["variants"]
    assert body["round"] == 1 and len(variants) == 8
    assert [v["rank"] for v in variants] == list(range(1, 9))
    cal = [v["calibrated_mean"] for v in variants]
    assert cal == sorted(cal, reverse=True) and len(set(cal)) > 1
    # top_fraction 0.5: the critic's filter drops the lower half, so exactly those carry the cruft mark.
    assert [v["cruft"] for v in variants] == [False] * 4 + [True] * 4
    n = body["session"]
    assert all(ID_BASE + n * SESSION_SPAN + ROUND_SPAN <= v["id"] < ID_BASE + n * SESSION_SPAN + 2 * ROUND_SPAN
               for v in variants)
    status, png = call(server, "GET", variants[5]["image_url"])
    assert status == 200 and png.startswith(b"\x89PNG")


def test_picking_a_low_ranked_variant_evolves_from_it_and_counts_as_disagreement(server) -> None:
    first = new_session(server)
    n, low = first["session"], first["variants"][6]
    status, second = call(server, "POST", f"/api/sessions/{n}/pick", {"variant": low["id"]})
    assert status == 200 and second["round"] == 2
    assert second["last"]["pick"]["id"] == low["id"] and second["last"]["pick"]["rank"] == 7
    assert second["last"]["critic_choice"]["id"] == first["variants"][0]["id"]
    assert second["agreement"] == {"picks": 1, "agreed": 0, "agreement": 0.0, "pick_ranks": [7],
                                   "mean_pick_rank": 7.0, "median_pick_rank": 7}
    status, third = call(server, "POST", f"/api/sessions/{n}/pick", {"variant": second["variants"][0]["id"]})
    assert status == 200 and third["round"] == 3
    assert (third["agreement"]["agreed"], third["agreement"]["pick_ranks"]) == (1, [7, 1])
    # The pick is a rating of PICK_RATING; nothing else was rated.
    assert third["ratings"] == 2 and third["unpublished"] == 2


def test_publish_writes_one_sac_snapshot_with_the_ratings_picks_and_pngs_and_never_twice(server, dirs) -> None:
    body = new_session(server, rater="  Bea   Cole ")
    n, v = body["session"], body["variants"]
    call(server, "POST", f"/api/sessions/{n}/rate", {"variant": v[3]["id"], "score": 3})
    status, rated = call(server, "POST", f"/api/sessions/{n}/rate", {"variant": v[3]["id"], "score": 9})
    assert status == 200 and rated["variants"][3]["rating"] == 9  # the latest rating before publishing counts
    call(server, "POST", f"/api/sessions/{n}/rate", {"variant": v[6]["id"], "score": 2})
    call(server, "POST", f"/api/sessions/{n}/pick", {"variant": v[6]["id"]})  # rated, then picked: 2 stands
    status, nxt = call(server, "POST", f"/api/sessions/{n}/pick",
                       {"variant": (picked := call(server, "GET", f"/api/sessions/{n}")[1]["variants"][4])["id"]})
    assert status == 200
    status, out = call(server, "POST", f"/api/sessions/{n}/publish", {})
    assert status == 200 and out["ratings"] == 3
    snapshot = Path(out["snapshot"])
    assert snapshot.parent == dirs["raw"] / "sac" / "inbox" and snapshot.name == f"studio-{n}-1.sqlite"
    sid = server.studio._sid("bea cole")
    gid = ID_BASE + n * SESSION_SPAN
    with closing(sqlite3.connect(snapshot)) as con:
        assert sorted(con.execute("SELECT sid, iid, rating, verified FROM ratings")) == sorted([
            (sid, v[3]["id"], 9, 1), (sid, v[6]["id"], 2, 1), (sid, picked["id"], PICK_RATING, 1)])
        assert con.execute("SELECT DISTINCT gid FROM images").fetchall() == [(gid,)]
        paths = dict(con.execute("SELECT iid, path FROM paths"))
        assert con.execute("SELECT round, iid, critic_rank FROM studio_picks ORDER BY round").fetchall() == [
            (1, v[6]["id"], 7), (2, picked["id"], 5)]
    for path in paths.values():
        assert (dirs["raw"] / "sac" / "images" / path).read_bytes().startswith(b"\x89PNG")
    assert studio_summary(snapshot) == {"ratings": 3, "picks": 2, "agreed": 0, "agreement": 0.0,
                                        "pick_ranks": [7, 5], "mean_pick_rank": 6.0, "median_pick_rank": 6.0}
    before = state_bytes(server)
    status, again = call(server, "POST", f"/api/sessions/{n}/publish", {})
    assert (status, again["error"]) == (409, "nothing to publish") and state_bytes(server) == before
    assert [p.name for p in snapshot.parent.iterdir() if p.name.startswith(f"studio-{n}-")] == [snapshot.name]
    # A rating published from the current round is not rewritten: SAC keeps the first value of an (sid, iid).
    late = nxt["variants"][0]["id"]
    call(server, "POST", f"/api/sessions/{n}/rate", {"variant": late, "score": 4})
    status, out = call(server, "POST", f"/api/sessions/{n}/publish", {})
    assert status == 200 and Path(out["snapshot"]).name == f"studio-{n}-2.sqlite" and out["ratings"] == 1
    status, err = call(server, "POST", f"/api/sessions/{n}/rate", {"variant": late, "score": 5})
    assert (status, err["error"]) == (409, "already published")


def test_forged_and_cross_site_requests_get_json_4xx_and_change_nothing(server) -> None:
    body = new_session(server)
    n, old = body["session"], body["variants"]
    _, current = call(server, "POST", f"/api/sessions/{n}/pick", {"variant": old[0]["id"]})
    fresh = current["variants"][0]["id"]
    before = state_bytes(server)
    refused = [
        (("POST", "/api/sessions/999999/pick", {"variant": fresh}), 404, "unknown session"),
        (("GET", "/api/sessions/999999"), 404, "unknown session"),
        (("POST", f"/api/sessions/{n}/pick", {"variant": old[5]["id"]}), 400, "unknown variant"),
        (("POST", f"/api/sessions/{n}/rate", {"variant": old[5]["id"], "score": 5}), 400, "unknown variant"),
        (("POST", f"/api/sessions/{n}/rate", {"variant": fresh + ROUND_SPAN, "score": 5}), 400, "unknown variant"),
        (("POST", f"/api/sessions/{n}/rate", {"variant": True, "score": 5}), 400, "unknown variant"),
        *[(("POST", f"/api/sessions/{n}/rate", {"variant": fresh, "score": s}), 400, "bad score")
          for s in (0, 11, 5.5, "7", True, None, -3)],
        (("POST", "/api/sessions", {"shape": "circle"}), 400, "bad shape"),
        (("POST", "/api/sessions", {"shape": "heart", "rater": "x" * 65}), 400, "bad rater"),
        (("POST", f"/api/sessions/{n}/pick", None, {}, b"[1, 2]"), 400, "bad json"),
        (("POST", f"/api/sessions/{n}/pick", None, {}, b"{not json"), 400, "bad json"),
        (("POST", f"/api/sessions/{n}/pick", None, {}, b" " * 5000), 413, "too large"),
        (("POST", f"/api/sessions/{n}/pick", None, {"Content-Type": "text/plain"}, b'{"variant": 1}'), 415,
         "not json"),
        (("POST", f"/api/sessions/{n}/pick", None, {"Content-Type": "application/x-www-form-urlencoded"},
          b"variant=1"), 415, "not json"),
        (("POST", f"/api/sessions/{n}/rate", {"variant": fresh, "score": 5}, {"Origin": "http://evil.example"}),
         403, "cross-site request"),
        (("POST", f"/api/sessions/{n}/rate", {"variant": fresh, "score": 5}, {"Origin": "null"}), 403,
         "cross-site request"),
        (("GET", f"/api/sessions/{n}", None, {"Host": "attacker.example:80"}), 403, "wrong host"),
        (("GET", f"/api/sessions/{n}/images/{old[5]['id']}.png"), 404, "unknown image"),  # unrated: freed
        (("DELETE", f"/api/sessions/{n}"), 405, "method not allowed"),
    ]
    for args, status, kind in refused:
        got, answer = call(server, *args)
        assert isinstance(answer, dict) and (got, answer.get("error")) == (status, kind), (args, got, answer)
        assert answer["message"]
    assert state_bytes(server) == before
    host, port = server.server_address
    status, ok = call(server, "POST", f"/api/sessions/{n}/rate", {"variant": fresh, "score": 10},
                      {"Origin": f"http://{host}:{port}", "Host": f"localhost:{port}"})
    assert status == 200 and ok["variants"][0]["rating"] == 10


def test_a_session_is_resumed_from_disk_by_a_new_server(server, critic, dirs) -> None:
    body = new_session(server)
    n = body["session"]
    call(server, "POST", f"/api/sessions/{n}/rate", {"variant": body["variants"][1]["id"], "score": 6})
    _, paused = call(server, "GET", f"/api/sessions/{n}")
    again = Studio(critic, dirs["root"], SETTINGS, Thresholds(top_fraction=0.5))
    with StudioService(again, _studio_publisher(dirs["raw"]), "127.0.0.1", 0, LIMITS) as other:
        status, resumed = call(other, "GET", f"/api/sessions/{n}")
        assert status == 200 and resumed == paused and resumed["variants"][1]["rating"] == 6
        status, listed = call(other, "GET", "/api/sessions")
        assert {"session": n, "shape": "star", "rater": "Ann", "round": 1, "ratings": 1,
                "unpublished": 1} in listed["sessions"]
    assert not list(dirs["root"].rglob(".*.tmp")), "state is written atomically"


def test_people_keep_their_sid_and_ids_never_repeat_across_sessions(server) -> None:
    a, b = new_session(server, rater="Dana"), new_session(server, rater="DANA ")
    c = new_session(server, rater="Eli")
    sids = {name: server.studio._sid(name) for name in ("dana", "eli")}
    assert sids["dana"] != sids["eli"] and min(sids.values()) > ID_BASE
    assert server.studio._sid("Dana") == sids["dana"]
    ids = [v["id"] for s in (a, b, c) for v in s["variants"]]
    assert len(set(ids)) == len(ids) and min(ids) > ID_BASE
    assert len({s["session"] for s in (a, b, c)}) == 3


def test_a_publish_that_failed_is_finished_under_the_same_name_not_as_a_second_snapshot(critic, tmp_path) -> None:
    studio = Studio(critic, tmp_path / "studio", SETTINGS)
    body = studio.create("heart", "Fay")
    n = body["session"]
    studio.rate(n, body["variants"][2]["id"], 7)
    (tmp_path / "raw" / "sac").mkdir(parents=True)
    (tmp_path / "raw" / "sac" / "inbox").write_text("not a folder")  # the snapshot cannot be written
    with pytest.raises(OSError):
        studio.publish(n, _studio_publisher(tmp_path / "raw"))
    with pytest.raises(StudioError) as refused:  # pending: the rating is frozen with its snapshot's name
        studio.rate(n, body["variants"][2]["id"], 3)
    assert refused.value.kind == "already published"
    (tmp_path / "raw" / "sac" / "inbox").unlink()
    studio.rate(n, body["variants"][4]["id"], 5)  # rated after the failure: the next snapshot's
    out = studio.publish(n, _studio_publisher(tmp_path / "raw"))
    assert Path(out["snapshot"]).name == f"studio-{n}-1.sqlite" and out["ratings"] == 1
    second = studio.publish(n, _studio_publisher(tmp_path / "raw"))
    assert Path(second["snapshot"]).name == f"studio-{n}-2.sqlite" and second["ratings"] == 1
    with closing(sqlite3.connect(out["snapshot"])) as con:
        assert con.execute("SELECT rating FROM ratings").fetchall() == [(7,)]


def test_openapi_describes_the_studio_api(server) -> None:
    status, spec = call(server, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/api/sessions", "/api/sessions/{session}/pick", "/api/sessions/{session}/rate",
            "/api/sessions/{session}/publish"} <= set(spec["paths"])
    assert {"400", "403", "404", "409", "413", "415"} <= set(spec["paths"]["/api/sessions/{session}/rate"]["post"][
        "responses"])
    variant = spec["components"]["schemas"]["Variant"]["required"]
    assert variant == ["id", "rank", "mean", "calibrated_mean", "cruft", "image_url"]


def test_the_studio_binds_to_127_0_0_1_by_default_and_publish_runs_from_the_command_line(
        tmp_path, monkeypatch, capsys) -> None:
    ckpt = save_test_checkpoint(tmp_path / "m" / "model.pt", crop=64, resize=73)
    monkeypatch.setenv("AESTHETIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AESTHETIC_RAW", str(tmp_path / "raw"))
    args = build_parser().parse_args(["studio", "--model", str(ckpt), "--port", "0", "--size", "64",
                                      "--max-bytes", "2000"])
    srv = build_studio(args)
    try:
        assert srv.server_address[0] == "127.0.0.1" and srv.limits.max_bytes == 2000
        assert srv.studio.root == (tmp_path / "home" / "studio").resolve()
        assert srv.studio.thresholds == Thresholds(min_score=5.0)
        body = srv.studio.create(None, "Gil")
        assert len(body["variants"]) == 32 and body["shape"] == "heart"
        srv.studio.rate(body["session"], body["variants"][0]["id"], 8)
    finally:
        srv.close()
    assert main(["studio", "publish"]) == 0
    out = capsys.readouterr()
    assert f"session {body['session']}: 1 ratings -> " in out.out
    assert (tmp_path / "raw" / "sac" / "inbox" / f"studio-{body['session']}-1.sqlite").is_file()
    assert main(["studio", "publish"]) == 0 and "nothing to publish" in capsys.readouterr().err


def test_the_agreement_summary_skips_public_snapshots_and_ranks_that_are_not_ranks(tmp_path) -> None:
    from ingest.sac_schema import SAC_SCHEMA
    from ingest.sac_studio import write_studio_snapshot

    public = tmp_path / "public.sqlite"
    with closing(sqlite3.connect(public)) as con:
        con.executescript(SAC_SCHEMA)
    assert studio_summary(public) is None
    path = Path(write_studio_snapshot(tmp_path, "studio-9-1", [], [], [], [(1, 2, 8, 1)],
                                      [(1, 2, 1, 3, 4), (1, 5, 2, 6, "x"), (1, 7, 3, 8, 0), (1, 9, 4, 8, 1)], {}))
    assert studio_summary(path) == {"ratings": 1, "picks": 2, "agreed": 1, "agreement": 0.5, "pick_ranks": [4, 1],
                                    "mean_pick_rank": 2.5, "median_pick_rank": 2.5, "bad_ranks": 2}
