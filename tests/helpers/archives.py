"""Archives of AVA photos written by the standard tools, laid out as the public copies are (also used by
benchmarks/bench_crops.py): zip with deflate under `AVA_dataset/image/`, tar.gz under `images/`, Parquet shards
with Hugging Face's Image struct, 7z (py7zr) whole or split into volumes as 7-Zip splits them."""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

ZIP_PREFIX = "AVA_dataset/image/"


def photos(folder: Path) -> list[Path]:
    """The regular <id>.jpg files of a folder, by id."""
    found = [p for p in folder.iterdir() if p.suffix == ".jpg" and p.is_file() and not p.is_symlink()]
    return sorted(found, key=lambda p: int(p.stem) if p.stem.isdigit() else -1)


def write_zip(dest: Path, files: Iterable[Path], prefix: str = ZIP_PREFIX, level: int = 6) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for path in files:
            zf.write(path, prefix + path.name)
    return dest


def write_tar(dest: Path, files: Iterable[Path], prefix: str = "images/") -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        for path in files:
            tf.add(path, prefix + path.name)
    return dest


def write_parquet(dest: Path, files: Iterable[Path], row_group_size: int = 16, id_column: str = "image_id",
                  image_column: str = "image", struct: bool = True) -> Path:
    """Rows (id, image) as Hugging Face writes an Image feature: struct<bytes, path>; or plain binary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = list(files)
    ids = [int(p.stem) for p in files]
    blobs = [p.read_bytes() for p in files]
    if struct:
        images = pa.array([{"bytes": b, "path": p.name} for b, p in zip(blobs, files, strict=True)],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        images = pa.array(blobs, pa.binary())
    pq.write_table(pa.table({id_column: pa.array(ids, pa.int64()), image_column: images}), dest,
                   row_group_size=row_group_size)
    return dest


def write_7z(dest: Path, files: Iterable[Path], prefix: str = "images/") -> Path:
    import py7zr

    with py7zr.SevenZipFile(dest, "w") as archive:
        for path in files:
            archive.write(path, prefix + path.name)
    return dest


def split_volumes(archive: Path, parts: int) -> list[Path]:
    """Cut an archive into `<name>.001`, `.002`, ... as 7-Zip's -v switch does, and remove the whole one."""
    data = archive.read_bytes()
    step = -(-len(data) // parts)
    out = []
    for k in range(parts):
        path = archive.with_name(f"{archive.name}.{k + 1:03d}")
        path.write_bytes(data[k * step : (k + 1) * step])
        out.append(path)
    os.unlink(archive)
    return out
