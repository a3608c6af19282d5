"""Run every benchmark in bench/ with modest sizes and print one table.

    python bench/run_all.py            # ~3-5 minutes on 2 cores
    python bench/run_all.py --full     # the sizes of the acceptance criteria (1M rows, 200 MB, 300 FTP / 100 SFTP logins, 50 uploads,
                                       # a 1M-row process to its final report, CPU per 20,000 messages beside Kannel)

Each benchmark runs in its own process and prints a JSON line per result;
this script collects them and prints the figures next to their baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

MODEST = {
    "ingest": ["--rows", "200000"],
    "dispatch": ["--messages", "5000"],
    "dispatch_w100": ["--messages", "5000", "--window", "100"],
    "latency": ["--uploads", "20"],
    "ftp": ["--mb", "50", "--logins", "100", "--sftp-logins", "100"],
    "e2e": ["--rows", "200000", "--rounds", "1"],
    "cpu_kannel": ["--messages", "5000", "--rounds", "1"],
}
FULL = {
    "ingest": ["--rows", "1000000"],
    "dispatch": ["--messages", "20000"],
    "dispatch_w100": ["--messages", "20000", "--window", "100"],
    "latency": ["--uploads", "50"],
    "ftp": ["--mb", "200", "--logins", "300", "--sftp-logins", "100"],
    "e2e": ["--rows", "1000000", "--rounds", "2"],
    "cpu_kannel": ["--messages", "20000", "--rounds", "2"],
}


def run(name: str, args: list[str]) -> list[dict]:
    script = name.split("_w")[0]  # dispatch_w100: bench/dispatch.py with another window
    out = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
        return []
    results = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            results.append(json.loads(line))
    return results


def rows_for(name: str, results: list[dict]) -> list[tuple[str, str, str, str]]:
    """(measure, ftpbatch, baseline, ratio) rows for the table."""
    table = []
    for r in results:
        if name == "ingest":
            table.append((f"ingest {r['rows']:,} rows: claim -> queued", f"{r['ftpbatch_claim_to_queued_s']} s",
                          f"read_csv {r['baseline_read_csv_s']} s", f"{r['ratio']}x"))
            table.append(("ingest peak RSS", f"{r['ftpbatch_peak_rss_mb']} MB", f"read_csv {r['baseline_peak_rss_mb']} MB", ""))
            if "optouts" in r:
                table.append((f"  with {r['optouts']:,} opt-outs (122 look-up alone)", f"{r['ftpbatch_with_optouts_s']} s "
                              f"({r['optout_lookup_s']} s)", f"without {r['ftpbatch_claim_to_queued_s']} s", ""))
        elif name.startswith("dispatch"):
            table.append((f"dispatch {r['messages']:,} msgs w/ receipts, window {r['window']}, mean of {r['rounds']}, "
                          f"{r.get('smsc', 'test')} SMSC", f"{r['ftpbatch_msgs_per_s_with_receipts']}/s",
                          f"bare smpp34 on uvloop {r['bare_smpp34_uvloop_msgs_per_s_with_receipts']}/s", f"{r['ratio']}x"))
            table.append(("  the same, against bare smpp34 on asyncio", "",
                          f"{r['bare_smpp34_msgs_per_s_with_receipts']}/s", f"{r['ratio_vs_bare_asyncio']}x"))
        elif name == "latency":
            table.append((f"upload {r['rows']} rows -> first submit (med/p95)",
                          f"{r['first_submit_ms_median']}/{r['first_submit_ms_p95']} ms",
                          f"bare upload {r['bare_upload_ms_median']} ms", ""))
            table.append((f"upload {r['rows']} rows -> complete (med/p95)",
                          f"{r['complete_ms_median']}/{r['complete_ms_p95']} ms", "", ""))
        elif name == "e2e":
            table.append((f"process {r['rows']:,} rows -> final report (sim), best of {r['rounds']}",
                          f"{r['process_s_best']} s", "", ""))
            table.append(("  CPU s (each round) / peak RSS", f"{r['cpu_s_each_round']} / {r['peak_rss_mb']} MB", "", ""))
        elif name == "cpu_kannel":
            table.append((f"CPU per {r['messages']:,} msgs w/ receipts, mean of {r['rounds']}", f"{r['ftpbatch_cpu_s']} s",
                          f"Kannel bearerbox+smsbox {r['kannel_cpu_s']} s" if "kannel_cpu_s" in r else "Kannel not installed",
                          f"{r['ratio']}x" if "ratio" in r else ""))
        elif name == "ftp" and r.get("benchmark") == "ftp":
            table.append((f"upload {r['mb']} MB ftplib / curl", "", "bare pyftpdlib",
                          f"{r['ratio_ftplib_vs_bare']}x / {r['ratio_curl_vs_bare']}x"))
            if "ratio_ftplib_vs_vsftpd" in r:
                table.append(("upload vs vsftpd ftplib / curl", "", "vsftpd",
                              f"{r['ratio_ftplib_vs_vsftpd']}x / {r['ratio_curl_vs_vsftpd']}x"))
            table.append((f"{r['logins']} logins at once", f"{r['ftpbatch_logins_s']} s", "", ""))
            table.append(("transfer speed kept meanwhile", f"{r['ftpbatch_transfer_kept']}x", "", ""))
            if "sshd_sftp_mb_s" in r:
                table.append((f"SFTP upload {r['mb']} MB, OpenSSH sftp", f"{r['ftpbatch_sftp_mb_s']} MB/s",
                              f"sshd internal-sftp {r['sshd_sftp_mb_s']} MB/s", f"{r['ratio_sftp_vs_sshd']}x"))
                table.append(("  the same, asyncssh client", f"{r['ftpbatch_sftp_asyncssh_mb_s']} MB/s",
                              f"{r['sshd_sftp_asyncssh_mb_s']} MB/s", f"{r['ratio_sftp_asyncssh_vs_sshd']}x"))
                table.append(("  server CPU per MB uploaded", f"{r['ftpbatch_sftp_cpu_s_per_mb'] * 1000:.1f} ms",
                              f"{r['sshd_sftp_cpu_s_per_mb'] * 1000:.1f} ms", ""))
                table.append((f"{r['sftp_logins']} SFTP key logins at once (failed)",
                              f"{r['ftpbatch_sftp_logins_s']} s ({r['ftpbatch_sftp_login_failures']})",
                              f"sshd {r['sshd_sftp_logins_s']} s ({r['sshd_sftp_login_failures']})", ""))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--only", nargs="*", choices=list(MODEST))
    args = parser.parse_args()
    sizes = FULL if args.full else MODEST
    table: list[tuple[str, str, str, str]] = []
    for name in args.only or list(sizes):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        table.extend(rows_for(name, run(name, sizes[name])))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}")
    widths = [max(len(row[i]) for row in table + [("measure", "ftpbatch", "baseline", "ratio")]) for i in range(4)]
    header = ("measure", "ftpbatch", "baseline", "ratio")
    for row in [header, tuple("-" * w for w in widths), *table]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
