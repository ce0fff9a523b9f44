"""Drives finish.lua with `per` leased jobs per call; prefill() makes the per-job hashes realistic."""
import time, json, os
KEYS = ['{p}:'+k for k in ['ready','running','scheduled','dead','done','state','attempts','log','lease','notify']]
ST = json.dumps({"state":"delivered","at":1795640000000})
AT = json.dumps({"attempt":1,"at":1795640000000,"outcome":"delivered","status":200,"duration_ms":3,"worker":"bench-worker-123456"})
def prefill(r):
    for key in ['state','lease','attempts','max','log','data','fanout','calls']:
        for i in range(0, 5000, 500):
            r.cmd('HSET', '{p}:' + key, *[v for j in range(i, i+500) for v in (f'old_{j}', '{"state":"done","at":1}')])
    for key in ['running','done','scheduled']:
        for i in range(0, 5000, 500):
            r.cmd('ZADD', '{p}:' + key, *[v for j in range(i, i+500) for v in (9999999999999, f'old_{j}')])
def leased(r, per, attempts=False):
    """Ids of as many leased jobs as the longer run needs (lease token `w1:1`)."""
    n = int(os.environ.get('CALLS_B', 12)) * per
    ids = [f'job_{j:06d}' for j in range(n)]
    for i in range(0, n, 500):
        ch = ids[i:i+500]
        r.cmd('HSET', '{p}:lease', *[v for x in ch for v in (x, 'w1:1')])
        r.cmd('ZADD', '{p}:running', *[v for x in ch for v in (9999999999999, x)])
        if attempts:
            r.cmd('HSET', '{p}:attempts', *[v for x in ch for v in (x, '1')])
    return ids
def drive(r, sha, size, calls, per):
    prefill(r)
    ids = leased(r, per, attempts=True)
    k = 0
    for c in range(calls):
        args = [int(time.time()*1000)]
        for j in range(per):
            args += ['done', ids[k], 'w1:1', 0, ST, AT]; k += 1
        res = r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args)
        assert not isinstance(res, list) or all(x == 1 for x in res), res
