#!/usr/bin/env python3
"""Independent checker of the Keyway golden vectors.

    python3 verify_vectors.py VECTORS_DIR [--spec SPEC_DIR] [-v]

Written from spec/crypto.md, spec/vectors.md, spec/keyway.cddl,
spec/messages.md, spec/encoding.md and spec/flows.md only (no code of the
reference implementation was read). Prints one line per test, "ok tcId" or
"FAIL tcId: reason", then a summary; exits 1 on any failure.
"""

import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from kwcbor import CborError, decode, enc, without_key  # noqa: E402
from kwcbor import self_test as cbor_self_test  # noqa: E402
from kwcrypto import (  # noqa: E402
    H, HKDF32, HMAC, PBKDF2_32, ImplementationDisagreement, LowOrder, ct_eq,
    ed25519_public, ed25519_sign, ed25519_verify_strict, self_test,
    siv_decrypt, siv_encrypt, u64be, x25519, x25519_public, xor)
from kwschema import (  # noqa: E402
    ATTESTATION, CERT_REQUEST, CERT_TBS, IN_SESSION_TYPES, SEALED, SIGNED_TYPES,
    Reject, T_certificate, T_recording_list, check_map, check_message,
    domain_of, schema)

SUITE = 1
MSG_TYPES = {"info": 9, "rekey": 10, "bye": 11}
ERROR_NAMES = {
    "malformed", "not-deterministic", "schema", "unknown-critical-field",
    "unknown-message-type", "unsupported-version", "too-large",
    "auth-failed", "stale-nonce", "pop-failed", "interval-too-brief",
    "not-registered", "forbidden", "cert-invalid", "cert-expired",
    "cert-not-yet-valid", "cert-revoked", "cert-subject-mismatch",
    "cert-not-found", "unknown-account", "unknown-domain", "loop-detected",
    "hop-limit-exceeded", "unreachable", "route-forbidden", "unknown-session",
    "bad-state", "decrypt-failed", "signature-invalid", "permission-denied",
    "replay", "stale-epoch", "recipient-missing", "firewall-failure",
    "unknown-pinhole", "recording-forbidden", "unknown-recording", "internal",
    "busy", "timeout",
}


class Mismatch(Exception):
    """A value recomputed from the spec differs from the vector's."""


# Every vector file by kind, for the checks that span two files (the F1
# exchange of register-proof and kx-pop). Filled by load_context().
CONTEXT = {}


def load_context(vdir):
    CONTEXT.clear()
    for f in sorted(glob.glob(os.path.join(vdir, "*.json"))):
        with open(f, encoding="utf-8") as fh:
            d = json.load(fh)
        if isinstance(d, dict) and isinstance(d.get("kind"), str):
            CONTEXT[d["kind"]] = d


def hx(s):
    return bytes.fromhex(s)


def need(t, key):
    """A field vectors.md says the test carries."""
    if key not in t:
        raise Mismatch("%s missing" % key)
    return t[key]


def absent(t, *keys):
    """Fields vectors.md says the test does not carry (not computed)."""
    for key in keys:
        if key in t:
            raise Mismatch("%s given, but it cannot be computed" % key)


def same(name, mine, theirs):
    if mine != theirs:
        def show(v):
            return v.hex() if isinstance(v, (bytes, bytearray)) else repr(v)
        raise Mismatch("%s: computed %s, vector has %s" % (name, show(mine), show(theirs)))


try:
    import cbor2
except ImportError:  # the cross-check is skipped without it
    cbor2 = None


def _plain(v):
    """True for values made only of the types Keyway structures use."""
    if isinstance(v, (int, bytes, str, bool)) or v is None:
        return True
    if isinstance(v, list):
        return all(_plain(i) for i in v)
    if isinstance(v, dict):
        return all(isinstance(k, int) and _plain(x) for k, x in v.items())
    return False


def strict(data, what, limits=True):
    """Strict deterministic decode; a decode failure is a Reject with the
    code of errors.md §2. Every accepted item is decoded a second time by
    cbor2 (an independent decoder) and the values compared (cf.
    KW-CBOR-020)."""
    try:
        v = decode(data, limits=limits)
    except CborError as e:
        raise Reject(e.code, "%s: %s at offset %d" % (what, e.detail, e.offset))
    if cbor2 is not None and _plain(v):
        other = cbor2.loads(bytes(data))
        if other != v:
            raise Mismatch("%s: the strict decoder and cbor2 disagree on the value" % what)
    if _plain(v) and enc(v) != bytes(data):
        raise Mismatch("%s: accepted but does not re-encode to the same bytes" % what)
    return v


def verify(pub, m, sig):
    ok, reason = ed25519_verify_strict(pub, m, sig)
    return ok, reason


def kid(P, use):
    """KW-CRYPTO-010."""
    return H(enc(["keyway-v1 kid", use, P]))[:8]


# ================================================================ certificates

def decode_certificate(cert, what="certificate"):
    """A certificate given as bytes or as its decoded array: returns
    (tbs_map, tbs_bytes, sig). Strict inside tbs too (KW-CERT-002 first
    step, KW-CRYPTO-003)."""
    c = strict(cert, what) if isinstance(cert, (bytes, bytearray)) else cert
    T_certificate(c, what)
    tbs_bytes, sig = c
    tbs = strict(tbs_bytes, what + ".tbs")
    check_map(tbs, CERT_TBS, what + ".tbs")
    return tbs, tbs_bytes, sig


def validate_cert(cert, anchors, now, subject=None, role=None, revoked=(), what="certificate"):
    """KW-CERT-002 in its order: decode (deterministically); suite (schema,
    KW-CRYPTO-001); issuer and issuer-kid name a trusted key; signature over
    the received tbs; subject (the account it is used for, in the issuer's
    domain); role; not-before <= now <= not-after (KW-CERT-003); not
    revoked."""
    tbs, tbs_bytes, sig = decode_certificate(cert, what)
    issuer, ikid = tbs[2], tbs[3]
    anchor = None
    for a in anchors:
        if a["domain"] == issuer and kid(hx(a["public"]), 0) == ikid:
            anchor = a
    if anchor is None:
        raise Reject("cert-invalid", "%s: issuer %s/%s is not a trusted anchor" % (what, issuer, ikid.hex()))
    ok, why = verify(hx(anchor["public"]), enc(["keyway-v1 cert", tbs_bytes]), sig)
    if not ok:
        raise Reject("cert-invalid", "%s: signature: %s" % (what, why))
    if subject is not None and tbs[4] != subject:
        raise Reject("cert-subject-mismatch", "%s: subject %s, used for %s" % (what, tbs[4], subject))
    if domain_of(tbs[4]) != issuer:
        raise Reject("cert-subject-mismatch", "%s: subject %s not in issuer domain %s" % (what, tbs[4], issuer))
    if role is not None and tbs[5] != role:
        # errors.md 300: "a certificate's signature, issuer or role is wrong"
        raise Reject("cert-invalid", "%s: role %d, use requires %d" % (what, tbs[5], role))
    if now < tbs[8]:
        raise Reject("cert-not-yet-valid", "%s: now %d < not-before %d" % (what, now, tbs[8]))
    if now > tbs[9]:
        raise Reject("cert-expired", "%s: now %d > not-after %d" % (what, now, tbs[9]))
    if tbs[1] in revoked:
        raise Reject("cert-revoked", "%s: serial %d revoked" % (what, tbs[1]))
    return tbs


# ================================================================ kinds

def k_kid(t, p, notes):
    same("kid", kid(hx(t["public"]), t["use"]), hx(t["kid"]))


def k_cert(t, p, notes):
    cert = hx(t["certificate"])
    if "signature_input" in t:
        c = strict(cert, "certificate")
        T_certificate(c, "certificate")
        same("signature_input", enc(["keyway-v1 cert", c[0]]), hx(t["signature_input"]))
    tbs = validate_cert(cert, p["anchors"], t["now"], subject=t["subject"], role=t.get("role"),
                        revoked=set(t.get("revoked", [])))
    if "signature_input" in t:
        signer = [a for a in p["anchors"] if a["domain"] == tbs[2] and "private" in a]
        if signer:
            a = signer[0]
            same("anchor public key from its private seed", ed25519_public(hx(a["private"])), hx(a["public"]))
            same("sig (re-signed with the anchor's seed)",
                 ed25519_sign(hx(a["private"]), hx(t["signature_input"])), strict(cert, "certificate")[1])
            notes.append("certificate reproduced from the anchor seed")


ATTEST_SKEW = 300  # seconds, either way (KW-CRYPTO-012)


