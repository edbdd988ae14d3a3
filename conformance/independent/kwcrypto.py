"""Primitives of suite keyway-v1 (spec/crypto.md §1) for the independent
checker: the Python `cryptography` package for the primitives, plus a pure
Python Edwards25519 implementation for the strictness rules of
KW-CRYPTO-001 (S < L, canonical R and A, neither of small order) and as a
second, independent evaluation of the Ed25519 verification equation.
"""

import hashlib
import hmac as _hmac

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def H(m):
    return hashlib.sha256(m).digest()


def HMAC(k, m):
    return _hmac.new(k, m, hashlib.sha256).digest()


def ct_eq(a, b):
    return _hmac.compare_digest(a, b)


def HKDF32(salt, ikm, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def PBKDF2_32(p, s, n):
    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=s, iterations=n).derive(p)


def u64be(n):
    return n.to_bytes(8, "big")


def xor(a, b):
    assert len(a) == len(b)
    return bytes(x ^ y for x, y in zip(a, b))


# ------------------------------------------------------------------ AES-SIV

def siv_encrypt(key, ads, plaintext):
    """RFC 5297 AES-SIV: output V || C (checked by self_test)."""
    return AESSIV(key).encrypt(plaintext, list(ads))


def siv_decrypt(key, ads, data):
    """None when authentication fails."""
    if len(data) < 16:
        return None
    try:
        return AESSIV(key).decrypt(data, list(ads))
    except InvalidTag:
        return None


# ------------------------------------------------------------------ X25519

class LowOrder(Exception):
    pass


def x25519_public(k):
    return X25519PrivateKey.from_private_bytes(k).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def x25519(k, P):
    """X25519(k, P); raises LowOrder for an all-zero shared secret
    (KW-CRYPTO-005)."""
    try:
        z = X25519PrivateKey.from_private_bytes(k).exchange(X25519PublicKey.from_public_bytes(P))
    except ValueError as e:  # the library refuses an all-zero result itself
        raise LowOrder(str(e))
    if z == bytes(32):
        raise LowOrder("all-zero shared secret")
    return z


# ------------------------------------------------------------------ Ed25519

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_I = pow(2, (_P - 1) // 4, _P)


def _recover_x(y, sign):
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _I % _P
    if (x * x - x2) % _P:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decode_point(b):
    """None unless b is the canonical encoding of a curve point."""
    if len(b) != 32:
        return None
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


def _add(p, q):
    A = (p[1] - p[0]) * (q[1] - q[0]) % _P
    B = (p[1] + p[0]) * (q[1] + q[0]) % _P
    C = 2 * p[3] * q[3] * _D % _P
    Dd = 2 * p[2] * q[2] % _P
    E, F, G, Hh = B - A, Dd - C, Dd + C, B + A
    return (E * F % _P, G * Hh % _P, F * G % _P, E * Hh % _P)


def _mul(s, p):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _eq(p, q):
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


_IDENT = (0, 1, 1, 0)
_By = 4 * pow(5, _P - 2, _P) % _P
_B = (_recover_x(_By, 0), _By, 1, _recover_x(_By, 0) * _By % _P)


def _small_order(p):
    return _eq(_mul(8, p), _IDENT)


class StrictnessError(Exception):
    pass


def ed25519_public(seed):
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def ed25519_sign(seed, m):
    return Ed25519PrivateKey.from_private_bytes(seed).sign(m)


class ImplementationDisagreement(Exception):
    pass


def ed25519_verify_strict(pub, m, sig):
    """(ok, reason). Strict per KW-CRYPTO-001; the equation [S]B = R + [k]A
    is evaluated both by `cryptography` and in pure Python, and a
    disagreement raises ImplementationDisagreement."""
    if len(pub) != 32 or len(sig) != 64:
        return False, "bad length"
    A = _decode_point(pub)
    if A is None:
        return False, "public key not a canonical point encoding"
    if _small_order(A):
        return False, "public key of small order"
    R = _decode_point(sig[:32])
    if R is None:
        return False, "R not a canonical point encoding"
    if _small_order(R):
        return False, "R of small order"
    S = int.from_bytes(sig[32:], "little")
    if S >= _L:
        return False, "S not below the group order"
    k = int.from_bytes(hashlib.sha512(sig[:32] + pub + m).digest(), "little") % _L
    ok_py = _eq(_mul(S, _B), _add(R, _mul(k, A)))
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, m)
        ok_lib = True
    except InvalidSignature:
        ok_lib = False
    if ok_py != ok_lib:
        raise ImplementationDisagreement("pure-Python Ed25519 says %s, cryptography says %s" % (ok_py, ok_lib))
    return ok_py, ("" if ok_py else "signature does not verify")


# ------------------------------------------------------------------ self test

def self_test():
    """Known-answer tests from the RFCs, so that a wrong primitive or a
    wrong output layout shows before any vector is judged."""
    problems = []
    # RFC 5297 A.1 (deterministic, one AD) and A.2 (three ADs incl. nonce)
    k = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    out = siv_encrypt(k, [bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")],
                      bytes.fromhex("112233445566778899aabbccddee"))
    if out.hex() != "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c":
        problems.append("AES-SIV RFC 5297 A.1 (output is not V || C?)")
    k = bytes.fromhex("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f")
    out = siv_encrypt(k, [
        bytes.fromhex("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100"),
        bytes.fromhex("102030405060708090a0"),
        bytes.fromhex("09f911029d74e35bd84156c5635688c0")],
        bytes.fromhex("7468697320697320736f6d6520706c61696e7465787420746f20656e6372797074207573696e67205349562d414553"))
    if out.hex() != ("7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17"
                     "dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d"):
        problems.append("AES-SIV RFC 5297 A.2")
    # RFC 8032 §7.1 TEST 1
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    if ed25519_public(seed) != pub or ed25519_sign(seed, b"") != sig:
        problems.append("Ed25519 RFC 8032 TEST 1 (sign)")
    if not ed25519_verify_strict(pub, b"", sig)[0]:
        problems.append("Ed25519 RFC 8032 TEST 1 (verify)")
    bad = sig[:32] + (int.from_bytes(sig[32:], "little") + _L).to_bytes(32, "little")
    if ed25519_verify_strict(pub, b"", bad)[0]:
        problems.append("Ed25519 accepts S + L")
    if ed25519_verify_strict(bytes([1]) + bytes(31), b"", sig)[0]:
        problems.append("Ed25519 accepts the identity as a public key")
    # RFC 7748 §5.2, first X25519 vector
    k = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    if x25519(k, u).hex() != "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552":
        problems.append("X25519 RFC 7748 §5.2")
    try:
        x25519(k, bytes(32))
        problems.append("X25519 accepts an all-zero shared secret")
    except LowOrder:
        pass
    # RFC 5869 A.1
    okm = HKDF(algorithm=hashes.SHA256(), length=42, salt=bytes(range(13)),
               info=bytes(range(0xF0, 0xFA))).derive(bytes([0x0B] * 22))
    if okm.hex() != ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                     "34007208d5b887185865"):
        problems.append("HKDF RFC 5869 A.1")
    # RFC 7914 §11 PBKDF2-HMAC-SHA256 (1 iteration)
    dk = PBKDF2HMAC(algorithm=hashes.SHA256(), length=64, salt=b"salt", iterations=1).derive(b"passwd")
    if dk.hex()[:32] != "55ac046e56e3089fec1691c22544b605":
        problems.append("PBKDF2 RFC 7914 §11")
    return problems
