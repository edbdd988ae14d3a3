#!/usr/bin/env python3
"""Shows that verify_vectors.py is not vacuous: for every test, flip one
bit in each hex-valued field (top level, `intermediate`, session `steps`,
and the file's `params`), flip `result`, and count a mutation as detected
when the test's verdict changes from ok to FAIL.

    python3 mutation_check.py VECTORS_DIR

Prints every undetected mutation (a field the checker does not depend on,
or depends on only in a way one bit cannot show) and a summary. Exit 0.
"""

import copy
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verify_vectors as vv  # noqa: E402

HEX = re.compile(r"^(?:[0-9a-f]{2})+$")


def flip(h):
    b = bytearray(bytes.fromhex(h))
    b[len(b) // 2] ^= 0x01
    return b.hex()


def verdict(kind, t, params):
    ok, _ = vv.run_test(vv.KINDS[kind], t, params, False)
    return ok


def hex_paths(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from hex_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from hex_paths(v, path + (i,))
    elif isinstance(obj, str) and HEX.match(obj):
        yield path


def get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def put(obj, path, v):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = v


def main(vdir):
    vv.load_context(vdir)
    total = detected = 0
    missed = []
    for f in sorted(glob.glob(os.path.join(vdir, "*.json"))):
        d = json.load(open(f))
        kind, params = d["kind"], d.get("params")
        if kind not in vv.KINDS:
            continue
        for t in d["tests"]:
            tc = t["tcId"]
            if not verdict(kind, t, params):
                print("baseline FAIL %s: mutation results meaningless" % tc)
                continue
            # result flip
            m = copy.deepcopy(t)
            m["result"] = "invalid" if t["result"] == "valid" else "valid"
            m.setdefault("error", "schema")
            total += 1
            if verdict(kind, m, params):
                missed.append((tc, "result flipped"))
            else:
                detected += 1
            for path in hex_paths(t):
                if path and path[0] in ("tcId", "comment", "detail"):
                    continue
                m = copy.deepcopy(t)
                put(m, path, flip(get(t, path)))
                total += 1
                if verdict(kind, m, params):
                    missed.append((tc, "/".join(map(str, path))))
                else:
                    detected += 1
            if params:
                for path in hex_paths(params):
                    m = copy.deepcopy(params)
                    put(m, path, flip(get(params, path)))
                    total += 1
                    if verdict(kind, t, m):
                        missed.append((tc, "params/" + "/".join(map(str, path))))
                    else:
                        detected += 1
    valid_tc = set()
    for f in glob.glob(os.path.join(vdir, "*.json")):
        valid_tc |= {t["tcId"] for t in json.load(open(f))["tests"] if t.get("result") == "valid"}
    for tc, what in missed:
        print("undetected: %s%s: %s" % (tc, "" if tc in valid_tc else " (invalid test, stays invalid)", what))
    mv = sum(1 for tc, _ in missed if tc in valid_tc)
    print("mutations: %d, detected %d, undetected %d (%d of valid tests: fields the construction does not use; "
          "%d of invalid tests, which stay invalid)" % (total, detected, total - detected, mv, total - detected - mv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