def k_attest(t, p, notes):
    """KW-CRYPTO-012 and KW-CERT-005, as the receiving device `to` checks
    an attestation of the certificate of the queried account `target`."""
    for a in p["anchors"]:
        if "private" in a:
            same("anchor public key from its private seed", ed25519_public(hx(a["private"])), hx(a["public"]))
    to, target, now = t["to"], t["target"], t["now"]
    att = strict(hx(t["attestation"]), "attestation")
    check_map(att, ATTESTATION, "attestation")
    c = hx(t["certificate"])
    attested, _, _ = decode_certificate(c, "attested certificate")
    attester, akid, at = att[0], att[1], att[2]
    si = enc(["keyway-v1 attest", attester, at, to, c])
    same("signature_input", si, hx(t["signature_input"]))
    # "Failures of the attestation itself are cert-invalid, or
    # signature-invalid for its signature." Checked in the order the
    # requirement lists them.
    if domain_of(attester) != domain_of(to):
        raise Reject("cert-invalid", "attester %s is not an account of the device's domain (%s)"
                     % (attester, domain_of(to)))
    anchors = [a for a in p["anchors"] if a["domain"] == domain_of(to)]
    try:
        tbs = validate_cert(att[4], anchors, now, subject=attester, role=1, what="attester certificate")
    except Reject as r:
        # a failure of the attestation itself (finding 24: or its own 3xx code?)
        raise Reject("cert-invalid", "attester certificate: %s (%s by KW-CERT-002 alone)" % (r.detail, r.code))
    if kid(tbs[6], 0) != akid:
        # not its signature, so cert-invalid (finding 24)
        raise Reject("cert-invalid", "attestation kid %s is not the attester key's %s"
                     % (akid.hex(), kid(tbs[6], 0).hex()))
    ok, why = verify(tbs[6], si, att[3])
    if not ok:
        raise Reject("signature-invalid", "attestation sig: " + why)
    if abs(at - now) > ATTEST_SKEW:
        raise Reject("cert-invalid", "at %d is %d s from now %d (more than %d)" % (at, now - at, now, ATTEST_SKEW))
    # then KW-CERT-002 on the attested certificate, except the issuer check
    # (and with it the signature, which only the issuer's key could verify)
    validate_attested(attested, target, now)


def validate_attested(tbs, target, now, revoked=()):
    """KW-CERT-002 minus issuer and signature, which the attestation
    replaces: subject = the queried account, in its issuer's domain; no
    role is named for it; term; revocation (the device holds no list for
    the other domain, so `revoked` is empty)."""
    if tbs[4] != target:
        raise Reject("cert-subject-mismatch", "attested certificate's subject %s, queried account %s"
                     % (tbs[4], target))
    if domain_of(tbs[4]) != tbs[2]:
        raise Reject("cert-subject-mismatch", "attested subject %s outside its issuer's domain %s"
                     % (tbs[4], tbs[2]))
    if now < tbs[8]:
        raise Reject("cert-not-yet-valid", "attested certificate: now %d < not-before %d" % (now, tbs[8]))
    if now > tbs[9]:
        raise Reject("cert-expired", "attested certificate: now %d > not-after %d" % (now, tbs[9]))
    if tbs[1] in revoked:
        raise Reject("cert-revoked", "attested certificate: serial %d revoked" % tbs[1])


def k_csr(t, p, notes):
    csr = strict(hx(t["csr"]), "csr")
    check_map(csr, CERT_REQUEST, "cert-request")
    si = enc(["keyway-v1 csr", t["account"], csr[0], csr[1], csr[2]])
    same("signature_input", si, hx(t["signature_input"]))
    if "sig_seed" in t:
        seed = hx(t["sig_seed"])
        same("sig-key from sig_seed", ed25519_public(seed), csr[1])
        same("pop (re-signed)", ed25519_sign(seed, si), csr[3])
    ok, why = verify(csr[1], si, csr[3])
    if not ok:
        raise Reject("pop-failed", "pop: " + why)


def parse_auth_message(am):
    """auth_message = cbor(["keyway-v1 auth", nonce, r0]) with r0 a
    register without auth (KW-CRYPTO-021). Returns (nonce, r0 bytes, r0)."""
    v = strict(am, "auth_message")
    schema(isinstance(v, list) and len(v) == 3 and v[0] == "keyway-v1 auth"
           and isinstance(v[1], bytes) and isinstance(v[2], bytes), "auth_message shape")
    r0 = strict(v[2], "r0")
    check_message(r0, {1})
    schema(14 not in r0, "r0 still carries auth")
    return v[1], v[2], r0


def kx_pop_server(e, E, nonce, account, kx_key, am, kx_proof):
    """The server's check of KW-CRYPTO-023: z = X25519(e, kx-key) (all-zero
    rejected, KW-CRYPTO-005), k = HKDF(nonce, z, info), HMAC(k,
    auth_message) = kx-proof in constant time. Returns None or a Reject."""
    info = enc(["keyway-v1 kx-pop", account, kx_key, E])
    try:
        z = x25519(e, kx_key)
    except LowOrder as err:
        return Reject("pop-failed", "server side X25519: %s (KW-CRYPTO-005)" % err)
    if not ct_eq(HMAC(HKDF32(nonce, z, info), am), kx_proof):
        return Reject("pop-failed", "kx-proof does not match")
    return None


def k_kx_pop(t, p, notes):
    E, e = hx(t["challenge"]), hx(t["challenge_private"])
    nonce, kx_key, am = hx(t["nonce"]), hx(t["kx_key"]), hx(t["auth_message"])
    proof = hx(t["kx_proof"])
    same("challenge from challenge_private", x25519_public(e), E)
    am_nonce, _, r0 = parse_auth_message(am)
    # auth_message binds the challenge's nonce, which also salts the key
    same("nonce bound in auth_message vs the challenge nonce", am_nonce, nonce)
    schema(12 in r0, "auth_message's register carries no csr (KW-CRYPTO-023 needs one)")
    # "kx-key is the csr's", and the account is the register's `from`
    account, csr_kx = r0[3], r0[12][2]
    same("account vs the register's from", t["account"], account)
    if kx_key != csr_kx:
        spec = kx_pop_server(e, E, nonce, account, csr_kx, am, proof)
        unit = kx_pop_server(e, E, nonce, account, kx_key, am, proof)
        raise Mismatch(
            "kx_key %s... is not the csr's kx-key %s... in auth_message's register (KW-CRYPTO-023: "
            "kx-key is the csr's); a server following the spec checks the csr's key and %s; "
            "with the test's kx_key the check %s"
            % (kx_key.hex()[:16], csr_kx.hex()[:16],
               "accepts" if spec is None else "rejects (%s)" % spec.code,
               "accepts" if unit is None else "rejects (%s)" % unit.code))
    info = enc(["keyway-v1 kx-pop", account, kx_key, E])
    # vectors.md: shared_secret is the server's z and pop_key its k,
    # whenever z is not all zeros
    try:
        z = x25519(e, kx_key)
    except LowOrder as err:
        absent(t, "shared_secret", "pop_key")
        raise Reject("pop-failed", "server side X25519: %s (KW-CRYPTO-005)" % err)
    same("shared_secret", z, hx(need(t, "shared_secret")))
    same("pop_key", HKDF32(nonce, z, info), hx(need(t, "pop_key")))
    if "kx_private" in t:
        d = hx(t["kx_private"])
        same("kx_key from kx_private", x25519_public(d), kx_key)
        zd = x25519(d, E)
        same("device shared secret", zd, z)
        same("device kx-proof", HMAC(HKDF32(nonce, zd, info), am), proof)
    r = kx_pop_server(e, E, nonce, account, kx_key, am, proof)
    if r is not None:
        raise r


def k_register_verifier(t, p, notes):
    n = t["iterations"]
    if not (4096 <= n <= 1000000):
        raise Reject("schema", "iterations %d outside 4096..1000000 (KW-CRYPTO-020)" % n)
    salted = PBKDF2_32(hx(t["secret"]), hx(t["salt"]), n)
    same("salted", salted, hx(t["salted"]))
    ck = HMAC(salted, b"keyway-v1 client key")
    same("client_key", ck, hx(t["client_key"]))
    same("stored_key", H(ck), hx(t["stored_key"]))


def kx_pop_twin(nonce, am):
    """The kx-pop test of the same F1 exchange (same challenge nonce and
    auth_message), which gives the challenge's X25519 private key."""
    d = CONTEXT.get("kx-pop")
    if not d:
        return None
    for t in d.get("tests", []):
        if (t.get("result") == "valid" and t.get("nonce") == nonce.hex()
                and t.get("auth_message") == am.hex() and "challenge_private" in t):
            return t
    return None


