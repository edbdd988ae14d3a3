"""Deterministic CBOR for the independent Keyway vector checker.

Written from spec/encoding.md (RFC 8949 core deterministic encoding with
bytewise-lexicographic key order, KW-CBOR-010..015) only.

- `enc(x)`: deterministic encoder for the values the spec's cbor([...])
  inputs and Keyway structures use: unsigned/negative integers, byte
  strings, text strings, arrays, maps, null, booleans, and `Raw` (an item
  that is already encoded, embedded as is).
- `StrictDecoder`: a decoder that rejects what encoding.md rejects, in input
  order: not well-formed (malformed), not deterministic
  (not-deterministic), beyond the limits (too-large).
"""

import struct


class CborError(Exception):
    """A decode failure: `code` is the errors.md name, `offset` the byte."""

    def __init__(self, code, detail, offset):
        super().__init__("%s at offset %d: %s" % (code, offset, detail))
        self.code = code
        self.detail = detail
        self.offset = offset


class Raw(bytes):
    """An already-encoded CBOR item to embed verbatim."""


class Undefined:
    def __repr__(self):
        return "undefined"

    def __eq__(self, other):
        return isinstance(other, Undefined)

    def __hash__(self):
        return 23


class Simple:
    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return "simple(%d)" % self.value

    def __eq__(self, other):
        return isinstance(other, Simple) and other.value == self.value

    def __hash__(self):
        return hash(("simple", self.value))


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __repr__(self):
        return "%d(%r)" % (self.tag, self.value)

    def __eq__(self, other):
        return isinstance(other, Tag) and (other.tag, other.value) == (self.tag, self.value)


class OtherKey:
    """A map key that is not an int, text or byte string (kept by encoding)."""

    def __init__(self, encoded):
        self.encoded = bytes(encoded)

    def __eq__(self, other):
        return isinstance(other, OtherKey) and other.encoded == self.encoded

    def __hash__(self):
        return hash(("otherkey", self.encoded))

    def __repr__(self):
        return "key<%s>" % self.encoded.hex()


# ------------------------------------------------------------------ encoder

