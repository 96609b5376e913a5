"""Registering edgegen's FLOP formulas with torch's counter happens once per process, also when
several threads count at the same time (torch refuses a second registration of an op)."""

import threading
import time

from edgegen.ops import flops


def test_threads_counting_at_once_register_the_formulas_once(monkeypatch):
    calls = []

    def slow_registration():  # wide window for a second thread to slip in
        calls.append(threading.get_ident())
        time.sleep(0.05)

    monkeypatch.setattr(flops, "_REGISTERED", False)
    monkeypatch.setattr(flops, "_register_formulas", slow_registration)
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        flops._register()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and flops._REGISTERED
