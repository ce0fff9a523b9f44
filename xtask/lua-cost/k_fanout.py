"""Drives fanout.lua: one call-ended job per call (FANOUT_FORMAT=orig, the old script) or `per` per call.
FANOUT_FORMAT=claim: the layout with claim_token and claim_deadline per call (claiming when CLAIM=1).
FANOUT_FORMAT=multi: the same, with the action jobs' data in HSETNXs before the script, in one MULTI."""
import time, json, os
KEYS = ['{p}:'+k for k in ['ready','running','scheduled','done','data','state','attempts','max','log','lease','fanout','notify']]
ST = json.dumps({"state":"fanned_out","at":1795640000000,"actions":1})
AT = json.dumps({"attempt":1,"at":1795640000000,"outcome":"delivered","duration_ms":3,"worker":"bench-worker-123456"})
def drive(r, sha, size, calls, per):
    from k_finish import prefill, leased
    prefill(r)
    ids = leased(r, per)
    child = json.dumps({"id": "x", "body": "y" * size})
    orig = os.environ.get('FANOUT_FORMAT') == 'orig'
    multi = os.environ.get('FANOUT_FORMAT') == 'multi'
    claim_fmt = os.environ.get('FANOUT_FORMAT') in ('claim', 'multi')
    claim = ['w1:1' if os.environ.get('CLAIM') == '1' else '', 0] if claim_fmt else []
    k = 0
    for c in range(calls):
        now = int(time.time()*1000)
        if orig:
            p = ids[k]; k += 1
            r.cmd('EVALSHA', sha, len(KEYS), *KEYS, now, p, 'w1:1', 'call_' + p, ST, AT, json.dumps([p + '.0']), p + '.0', child, 8, 0)
        elif multi:
            args = [now]
            r.cmd('MULTI')
            for j in range(per):
                p = ids[k]; k += 1
                r.cmd('HSETNX', KEYS[4], p + '.0', child)
                args += [p, 'w1:1', 'call_' + p, ST, AT, json.dumps([p + '.0']), *claim, 1, p + '.0', os.environ.get('BUDGET', '8'), 0]
            r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args)
            r.cmd('EXEC')
        else:
            args = [now]
            for j in range(per):
                p = ids[k]; k += 1
                args += [p, 'w1:1', 'call_' + p, ST, AT, json.dumps([p + '.0']), *claim, 1, p + '.0', child, 8, 0]
            r.cmd('EVALSHA', sha, len(KEYS), *KEYS, *args)
