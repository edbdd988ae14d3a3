"""Schema checks (spec/keyway.cddl, spec/messages.md §2) for the structures
and messages the vectors carry. Only what the checker needs: the
structures of crypto.md and the messages that carry a signature or proof.
"""

import re

from kwcbor import OtherKey


class Reject(Exception):
    """A protocol rejection: `code` is an errors.md name."""

    def __init__(self, code, detail):
        super().__init__("%s: %s" % (code, detail))
        self.code = code
        self.detail = detail


def schema(cond, detail):
    if not cond:
        raise Reject("schema", detail)


# ------------------------------------------------------------------ types

def is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


_LOCAL = re.compile(r"^[a-z0-9._+\-]{1,64}$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?$")


def valid_domain(d):
    if not isinstance(d, str) or not (1 <= len(d.encode()) <= 253):
        return False
    return all(_LABEL.match(lbl) for lbl in d.split("."))


def valid_account(a):
    """KW-WIRE-031 and the CDDL size 3..254."""
    if not isinstance(a, str) or not (3 <= len(a.encode()) <= 254):
        return False
    if a.count("@") != 1:
        return False
    local, dom = a.split("@")
    if not _LOCAL.match(local) or local.startswith(".") or local.endswith("."):
        return False
    return valid_domain(dom)


def domain_of(account):
    return account.split("@", 1)[1]


def T_uint(x, n):
    schema(is_uint(x), "%s: not an unsigned integer" % n)


def T_const(v):
    def chk(x, n):
        schema(is_uint(x) and x == v, "%s: must be %r" % (n, v))
    return chk


def T_enum(values):
    def chk(x, n):
        schema(is_uint(x) and x in values, "%s: %r outside its enumeration" % (n, x))
    return chk


def T_uint_le(m):
    def chk(x, n):
        schema(is_uint(x) and x <= m, "%s: not a uint <= %d" % (n, m))
    return chk


def T_bstr(lo, hi=None):
    hi = lo if hi is None else hi

    def chk(x, n):
        schema(isinstance(x, bytes), "%s: not a byte string" % n)
        schema(lo <= len(x) <= hi, "%s: %d bytes, not %d..%d" % (n, len(x), lo, hi))
    return chk


def T_tstr(lo, hi):
    def chk(x, n):
        schema(isinstance(x, str), "%s: not a text string" % n)
        schema(lo <= len(x.encode()) <= hi, "%s: text length out of range" % n)
    return chk


def T_account(x, n):
    schema(valid_account(x), "%s: %r is not an account" % (n, x))


def T_domain(x, n):
    schema(valid_domain(x), "%s: %r is not a domain" % (n, x))


def T_bool(x, n):
    schema(isinstance(x, bool), "%s: not a bool" % n)


def T_array(elem, lo, hi):
    def chk(x, n):
        schema(isinstance(x, list), "%s: not an array" % n)
        schema(lo <= len(x) <= hi, "%s: %d elements, not %d..%d" % (n, len(x), lo, hi))
        for i, e in enumerate(x):
            elem(e, "%s[%d]" % (n, i))
    return chk


def T_tuple(*elems):
    def chk(x, n):
        schema(isinstance(x, list) and len(x) == len(elems), "%s: not a %d-array" % (n, len(elems)))
        for i, (e, (en, et)) in enumerate(zip(x, elems)):
            et(e, "%s.%s" % (n, en))
    return chk


def T_ip(x, n):
    schema(isinstance(x, bytes) and len(x) in (4, 16), "%s: not an ip-addr" % n)


T_port = T_uint_le(65535)
T_transport = T_enum({0, 1})
T_socket_addr = T_tuple(("ip", T_ip), ("port", T_port))
T_contact = T_tuple(("transport", T_transport), ("ip", T_ip), ("port", T_port))
T_key_id = T_bstr(8)
T_nonce = T_bstr(16)
T_public_key = T_bstr(32)
T_sigbytes = T_bstr(64)
T_hash = T_bstr(32)
T_mac = T_bstr(32)
T_session = T_bstr(16)
T_txn = T_bstr(8)
T_ciphertext = T_bstr(16, 8192)
T_wrapped_key = T_bstr(16, 64)
T_signature = T_tuple(("kid", T_key_id), ("sig", T_sigbytes))
T_certificate = T_tuple(("tbs", T_bstr(0, 1 << 32)), ("sig", T_sigbytes))
T_suite = T_const(1)
T_role = T_enum({0, 1, 2, 3})


def check_map(m, fields, where):
    """fields: {key: (name, checker, required)}. Checked field by field in
    key order (encoding.md §1); unknown non-negative keys are
    unknown-critical-field (KW-WIRE-011), non-integer keys schema
    (KW-WIRE-010), negative keys extensions (KW-WIRE-012)."""
    schema(isinstance(m, dict), "%s: not a map" % where)
    for k in m:
        schema(isinstance(k, int) and not isinstance(k, (bool, OtherKey)),
               "%s: non-integer key %r" % (where, k))
    keys = sorted(set(m) | set(fields))
    for k in keys:
        if k < 0:
            continue
        if k not in fields:
            raise Reject("unknown-critical-field", "%s: key %d" % (where, k))
        name, chk, required = fields[k]
        if k not in m:
            schema(not required, "%s: missing %s (%d)" % (where, name, k))
            continue
        chk(m[k], "%s.%s" % (where, name))


