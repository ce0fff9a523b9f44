"""Drives enqueue.lua with one event per call (HTTP ingest), into pre-filled hashes."""
import time
K = ['calls','calls_at','ready','data','state','attempts','max','notify']
KEYS = ['{p}:'+k for k in K]
def drive(r, sha, size, calls, per):
    from k_finish import prefill
    prefill(r)
    body = 'x'*size; n = 0
    for c in range(calls):
        args = [int(time.time()*1000)]
        for j in range(per): args += [f'call_{n}', f'job_{n}', body, 8]; n += 1
        r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args)
