"""Which library frames files_app's ZIP downloads: zipstream-ng or stream-zip (issue 25).

Run: .venv/bin/python bench/zip_libraries.py [--mib 1024]

Both write a ZIP of one stored (uncompressed) member of ``--mib`` MiB, fed new 1 MiB chunks
of zeros (the source costs little: this is the framing's own cost), and report MiB/s and the
peak of memory Python allocated (tracemalloc) while writing:

- zipstream-ng 1.9 ``ZipStream(sized=True)``: CRC-32 computed as the bytes pass and written
  in a data descriptor after them; the archive's length known before the first byte
  (``len()``: a Content-Length).
- stream-zip 0.0.84 ``NO_COMPRESSION_64(size, crc_32)``: the local header needs the CRC-32
  first, so the source is read twice (files_app keeps SHA-256, not CRC-32); the time of that
  first pass is included.
- stream-zip ``NO_COMPRESSION_64`` (buffered): one pass, but the member is held in memory
  until its CRC is known (run on a tenth of the size).

stream-zip comes with requirements-dev.txt (files_app does not use it).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

MiB = 2**20


def source(mib: int) -> Iterator[bytes]:
    """``mib`` new 1 MiB chunks of zeros, as reads from the database are new objects."""
    for _ in range(mib):
        yield bytes(MiB)


def zipstream_ng(mib: int) -> Iterable[bytes]:
    from zipstream import ZipStream  # type: ignore[import-untyped]

    stream = ZipStream(sized=True)
    stream.add(source(mib), "zeros.bin", size=mib * MiB)
    assert len(stream) > mib * MiB
    chunks: Iterable[bytes] = stream
    return chunks


def stream_zip_two_passes(mib: int) -> Iterable[bytes]:
    from stream_zip import NO_COMPRESSION_64, stream_zip

    crc = 0
    for chunk in source(mib):
        crc = zlib.crc32(chunk, crc)
    member = ("zeros.bin", datetime.now(), 0o600, NO_COMPRESSION_64(mib * MiB, crc), source(mib))
    return stream_zip([member])


def stream_zip_buffered(mib: int) -> Iterable[bytes]:
    from stream_zip import NO_COMPRESSION_64, stream_zip

    return stream_zip([("zeros.bin", datetime.now(), 0o600, NO_COMPRESSION_64, source(mib))])


def measure(name: str, make: Callable[[int], Iterable[bytes]], mib: int) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    written = sum(len(chunk) for chunk in make(mib))
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{name:<44} {mib:>5} MiB  {written / MiB / seconds:7.0f} MiB/s  "
        f"peak {peak / MiB:8.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    mib = parser.parse_args().mib
    measure("zipstream-ng, sized, one pass", zipstream_ng, mib)
    measure("stream-zip, CRC-32 first (two passes)", stream_zip_two_passes, mib)
    measure("stream-zip, buffered", stream_zip_buffered, max(mib // 10, 1))


if __name__ == "__main__":
    main()
