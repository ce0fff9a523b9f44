"""Drives enqueue.lua with many events per call (bulk enqueue)."""
import os, time
K = ['calls','calls_at','ready','data','state','attempts','max','notify','calls_marks','calls_meta']
KEYS = ['{p}:'+k for k in K]
# Scripts before the data moved out of Lua take it as an argument.
OLD = os.environ.get('ENQ_FORMAT') == 'args'
SPLIT = os.environ.get('ENQ_FORMAT') == 'split'
# The budget as sent: '' is the default, not stored (scripts that say so).
BUDGET = os.environ.get('BUDGET', '8')
def drive(r, sha, size, calls, per):
    body = 'x'*size; n = 0
    for c in range(calls):
        args = [int(time.time()*1000)]
        if OLD:
            for j in range(per): args += [f'call_{n}', f'job_{n}', body, 8]; n += 1
            r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args)
            continue
        # The data beside the script, in one MULTI (as Queue::enqueue sends it).
        data = []
        if SPLIT:
            # The budget once, then the call ids, then the job ids.
            ids = list(range(n, n + per)); n += per
            args += [BUDGET] + [f'call_{j}' for j in ids] + [f'job_{j}' for j in ids]
            for j in ids: data += [f'job_{j}', body]
            r.cmd('MULTI'); r.cmd('HSET', KEYS[3], *data); r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args); r.cmd('EXEC')
            continue
        for j in range(per): args += [f'call_{n}', f'job_{n}', 8]; data += [f'job_{n}', body]; n += 1
        r.cmd('MULTI'); r.cmd('HSET', KEYS[3], *data); r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args); r.cmd('EXEC')