def S_map(fields, where):
    def chk(x, n):
        check_map(x, fields, n or where)
    return chk


# ------------------------------------------------------------------ structures

CERT_TBS = {
    0: ("suite", T_suite, True),
    1: ("serial", T_uint, True),
    2: ("issuer", T_domain, True),
    3: ("issuer-kid", T_key_id, True),
    4: ("subject", T_account, True),
    5: ("role", T_role, True),
    6: ("sig-key", T_public_key, True),
    7: ("kx-key", T_public_key, True),
    8: ("not-before", T_uint, True),
    9: ("not-after", T_uint, True),
}

CERT_REQUEST = {
    0: ("suite", T_suite, True),
    1: ("sig-key", T_public_key, True),
    2: ("kx-key", T_public_key, True),
    3: ("pop", T_sigbytes, True),
}

AUTH_RESPONSE = {
    0: ("nonce", T_nonce, True),
    1: ("proof", T_mac, True),
    2: ("kx-proof", T_mac, False),
    3: ("epk", T_public_key, True),
    4: ("cert-pop", T_sigbytes, False),
}

ATTESTATION = {
    0: ("attester", T_account, True),
    1: ("kid", T_key_id, True),
    2: ("at", T_uint, True),
    3: ("sig", T_sigbytes, True),
    4: ("cert", T_certificate, True),
}

RECIPIENT = {
    0: ("id", T_account, False),
    1: ("kid", T_key_id, False),
    2: ("kind", T_enum({0, 1}), True),
    3: ("perm", T_enum({0, 1}), True),
    4: ("wrapped", T_wrapped_key, True),
}

def T_recipient(x, n):
    check_map(x, RECIPIENT, n or "recipient")
    # KW-CRYPTO-034: "An entry carries both id and kid or neither (anything
    # else is a schema error)." (keyway.cddl still makes each optional alone)
    schema((0 in x) == (1 in x), "%s: carries only one of id and kid (KW-CRYPTO-034)" % n)


EDIT = {
    0: ("editor", T_account, True),
    1: ("kid", T_key_id, True),
    2: ("prev", T_hash, True),
    3: ("next", T_hash, True),
    4: ("sig", T_sigbytes, True),
    5: ("epk", T_public_key, False),
    6: ("cert", T_certificate, True),
}

SEALED = {
    0: ("suite", T_suite, True),
    1: ("cid", T_uint, True),
    2: ("sender", T_account, True),
    3: ("sender-kid", T_key_id, True),
    4: ("epk", T_public_key, True),
    5: ("recipients", T_array(T_recipient, 1, 16), True),
    6: ("nonce", T_nonce, True),
    7: ("ct", T_bstr(16, 8192), True),
    8: ("hash", T_hash, True),
    9: ("sig", T_sigbytes, True),
    10: ("edits", T_array(S_map(EDIT, "edit"), 1, 8), False),
}

T_sealed = S_map(SEALED, "sealed")

# The plaintext of a record-listing's recordings (crypto.md §8):
# recording-list = [0*64 recording-info].
RECORDING_INFO = {
    0: ("recording", T_bstr(16), True),
    1: ("session", T_bstr(16), True),
    2: ("started", T_uint, True),
    3: ("ended", T_uint, False),
    4: ("mode", T_enum({0, 1}), True),
    5: ("parties", T_array(T_account, 1, 8), True),
    6: ("packets", T_uint, True),
    7: ("bytes", T_uint, True),
}

T_recording_list = T_array(S_map(RECORDING_INFO, "recording-info"), 0, 64)

# ------------------------------------------------------------------ messages
# Only the messages whose vectors the checker reads: register (proof),
# challenge (KW-CRYPTO-025), the signed requests of KW-CRYPTO-060 and
# KW-CRYPTO-061, and a recorder's sealed answers to the reading ones
# (crypto.md §8).

def _msg(type_code, fields):
    base = {0: ("v", T_const(1), True), 1: ("type", T_const(type_code), True),
            2: ("txn", T_txn, True)}
    base.update(fields)
    return base


T_recording_id = T_bstr(16)

_IN_SESSION = {
    3: ("from", T_account, True),
    4: ("to", T_account, True),
    5: ("session", T_session, True),
    6: ("hops", T_uint_le(16), True),
    7: ("via", T_array(T_account, 1, 16), False),
    8: ("sig", T_signature, True),
}


def _in_session(fields):
    both = dict(_IN_SESSION)
    both.update(fields)
    return both