def k_register_proof(t, p, notes):
    """The server's handling of an authenticated F1 `register`: the
    outstanding challenge (KW-REG-005, KW-CRYPTO-021), the mask of the
    proof by the exchange of auth.epk with the challenge key, the proof
    (KW-CRYPTO-021), then issuance's pop and kx-proof (KW-REG-007,
    KW-CRYPTO-022/023)."""
    reg = hx(t["register"])
    m = strict(reg, "register")
    check_message(m, {1})
    schema(14 in m, "register without auth")
    r0 = without_key(reg, 14)
    same("r0 (cut from the bytes) vs r0 (re-encoded)", enc({k: v for k, v in m.items() if k != 14}), r0)
    nonce, stored = hx(t["nonce"]), hx(t["stored_key"])
    am = enc(["keyway-v1 auth", nonce, r0])
    same("auth_message", am, hx(t["auth_message"]))
    auth = m[14]
    proof, epk = auth[1], auth[3]
    e = hx(t["challenge_private"])
    E = x25519_public(e)
    same("challenge (the public key of challenge_private)", E, hx(t["challenge"]))
    # KW-CRYPTO-021: z = X25519(e, X), mask = HKDF(nonce, z, cbor(["keyway-v1
    # auth mask", account, X, E])); vectors.md: given wherever z is not all
    # zeros
    info = enc(["keyway-v1 auth mask", m[3], epk, E])
    try:
        z = x25519(e, epk)
    except LowOrder:
        z = None
    if z is None:
        absent(t, "shared_secret", "mask")
        mask = None
    else:
        same("shared_secret", z, hx(need(t, "shared_secret")))
        mask = HKDF32(nonce, z, info)
        same("mask", mask, hx(need(t, "mask")))
    if "client_key" in t:
        ck = hx(t["client_key"])
        same("H(client_key)", H(ck), stored)
        d = hx(need(t, "epk_private"))
        same("auth.epk from epk_private", x25519_public(d), epk)
        zd = x25519(d, E)
        same("device shared secret", zd, z)
        same("proof (device side)", xor(xor(ck, HMAC(H(ck), am)), HKDF32(nonce, zd, info)), proof)
    else:
        absent(t, "epk_private")
    # KW-CRYPTO-021: "The server first checks the echoed auth.nonce (not one
    # it made for this account, expired, or spent: stale-nonce), then ..."
    # The test's `nonce` is the challenge's, the only one outstanding.
    if auth[0] != nonce:
        raise Reject("stale-nonce", "echoed auth.nonce %s is not the outstanding challenge's %s"
                     % (auth[0].hex(), nonce.hex()))
    if mask is None:
        raise Reject("auth-failed", "X25519(challenge_private, auth.epk) is all zeros (KW-CRYPTO-005)")
    ck2 = xor(xor(proof, HMAC(stored, am)), mask)
    if not ct_eq(H(ck2), stored):
        unmasked = ct_eq(H(xor(proof, HMAC(stored, am))), stored)
        if unmasked:
            notes.append("the proof verifies without its mask: it is unmasked")
        raise Reject("auth-failed", "H(proof XOR HMAC(stored_key, auth_message) XOR mask) != stored_key")
    if 13 in m:
        # KW-CRYPTO-026: a register with cert proves the certificate's
        # signing key: cert-pop = Sign(sig_sk, cbor(["keyway-v1 cert-pop",
        # auth_message])), else signature-invalid (the certificate's own
        # validity is cert.json's, recipe)
        tbs, _, _ = decode_certificate(m[13], "register.cert")
        si = enc(["keyway-v1 cert-pop", am])
        same("cert_pop_input", si, hx(t["cert_pop_input"]))
        if "sig_seed" in t:
            seed = hx(t["sig_seed"])
            same("certificate sig-key from sig_seed", ed25519_public(seed), tbs[6])
            same("auth.cert-pop (re-signed)", ed25519_sign(seed, si), auth.get(4))
        if 4 not in auth:
            raise Reject("signature-invalid", "a register with cert and no auth.cert-pop")
        ok, why = verify(tbs[6], si, auth[4])
        if not ok:
            raise Reject("signature-invalid", "auth.cert-pop: " + why)
        return
    absent(t, "cert_pop_input", "sig_seed")
    if 12 not in m:
        return
    # issuance (KW-REG-007): pop, then kx-proof with the challenge key
    csr = m[12]
    si = enc(["keyway-v1 csr", m[3], csr[0], csr[1], csr[2]])
    ok, why = verify(csr[1], si, csr[3])
    if not ok:
        raise Reject("pop-failed", "csr.pop: " + why)
    if 2 not in auth:
        raise Reject("pop-failed", "a csr without auth.kx-proof")
    r = kx_pop_server(e, E, nonce, m[3], csr[2], am, auth[2])
    if r is not None:
        raise Reject(r.code, "auth.kx-proof: " + r.detail)
    twin = kx_pop_twin(nonce, am)
    if twin is not None:
        same("challenge_private vs the kx-pop twin's", e, hx(twin["challenge_private"]))
        if "kx_private" in twin:
            same("csr.kx-key vs the kx-pop twin's kx_private", x25519_public(hx(twin["kx_private"])), csr[2])
        notes.append("csr.pop and auth.kx-proof verified; the challenge key is that of %s" % twin["tcId"])
    else:
        notes.append("csr.pop and auth.kx-proof verified")


def wrap_ad(nonce, cid):
    # KW-CRYPTO-033: AD components ["keyway-v1 wrap", nonce, u64be(cid)];
    # the label enters as its ASCII bytes (not CBOR)
    return [b"keyway-v1 wrap", nonce, u64be(cid)]


def kek_info(session, W, E, P, kind, perm):
    return enc(["keyway-v1 kek", SUITE, session, W, E, P, kind, perm])


def k_wrap(t, p, notes):
    """KW-CRYPTO-033/034. vectors.md: kek_info always; shared_secret and
    kek wherever X25519 gives a non-zero z, on the wrap side and the
    recipient's (they agree); wrapped is the wrap's output with
    ephemeral_private, else the unwrap's input; cek is the wrap's input, or
    the output of a valid unwrap."""
    session, W = hx(t["session"]), t["wrapper"]
    kind, perm, cid, nonce = t["kind"], t["perm"], t["cid"], hx(t["nonce"])
    E, P = hx(t["epk"]), hx(t["recipient_public"])
    info = kek_info(session, W, E, P, kind, perm)
    same("kek_info", info, hx(need(t, "kek_info")))
    if "ephemeral_private" in t:
        e = hx(t["ephemeral_private"])
        same("epk from ephemeral_private", x25519_public(e), E)
        try:
            z = x25519(e, P)
        except LowOrder as err:
            absent(t, "shared_secret", "kek", "wrapped")
            raise Reject("decrypt-failed", "wrap: X25519 %s (KW-CRYPTO-005)" % err)
        same("shared_secret (wrap)", z, hx(need(t, "shared_secret")))
        kek = HKDF32(session, z, info)
        same("kek (wrap)", kek, hx(need(t, "kek")))
        w = siv_encrypt(kek, wrap_ad(nonce, cid), hx(need(t, "cek")))
        same("wrapped length", len(w), 48)
        same("wrapped", w, hx(need(t, "wrapped")))
    if "recipient_private" in t:
        d = hx(t["recipient_private"])
        same("recipient_public from recipient_private", x25519_public(d), P)
        try:
            z = x25519(d, E)
        except LowOrder as err:
            absent(t, "shared_secret", "kek", "cek")
            raise Reject("decrypt-failed", "unwrap: X25519 %s (KW-CRYPTO-005)" % err)
        kek = HKDF32(session, z, info)
        same("shared_secret (unwrap)", z, hx(need(t, "shared_secret")))
        same("kek (unwrap)", kek, hx(need(t, "kek")))
        cek = siv_decrypt(kek, wrap_ad(nonce, cid), hx(need(t, "wrapped")))
        if cek is None:
            if "ephemeral_private" not in t:
                absent(t, "cek")
            raise Reject("decrypt-failed", "unwrap: AES-SIV authentication failed")
        same("cek", cek, hx(need(t, "cek")))


def k_media(t, p, notes):
    key, session = hx(t["key"]), hx(t["session"])
    ad = enc(["keyway-v1 media", SUITE, session, t["from"], t["stream"], t["epoch"], t["seq"]])
    same("ad", ad, hx(t["ad"]))
    payload = hx(t["payload"])
    if "frame" in t and t["result"] == "valid":
        same("payload", siv_encrypt(key, [ad], hx(t["frame"])), payload)
    frame = siv_decrypt(key, [ad], payload)
    if frame is None:
        raise Reject("decrypt-failed", "media payload does not authenticate")
    if "frame" in t:
        same("frame", frame, hx(t["frame"]))


# KW-CRYPTO-060: role server for pinhole-*, media-copy, record-start,
# record-key, record-stop; any role for record-list and record-fetch
MSGSIG_SERVER_ROLE = {20, 21, 22, 23, 30, 31, 32}
# KW-CRYPTO-061: ack, info, rekey, bye are signed by the device in `from`,
# over the message without hops (6), via (7) and sig (8)
MSGSIG_DEVICE_ROLE = IN_SESSION_TYPES


