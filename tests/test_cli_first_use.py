"""What a new operator meets first on the command line, run as they run it: a subprocess.

Refused product settings (one line, a code, nothing changed), not-found
errors, a quiet broken pipe, a root that does not exist, hints naming the
command as invoked, and commands that start without the pandas stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO

FTPBATCH_SCRIPT = Path(sys.executable).parent / "ftpbatch"


def ftpbatch(root: Path, *argv: str, stdin: str | None = None, command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FTPBATCH_ROOT"}
    return subprocess.run(
        [*(command or [sys.executable, "-m", "ftpbatch"]), "--root", str(root), *argv],
        input=stdin, capture_output=True, text=True, env=env, cwd=root.parent, timeout=60,
    )


@pytest.fixture(scope="module")
def made_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root made by ``init`` with one product, ``shop``: made once, copied for each test."""
    root = tmp_path_factory.mktemp("first-use") / "data"
    assert ftpbatch(root, "init", "--no-tls").returncode == 0
    added = ftpbatch(root, "product", "add", "shop", "--password-stdin", "--dial-prefix", "44", "--sender", "MyShop",
                     "--tps", "20", "--callback-url", "https://example.com/hook", stdin="a-long-password\n")
    assert added.returncode == 0, added.stderr
    return root


@pytest.fixture
def root(made_root: Path, tmp_path: Path) -> Path:
    # a root holds no path of its own (ledger, settings, keys): a copy is a root as init makes it
    return Path(shutil.copytree(made_root, tmp_path / "data"))


