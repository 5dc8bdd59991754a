#!/usr/bin/env python3
"""Redis's own time for the budget script, at two revisions, in the same run.

Usage: python3 bench/budget-script.py BASE_REV [CALLS]   (needs `pip install redis` and a Redis
on 127.0.0.1:6379; uses database 9 and flushes it)

Each call is a reservation and a settle (with a usage event of realistic size) against one
clinic-month's counters, sent as scripts carrying 1, 4 or 16 operations each (as the batch sends
them alone or under load). The figure is Redis's time inside EVALSHA per call (its command
statistics), for the script at BASE_REV and the one in the working tree, alternating, three
rounds.
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
C, Z, S = "c", "z", "s"
EVENT = ('{"id":"0d0c5a3e-7c1b-4a55-9d8e-1b2f8d9c0a11","tenant":"5a5c0e3e-7c1b-4a55-9d8e-1b2f8d9c0a12",'
         '"user":null,"api_key":"6a5c0e3e-7c1b-4a55-9d8e-1b2f8d9c0a13","agent":null,"provider":"openai",'
         '"model":"gpt-4o-mini","prompt_tokens":20,"completion_tokens":30,"cached_tokens":0,'
         '"cost_micro_usd":21,"latency_ms":1,"estimated":false,"streamed":false,"cancelled":false,'
         '"idempotency_key":"0d0c5a3e-7c1b-4a55-9d8e-1b2f8d9c0a11","occurred_at_ms":1764806400000,"kind":"chat"}')


def run(lua, group, calls):
    # A settle carries the reserved amount since the script that reads counters once per script.
    with_amount = "a = a + 7" in lua
    sha = r.script_load(lua)
    r.flushdb()
    r.hset(C, mapping=dict(tokens=0, prompt=0, completion=0, cost=0, requests=0, reserved=0))
    r.config_resetstat()
    ids = [str(uuid.uuid4()) for _ in range(calls)]
    p = r.pipeline(transaction=False)
    for b in range(0, calls, group):
        keys, args = [], []
        for i in ids[b:b + group]:
            keys += [C, Z]
            args += ["r", i, "500", "-1", "1000", "99999999", "100", "-1", "-1", "0"]
        p.evalsha(sha, len(keys), *keys, *args)
        keys, args = [], []
        for i in ids[b:b + group]:
            keys += [C, Z, S]
            args += ["s", i, EVENT, "20", "30", "7"] + (["500"] if with_amount else [])
        p.evalsha(sha, len(keys), *keys, *args)
        if len(p) > 200:
            p.execute()
    p.execute()
    usec = r.info("commandstats")["cmdstat_evalsha"]["usec"]
    counters = r.hgetall(C)
    assert int(counters[b"tokens"]) == 50 * calls and int(counters[b"reserved"]) == 0, counters
    r.flushdb()
    return usec / calls


def main():
    base = sys.argv[1]
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    old = at(base)
    with open(f"{ROOT}/{PATH}") as f:
        new = script(f.read())
    print("| round | operations per script | BASE µs/call | working tree µs/call | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for rnd in range(1, 4):
        for group in (1, 4, 16):
            o, n = run(old, group, calls), run(new, group, calls)
            print(f"| {rnd} | {group} | {o:.1f} | {n:.1f} | {n / o:.2f} |")


main()
