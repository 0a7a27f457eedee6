"""A bounded pre-scan of a GGUF file before the `gguf` reader sees it: every count and length it declares is
checked against the bytes that are left, so a 128-byte file claiming 2^62 array entries is refused at once
(the `gguf` package's reader would keep allocating parts past the end of the file).

What llama.cpp's `gguf_init_from_file` checks, in the same order: magic, version, tensor and key counts,
then each key (length-prefixed string), value type, value (strings and arrays length-prefixed; arrays of
arrays nested at most a few levels), then each tensor's name, dimension count (<= 4), dimensions, type and
offset. Nothing is allocated in proportion to a declared count: the scan walks the file (memory-mapped).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from ..errors import UserError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_DIMS = 4
MAX_NESTING = 4
MAX_STRING = 1 << 30  # no key or string value is a gigabyte
# value type -> fixed size (8 = string, 9 = array are variable)
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


class GGUFFormatError(UserError, ValueError):
    """A GGUF file whose structure is damaged or declares more data than it holds."""


class _Scan:
    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path, self.size = buf, 0, path, len(buf)

    def fail(self, what: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.path}: not a valid GGUF file ({what} at byte {self.pos}); re-export or "
                               "re-download it")

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.size - self.pos:
            raise self.fail(f"{n} bytes declared, {self.size - self.pos} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self, what: str) -> bytes:
        n = self.u64()
        if n > MAX_STRING:
            raise self.fail(f"{what} of {n} bytes")
        return self.take(n)

    def value(self, vtype: int, depth: int = 0) -> None:
        if vtype in FIXED:
            self.take(FIXED[vtype])
        elif vtype == STRING:
            self.string("string value")
        elif vtype == ARRAY:
            if depth >= MAX_NESTING:
                raise self.fail("arrays nested too deep")
            etype, count = self.u32(), self.u64()
            left = self.size - self.pos
            if etype in FIXED:
                if count * FIXED[etype] > left:
                    raise self.fail(f"an array of {count} values of {FIXED[etype]} bytes, {left} bytes left")
                self.take(count * FIXED[etype])
                return
            if etype not in (STRING, ARRAY):
                raise self.fail(f"array element type {etype}")
            if count * 8 > left:  # every string or array starts with an 8-byte length or header
                raise self.fail(f"an array of {count} entries, {left} bytes left")
            for _ in range(count):
                self.value(etype, depth + 1)
        else:
            raise self.fail(f"value type {vtype}")


def check_gguf(path: str | Path) -> None:
    """Raise GGUFFormatError unless every declared count and length of the GGUF header, metadata and tensor
    table fits in the file. Reads (memory-mapped) only what the file holds."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if path.stat().st_size < 24:
                raise GGUFFormatError(f"{path}: not a valid GGUF file ({path.stat().st_size} bytes, shorter than "
                                      "a GGUF header)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _scan(_Scan(buf, path))
    except OSError as exc:
        raise GGUFFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _scan(s: _Scan) -> None:
    if s.take(4) != MAGIC:
        raise s.fail("no GGUF magic")
    version = s.u32()
    if version not in VERSIONS:
        raise s.fail(f"GGUF version {version}, not {VERSIONS}")
    n_tensors, n_kv = s.u64(), s.u64()
    if n_kv * 13 > s.size - s.pos or n_tensors * 24 > s.size - s.pos:  # smallest key-value / tensor entry
        raise s.fail(f"{n_kv} keys and {n_tensors} tensors declared in a {s.size}-byte file")
    for _ in range(n_kv):
        s.string("key")
        s.value(s.u32())
    for _ in range(n_tensors):
        s.string("tensor name")
        n_dims = s.u32()
        if not 1 <= n_dims <= MAX_DIMS:
            raise s.fail(f"a tensor with {n_dims} dimensions")
        dims = [s.u64() for _ in range(n_dims)]
        elements = 1
        for d in dims:
            elements *= d
        s.u32()  # type (the gguf reader checks it against its table)
        offset = s.u64()
        if offset > s.size or elements > s.size * 8:  # 8 elements per byte: below any quantization's density
            raise s.fail(f"a tensor of {dims} at offset {offset} in a {s.size}-byte file")