def k_msgsig(t, p, notes):
    msg = hx(t["message"])
    m = strict(msg, "message")
    name = check_message(m, SIGNED_TYPES)
    cut = (6, 7, 8) if m[1] in IN_SESSION_TYPES else (8,)
    mw = msg
    for k in cut:
        if k in m:
            mw = without_key(mw, k)
    same("m (cut from the bytes) vs m (re-encoded)", enc({k: v for k, v in m.items() if k not in cut}), mw)
    if m[1] == 10 and (22 in m) == (26 in m):
        raise Reject("schema", "rekey carries exactly one of body and wrapped")
    si = enc(["keyway-v1 msg-sig", mw])
    same("signature_input", si, hx(t["signature_input"]))
    # the receiver confirms `from`'s certificate (KW-CERT-002) with the role
    # the message type requires, against its anchor, at now
    anchors = [{"domain": p["domain"], "public": p["anchor"]}]
    role = 1 if m[1] in MSGSIG_SERVER_ROLE else 0 if m[1] in MSGSIG_DEVICE_ROLE else None
    tbs = validate_cert(hx(t["certificate"]), anchors, p["now"], subject=m[3], role=role,
                        what="certificate of %s" % m[3])
    skid, s = m[8]
    if "sig_seed" in t:
        seed = hx(t["sig_seed"])
        same("sig-key from sig_seed", ed25519_public(seed), tbs[6])
        same("sig.sig (re-signed)", ed25519_sign(seed, si), s)
    if skid != kid(tbs[6], 0):
        raise Reject("signature-invalid", "sig.kid is not the certificate key's identifier")
    ok, why = verify(tbs[6], si, s)
    if not ok:
        raise Reject("signature-invalid", "msg-sig: " + why)
    if m[1] in (30, 31):
        keys = m[52]
        synthetic = keys[2] == m[3] and keys[3] != kid(tbs[6], 0)
        notes.append("%s: the sealed `keys` is not opened%s" % (
            name, " (it is synthetic: its sender-kid %s is not the kid of %s's key)" % (keys[3].hex(), m[3])
            if synthetic else ""))


# ---------------------------------------------------------------- reader
# crypto.md §8: a recorder's record-listing / record-data sealed for the
# requester of the record-list / record-fetch it answers.

def reader_key_info(a, q, E, R, P):
    return enc(["keyway-v1 reader key", SUITE, a, q, E, R, P])


def reader_ad(response):
    """The associated data of an answer, from its clear fields."""
    if response[1] == 34:
        return enc(["keyway-v1 record-listing", response[2]])
    return enc(["keyway-v1 record-data", response[2], response[50], response[56], response[57]])


def k_reader(t, p, notes):
    """KW-CRYPTO-070 (the recorder seals), KW-CRYPTO-071 (the requester
    opens). vectors.md: seal gives ephemeral_private, plaintext (and more,
    answering a fetch) and outputs response; open gives response; with
    requester_private the answer is opened; key_info, shared_ephemeral,
    shared_static, key and ad are intermediates of both sides, which
    agree."""
    a = p["recorder"]
    r = hx(p["recorder_private"])
    R = hx(p["recorder_public"])
    same("recorder_public from recorder_private", x25519_public(r), R)
    req_bytes = hx(t["request"])
    req = strict(req_bytes, "request")
    check_message(req, {33, 35})
    q = req[3]
    P = hx(t["requester_public"])
    if "requester_private" in t:
        same("requester_public from requester_private", x25519_public(hx(t["requester_private"])), P)
    if t["operation"] == "seal":
        e = hx(t["ephemeral_private"])
        E = x25519_public(e)
        info = reader_key_info(a, q, E, R, P)
        same("key_info (seal)", info, hx(need(t, "key_info")))
        try:
            ze = x25519(e, P)
            zs = x25519(r, P)
        except LowOrder as err:
            absent(t, "shared_ephemeral", "shared_static", "key", "ad", "response")
            raise Reject("decrypt-failed", "seal: X25519 %s (KW-CRYPTO-005)" % err)
        same("shared_ephemeral (seal)", ze, hx(need(t, "shared_ephemeral")))
        same("shared_static (seal)", zs, hx(need(t, "shared_static")))
        k = HKDF32(H(req_bytes), ze + zs, info)
        same("key (seal)", k, hx(need(t, "key")))
        pt = hx(t["plaintext"])
        if req[1] == 33:
            schema("more" not in t, "more given for a listing")
            resp = {0: 1, 1: 34, 2: req[2], 59: E}
            ad = reader_ad(resp)
            resp[53] = siv_encrypt(k, [ad], pt)
        else:
            resp = {0: 1, 1: 36, 2: req[2], 50: req[50], 56: req[56], 57: t["more"], 59: E}
            ad = reader_ad(resp)
            resp[54] = siv_encrypt(k, [ad], pt)
        same("ad (seal)", ad, hx(need(t, "ad")))
        same("response", enc(resp), hx(need(t, "response")))
    elif t["operation"] != "open":
        raise Mismatch("operation %r" % t["operation"])
    if "requester_private" not in t:
        return
    d = hx(t["requester_private"])
    resp_bytes = hx(need(t, "response"))
    resp = strict(resp_bytes, "response")
    check_message(resp, {34 if req[1] == 33 else 36})
    same("response txn", resp[2], req[2])
    E = resp[59]
    info = reader_key_info(a, q, E, R, P)
    same("key_info (open)", info, hx(need(t, "key_info")))
    ad = reader_ad(resp)
    same("ad (open)", ad, hx(need(t, "ad")))
    try:
        ze = x25519(d, E)
        zs = x25519(d, R)
    except LowOrder as err:
        absent(t, "shared_ephemeral", "shared_static", "key", "plaintext")
        raise Reject("decrypt-failed", "open: X25519 %s (KW-CRYPTO-005)" % err)
    same("shared_ephemeral (open)", ze, hx(need(t, "shared_ephemeral")))
    same("shared_static (open)", zs, hx(need(t, "shared_static")))
    k = HKDF32(H(req_bytes), ze + zs, info)
    same("key (open)", k, hx(need(t, "key")))
    pt = siv_decrypt(k, [ad], resp[53] if resp[1] == 34 else resp[54])
    if pt is None:
        if t["operation"] == "open":
            absent(t, "plaintext")
        raise Reject("decrypt-failed", "open: AES-SIV authentication failed")
    if resp[1] == 34:
        T_recording_list(strict(pt, "recording-list"), "recording-list")
    same("plaintext", pt, hx(need(t, "plaintext")))


def k_challenge(t, p, notes):
    """The device's check of a challenge before it answers (KW-REG-019,
    KW-CRYPTO-025): its `cert` is valid now against the device's anchor
    for the server account the device is configured with, role server (the
    3xx code); `kid` names that certificate's key and `s` verifies over
    cbor(["keyway-v1 challenge", m]), m the challenge without key 8
    (signature-invalid); then the iteration bounds (schema), the device's
    floor and its pinned salt and iterations (auth-failed, KW-REG-021)."""
    msg = hx(t["challenge"])
    m = strict(msg, "challenge")
    check_message(m, {2})
    mw = without_key(msg, 8)
    same("m (cut from the bytes) vs m (re-encoded)", enc({k: v for k, v in m.items() if k != 8}), mw)
    si = enc(["keyway-v1 challenge", mw])
    same("signature_input", si, hx(t["signature_input"]))
    anchors = [{"domain": p["domain"], "public": p["anchor"]}]
    tbs = validate_cert(m[13], anchors, p["now"], subject=p["server"], role=1,
                        what="the challenge's cert")
    skid, s = m[8]
    if "sig_seed" in t:
        seed = hx(t["sig_seed"])
        same("sig-key from sig_seed", ed25519_public(seed), tbs[6])
        same("sig.sig (re-signed)", ed25519_sign(seed, si), s)
    if skid != kid(tbs[6], 0):
        raise Reject("signature-invalid", "sig.kid is not the identifier of the certificate's key")
    ok, why = verify(tbs[6], si, s)
    if not ok:
        raise Reject("signature-invalid", "challenge signature: " + why)
    # KW-CRYPTO-020: "a challenge with another count is a schema error to
    # the device"; KW-REG-021: the device's floor, then its pin
    n = m[17]
    if not (4096 <= n <= 1000000):
        raise Reject("schema", "iterations %d outside 4096..1000000 (KW-CRYPTO-020)" % n)
    if "min_iterations" in t and n < t["min_iterations"]:
        raise Reject("auth-failed", "iterations %d below the device's floor %d (KW-REG-021)"
                     % (n, t["min_iterations"]))
    schema(("pinned_salt" in t) == ("pinned_iterations" in t),
           "pinned_salt and pinned_iterations come together")
    if "pinned_salt" in t:
        if m[16] != hx(t["pinned_salt"]):
            raise Reject("auth-failed", "salt is not the pinned one (KW-REG-021)")
        if n < t["pinned_iterations"]:
            raise Reject("auth-failed", "iterations %d below the pinned %d (KW-REG-021)"
                         % (n, t["pinned_iterations"]))