MESSAGES = {
    2: ("challenge", _msg(2, {
        4: ("to", T_account, True),
        8: ("sig", T_signature, True),
        11: ("expires", T_uint, True),
        13: ("cert", T_certificate, True),
        15: ("nonce", T_nonce, True),
        16: ("salt", T_nonce, True),
        17: ("iterations", T_uint, True),
        18: ("kx-challenge", T_public_key, True)})),
    1: ("register", _msg(1, {
        3: ("from", T_account, True),
        10: ("contact", T_contact, True),
        11: ("expires", T_uint, True),
        12: ("csr", S_map(CERT_REQUEST, "cert-request"), False),
        13: ("cert", T_certificate, False),
        14: ("auth", S_map(AUTH_RESPONSE, "auth-response"), False)})),
    # in-session requests, signed by their sender (KW-CRYPTO-061)
    8: ("ack", _msg(8, _in_session({}))),
    9: ("info", _msg(9, _in_session({
        23: ("epoch", T_uint, True),
        24: ("seq", T_uint, True),
        25: ("payload", T_ciphertext, True)}))),
    10: ("rekey", _msg(10, _in_session({
        22: ("body", T_sealed, False),
        23: ("epoch", T_uint, True),
        24: ("seq", T_uint, True),
        25: ("payload", T_ciphertext, False),
        26: ("wrapped", T_wrapped_key, False)}))),
    11: ("bye", _msg(11, _in_session({
        23: ("epoch", T_uint, True),
        24: ("seq", T_uint, True),
        25: ("payload", T_ciphertext, True)}))),
    20: ("pinhole-open", _msg(20, {
        3: ("from", T_account, True),
        5: ("session", T_session, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        40: ("pinhole", T_uint, True),
        41: ("proto", T_transport, True),
        42: ("dst", T_socket_addr, True),
        43: ("src", T_socket_addr, False),
        44: ("lifetime", T_uint, True),
        47: ("public", T_socket_addr, False)})),
    21: ("pinhole-narrow", _msg(21, {
        3: ("from", T_account, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        40: ("pinhole", T_uint, True),
        43: ("src", T_socket_addr, True)})),
    22: ("pinhole-close", _msg(22, {
        3: ("from", T_account, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        40: ("pinhole", T_uint, True)})),
    23: ("media-copy", _msg(23, {
        3: ("from", T_account, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        40: ("pinhole", T_uint, True),
        45: ("sink", T_socket_addr, True),
        46: ("copy", T_bool, True)})),
    30: ("record-start", _msg(30, {
        3: ("from", T_account, True),
        5: ("session", T_session, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        50: ("recording", T_recording_id, True),
        51: ("mode", T_enum({0, 1}), True),
        52: ("keys", T_sealed, True),
        58: ("parties", T_array(T_account, 1, 8), True)})),
    31: ("record-key", _msg(31, {
        3: ("from", T_account, True),
        5: ("session", T_session, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        23: ("epoch", T_uint, True),
        50: ("recording", T_recording_id, True),
        52: ("keys", T_sealed, True)})),
    32: ("record-stop", _msg(32, {
        3: ("from", T_account, True),
        5: ("session", T_session, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        50: ("recording", T_recording_id, True)})),
    33: ("record-list", _msg(33, {
        3: ("from", T_account, True),
        5: ("session", T_session, False),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True)})),
    34: ("record-listing", _msg(34, {
        53: ("recordings", T_bstr(16, 16384), True),
        59: ("epk", T_public_key, True)})),
    36: ("record-data", _msg(36, {
        50: ("recording", T_recording_id, True),
        54: ("chunk", T_bstr(16, 8208), True),
        56: ("index", T_uint, True),
        57: ("more", T_bool, True),
        59: ("epk", T_public_key, True)})),
    35: ("record-fetch", _msg(35, {
        3: ("from", T_account, True),
        8: ("sig", T_signature, True),
        9: ("time", T_uint, True),
        50: ("recording", T_recording_id, True),
        56: ("index", T_uint, True)})),
}

SIGNED_TYPES = {8, 9, 10, 11, 20, 21, 22, 23, 30, 31, 32, 33, 35}
# what a signature of each leaves out (KW-CRYPTO-060, KW-CRYPTO-061)
IN_SESSION_TYPES = {8, 9, 10, 11}


def check_message(m, expect_types=None):
    """Version, type and schema of a decoded message (KW-WIRE-003/004/013)."""
    schema(isinstance(m, dict), "message is not a map")
    if m.get(0) != 1:
        raise Reject("unsupported-version", "v = %r" % (m.get(0),))
    t = m.get(1)
    if not is_uint(t) or t not in MESSAGES:
        raise Reject("unknown-message-type", "type %r not handled by this checker" % (t,))
    if expect_types is not None and t not in expect_types:
        raise Reject("schema", "message type %d not expected here" % t)
    name, fields = MESSAGES[t]
    check_map(m, fields, name)
    if t == 1:
        schema(not (12 in m and 13 in m), "register carries both csr and cert (KW-WIRE-050)")
    return name
