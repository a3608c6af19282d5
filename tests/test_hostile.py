"""The hostile corpus through a real server: each file gets its stated code and sentence.

All files are uploaded by one client while another client's ordinary batch
goes through in the middle of them; a file that takes the server down, hangs
intake or ends in an internal error (901) fails every case.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest

from .helpers import (
    ServerProcess,
    add_product,
    find_summary,
    read_report,
    wait_for_summary,
)
from .hostile.cases import CASES, LIMIT_BYTES, REJECTED, Case

NORMAL = b"to,text\n07700900001,Ordinary day\n07700900002,Ordinary day too\n"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    hostile = add_product(root, "hostile", "hostile-password", dial_prefix="44", max_file_bytes=LIMIT_BYTES)
    normal = add_product(root, "normal", "normal-password", dial_prefix="44")
    with ServerProcess(root, "--connector", "sim://?receipt_delay=0.01") as server:
        halfway = threading.Event()
        normal_result: dict[str, Any] = {}

        def ordinary_client() -> None:
            halfway.wait(30)
            started = time.monotonic()
            with server.ftp(normal) as client:
                client.storbinary("STOR /inbox/ordinary.csv", io.BytesIO(NORMAL))
            normal_result["summary"] = wait_for_summary(root, "normal", "ordinary.csv", ("complete",), timeout=60)
            normal_result["seconds"] = time.monotonic() - started

        other = threading.Thread(target=ordinary_client)
        other.start()
        upload_replies = {}
        with server.ftp(hostile) as client:
            for n, case in enumerate(CASES):
                if n == len(CASES) // 2:
                    halfway.set()
                upload_replies[case.id] = client.storbinary(f"STOR /inbox/{case.name}", io.BytesIO(case.make()))
        halfway.set()

        summaries: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 90
        while len(summaries) < len(CASES) and time.monotonic() < deadline:
            for case in CASES:
                summary = find_summary(root, "hostile", case.name)
                if summary is not None and summary["state"] in ("complete", "rejected"):
                    summaries[case.id] = summary
            time.sleep(0.1)
        other.join(60)
        reports = {
            case.id: read_report(root, "hostile", summary)
            for case in CASES
            if (summary := summaries.get(case.id)) is not None and summary["state"] != REJECTED
        }
        log = server.log()
    return {"summaries": summaries, "reports": reports, "uploads": upload_replies, "normal": normal_result, "log": log}


def test_the_server_survives_the_corpus_and_serves_others_meanwhile(outcomes):
    assert all(reply.startswith("226") for reply in outcomes["uploads"].values()), outcomes["uploads"]
    missing = [case.id for case in CASES if case.id not in outcomes["summaries"]]
    assert not missing, f"no final summary for {missing}"
    assert outcomes["normal"]["summary"]["counts"]["delivered"] == 2
    assert outcomes["normal"]["seconds"] < 30
    log = outcomes["log"]
    assert "Traceback" not in log and " ERROR " not in log, log[-5000:]


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES) and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=case.known_bug)] if case.known_bug else [])
     for case in CASES],
)
def test_each_file_gets_its_stated_outcome(outcomes, case: Case):
    summary = outcomes["summaries"].get(case.id)
    assert summary is not None, f"{case.name!r} never reached a final state"
    assert summary["error_code"] != "901", summary["error_text"]
    assert (summary["state"], summary["error_code"] or "") == (case.state, case.code), summary["error_text"]
    if case.state == REJECTED:
        assert case.sentence.lower() in (summary["error_text"] or "").lower(), summary["error_text"]
        return
    rows = outcomes["reports"][case.id]
    if case.row_codes is not None:
        assert tuple(row["error_code"] for row in rows) == case.row_codes
    if case.report_check is not None:
        case.report_check(rows)