# ---------------------------------------------------------------- sealed bodies

def body_ad(session, cid, sender):
    return enc(["keyway-v1 body", SUITE, session, cid, sender])


def content_digest(session, cid, cek, plaintext):
    """KW-CRYPTO-031: a version under the content key it is encrypted with."""
    commit = H(enc(["keyway-v1 key commit", cek]))
    return H(enc(["keyway-v1 content", session, cid, commit, plaintext]))


def perm_map(recipients):
    return [[r.get(0), r.get(1), r[2], r[3]] for r in recipients]


def party(p, account):
    for q in p["parties"]:
        if q["account"] == account:
            return q
    return None


def unwrap_entry(entry, session, cid, nonce, W, E, d):
    P = x25519_public(d)
    try:
        z = x25519(d, E)
    except LowOrder:
        return None
    kek = HKDF32(session, z, kek_info(session, W, E, P, entry[2], entry[3]))
    return siv_decrypt(kek, wrap_ad(nonce, cid), entry[4])


def find_own_entry(recipients, session, cid, nonce, W, E, account, d):
    """KW-CRYPTO-034: explicit by (id, kid), else trial over the entries
    without them. Returns (cek, how) or raises decrypt-failed."""
    P = x25519_public(d)
    mine = [r for r in recipients if r.get(0) == account and r.get(1) == kid(P, 1)]
    if mine:
        cek = unwrap_entry(mine[0], session, cid, nonce, W, E, d)
        if cek is None:
            raise Reject("decrypt-failed", "own explicit entry does not unwrap")
        return cek, "explicit"
    for r in recipients:
        if 0 in r:
            continue
        cek = unwrap_entry(r, session, cid, nonce, W, E, d)
        if cek is not None:
            return cek, "trial"
    raise Reject("decrypt-failed", "no entry for %s (explicit or by trial)" % account)


def current_wrapper(m):
    """KW-CRYPTO-033: the sender with epk, unless an edit carries an epk:
    then the last such edit's editor with that epk."""
    W, E = m[2], m[4]
    for e in m.get(10, []):
        if 5 in e:
            W, E = e[0], e[5]
    return W, E


def check_edit(e, i, recipients, pmap, session, cid, anchors, now, carrier):
    """Step 3 of KW-CRYPTO-036 for one edit, except the chain."""
    editor = e[0]
    if not any(r.get(0) == editor and r[2] == 1 and r[3] == 1 for r in recipients):
        raise Reject("permission-denied", "edit %d: editor %s has no explicit server entry with read-modify"
                     % (i, editor))
    etbs = validate_cert(e[6], anchors, now, subject=editor, role=1, what="edit %d certificate" % i)
    if kid(etbs[6], 0) != e[1]:
        raise Reject("signature-invalid", "edit %d: kid is not the editor certificate key's identifier" % i)
    re, to = carrier
    ei = enc(["keyway-v1 edit", SUITE, session, cid, re, to, editor, e[2], e[3], e.get(5), pmap])
    ok, why = verify(etbs[6], ei, e[4])
    if not ok:
        raise Reject("signature-invalid", "edit %d sig: %s" % (i, why))


def open_sealed(body, session, reader, p, notes, carrier):
    """The destination's handling of KW-CRYPTO-036 (with KW-CRYPTO-033/034):
    open its entry and decrypt, then the checks in their order. `carrier`
    is (re, to): the type of the message the body travels in and the
    account it is addressed to, which the signatures bind (KW-CRYPTO-032).
    Returns (plaintext, cek, decoded)."""
    re, to = carrier
    now, anchors = p["now"], p["anchors"]
    m = strict(body, "sealed")
    check_map(m, SEALED, "sealed")   # with KW-CRYPTO-034's id/kid rule
    cid, sender = m[1], m[2]
    recipients, edits = m[5], m.get(10, [])
    # open the own entry and decrypt (decrypt-failed)
    W, E = current_wrapper(m)
    rp = party(p, reader)
    cek, _ = find_own_entry(recipients, session, cid, m[6], W, E, reader, hx(rp["kx_private"]))
    pt = siv_decrypt(cek, [body_ad(session, cid, sender), m[6]], m[7])
    if pt is None:
        raise Reject("decrypt-failed", "ct does not authenticate")
    # 1. the sender's certificate: valid, any role (its 3xx code), names
    #    sender; its key has identifier sender-kid (signature-invalid)
    sp = party(p, sender)
    if sp is None:
        raise Reject("cert-not-found", "no certificate held for sender %s" % sender)
    stbs = validate_cert(hx(sp["certificate"]), anchors, now, subject=sender, what="sender certificate")
    if kid(stbs[6], 0) != m[3]:
        raise Reject("signature-invalid", "sender-kid is not the sender certificate key's identifier")
    # 2. sig over the current map
    pmap = perm_map(recipients)
    si = enc(["keyway-v1 seal", SUITE, session, cid, re, sender, to, m[8], pmap])
    ok, why = verify(stbs[6], si, m[9])
    if not ok:
        raise Reject("signature-invalid", "sender sig: " + why)
    # 3. each edit: permission, certificate (role server), kid and sig, chain
    version = m[8]
    for i, e in enumerate(edits):
        try:
            check_edit(e, i, recipients, pmap, session, cid, anchors, now, carrier)
        except Reject as r:
            if r.code == "permission-denied":
                notes.append(diagnose_edit(e, i, pmap, session, cid, anchors, now, carrier))
            raise
        if e[2] != version:
            raise Reject("permission-denied", "edit %d: prev does not continue the chain" % i)
        version = e[3]
    # 4. the plaintext is the last signed version
    if content_digest(session, cid, cek, pt) != version:
        raise Reject("permission-denied", "plaintext digest is not the last signed version")
    # 5. KW-SEAL-011: of an offer (6) or answer (7), at its destination,
    #    every explicit read-modify server entry signed an edit
    if re in (6, 7) and reader == to:
        editors = {e[0] for e in edits}
        for r in recipients:
            if 0 in r and r[2] == 1 and r[3] == 1 and r[0] not in editors:
                raise Reject("permission-denied", "%s has read-modify and signed no edit" % r[0])
    return pt, cek, m


def diagnose_edit(e, i, pmap, session, cid, anchors, now, carrier):
    """For a note: would the edit pass the checks after the permission?"""
    try:
        etbs = validate_cert(e[6], anchors, now, subject=e[0], role=1, what="edit %d certificate" % i)
    except Reject as r:
        return "edit %d by %s: besides, its certificate fails (%s)" % (i, e[0], r.code)
    ei = enc(["keyway-v1 edit", SUITE, session, cid, carrier[0], carrier[1], e[0], e[2], e[3], e.get(5), pmap])
    good_kid = kid(etbs[6], 0) == e[1]
    good_sig = verify(etbs[6], ei, e[4])[0]
    if good_kid and good_sig:
        return "edit %d by %s is otherwise sound: certificate valid with role server, kid matches, sig verifies" \
            % (i, e[0])
    return "edit %d by %s: besides, kid %s, sig %s" % (
        i, e[0], "matches" if good_kid else "does not match", "verifies" if good_sig else "does not verify")


def entry_of(m, session, account, d):
    """The entry a party with X25519 private key `d` opens in the decoded
    body `m`, step by step (KW-CRYPTO-033/034): (index, z, kek, cek or
    None), or None when there is none (or z is all zeros)."""
    W, E = current_wrapper(m)
    cid, nonce, recipients = m[1], m[6], m[5]
    P = x25519_public(d)
    try:
        z = x25519(d, E)
    except LowOrder:
        return None

    def attempt(i, r):
        kek = HKDF32(session, z, kek_info(session, W, E, P, r[2], r[3]))
        return (i, z, kek, siv_decrypt(kek, wrap_ad(nonce, cid), r[4]))
    for i, r in enumerate(recipients):
        if r.get(0) == account and r.get(1) == kid(P, 1):
            return attempt(i, r)
    for i, r in enumerate(recipients):
        if 0 not in r and 1 not in r:
            e = attempt(i, r)
            if e[3] is not None:
                return e
    return None


def check_entry(t, name, body, session, account, p):
    """vectors.md: `name` (reader_entry, actor_entry) is the entry the party
    opens: index, shared secret, kek, and the content key if it unwraps."""
    m = strict(body, "sealed")
    check_map(m, SEALED, "sealed")
    e = entry_of(m, session, account, hx(party(p, account)["kx_private"]))
    if e is None:
        absent(t, name)
        return
    v = need(t, name)
    same(name + ".index", e[0], v["index"])
    same(name + ".shared_secret", e[1], hx(v["shared_secret"]))
    same(name + ".kek", e[2], hx(v["kek"]))
    if e[3] is None:
        absent(v, "cek")
    else:
        same(name + ".cek", e[3], hx(need(v, "cek")))


