import threading
import time

import pytest

from ftpbatch.intake.readahead import read_ahead


def test_items_arrive_in_order_and_production_overlaps():
    produced_on = set()

    def slow():
        for n in range(5):
            produced_on.add(threading.current_thread().name)
            time.sleep(0.05)
            yield n

    started = time.perf_counter()
    out = []
    for item in read_ahead(slow(), name="producer"):
        time.sleep(0.05)  # the consumer's work overlaps the next item's production
        out.append(item)
    assert out == [0, 1, 2, 3, 4]
    assert produced_on == {"producer"}
    assert time.perf_counter() - started < 0.45  # 0.5 s if run one after the other


def test_producer_error_is_raised_at_its_position():
    def failing():
        yield 1
        raise ValueError("bad chunk")

    seen = []
    with pytest.raises(ValueError, match="bad chunk"):
        for item in read_ahead(failing()):
            seen.append(item)
    assert seen == [1]


def test_abandoning_stops_the_producer():
    made = []

    def endless():
        n = 0
        while True:
            made.append(n)
            yield n
            n += 1

    for item in read_ahead(endless(), depth=2):
        if item == 3:
            break
    count = len(made)
    time.sleep(0.3)
    assert len(made) == count <= 3 + 2 + 2
