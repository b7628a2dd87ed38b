"""The reader's own tar expander: the same samples as webdataset's tarfile-based one, and clear errors on damage."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds

from nima_train.batch_memory import prefault
from nima_train.data import BatchBuilder
from nima_train.tarstream import TarFormatError, tar_members, tar_samples
from nima_train.transforms import center_crop, random_crop_flip

MEMBERS = [
    ("a_1.jpg", b"\xff\xd8\xffjpeg-one"),
    ("a_1.json", b'{"target": [0.1]}'),
    ("a_1.SEG.PNG", b"png"),  # extensions are lower-cased and may contain dots, as in webdataset
    ("b_2.jpg", b"x" * 1000),  # a payload that needs padding to the 512-byte block
    ("b_2.json", b"{}"),
    ("nested/dir/c_3.jpg", b""),  # empty member, key keeps its folder
    ("d" * 120 + "_4.jpg", b"long name"),  # needs a GNU long name or a pax path record
    ("émoji_😀_5.jpg", b"unicode name"),
]


def write_tar(path: Path, fmt: int, members: list[tuple[str, bytes]] = MEMBERS) -> Path:
    with tarfile.open(path, "w", format=fmt, encoding="utf-8") as tar:
        folder = tarfile.TarInfo("nested/dir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)  # directories are skipped
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def webdataset_samples(url: str) -> list[dict]:
    return list(wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_samples_equal_what_webdataset_reads_from_the_same_tar(tmp_path: Path, fmt: int) -> None:
    url = str(write_tar(tmp_path / "s.tar", fmt))
    ours = list(tar_samples([{"url": url}]))
    assert ours == webdataset_samples(url)
    assert [s["__key__"] for s in ours] == ["a_1", "b_2", "nested/dir/c_3", "d" * 120 + "_4", "émoji_😀_5"]
    assert ours[0]["seg.png"] == b"png" and ours[1]["jpg"] == b"x" * 1000


def test_ustar_prefix_names_are_joined(tmp_path: Path) -> None:
    name = "p" * 90 + "/" + "q" * 60 + "/k_1.jpg"  # over 100 bytes: ustar splits it into prefix + name
    url = str(write_tar(tmp_path / "u.tar", tarfile.USTAR_FORMAT, [(name, b"z")]))
    assert list(tar_members(open(url, "rb"))) == [(name, b"z")]


def test_a_damaged_header_is_an_error_naming_the_url(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "bad.tar", tarfile.PAX_FORMAT)
    data = bytearray(path.read_bytes())
    data[512 + 10] ^= 0xFF  # inside the first file's header name: the checksum no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(TarFormatError, match="bad.tar: bad tar header checksum"):
        list(tar_samples([{"url": str(path)}]))


def test_a_truncated_tar_is_an_error_not_a_short_shard(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "cut.tar", tarfile.PAX_FORMAT)
    path.write_bytes(path.read_bytes()[: 512 * 5 + 100])  # stops inside b_2.jpg's payload
    with pytest.raises(TarFormatError, match="truncated"):
        list(tar_samples([{"url": str(path)}]))


def test_a_pax_record_with_an_impossible_length_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("k_1.jpg")
        info.size = 1
        info.pax_headers = {"comment": "x"}
        tar.addfile(info, io.BytesIO(b"z"))
    data = bytearray(path.read_bytes())
    start = 512  # the pax record follows its own header: "<len> comment=x\n"
    record_len = data[start:start + 4].split(b" ")[0]
    data[start:start + len(record_len)] = b"0".rjust(len(record_len), b"0")  # length 0: would never advance
    path.write_bytes(bytes(data))
    with pytest.raises(TarFormatError, match="malformed pax header"):
        list(tar_members(open(path, "rb")))


def test_not_a_tar_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"<html>404 not found</html>".ljust(2000, b" "))
    with pytest.raises(TarFormatError, match="not a tar file"):
        list(tar_samples([{"url": str(path)}]))


def test_batch_builder_makes_the_same_crops_as_the_per_image_functions() -> None:
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8), torch.randint(0, 256, (3, 300, 256),
                                                                                    dtype=torch.uint8)]
    small = torch.randint(0, 256, (3, 200, 180), dtype=torch.uint8)  # under the crop size: padded like v2
    evaluation = BatchBuilder(3, 224, train=False)
    for image in [*images, small]:
        evaluation.add(image, [0.1] * 10)
    batch, targets = evaluation.batch()
    assert batch.shape == (3, 3, 224, 224) and targets.shape == (3, 10)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    for got, image in zip(batch, [*images, small], strict=True):
        assert torch.equal(got, center_crop(image, 224))

    training = BatchBuilder(2, 224, train=True)
    for image in images:
        training.add(image, [0.1] * 10)
    crops, _ = training.batch()
    for got, image in zip(crops, images, strict=True):
        windows = [w for top in range(image.shape[1] - 223) for left in range(33)
                   for w in (image[:, top:top + 224, left:left + 224],
                             image[:, top:top + 224, left:left + 224].flip(-1))]
        assert any(torch.equal(got, w) for w in windows)
    assert random_crop_flip(small, 224).shape == (3, 224, 224)


@pytest.mark.parametrize("offset", [0, 1, 4095])
def test_prefault_keeps_a_buffers_contents_wherever_it_starts(offset: int) -> None:
    base = torch.arange(3 * 4096 + 17, dtype=torch.int64).to(torch.uint8)
    view = base[offset:]  # not page-aligned: prefault rounds the start down to the page
    before = view.clone()
    prefault(view)
    assert torch.equal(view, before)
    view.fill_(7)  # still an ordinary writable tensor
    assert int(view.sum()) == 7 * view.numel()
    prefault(torch.empty(0, dtype=torch.uint8))  # nothing to map