def check_intermediate(t, cek, digest, pmap, si):
    im = need(t, "intermediate")
    same("intermediate.cek", cek, hx(im["cek"]))
    same("intermediate.hash", digest, hx(im["hash"]))
    same("intermediate.map", enc(pmap), hx(im["map"]))
    same("intermediate.signature_input", si, hx(im["signature_input"]))


def seal_body(t, p, sender, e, cek, nonce, pt, session, cid, carrier):
    """KW-CRYPTO-030 to KW-CRYPTO-033 for the sender: the encoded body, its
    intermediates checked against the test's."""
    now, anchors = p["now"], p["anchors"]
    sp = party(p, sender)
    seed = hx(sp["sig_seed"])
    stbs = validate_cert(hx(sp["certificate"]), anchors, now, subject=sender, what="sender certificate")
    same("sender sig-key (seed vs certificate)", ed25519_public(seed), stbs[6])
    E = x25519_public(e)
    ct = siv_encrypt(cek, [body_ad(session, cid, sender), nonce], pt)
    digest = content_digest(session, cid, cek, pt)
    recips = []
    for r in t["recipients"]:
        rp = party(p, r["id"])
        rtbs = validate_cert(hx(rp["certificate"]), anchors, now, subject=r["id"],
                             what="certificate of %s" % r["id"])
        P = rtbs[7]
        same("kx-key of %s (certificate vs kx_private)" % r["id"], x25519_public(hx(rp["kx_private"])), P)
        try:
            z = x25519(e, P)
        except LowOrder as err:
            raise Reject("decrypt-failed", "wrap for %s: %s" % (r["id"], err))
        kek = HKDF32(session, z, kek_info(session, sender, E, P, r["kind"], r["perm"]))
        entry = {2: r["kind"], 3: r["perm"], 4: siv_encrypt(kek, wrap_ad(nonce, cid), cek)}
        if not r["anonymous"]:
            entry[0], entry[1] = r["id"], kid(P, 1)
        recips.append(entry)
    pmap = perm_map(recips)
    si = enc(["keyway-v1 seal", SUITE, session, cid, carrier[0], sender, carrier[1], digest, pmap])
    body = {0: SUITE, 1: cid, 2: sender, 3: kid(stbs[6], 0), 4: E, 5: recips, 6: nonce, 7: ct,
            8: digest, 9: ed25519_sign(seed, si)}
    check_intermediate(t, cek, digest, pmap, si)
    out = enc(body)
    same("output (sealed body, byte for byte)", out, hx(t["output"]))
    return out


def open_rekey(body, session, reader, frm, epoch, p, notes, carrier):
    """The receiver of a body-form rekey (KW-CRYPTO-042, KW-SM-016), in the
    order crypto.md gives: sealed by `from` with the certificate confirmed
    for it (permission-denied); its entry and decryption (decrypt-failed);
    KW-CRYPTO-036; content cbor(epoch) of the rekey's epoch (stale-epoch;
    not an unsigned integer: decrypt-failed). Returns the key."""
    m = strict(body, "sealed")
    check_map(m, SEALED, "sealed")
    fp = party(p, frm)
    ftbs, _, _ = decode_certificate(hx(fp["certificate"]), "certificate of %s" % frm)
    if m[2] != frm or ftbs[4] != frm:
        raise Reject("permission-denied", "rekey body sealed by %s, the rekey is from %s" % (m[2], frm))
    same("re of a rekey body's message", carrier[0], 10)
    pt, cek, _ = open_sealed(body, session, reader, p, notes, carrier)
    try:
        named = strict(pt, "rekey body content")
    except Reject as r:
        raise Reject("decrypt-failed", "rekey body content: " + r.detail)
    if not isinstance(named, int) or isinstance(named, bool) or named < 0:
        raise Reject("decrypt-failed", "rekey body content is not an unsigned integer")
    if named != epoch:
        raise Reject("stale-epoch", "rekey body names epoch %d, the rekey %d" % (named, epoch))
    return cek


def check_parties(p):
    """vectors.md: the parties are one coherent deployment: each party's
    seed and X25519 private key are its certificate's keys, and the
    certificate is valid for it at `now` (any role)."""
    for q in p["parties"]:
        tbs = validate_cert(hx(q["certificate"]), p["anchors"], p["now"], subject=q["account"],
                            what="certificate of %s" % q["account"])
        same("sig-key of %s (seed vs certificate)" % q["account"], ed25519_public(hx(q["sig_seed"])), tbs[6])
        same("kx-key of %s (private key vs certificate)" % q["account"], x25519_public(hx(q["kx_private"])), tbs[7])


def k_seal(t, p, notes):
    op = t["operation"]
    session, cid = hx(t["session"]), t["cid"]
    carrier = (t["re"], t.get("to"))
    # the vectors' convention: alice's offer to the reader, or her rekey
    same("re (6 offer, 10 rekey)", t["re"], 10 if op in ("rekey", "open-rekey") else 6)
    same("to (the reader)", t.get("to"), t["reader"])
    now, anchors = p["now"], p["anchors"]
    check_parties(p)
    if op == "seal":
        rnd = hx(t["randomness"])
        same("randomness length", len(rnd), 80)
        result = seal_body(t, p, t["actor"], rnd[:32], rnd[32:64], rnd[64:80], hx(t["plaintext"]), session, cid, carrier)
    elif op == "rekey":
        # KW-CRYPTO-042, body form: the new key is the content key of a
        # body whose plaintext is cbor(epoch), sealed by the rekey's sender
        same("from of a rekey (its sealer)", t["from"], t["actor"])
        rnd = hx(t["randomness"])
        same("randomness length (ephemeral, nonce)", len(rnd), 48)
        pt = enc(t["epoch"])
        same("plaintext (cbor(epoch))", pt, hx(t["plaintext"]))
        result = seal_body(t, p, t["actor"], rnd[:32], hx(t["rekey_key"]), rnd[32:48], pt, session, cid, carrier)
    elif op == "edit":
        actor = t["actor"]
        ap = party(p, actor)
        seed = hx(ap["sig_seed"])
        inp = hx(t["input"])
        same("cid (the input body's)", strict(inp, "sealed")[1], cid)
        check_entry(t, "actor_entry", inp, session, actor, p)
        _, cek, m = open_sealed(inp, session, actor, p, notes, carrier)
        # KW-CRYPTO-035/036: an editor needs an explicit server entry with
        # read-modify (found by id) and a certificate with role server
        if not any(r.get(0) == actor and r[2] == 1 and r[3] == 1 for r in m[5]):
            raise Reject("permission-denied", "editor %s has no explicit read-modify server entry" % actor)
        atbs = validate_cert(hx(ap["certificate"]), anchors, now, subject=actor, role=1, what="editor certificate")
        same("editor sig-key (seed vs certificate)", ed25519_public(seed), atbs[6])
        edits = m.get(10, [])
        prev = edits[-1][3] if edits else m[8]
        pt = hx(t["plaintext"])
        nonce = m[6]
        Enew = None
        if t.get("new_key"):
            rnd = hx(t["randomness"])
            same("randomness length", len(rnd), 80)
            e, cek, nonce = rnd[:32], rnd[32:64], rnd[64:80]
            Enew = x25519_public(e)
            own_kid = kid(x25519_public(hx(ap["kx_private"])), 1)
            new_recips = []
            for r in m[5]:
                if r.get(0) == actor and r.get(1) == own_kid:
                    new_recips.append(r)  # its own entry is left as it was
                    continue
                if 0 not in r:
                    raise Reject("bad-state", "an anonymous entry downstream: the editor must keep cek")
                rp = party(p, r[0])
                rtbs = validate_cert(hx(rp["certificate"]), anchors, now, subject=r[0],
                                     what="certificate of %s" % r[0])
                P = rtbs[7]
                same("recipient kid of %s" % r[0], kid(P, 1), r.get(1))
                z = x25519(e, P)
                kek = HKDF32(session, z, kek_info(session, actor, Enew, P, r[2], r[3]))
                nr = dict(r)
                nr[4] = siv_encrypt(kek, wrap_ad(nonce, cid), cek)
                new_recips.append(nr)
            m[5] = new_recips
            m[6] = nonce
            # KW-CRYPTO-035: the entries left alone "no longer unwrap"
            d = hx(ap["kx_private"])
            for r in new_recips:
                if r.get(0) == actor and unwrap_entry(r, session, cid, nonce, actor, Enew, d) is not None:
                    raise Mismatch("the editor's own entry, left as it was, still unwraps after re-keying")
            notes.append("re-wrapped every entry but the editor's own (the vector gives no via); "
                         "the own entry, left as it was, no longer unwraps (KW-CRYPTO-035)")
        else:
            absent(t, "randomness")
        m[7] = siv_encrypt(cek, [body_ad(session, cid, m[2]), nonce], pt)
        # KW-CRYPTO-035: next is the version under the key it now has.
        nxt = content_digest(session, cid, cek, pt)
        pmap = perm_map(m[5])
        ei = enc(["keyway-v1 edit", SUITE, session, cid, carrier[0], carrier[1], actor, prev, nxt, Enew, pmap])
        edit = {0: actor, 1: kid(atbs[6], 0), 2: prev, 3: nxt, 4: ed25519_sign(seed, ei),
                6: strict(hx(ap["certificate"]), "editor certificate")}
        if Enew is not None:
            edit[5] = Enew
        m[10] = edits + [edit]
        # vectors.md: the content key of the output, the digest it carries
        # (next), its map and the editor's signed input
        check_intermediate(t, cek, nxt, pmap, ei)
        out = enc(m)
        same("output (edited body, byte for byte)", out, hx(t["output"]))
        result = out
    elif op in ("open", "open-rekey"):
        result = hx(t["input"])
        same("cid (the input body's)", strict(result, "sealed")[1], cid)
    else:
        raise Mismatch("unknown operation %r" % op)
    check_entry(t, "reader_entry", result, session, t["reader"], p)
    if op in ("rekey", "open-rekey"):
        key = open_rekey(result, session, t["reader"], t["from"], t["epoch"], p, notes, carrier)
        same("rekey_key (the key the reader obtains)", key, hx(need(t, "rekey_key")))
        return
    pt, _, opened = open_sealed(result, session, t["reader"], p, notes, carrier)
    if op == "open":
        same("plaintext opened by %s" % t["reader"], pt, hx(need(t, "plaintext")))
    else:
        same("plaintext opened by %s" % t["reader"], pt, hx(t["plaintext"]))


