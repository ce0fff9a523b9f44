"""Drives enqueue.lua with one event per call (HTTP ingest), into pre-filled hashes."""
import os, time
K = ['calls','calls_at','ready','data','state','attempts','max','notify']
KEYS = ['{p}:'+k for k in K]
# Scripts before the data moved out of Lua take it as an argument.
OLD = os.environ.get('ENQ_FORMAT') == 'args'
def drive(r, sha, size, calls, per):
    from k_finish import prefill
    prefill(r)
    body = 'x'*size; n = 0
    for c in range(calls):
        args = [int(time.time()*1000)]
        if OLD:
            for j in range(per): args += [f'call_{n}', f'job_{n}', body, 8]; n += 1
            r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args)
            continue
        # The data beside the script, in one MULTI (as Queue::enqueue sends it).
        data = []
        for j in range(per): args += [f'call_{n}', f'job_{n}', 8]; data += [f'job_{n}', body]; n += 1
        r.cmd('MULTI'); r.cmd('HSET', KEYS[3], *data); r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args); r.cmd('EXEC')
