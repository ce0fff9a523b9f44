"""A minimal RESP client, so the cost harness needs nothing beyond python3."""
import socket, sys, time
class R:
    def __init__(s, port):
        s.s = socket.create_connection(('127.0.0.1', port)); s.f = s.s.makefile('rb')
    def cmd(s, *a):
        out = [b'*%d\r\n' % len(a)]
        for x in a:
            x = x if isinstance(x, bytes) else str(x).encode()
            out.append(b'$%d\r\n%s\r\n' % (len(x), x))
        s.s.sendall(b''.join(out)); return s.read()
    def read(s):
        l = s.f.readline(); t = l[:1]; r = l[1:-2]
        if t == b'+': return r.decode()
        if t == b'-': raise Exception(r.decode())
        if t == b':': return int(r)
        if t == b'$':
            n = int(r)
            if n < 0: return None
            d = s.f.read(n + 2)[:-2]; return d
        if t == b'*':
            n = int(r)
            if n < 0: return None
            return [s.read() for _ in range(n)]