def shown(root: Path, name: str = "shop") -> dict[str, object]:
    out = ftpbatch(root, "product", "show", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


REFUSED = [
    (["--tps", "-1"], "101", "tps"),
    (["--tps", "0.5"], "101", "tps"),
    (["--duplicate-window", "-5"], "101", "duplicate window"),
    (["--quota-mb", "-1"], "101", "quota"),
    (["--max-file-mb", "-2"], "101", "largest file"),
    (["--retention-days", "-3"], "101", "retention"),
    (["--sender", "ThisSenderIsWayTooLong"], "123", "sender"),
    (["--sender", "Café"], "123", "sender"),
    (["--callback-url", "notaurl"], "101", "callback URL"),
    (["--callback-url", "ftp://example.com/x"], "101", "callback URL"),
    (["--callback-url", "http://"], "101", "callback URL"),
    (["--dial-prefix", "12345"], "101", "dial prefix"),
    (["--dial-prefix", "0044"], "101", "dial prefix"),
    (["--allow-ip", "10.0.0.300"], "101", "allow-ip"),
    (["--max-parts", "0"], "101", "max parts"),
]


@pytest.mark.parametrize("flags, code, names", REFUSED, ids=[" ".join(f) for f, _, _ in REFUSED])
def test_bad_product_settings_are_refused_with_a_code_and_nothing_changes(root, flags, code, names):
    before = shown(root)
    result = ftpbatch(root, "product", "set", "shop", *flags)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()  # one line
    assert line.startswith(f"ftpbatch: error {code}: ") and names in line, line
    assert shown(root) == before


def test_a_product_added_with_a_bad_setting_is_not_created(root):
    result = ftpbatch(root, "product", "add", "other", "--password-stdin", "--quota-mb", "-1", stdin="a-long-password\n")
    assert result.returncode == 1 and "error 101" in result.stderr and "quota" in result.stderr
    assert "other" not in ftpbatch(root, "product", "list").stdout


def test_good_settings_still_apply_and_zero_means_unset(root):
    result = ftpbatch(root, "product", "set", "shop", "--tps", "0", "--sender", "+447700900000", "--quota-mb", "0",
                      "--callback-url", "http://127.0.0.1:8080/cb", "--dial-prefix", "1", "--duplicate-window", "0")
    assert result.returncode == 0, result.stderr
    view = shown(root)
    assert view["tps"] is None and view["sender"] == "+447700900000" and view["quota_bytes"] is None
    assert view["callback_url"] == "http://127.0.0.1:8080/cb" and view["dial_prefix"] == "1"
    assert view["duplicate_window_hours"] == 0


def test_the_ledger_refuses_bad_settings_too(root):
    from ftpbatch.errors import InvalidSetting
    from ftpbatch.ledger import Ledger

    ledger = Ledger(root / "ftpbatch.db")
    try:
        with pytest.raises(InvalidSetting) as refused:
            ledger.update_product("shop", quota_bytes=-1)
        assert refused.value.code == "101"
        with pytest.raises(InvalidSetting) as refused:
            ledger.update_product("shop", sender="ThisSenderIsWayTooLong")
        assert refused.value.code == "123"
        assert ledger.get_product("shop").quota_bytes is None
    finally:
        ledger.close()


def test_not_found_has_its_own_sentence_not_an_internal_error(root):
    for argv, what in ((("batch", "show", "NOSUCH"), "no batch with id 'NOSUCH'"),
                       (("batch", "cancel", "NOSUCH"), "no batch with id 'NOSUCH'"),
                       (("product", "show", "nosuch"), "no product named 'nosuch'"),
                       (("product", "set", "nosuch", "--tps", "5"), "no product named 'nosuch'"),
                       (("ban", "lift", "192.0.2.1"), "192.0.2.1 is not banned")):
        result = ftpbatch(root, *argv)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith("ftpbatch: error 101: ") and what in line, line


def test_a_closed_pipe_ends_quietly(root):
    # the reader is gone before the command writes a byte, as with `| head` on a long listing
    proc = subprocess.Popen([sys.executable, "-m", "ftpbatch", "--root", str(root), "batch", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(60) in (0, 1)
    assert "Traceback" not in err and "BrokenPipe" not in err and err == ""


def test_commands_other_than_init_refuse_a_root_that_does_not_exist(tmp_path):
    typo = tmp_path / "typo"
    for argv in (("status",), ("product", "list"), ("batch", "list"), ("serve", "--ftp-port", "0")):
        result = ftpbatch(typo, *argv)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert f"no ftpbatch data root at {typo}" in line and "init" in line, line
        assert not typo.exists()
    assert ftpbatch(typo, "init", "--no-tls").returncode == 0
    assert ftpbatch(typo, "product", "list").returncode == 0


def test_hints_name_the_command_as_it_was_invoked(root):
    assert FTPBATCH_SCRIPT.exists()
    result = ftpbatch(root, "batch", "show", "NOSUCH", command=[str(FTPBATCH_SCRIPT)])
    assert f"see '{FTPBATCH_SCRIPT} batch list'" in result.stderr, result.stderr
    result = ftpbatch(root.parent / "elsewhere", "status", command=[str(FTPBATCH_SCRIPT)])
    assert f"run '{FTPBATCH_SCRIPT} --root" in result.stderr, result.stderr
    result = ftpbatch(root, "batch", "show", "NOSUCH")  # python -m ftpbatch
    assert f"see '{sys.executable} -m ftpbatch batch list'" in result.stderr, result.stderr


HEAVY = ("pandas", "pyarrow", "prometheus_client", "numpy", "argon2", "matplotlib", "phonenumbers")


@pytest.mark.parametrize("argv", [("product", "list"), ("product", "list", "--json"), ("status",), ("status", "--json")])
def test_quick_commands_do_not_import_the_data_stack(root, argv):
    script = (
        "import sys\n"
        "from ftpbatch.cli import main\n"
        f"code = main({['--root', str(root), *argv]!r})\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})\n"
        "print('HEAVY', ','.join(heavy), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "HEAVY \n" in result.stderr or result.stderr.rstrip().endswith("HEAVY"), result.stderr



def test_scripts_start_installs_only_when_the_installed_copy_is_out_of_date(tmp_path):
    # A copy of the project whose .venv/bin/python and ftpbatch only note their calls:
    # this checks the script's decision, not pip (a real install takes ~15 s and the network).
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    (project / "ftpbatch").mkdir()
    (project / "ftpbatch" / "__init__.py").write_text('__version__ = "0"\n')
    for name in ("setup.cfg", "pyproject.toml"):
        (project / name).write_text((REPO / name).read_text())
    start = project / "scripts" / "start"
    start.write_text((REPO / "scripts" / "start").read_text())
    start.chmod(0o755)
    calls = tmp_path / "calls"
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    stub = f'#!/bin/sh\necho "$(basename "$0") $*" >> {calls}\n'
    for name in ("python", "ftpbatch"):
        (bin_dir / name).write_text(stub)
        (bin_dir / name).chmod(0o755)

    def run_start() -> list[str]:
        calls.write_text("")
        subprocess.run([str(start)], check=True, capture_output=True, timeout=60)
        return calls.read_text().splitlines()

    assert any("pip install --quiet ." in c for c in run_start())  # first start: installs
    second = run_start()
    assert not any("pip" in c for c in second)  # nothing changed: no install
    assert "ftpbatch init --demo" in second and "ftpbatch serve" in second
    (project / "ftpbatch" / "__init__.py").write_text('__version__ = "1"\n')
    assert any("pip install --quiet ." in c for c in run_start())  # the source changed: installs again
