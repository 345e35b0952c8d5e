"""Files past 4 GiB: written for real, then read back by range from beyond 4 GiB."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import pytest
from django.core.files.base import File

from files_app.storage import LargeObjectStorage

MiB = 2**20
SIZE = 5 * 2**30


def _chunk(index: int) -> bytes:
    # Every 8 bytes of chunk i spell i: any range can be checked without keeping the file.
    return struct.pack(">Q", index) * (MiB // 8)


def _expected(offset: int, length: int) -> bytes:
    out = b""
    while length > 0:
        index, within = divmod(offset, MiB)
        piece = _chunk(index)[within : within + length]
        out += piece
        offset += len(piece)
        length -= len(piece)
    return out


class FiveGiB(File):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__(io.BytesIO(), name="five.bin")

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        for index in range(SIZE // MiB):
            yield _chunk(index)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_5_gib_object_is_written_and_read_back_beyond_4_gib() -> None:
    storage = LargeObjectStorage(chunk_size=MiB)
    name = storage.save("five.bin", FiveGiB())
    try:
        assert storage.size(name) == SIZE
        with storage.open(name) as f:
            for offset in (2**31 - 3, 2**32 - 5, 2**32 + 123_457, SIZE - 10):
                f.seek(offset)
                assert f.read(20) == _expected(offset, min(20, SIZE - offset))
            assert f.read(1) == b""
    finally:
        storage.delete(name)
