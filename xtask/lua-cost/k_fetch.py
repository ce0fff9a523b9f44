"""Drives fetch.lua over a backlog; CLIENT_HMGET=1 adds the client's HMGET of the job data."""
import time, json, os
KEYS = ['{p}:'+k for k in ['ready','running','scheduled','dead','data','state','attempts','max','log','lease','notify']]
def drive(r, sha, size, calls, per):
    data = json.dumps({"x": "y"*size})
    # Realistic sizes: every per-job hash and zset already big (hash tables, skiplists).
    for key in ['state','lease','attempts','max','log','data']:
        for i in range(0, 5000, 500):
            r.cmd('HSET', '{p}:' + key, *[v for j in range(i, i+500) for v in (f'old_{j}', '{"state":"done","at":1}')])
    for key in ['running','done','scheduled']:
        for i in range(0, 5000, 500):
            r.cmd('ZADD', '{p}:' + key, *[v for j in range(i, i+500) for v in (9999999999999, f'old_{j}')])
    n = int(os.environ.get("FILL_CALLS", 12)) * per
    for i in range(0, n, 500):
        ids = [f"job_{j:06d}" for j in range(i, min(n, i+500))]
        kv = []
        for x in ids: kv += [x, data]
        r.cmd('HSET', '{p}:data', *kv)
        r.cmd('HSET', '{p}:max', *[v for x in ids for v in (x, '8')])
        r.cmd('LPUSH', '{p}:ready', *ids)
    # Start the measured part from a known state: callgrind totals include the fill, so
    # the caller differences two runs with different `calls`.
    for c in range(calls):
        res = r.cmd('EVALSHA', sha, len(KEYS), *KEYS, int(time.time()*1000), per, 30000, 'w1')
        if os.environ.get('CLIENT_HMGET'):
            ids = res[1::3]
            if ids: r.cmd('HMGET', '{p}:data', *ids)