# ---------------------------------------------------------------- sessions

REPLAY_WINDOW = 64


class SessionSender:
    def __init__(self, key):
        self.key, self.epoch, self.seq = key, 0, 0


class SessionReceiver:
    """Receiver of one direction (KW-CRYPTO-040..042, KW-CRYPTO-044,
    KW-KEY-004/005)."""

    def __init__(self, key, grace):
        self.grace = grace
        self.epoch, self.key = 0, key
        self.prev = None          # (epoch, key, time of the rekey)
        self.seen = {0: set()}    # per epoch: sequence numbers accepted

    def key_for(self, epoch, now):
        """The current epoch, or the one it replaced while
        now < (time of the rekey) + grace (KW-CRYPTO-044)."""
        if epoch == self.epoch:
            return self.key
        if self.prev is not None and epoch == self.prev[0] and now < self.prev[2] + self.grace:
            return self.prev[1]
        raise Reject("stale-epoch", "epoch %d is retired or unknown" % epoch)

    def check_replay(self, epoch, seq):
        """Inside the epoch's window: greater than the highest accepted, or
        at most 63 below it and not yet accepted (KW-CRYPTO-044)."""
        seen = self.seen.get(epoch, set())
        if not seen or seq > max(seen):
            return
        if seq in seen:
            raise Reject("replay", "seq %d of epoch %d already seen" % (seq, epoch))
        if seq < max(seen) - (REPLAY_WINDOW - 1):
            raise Reject("replay", "seq %d more than %d below the highest %d" % (seq, REPLAY_WINDOW - 1, max(seen)))

    def receive(self, ad, epoch, seq, payload, now):
        k = self.key_for(epoch, now)
        self.check_replay(epoch, seq)
        pt = siv_decrypt(k, [ad], payload)
        if pt is None:
            raise Reject("decrypt-failed", "payload does not authenticate")
        self.seen.setdefault(epoch, set()).add(seq)
        return pt

    def accept_rekey(self, ad, epoch, seq, wrapped, now):
        # KW-CRYPTO-042: a rekey is to the current epoch plus one. For a
        # rekey this takes the place of KW-CRYPTO-044's epoch check (its
        # epoch is never the current one); finding 25.
        if epoch != self.epoch + 1:
            raise Reject("stale-epoch", "rekey to epoch %d, current is %d" % (epoch, self.epoch))
        # KW-CRYPTO-044: its seq is one of the epoch it replaces
        self.check_replay(self.epoch, seq)
        k2 = siv_decrypt(self.key, [ad], wrapped)
        if k2 is None or len(k2) != 32:
            raise Reject("decrypt-failed", "wrapped key does not authenticate")
        self.seen.setdefault(self.epoch, set()).add(seq)
        self.prev = (self.epoch, self.key, now)
        self.epoch, self.key = epoch, k2
        self.seen[epoch] = set()   # the new epoch starts at seq 0

    def expire(self, now):
        if self.prev is not None and now >= self.prev[2] + self.grace:
            self.prev = None


def k_session(t, p, notes):
    """A scenario over both directions of a session (vectors.md): a step
    with `reverse` is in the direction to -> from. Each direction starts
    from `key` as epoch 0 (KW-CRYPTO-040) and has its own sequence numbers
    and epochs; the associated data names the step's own from and to."""
    session, a, b = hx(t["session"]), t["from"], t["to"]
    key = hx(t["key"])
    ends = {False: (SessionSender(key), SessionReceiver(key, t["grace_secs"])),
            True: (SessionSender(key), SessionReceiver(key, t["grace_secs"]))}
    failed_steps = []
    for i, st in enumerate(t["steps"]):
        op, now, expect = st["op"], st.get("now", 0), st["expect"]
        reverse = st.get("reverse", False)
        frm, to = (b, a) if reverse else (a, b)
        snd, rcv = ends[reverse]
        where = "step %d (%s%s)" % (i, op, ", reverse" if reverse else "")
        try:
            if op == "send":
                same(where + " epoch", st["epoch"], snd.epoch)
                same(where + " seq", st["seq"], snd.seq)
                ad = enc(["keyway-v1 msg", SUITE, session, frm, to, MSG_TYPES[st["msg_type"]], st["epoch"], st["seq"]])
                same(where + " ad", ad, hx(st["ad"]))
                same(where + " payload", siv_encrypt(snd.key, [ad], hx(st["plaintext"])), hx(st["payload"]))
                if st["msg_type"] == "bye":
                    same(where + " bye plaintext is empty", st["plaintext"], "")
                snd.seq += 1
            elif op == "rekey":
                same(where + " epoch", st["epoch"], snd.epoch + 1)
                same(where + " seq", st["seq"], snd.seq)
                ad = enc(["keyway-v1 rekey", SUITE, session, frm, to, st["epoch"], st["seq"]])
                same(where + " ad", ad, hx(st["ad"]))
                same(where + " wrapped", siv_encrypt(snd.key, [ad], hx(st["new_key"])), hx(st["wrapped"]))
                snd.key, snd.epoch, snd.seq = hx(st["new_key"]), snd.epoch + 1, 0
            elif op == "receive":
                ad = enc(["keyway-v1 msg", SUITE, session, frm, to, MSG_TYPES[st["msg_type"]], st["epoch"], st["seq"]])
                same(where + " ad", ad, hx(need(st, "ad")))
                pt = rcv.receive(ad, st["epoch"], st["seq"], hx(st["payload"]), now)
                same(where + " plaintext", pt, hx(need(st, "plaintext")))
            elif op == "accept-rekey":
                ad = enc(["keyway-v1 rekey", SUITE, session, frm, to, st["epoch"], st["seq"]])
                same(where + " ad", ad, hx(need(st, "ad")))
                rcv.accept_rekey(ad, st["epoch"], st["seq"], hx(st["wrapped"]), now)
            elif op == "expire":
                rcv.expire(now)
            else:
                raise Mismatch(where + ": unknown op")
            if expect != "ok":
                raise Mismatch("%s: accepted, vector expects %s" % (where, expect))
        except Reject as r:
            if expect == "ok":
                raise Mismatch("%s: rejected (%s: %s), vector expects ok" % (where, r.code, r.detail))
            if r.code != expect:
                raise Mismatch("%s: rejected with %s (%s), vector expects %s (%s)"
                               % (where, r.code, r.detail, expect, st.get("detail")))
            if op == "receive":
                absent(st, "plaintext")
            failed_steps.append((i, r))
    if t["result"] == "invalid":
        if not failed_steps:
            raise Mismatch("scenario invalid but no step failed")
        # the scenario's error is that of its first failing step (vectors.md)
        if t["error"] != failed_steps[0][1].code:
            raise Mismatch("scenario error %s is not that of its first failing step (%s)"
                           % (t["error"], failed_steps[0][1].code))
        raise failed_steps[0][1]
    if failed_steps:
        raise Mismatch("a valid scenario has failing steps")