def head(major, n):
    if n < 0:
        raise ValueError("negative argument")
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 0x100:
        return bytes([(major << 5) | 24, n])
    if n < 0x10000:
        return bytes([(major << 5) | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([(major << 5) | 26]) + n.to_bytes(4, "big")
    if n < 0x10000000000000000:
        return bytes([(major << 5) | 27]) + n.to_bytes(8, "big")
    raise ValueError("integer does not fit in 64 bits")


def enc(x):
    """Deterministic encoding of x (no floats, no tags)."""
    if isinstance(x, Raw):
        return bytes(x)
    if x is None:
        return b"\xf6"
    if x is True:
        return b"\xf5"
    if x is False:
        return b"\xf4"
    if isinstance(x, int):
        return head(0, x) if x >= 0 else head(1, -1 - x)
    if isinstance(x, (bytes, bytearray)):
        return head(2, len(x)) + bytes(x)
    if isinstance(x, str):
        b = x.encode("utf-8")
        return head(3, len(b)) + b
    if isinstance(x, (list, tuple)):
        return head(4, len(x)) + b"".join(enc(i) for i in x)
    if isinstance(x, dict):
        items = []
        for k, v in x.items():
            kb = k.encoded if isinstance(k, OtherKey) else enc(k)
            items.append((kb, enc(v)))
        items.sort(key=lambda kv: kv[0])
        for a, b in zip(items, items[1:]):
            if a[0] == b[0]:
                raise ValueError("duplicate map key")
        return head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(x, Undefined):
        return b"\xf7"
    if isinstance(x, Simple):
        return bytes([0xE0 | x.value]) if x.value < 24 else bytes([0xF8, x.value])
    if isinstance(x, Tag):
        return head(6, x.tag) + enc(x.value)
    raise TypeError("cannot encode %r" % (x,))


# ------------------------------------------------------------------ decoder

def _half_exact(f):
    try:
        return struct.unpack(">e", struct.pack(">e", f))[0] == f
    except (OverflowError, struct.error):
        return False


def _single_exact(f):
    try:
        return struct.unpack(">f", struct.pack(">f", f))[0] == f
    except (OverflowError, struct.error):
        return False


class StrictDecoder:
    """Strict decoder (encoding.md §1, §2, §4).

    limits=True applies the message limits of KW-LIMIT-002/003 (depth 16,
    at most 64 entries per array or map)."""

    MAX_DEPTH = 16
    MAX_COUNT = 64

    def __init__(self, data, limits=True):
        self.data = bytes(data)
        self.pos = 0
        self.limits = limits

    def fail(self, code, detail, offset=None):
        raise CborError(code, detail, self.pos if offset is None else offset)

    def take(self, n, at):
        if self.pos + n > len(self.data):
            self.fail("malformed", "input ends inside an item", at)
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def argument(self, at):
        """Read the head at self.pos: (major, ai, value, shortest_ok)."""
        ib = self.take(1, at)[0]
        major, ai = ib >> 5, ib & 31
        if ai < 24:
            return major, ai, ai
        if ai in (28, 29, 30):
            self.fail("malformed", "reserved additional information %d" % ai, at)
        if ai == 31:
            return major, ai, None
        n = {24: 1, 25: 2, 26: 4, 27: 8}[ai]
        raw = self.take(n, at)
        val = int.from_bytes(raw, "big")
        return major, ai, val

    def check_shortest(self, major, ai, val, at):
        if major == 7:
            return
        limit = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}.get(ai)
        if limit is not None and val < limit:
            self.fail("not-deterministic", "non-shortest argument", at)

    def decode(self):
        value = self.item(1)
        if self.pos != len(self.data):
            self.fail("malformed", "trailing bytes after the item")
        return value

    def item(self, depth):
        at = self.pos
        major, ai, val = self.argument(at)
        if ai == 31:
            if major in (0, 1, 6):
                self.fail("malformed", "indefinite length on major type %d" % major, at)
            if major == 7:
                self.fail("malformed", "break outside an indefinite-length item", at)
            # well-formedness of indefinite items is not needed further:
            # they are never deterministic (KW-CBOR-012)
            self.fail("not-deterministic", "indefinite-length item", at)
        self.check_shortest(major, ai, val, at)
        if major == 0:
            return val
        if major == 1:
            return -1 - val
        if major in (2, 3):
            if val > len(self.data) - self.pos:
                self.fail("malformed", "declared length beyond the input", at)
            b = self.take(val, at)
            if major == 2:
                return b
            try:
                return b.decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                self.fail("malformed", "invalid UTF-8 in text string", at)
        if major in (4, 5):
            if self.limits and depth > self.MAX_DEPTH:
                self.fail("too-large", "nesting deeper than %d" % self.MAX_DEPTH, at)
            if self.limits and val > self.MAX_COUNT:
                self.fail("too-large", "more than %d entries" % self.MAX_COUNT, at)
            need = val if major == 4 else 2 * val
            if need > len(self.data) - self.pos:
                self.fail("malformed", "declared count beyond the input", at)
            if major == 4:
                return [self.item(depth + 1) for _ in range(val)]
            out = {}
            prev = None
            for _ in range(val):
                kat = self.pos
                k = self.item(depth + 1)
                kb = self.data[kat:self.pos]
                if prev is not None:
                    if kb == prev:
                        self.fail("not-deterministic", "duplicate map key", kat)
                    if kb < prev:
                        self.fail("not-deterministic", "map keys out of order", kat)
                prev = kb
                if not isinstance(k, (int, str, bytes)) or isinstance(k, bool):
                    k = OtherKey(kb)
                out[k] = self.item(depth + 1)
            return out
        if major == 6:
            if self.limits and depth > self.MAX_DEPTH:
                self.fail("too-large", "nesting deeper than %d" % self.MAX_DEPTH, at)
            inner_at = self.pos
            v = self.item(depth + 1)
            if val in (2, 3):
                if not isinstance(v, bytes):
                    self.fail("malformed", "bignum tag on a non-byte-string", inner_at)
                if (len(v) > 0 and v[0] == 0) or len(v) <= 8:
                    self.fail("not-deterministic", "bignum with leading zero or fitting 64 bits", at)
            return Tag(val, v)
        # major 7
        if ai < 20:
            return Simple(ai)
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            return Undefined()
        if ai == 24:
            if val < 32:
                self.fail("malformed", "two-byte simple value below 32", at)
            return Simple(val)
        raw = self.data[at + 1:self.pos]
        if ai == 25:
            return struct.unpack(">e", raw)[0]
        if ai == 26:
            bits = int.from_bytes(raw, "big")
            f = struct.unpack(">f", raw)[0]
            if f != f:  # NaN: representable in half iff low 13 mantissa bits are 0
                if bits & 0x1FFF == 0:
                    self.fail("not-deterministic", "float not in shortest form", at)
            elif _half_exact(f):
                self.fail("not-deterministic", "float not in shortest form", at)
            return f
        bits = int.from_bytes(raw, "big")
        f = struct.unpack(">d", raw)[0]
        if f != f:
            if bits & ((1 << 29) - 1) == 0:
                self.fail("not-deterministic", "float not in shortest form", at)
        elif _single_exact(f):
            self.fail("not-deterministic", "float not in shortest form", at)
        return f


def decode(data, limits=True):
    return StrictDecoder(data, limits).decode()


def top_map_spans(data):
    """For a (strictly valid) map item, the (key, start, end) byte span of
    each entry and the length of the map head."""
    d = StrictDecoder(data, limits=False)
    at = 0
    major, ai, n = d.argument(at)
    if major != 5 or ai == 31:
        raise ValueError("not a definite-length map")
    head_len = d.pos
    spans = []
    for _ in range(n):
        start = d.pos
        k = d.item(2)
        d.item(2)
        spans.append((k, start, d.pos))
    return head_len, n, spans


def without_key(data, key):
    """The encoding of a deterministic map without the entry `key`, by
    cutting that entry's bytes out and re-writing the map head (count - 1).
    Returns None when the key is absent."""
    head_len, n, spans = top_map_spans(data)
    for k, s, e in spans:
        if k == key:
            return head(5, n - 1) + data[head_len:s] + data[e:]
    return None


# ------------------------------------------------------------------ self test

def self_test():
    """RFC 8949 Appendix A items (the subset Keyway uses) and the
    rejections of encoding.md §1, §2."""
    problems = []
    enc_cases = [
        (0, "00"), (23, "17"), (24, "1818"), (100, "1864"), (1000, "1903e8"),
        (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
        (18446744073709551615, "1bffffffffffffffff"), (-1, "20"), (-10, "29"),
        (-100, "3863"), (-1000, "3903e7"), ("", "60"), ("a", "6161"),
        ("IETF", "6449455446"), ("\u00fc", "62c3bc"), (b"\x01\x02\x03\x04", "4401020304"),
        ([], "80"), ([1, [2, 3], [4, 5]], "8301820203820405"), ({}, "a0"),
        ({1: 2, 3: 4}, "a201020304"), (None, "f6"), (True, "f5"), (False, "f4"),
        # KW-CBOR-013: bytewise order, 100 (0x1864) before -1 (0x20)
        ({-1: 0, 100: 0}, "a21864002000"),
    ]
    for value, hexs in enc_cases:
        if enc(value).hex() != hexs:
            problems.append("encode %r gives %s, not %s" % (value, enc(value).hex(), hexs))
        try:
            if decode(bytes.fromhex(hexs)) != value:
                problems.append("decode %s" % hexs)
        except CborError as e:
            problems.append("decode %s: %s" % (hexs, e))
    reject_cases = [
        ("1817", "not-deterministic"), ("190017", "not-deterministic"),
        ("5f41014102ff", "not-deterministic"), ("a201020102", "not-deterministic"),
        ("a203040102", "not-deterministic"), ("a2200018640000", "not-deterministic"),
        ("62c328", "malformed"), ("0000", "malformed"), ("f818", "malformed"),
        ("1c", "malformed"), ("ff", "malformed"), ("1f", "malformed"), ("42ff", "malformed"),
        ("fa3f800000", "not-deterministic"), ("f93c00", None),
        ("98" + "41" + "00" * 65, "too-large"),
    ]
    for hexs, code in reject_cases:
        try:
            decode(bytes.fromhex(hexs))
            if code is not None:
                problems.append("accepts %s (should be %s)" % (hexs, code))
        except CborError as e:
            if e.code != code:
                problems.append("rejects %s as %s, not %s" % (hexs, e.code, code))
    nested = bytes.fromhex("81" * 16 + "00")
    try:
        decode(nested)
    except CborError:
        problems.append("rejects nesting 16")
    try:
        decode(bytes.fromhex("81" * 17 + "00"))
        problems.append("accepts nesting 17")
    except CborError as e:
        if e.code != "too-large":
            problems.append("nesting 17 gives %s" % e.code)
    return problems
