"""Redis CPU instructions per job of one queue script, counted by running redis-server
under valgrind's callgrind (deterministic, unlike timings on a shared machine).

Two runs that differ only in the number of script calls; the difference in instructions
divided by the extra jobs is the cost per job. Usage: see run.sh."""
import glob, importlib, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from resp import R

PORT = 6401


def measure(kind, path, lib, size, calls, per):
    out = os.path.join(tempfile.gettempdir(), f'aftercall-lua-cost.{os.getpid()}')
    for f in glob.glob(out + '*'):
        os.remove(f)
    p = subprocess.Popen(['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}',
                          'redis-server', '--port', str(PORT), '--save', '', '--appendonly', 'no'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            r = R(PORT)
            r.cmd('PING')
            break
        except Exception:
            time.sleep(0.1)
    sha = r.cmd('SCRIPT', 'LOAD', open(lib).read() + '\n' + open(path).read()).decode()
    importlib.import_module(kind).drive(r, sha, size, calls, per)
    try:
        r.cmd('SHUTDOWN', 'NOSAVE')
    except Exception:
        pass
    p.wait()
    totals = [l for l in open(out).read().splitlines() if l.startswith(('totals:', 'summary:'))]
    os.remove(out)
    return int(totals[-1].split()[1])


if __name__ == '__main__':
    kind, path, lib, size, per = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    ca, cb = int(os.environ.get('CALLS_A', 2)), int(os.environ.get('CALLS_B', 12))
    a = measure(kind, path, lib, size, ca, per)
    b = measure(kind, path, lib, size, cb, per)
    print(f'{os.path.basename(path):<14} {per:>4} per call: {(b - a) / ((cb - ca) * per):>8.0f} instructions per job')
