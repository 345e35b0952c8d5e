"""What a stored file's row records about its bytes: size, SHA-256 and the first bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.core.files.base import File

from files_app.sniff import SNIFF_BYTES

__all__ = ["Digest", "Hasher", "HashingReader", "digest_chunks"]


@dataclass(frozen=True)
class Digest:
    """The size and SHA-256 of some bytes, and their first bytes for sniffing the type."""

    size: int
    sha256: str
    head: bytes


class Hasher:
    """Compute a :class:`Digest` of bytes fed piece by piece."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.head = b""

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)
        if len(self.head) < SNIFF_BYTES:
            self.head += data[: SNIFF_BYTES - len(self.head)]

    def digest(self) -> Digest:
        return Digest(self.size, self.sha256.hexdigest(), self.head)


def digest_chunks(chunks: Iterator[bytes]) -> Digest:
    """Return the digest of the bytes ``chunks`` yields, reading them once."""
    hasher = Hasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digest()


class HashingReader(File):  # type: ignore[type-arg]
    """Wrap a file so that streaming it through :meth:`chunks` computes its digest."""

    def __init__(self, file: Any, name: str | None = None) -> None:
        super().__init__(file, name or getattr(file, "name", None))
        self._hasher = Hasher()

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        assert self.file is not None
        source = self.file if hasattr(self.file, "chunks") else File(self.file)
        for chunk in source.chunks(chunk_size):
            data = chunk.encode() if isinstance(chunk, str) else chunk
            self._hasher.update(data)
            yield data

    def digest(self) -> Digest:
        """Return the digest of what :meth:`chunks` yielded so far."""
        return self._hasher.digest()
