"""Drives enqueue.lua with one event per call (HTTP ingest), into pre-filled hashes."""
import k_enq
def drive(r, sha, size, calls, per):
    from k_finish import prefill
    prefill(r)
    k_enq.drive(r, sha, size, calls, per)
