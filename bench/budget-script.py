#!/usr/bin/env python3
"""Redis's own time for the budget script's settles, at two revisions, in the same run.

Usage: python3 bench/budget-script.py BASE_REV [CALLS]   (needs `pip install redis` and a Redis
on 127.0.0.1:6379; uses database 9 and flushes it)

Each call is a settle on a slice of the allowance (as most calls' settles are), with a usage
event of realistic size, against one clinic-month's counters, sent as scripts carrying 1, 4 or
16 settles each (as the batch sends them alone or under load; a script that takes the settles
of calls on one slice together gets them as the server then sends them, as one operation). The figure is Redis's time inside
EVALSHA per settle (its command statistics), and the part of it spent in the commands the
script runs, for the script at BASE_REV and the one in the working tree, alternating, two
rounds. Scripts older than the settle's slice argument (before slices) are not comparable.
"""
import subprocess
import sys
import uuid

import redis

ROOT = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                      check=True).stdout.strip()
PATH = "core/src/metering/batch.rs"


def script(text):
    return text.split('const SCRIPT: &str = r#"')[1].split('"#;')[0]


def at(rev):
    return script(subprocess.run(["git", "show", f"{rev}:{PATH}"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout)


r = redis.Redis(db=9)
TENANT = "5a5c0e3e-7c1b-4a55-9d8e-1b2f8d9c0a12"
C, Z, S = f"tessera:usage:{TENANT}:2026-12", f"tessera:reservations:{TENANT}:2026-12", "tessera:ledger"
EVENT = ('{"id":"0d0c5a3e-7c1b-4a55-9d8e-1b2f8d9c0a11","tenant":"' + TENANT + '",'
         '"user":null,"api_key":"6a5c0e3e-7c1b-4a55-9d8e-1b2f8d9c0a13","agent":null,"provider":"openai",'
         '"model":"gpt-4o-mini","prompt_tokens":20,"completion_tokens":30,"cached_tokens":0,'
         '"cost_micro_usd":21,"latency_ms":1,"estimated":false,"streamed":false,"cancelled":false,'
         '"idempotency_key":"0d0c5a3e-7c1b-4a55-9d8e-1b2f8d9c0a11","occurred_at_ms":1764806400000,"kind":"chat"}')


def run(lua, group, calls):
    sha = r.script_load(lua)
    r.flushdb()
    r.hset(C, mapping=dict(tokens=0, prompt=0, completion=0, cost=0, requests=0, reserved=0))
    # A slice holding far more than the settles take.
    sid = str(uuid.uuid4())
    r.hset(C, f"r:{sid}", 10**12)
    r.hincrby(C, "reserved", 10**12)
    r.config_resetstat()
    p = r.pipeline(transaction=False)
    for _ in range(0, calls, group):
        keys, args = [], []
        if "a = a + 9" in lua:
            # A script that takes the settles of calls on one slice together, as the server
            # then sends them: one operation for the group.
            keys += [C, Z, S]
            args += ["s", sid, "\n".join([EVENT] * group), str(20 * group), str(30 * group),
                     str(7 * group), str(500 * group), "1", str(group)]
        else:
            for _ in range(group):
                keys += [C, Z, S]
                args += ["s", sid, EVENT, "20", "30", "7", "500", "1"]
        p.evalsha(sha, len(keys), *keys, *args)
        if len(p) > 50:
            p.execute()
    p.execute()
    stats = r.info("commandstats")
    inside = sum(v["usec"] for k, v in stats.items()
                 if k not in ("cmdstat_evalsha", "cmdstat_config|resetstat"))
    counters = r.hgetall(C)
    assert int(counters[b"tokens"]) == 50 * calls, counters
    assert int(counters[b"reserved"]) == 10**12 - 500 * calls, counters
    assert int(counters[b"requests"]) == calls, counters
    assert r.xlen(S) == calls // group, r.xlen(S)
    r.flushdb()
    return stats["cmdstat_evalsha"]["usec"] / calls, inside / calls


def main():
    base = sys.argv[1]
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    old = at(base)
    with open(f"{ROOT}/{PATH}") as f:
        new = script(f.read())
    print("| round | settles per script | BASE µs/settle (commands) | working tree µs/settle (commands) | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for rnd in range(1, 3):
        for group in (1, 4, 16):
            (o, oc), (n, nc) = run(old, group, calls), run(new, group, calls)
            print(f"| {rnd} | {group} | {o:.1f} ({oc:.1f}) | {n:.1f} ({nc:.1f}) | {n / o:.2f} |")


main()
