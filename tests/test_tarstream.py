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
from nima_train.tarstream import TarFormatError, mapped_members, tar_members, tar_samples
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


def streamed(path: Path) -> list[tuple[str, bytes]]:
    with open(path, "rb") as fh:
        return list(tar_members(fh, str(path)))


def mapped(path: Path) -> list[tuple[str, bytes]]:
    return list(mapped_members(path))


READERS = pytest.mark.parametrize("read", [streamed, mapped])


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
@pytest.mark.parametrize("via", ["path", "pipe"])
def test_samples_equal_what_webdataset_reads_from_the_same_tar(tmp_path: Path, fmt: int, via: str) -> None:
    path = str(write_tar(tmp_path / "s.tar", fmt))
    url = path if via == "path" else f"pipe:cat {path}"  # a local path is mapped, a pipe is read as a stream
    ours = list(tar_samples([{"url": url}]))
    assert ours == webdataset_samples(url)
    assert [s["__key__"] for s in ours] == ["a_1", "b_2", "nested/dir/c_3", "d" * 120 + "_4", "émoji_😀_5"]
    assert ours[0]["seg.png"] == b"png" and ours[1]["jpg"] == b"x" * 1000


@READERS
def test_ustar_prefix_names_are_joined(tmp_path: Path, read) -> None:
    name = "p" * 90 + "/" + "q" * 60 + "/k_1.jpg"  # over 100 bytes: ustar splits it into prefix + name
    path = write_tar(tmp_path / "u.tar", tarfile.USTAR_FORMAT, [(name, b"z")])
    assert read(path) == [(name, b"z")]


def test_mapped_payloads_are_writable_views_that_never_change_the_file(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "m.tar", tarfile.PAX_FORMAT)
    before = path.read_bytes()
    members = mapped(path)
    payload = dict(members)["b_2.jpg"]
    assert isinstance(payload, memoryview) and not payload.readonly  # what torch.frombuffer takes without a copy
    payload[:3] = b"abc"  # a private mapping: the write stays in this process
    assert path.read_bytes() == before and mapped(path) == members[:3] + [("b_2.jpg", b"x" * 1000)] + members[4:]


@READERS
def test_an_empty_file_has_no_members(tmp_path: Path, read) -> None:
    path = tmp_path / "empty.tar"
    path.write_bytes(b"")
    assert read(path) == []


@READERS
def test_a_damaged_header_is_an_error_naming_the_url(tmp_path: Path, read) -> None:
    path = write_tar(tmp_path / "bad.tar", tarfile.PAX_FORMAT)
    data = bytearray(path.read_bytes())
    data[512 + 10] ^= 0xFF  # inside the first file's header name: the checksum no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(TarFormatError, match="bad.tar: bad tar header checksum"):
        read(path)


# b_2.jpg's header is at 3584, its 1000-byte payload at 4096 (padded to 5120), b_2.json's header at 5120.
@READERS
@pytest.mark.parametrize("cut", [4096 + 500, 4096 + 1000 + 12, 5120 + 300], ids=["payload", "padding", "header"])
def test_a_truncated_tar_is_an_error_not_a_short_shard(tmp_path: Path, read, cut: int) -> None:
    path = write_tar(tmp_path / "cut.tar", tarfile.PAX_FORMAT)
    with tarfile.open(path) as tar:
        assert [(m.name, m.offset_data) for m in tar][4:6] == [("b_2.jpg", 4096), ("b_2.json", 5632)]
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(TarFormatError, match="truncated"):
        read(path)


@READERS
def test_a_pax_record_with_an_impossible_length_is_an_error_not_a_hang(tmp_path: Path, read) -> None:
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
        read(path)


def with_size_field(path: Path, field: bytes) -> Path:
    """The one-member tar at `path` with its header's size field replaced and the checksum made right again."""
    data = bytearray(path.read_bytes())
    data[124:136] = field
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    path.write_bytes(bytes(data))
    return path


@READERS
@pytest.mark.parametrize("field", [
    b"00000000012\0",  # what tarfile and GNU tar write
    b"         12 ",  # old writers: leading spaces, a trailing space
    b"12\0garbage\0\0",  # whatever follows the NUL is not part of the number
    b"\x80" + (10).to_bytes(11, "big"),  # GNU base-256, for sizes too big for 11 octal digits
], ids=["octal", "spaces", "after-nul", "base256"])
def test_size_fields_in_every_writers_form_give_the_same_member(tmp_path: Path, read, field: bytes) -> None:
    path = tmp_path / "n.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("k_1.jpg")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"0123456789"))
    assert read(with_size_field(path, field)) == [("k_1.jpg", b"0123456789")]


@READERS
def test_a_negative_base256_size_is_an_error(tmp_path: Path, read) -> None:
    path = tmp_path / "neg.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("k_1.jpg"), io.BytesIO(b""))
    with pytest.raises(TarFormatError, match="negative base-256"):
        read(with_size_field(path, b"\xff" * 12))


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
