"""The critic scores at the crop/resize its checkpoint was trained at (args "crop"/"resize"), unless told otherwise.

The CPU demo trains at crop 96 / resize 108: scoring such a model at 224 px feeds it inputs it never saw.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
import torch

from cli.main import build_parser, build_server, main
from critic.scoring import Critic, decode_image, load_image
from nima_train.checkpoint import model_from_checkpoint
from nima_train.transforms import eval_transform
from tests.helpers.critic_models import picture, png_bytes, save_test_checkpoint


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "demo" / "model.pt", crop=96, resize=108)


def test_a_checkpoint_trained_at_96_is_scored_at_96_unless_overridden(demo_checkpoint: Path, tmp_path: Path) -> None:
    img = picture(7, 300)
    critic = Critic.from_checkpoint(demo_checkpoint)
    assert (critic.image_size, critic.resize) == (96, 108)
    x = critic.preprocess([img])
    assert x.shape == (1, 3, 96, 96)
    assert torch.equal(x[0], eval_transform(96, 108)(img))  # resize 108 then crop 96, as in training

    bigger = Critic.from_checkpoint(demo_checkpoint, image_size=128)
    assert bigger.preprocess([img]).shape == (1, 3, 128, 128) and bigger.resize == 146  # 128 * 256 / 224
    both = Critic.from_checkpoint(demo_checkpoint, image_size=128, resize=140)
    assert (both.image_size, both.resize) == (128, 140)

    plain = save_test_checkpoint(tmp_path / "plain.pt")  # args without crop/resize: the 224/256 defaults
    assert Critic.from_checkpoint(plain).preprocess([img]).shape == (1, 3, 224, 224)


def test_cli_score_defaults_to_the_checkpoint_input_size(demo_checkpoint: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.png"
    picture(3).save(path)
    model, decoded = model_from_checkpoint(demo_checkpoint), load_image(path)
    at_96 = Critic(model, image_size=96, resize=108).score_images([decoded]).scores()[0].mean
    at_224 = Critic(model, image_size=224, resize=256).score_images([decoded]).scores()[0].mean
    assert abs(at_96 - at_224) > 1e-4  # the input size matters to this model, so the check below means something

    assert main(["score", str(path), "--model", str(demo_checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["mean"] == pytest.approx(at_96, abs=1e-5)
    assert main(["score", str(path), "--model", str(demo_checkpoint), "--json",
                 "--image-size", "224", "--resize", "256"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["mean"] == pytest.approx(at_224, abs=1e-5)


def test_serve_defaults_to_the_checkpoint_input_size(demo_checkpoint: Path) -> None:
    body = png_bytes(picture(4))
    args = build_parser().parse_args(["serve", "--model", str(demo_checkpoint), "--port", "0"])
    with build_server(args) as srv:
        host, port = srv.server_address
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("GET", "/healthz")
            health = json.loads(conn.getresponse().read())
            conn.request("POST", "/score", body=body, headers={"Content-Type": "image/png"})
            scored = json.loads(conn.getresponse().read())
        finally:
            conn.close()
    assert health["input"] == {"image_size": 96, "resize": 108}
    direct = Critic(model_from_checkpoint(demo_checkpoint), image_size=96, resize=108)
    assert scored["results"][0]["mean"] == pytest.approx(direct.score_images([decode_image(body)]).scores()[0].mean,
                                                         abs=1e-5)
    override = build_parser().parse_args(["serve", "--model", str(demo_checkpoint), "--port", "0",
                                          "--image-size", "64"])
    server = build_server(override)
    try:
        assert (server.critic.image_size, server.critic.resize) == (64, 73)
    finally:
        server.close()
