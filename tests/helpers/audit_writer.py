"""A separate writer process for the multi-process and crash tests.

    python -m tests.helpers.audit_writer DB_URL KEYS_DIR TAG THREADS COUNT

Appends COUNT events from each of THREADS threads (COUNT 0: until killed) through one AuditLog and
prints every acknowledged seq on its own line, flushed at once — so a parent that kills this process
knows exactly which events were acknowledged as durable before it died.
"""

from __future__ import annotations

import sys
import threading
from itertools import count as counter
from pathlib import Path

from appliance.audit import AuditEvent, AuditLog, load_audit_keys
from appliance.db.engine import make_engine


def main(argv: list[str]) -> int:
    url, keys_dir, tag, threads, count = argv[0], Path(argv[1]), argv[2], int(argv[3]), int(argv[4])
    engine = make_engine(url)
    log = AuditLog(engine, load_audit_keys(keys_dir), checkpoint_every=25)
    out = threading.Lock()

    def work(t: int) -> None:
        for i in range(count) if count else counter():
            seq = log.append(AuditEvent(action="test.append", actor=f"{tag}-{t}", details={"i": i}))
            with out:
                sys.stdout.write(f"{seq}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
