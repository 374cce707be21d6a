"""Benchmark how fast a streamed answer reaches the screen in the desktop client's generation panel.

A feeder thread hands the panel a 512-piece answer (Markdown with a code block) at the demo model's
decode pace on this machine's CPU (one piece every 4 ms by default), through a queued Qt signal as
the generation service does. An event filter on the answer view notes each paint and how much of the
answer it showed. Printed, for the panel as shipped and for a peer measured in the same run — the
same panel re-rendering the Markdown on every piece (what the client did before issue #15):

* first byte to first paint: the first piece handed over -> the first paint that shows it;
* piece to paint, p50/p95: each piece handed over -> the first paint that shows it;
* end lag: the last piece handed over -> the paint that shows the whole answer.

    .venv/bin/python bench/desktop_stream.py [--pieces 512] [--interval-ms 4]

Offscreen unless DISPLAY is set (then under that X server).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

if not os.environ.get("DISPLAY"):
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desktop.qt import QApplication, QEvent, QObject, QThreadPool
from desktop.services.worker import Job, submit
from desktop.ui.generation_panel import GenerationPanel

PARAGRAPH = ("The total skips items whose quantity is not positive, so a return line never lowers the "
             "sum. Here is the method with the check in place:\n\n```python\ndef total(self) -> float:\n"
             "    return sum(unit_price(sku) * q for sku, q in self.items if q > 0)\n```\n\n")


class RenderEveryPiece(GenerationPanel):
    """The peer: Markdown re-rendered on every piece, as before the render was batched."""

    def append(self, text: str) -> None:
        self._answer_text += text
        self._render_answer()


class Paints(QObject):
    def __init__(self, panel: GenerationPanel) -> None:
        super().__init__()
        self.panel = panel
        self.shown: list[tuple[float, int]] = []  # (time, answer characters rendered)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.shown.append((time.perf_counter(), len(self.panel.rendered_text)))
        return False


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(app: QApplication, cls: type[GenerationPanel], pieces: list[str], interval_s: float) -> dict[str, float]:
    panel = cls()
    panel.resize(420, 700)
    panel.show()
    paints = Paints(panel)
    panel.answer.viewport().installEventFilter(paints)
    panel.streaming(True)
    sent: list[tuple[float, int]] = []  # (time handed over, answer characters so far)
    total = 0
    for p in pieces:
        total += len(p)
        sent.append((0.0, total))

    done = threading.Event()

    def feed(job: Job) -> None:
        # On a pool thread, handed over as Job.item: the path GenerationService's pieces take.
        for i, p in enumerate(pieces):
            sent[i] = (time.perf_counter(), sent[i][1])
            job.item.emit(p)
            time.sleep(interval_s)
        done.set()

    pool = QThreadPool()
    submit(pool, feed, on_item=panel.append)
    while not done.is_set() or not paints.shown or paints.shown[-1][1] < total:
        app.processEvents()
        if panel._render.isActive():  # the batching timer is due: let the loop run it
            continue
        time.sleep(0.0005)
        if done.is_set() and time.perf_counter() - sent[-1][0] > 30:
            break
    pool.waitForDone()
    app.processEvents()
    latencies = []
    for at, chars in sent:
        shown = next((t for t, c in paints.shown if t >= at and c >= chars), None)
        if shown is not None:
            latencies.append((shown - at) * 1000)
    end = next((t for t, c in paints.shown if c >= total), sent[-1][0])
    panel.close()
    return {"first_ms": latencies[0], "p50_ms": _p(latencies, 0.5), "p95_ms": _p(latencies, 0.95),
            "end_lag_ms": (end - sent[-1][0]) * 1000, "paints": len(paints.shown), "renders": panel.rendered}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=512)
    parser.add_argument("--interval-ms", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is printed")
    args = parser.parse_args()
    text = (PARAGRAPH * (args.pieces * 4 // len(PARAGRAPH) + 1))
    pieces = [text[i * 4:(i + 1) * 4] for i in range(args.pieces)]
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    kinds = (("batched (shipped)", GenerationPanel), ("render every piece (peer)", RenderEveryPiece))
    for _, cls in kinds:  # warm-up: the first panel shown pays for fonts and styles
        run(app, cls, pieces[:32], args.interval_ms / 1000)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _ in kinds}
    for _ in range(args.rounds):  # alternating, so both see the same machine load
        for name, cls in kinds:
            rounds[name].append(run(app, cls, pieces, args.interval_ms / 1000))
    rows = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rounds.items()}
    print(f"{args.pieces} pieces, one every {args.interval_ms:g} ms, platform {app.platformName()}, "
          f"median of {args.rounds} alternating rounds")
    print(f"{'':28} {'first byte->paint':>18} {'piece->paint p50':>17} {'p95':>9} {'end lag':>9} {'paints':>7} {'renders':>8}")
    for name, r in rows.items():
        print(f"{name:28} {r['first_ms']:15.1f} ms {r['p50_ms']:14.1f} ms {r['p95_ms']:6.1f} ms "
              f"{r['end_lag_ms']:6.1f} ms {r['paints']:7.0f} {r['renders']:8.0f}")
    ours, peer = rows["batched (shipped)"], rows["render every piece (peer)"]
    print(f"ratio peer/shipped: piece->paint p95 {peer['p95_ms'] / max(ours['p95_ms'], 1e-3):.1f}x, "
          f"end lag {peer['end_lag_ms'] / max(ours['end_lag_ms'], 1e-3):.1f}x, first paint "
          f"{peer['first_ms'] / max(ours['first_ms'], 1e-3):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