def logic_self_test():
    """Edges of the spec's rules that no vector reaches, checked on the
    checker's own state machines and schema. Returns a list of problems."""
    from kwschema import T_recipient
    problems = []

    def code_of(f):
        try:
            f()
        except Reject as r:
            return r.code
        return "ok"
    w = b"\x00" * 48
    for entry, want in (({0: "sc@a.example", 2: 1, 3: 0, 4: w}, "schema"),
                        ({1: b"\x00" * 8, 2: 1, 3: 0, 4: w}, "schema"),
                        ({2: 1, 3: 0, 4: w}, "ok"),
                        ({0: "sc@a.example", 1: b"\x00" * 8, 2: 1, 3: 0, 4: w}, "ok")):
        got = code_of(lambda: T_recipient(entry, "recipient"))
        if got != want:
            problems.append("KW-CRYPTO-034: entry with keys %s gives %s, not %s" % (sorted(entry), got, want))
    # replay window: with 100 accepted, 37 is the oldest inside, 36 outside
    rcv = SessionReceiver(b"\x00" * 32, 30)
    rcv.seen[0] = {100}
    for seq, want in ((101, "ok"), (37, "ok"), (36, "replay"), (100, "replay")):
        got = code_of(lambda: rcv.check_replay(0, seq))
        if got != want:
            problems.append("KW-CRYPTO-044: seq %d after highest 100 gives %s, not %s" % (seq, got, want))
    # grace: the replaced epoch is usable while now < rekey + grace
    rcv.prev = (0, b"\x01" * 32, 100)
    rcv.epoch = 1
    for now, want in ((129, "ok"), (130, "stale-epoch")):
        got = code_of(lambda: rcv.key_for(0, now))
        if got != want:
            problems.append("KW-CRYPTO-044: epoch 0 at rekey + %d gives %s, not %s" % (now - 100, got, want))
    return problems


KINDS = {
    "kid": k_kid,
    "cert": k_cert,
    "attest": k_attest,
    "csr": k_csr,
    "challenge": k_challenge,
    "kx-pop": k_kx_pop,
    "register-verifier": k_register_verifier,
    "register-proof": k_register_proof,
    "wrap": k_wrap,
    "media": k_media,
    "msgsig": k_msgsig,
    "reader": k_reader,
    "seal": k_seal,
    "session": k_session,
}


# ================================================================ driver

def spec_requirement_ids(spec_dir):
    ids = set()
    for f in glob.glob(os.path.join(spec_dir, "*.md")):
        with open(f, encoding="utf-8") as fh:
            ids |= set(re.findall(r"\*\*(KW-[A-Z]+-\d+)\*\*", fh.read()))
    return ids


def check_header(d, fname, req_ids):
    """File layout of spec/vectors.md."""
    problems = []
    for key in ("schema", "kind", "spec", "recipe", "notes", "params", "numberOfTests", "tests"):
        if key not in d:
            problems.append("header lacks %r" % key)
    if d.get("schema") != "keyway-vectors-v1":
        problems.append("schema is %r" % d.get("schema"))
    tests = d.get("tests", [])
    if d.get("numberOfTests") != len(tests):
        problems.append("numberOfTests %r but %d tests" % (d.get("numberOfTests"), len(tests)))
    kind = d.get("kind")
    seen = set()
    results = set()
    for t in tests:
        tc = t.get("tcId", "?")
        if not tc.startswith("%s/" % kind):
            problems.append("%s: tcId not <kind>/<slug>" % tc)
        if tc in seen:
            problems.append("%s: duplicate tcId" % tc)
        seen.add(tc)
        for key in ("comment", "requirements", "flags", "result"):
            if key not in t:
                problems.append("%s: lacks %r" % (tc, key))
        if not t.get("requirements"):
            problems.append("%s: names no requirement (KW-VEC-004)" % tc)
        if req_ids:
            for r in t.get("requirements", []):
                if r not in req_ids:
                    problems.append("%s: requirement %s is not defined in spec/" % (tc, r))
        for fl in t.get("flags", []):
            if fl not in (d.get("notes") or {}):
                problems.append("%s: flag %s is not explained in notes" % (tc, fl))
        results.add(t.get("result"))
        if t.get("result") not in ("valid", "invalid"):
            problems.append("%s: result %r" % (tc, t.get("result")))
        if t.get("result") == "invalid":
            if t.get("error") not in ERROR_NAMES:
                problems.append("%s: error %r is not a code name of errors.md" % (tc, t.get("error")))
            if "detail" not in t:
                problems.append("%s: invalid test without detail" % tc)
    if kind != "kid" and results != {"valid", "invalid"}:
        problems.append("kind %s lacks valid or invalid tests (KW-VEC-004)" % kind)
    return problems


def run_test(fn, t, params, verbose):
    notes = []
    tc = t.get("tcId", "?")

    def with_notes(line):
        return line + "".join("\n    note: " + n for n in notes)
    try:
        fn(t, params, notes)
    except Reject as r:
        if t["result"] == "valid":
            return False, with_notes("FAIL %s: rejected a valid test: %s (%s)" % (tc, r.code, r.detail))
        if r.code != t["error"]:
            return False, with_notes("FAIL %s: rejected with %s (%s); vector expects %s (%s)"
                                     % (tc, r.code, r.detail, t["error"], t.get("detail")))
        line = "ok %s" % tc
        if verbose:
            line += "  [rejected %s: %s; reference: %s]" % (r.code, r.detail, t.get("detail"))
        return True, with_notes(line)
    except Mismatch as m:
        return False, with_notes("FAIL %s: %s" % (tc, m))
    except ImplementationDisagreement as e:
        return False, with_notes("FAIL %s: %s" % (tc, e))
    except Exception as e:  # a bug here or a vector outside what the checker handles
        return False, "FAIL %s: checker error %s: %s" % (tc, type(e).__name__, e)
    if t["result"] == "invalid":
        return False, with_notes("FAIL %s: accepted an invalid test (vector expects %s: %s)"
                                 % (tc, t["error"], t.get("detail")))
    return True, with_notes("ok %s" % tc)


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("-")]
    verbose = "-v" in argv
    spec_dir = None
    if "--spec" in argv:
        spec_dir = argv[argv.index("--spec") + 1]
        args.remove(spec_dir)
    if len(args) != 1:
        print(__doc__)
        return 2
    vdir = args[0]
    if spec_dir is None:
        guess = os.path.join(os.path.dirname(os.path.abspath(vdir.rstrip("/"))), "spec")
        spec_dir = guess if os.path.isdir(guess) else None
    req_ids = spec_requirement_ids(spec_dir) if spec_dir else set()

    problems = self_test() + ["CBOR: " + x for x in cbor_self_test()] + logic_self_test()
    if problems:
        for pr in problems:
            print("FAIL self-test: %s" % pr)
        return 1
    print("self-test: AES-SIV (RFC 5297 A.1, A.2), Ed25519 (RFC 8032), X25519 (RFC 7748), "
          "HKDF (RFC 5869), PBKDF2 (RFC 7914), CBOR (RFC 8949 App. A, encoding.md rejections), "
          "rule edges (KW-CRYPTO-034, KW-CRYPTO-044) ok%s"
          % ("" if cbor2 else "; cbor2 not installed: decoder cross-check skipped"))

    load_context(vdir)
    files = sorted(glob.glob(os.path.join(vdir, "*.json")))
    n_ok = n_fail = 0
    skipped, file_fail = [], 0
    kinds_seen = set()
    for f in files:
        with open(f, encoding="utf-8") as fh:
            d = json.load(fh)
        kind = d.get("kind")
        base = os.path.basename(f)
        if kind not in KINDS:
            skipped.append("%s (kind %r)" % (base, kind))
            print("SKIP %s: kind %r not understood" % (base, kind))
            continue
        kinds_seen.add(kind)
        if base != kind + ".json":
            print("FAIL %s: file of kind %s" % (base, kind))
            file_fail += 1
        for pr in check_header(d, base, req_ids):
            print("FAIL %s: %s" % (base, pr))
            file_fail += 1
        print("== %s (%d tests)" % (base, len(d.get("tests", []))))
        for t in d.get("tests", []):
            ok, line = run_test(KINDS[kind], t, d.get("params"), verbose)
            print(line)
            if ok:
                n_ok += 1
            else:
                n_fail += 1
    missing = sorted(set(KINDS) - kinds_seen)
    for k in missing:
        print("FAIL %s.json: missing" % k)
        file_fail += 1
    print()
    print("summary: %d tests, %d ok, %d failed; %d file-level failures; %d files skipped%s"
          % (n_ok + n_fail, n_ok, n_fail, file_fail, len(skipped),
             (" (" + ", ".join(skipped) + ")") if skipped else ""))
    return 1 if (n_fail or file_fail) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
