"""What a stored file's row records about its bytes: size, SHA-256 and the first bytes.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from files_app.sniff import SNIFF_BYTES

logger = logging.getLogger("files_app")


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


# -- a SHA-256 whose state outlives the request -----------------------------------------

# The state saved between requests: the eight working words, the length hashed so far in
# bits, and the bytes of the unfinished 64-byte block (0 to 63 of them).
_STATE = struct.Struct("<8IQ")
_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
    0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
    0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
    0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
    0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
    0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
    0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
    0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
    0xC67178F2,
)  # fmt: skip
_H0 = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)  # fmt: skip
_MASK = 0xFFFFFFFF


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _MASK


def _compress(h: list[int], block: bytes) -> None:
    w = list(struct.unpack(">16I", block))
    for i in range(16, 64):
        s0 = _rotr(w[i - 15], 7) ^ _rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
        s1 = _rotr(w[i - 2], 17) ^ _rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & _MASK)
    a, b, c, d, e, f, g, hh = h
    for i in range(64):
        t1 = hh + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[i] + w[i]
        t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, hh = (t1 + t2) & _MASK, a, b, c, (d + t1) & _MASK, e, f, g
    h[:] = [(x + y) & _MASK for x, y in zip(h, (a, b, c, d, e, f, g, hh), strict=True)]


class _PythonSHA256:
    """SHA-256 in Python (slow): where OpenSSL's low-level functions cannot be loaded."""

    def __init__(self, h: tuple[int, ...], bits: int, tail: bytes) -> None:
        self.h, self.bits, self.tail = list(h), bits, tail

    def update(self, data: bytes) -> None:
        self.bits += 8 * len(data)
        data = self.tail + data
        end = len(data) - len(data) % 64
        for start in range(0, end, 64):
            _compress(self.h, data[start : start + 64])
        self.tail = data[end:]

    def state(self) -> tuple[tuple[int, ...], int, bytes]:
        return tuple(self.h), self.bits, self.tail

    def digest(self) -> bytes:
        h, tail = list(self.h), self.tail + b"\x80"
        tail += b"\0" * ((56 - len(tail)) % 64) + struct.pack(">Q", self.bits)
        for start in range(0, len(tail), 64):
            _compress(h, tail[start : start + 64])
        return struct.pack(">8I", *h)


class _Context(ctypes.Structure):
    # OpenSSL's SHA256_CTX (<openssl/sha.h>), unchanged since OpenSSL 0.9.8.
    _fields_ = [
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 64),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    ]


@functools.cache
def _openssl() -> Any:
    """Return OpenSSL's library if its ``SHA256_*`` functions load and hash right, else None.

    Loaded at the first resumable hash, not at import. The context struct is copied by hand
    from <openssl/sha.h> and the functions are deprecated since OpenSSL 3.0: so the first
    use checks them against ``hashlib`` — a state saved mid-block and resumed, as a tus
    upload does — and anything amiss means the Python implementation, with one warning.
    """
    name = ctypes.util.find_library("crypto")
    try:
        library = ctypes.CDLL(name or "libcrypto.so.3")
        functions = library.SHA256_Init, library.SHA256_Update, library.SHA256_Final
    except (OSError, AttributeError):
        logger.info("OpenSSL's SHA256_* functions are not available: resumable hashes in Python.")
        return None
    context = ctypes.POINTER(_Context)
    functions[0].argtypes = [context]
    functions[1].argtypes = [context, ctypes.c_char_p, ctypes.c_size_t]
    functions[2].argtypes = [ctypes.c_char_p, context]
    if not _hashes_right(library):
        logger.warning(
            "OpenSSL's SHA256_* functions do not hash as hashlib does here (a changed "
            "SHA256_CTX?): resumable hashes in Python, which is slower."
        )
        return None
    return library


def _hashes_right(library: Any) -> bool:
    data = bytes(range(256)) * 3 + b"tail"
    try:
        first = _OpenSSLSHA256(library, _H0, 0, b"")
        first.update(data[:100])
        resumed = _OpenSSLSHA256(library, *first.state())
        resumed.update(data[100:])
        return resumed.digest() == hashlib.sha256(data).digest()
    except Exception:  # noqa: BLE001 (a foreign library: any failure means "do not use it")
        return False


class _OpenSSLSHA256:
    """SHA-256 by OpenSSL's low-level functions, whose context is a plain struct."""

    def __init__(self, library: Any, h: tuple[int, ...], bits: int, tail: bytes) -> None:
        self.library = library
        self.context = _Context()
        library.SHA256_Init(ctypes.byref(self.context))
        self.context.h[:] = h
        self.context.Nl, self.context.Nh = bits & _MASK, bits >> 32
        ctypes.memmove(self.context.data, tail, len(tail))
        self.context.num = len(tail)

    def update(self, data: bytes) -> None:
        self.library.SHA256_Update(ctypes.byref(self.context), data, len(data))

    def state(self) -> tuple[tuple[int, ...], int, bytes]:
        context = self.context
        bits = context.Nh << 32 | context.Nl
        return tuple(context.h), bits, bytes(context.data)[: context.num]

    def digest(self) -> bytes:
        copy = _Context.from_buffer_copy(self.context)
        out = ctypes.create_string_buffer(32)
        self.library.SHA256_Final(out, ctypes.byref(copy))
        return out.raw


class ResumableSHA256:
    """A SHA-256 whose state can be saved as bytes and resumed later, in any process.

    What a tus upload hashes its bytes with as they arrive, PATCH after PATCH, across
    restarts (``hashlib`` objects cannot be saved). OpenSSL's ``SHA256_*`` functions do the
    work (as fast as ``hashlib``); without them, a Python implementation (slow) does.
    """

    def __init__(self, state: bytes | None = None, *, python: bool = False) -> None:
        if state:
            *h, bits = _STATE.unpack_from(state)
            tail = state[_STATE.size :]
            if bits % 8 or (bits // 8) % 64 != len(tail):
                raise ValueError("Not a saved SHA-256 state.")
        else:
            h, bits, tail = list(_H0), 0, b""
        library = None if python else _openssl()
        self._hash: _PythonSHA256 | _OpenSSLSHA256 = (
            _PythonSHA256(tuple(h), bits, tail)
            if library is None
            else _OpenSSLSHA256(library, tuple(h), bits, tail)
        )

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(bytes(data))

    def state(self) -> bytes:
        """Return the state to resume from (at most 111 bytes)."""
        h, bits, tail = self._hash.state()
        return _STATE.pack(*h, bits) + tail

    def hexdigest(self) -> str:
        """Return the digest of the bytes so far (hashing can go on)."""
        return self._hash.digest().hex()
