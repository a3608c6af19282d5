"""The settings file ``init`` writes is generated from the settings classes."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

from ftpbatch.config import Settings, default_toml, load_settings


def test_the_default_file_names_every_setting_with_its_default_and_loads_to_the_defaults(tmp_path: Path) -> None:
    document = tomllib.loads(default_toml())
    hints = typing.get_type_hints(Settings)
    for section in ("ftp", "intake", "dispatch", "report", "callbacks", "metrics"):
        for item in dataclasses.fields(hints[section]):
            if item.default is None:  # written commented out: TOML has no null
                assert item.name not in document[section]
            else:
                assert document[section][item.name] == item.default, (section, item.name)
    (tmp_path / "ftpbatch.toml").write_text(default_toml(), encoding="utf-8")
    loaded = load_settings(tmp_path, environ={})
    defaults = Settings(root=loaded.root, node_id=loaded.node_id)
    assert loaded == defaults


def test_values_given_to_the_generator_replace_the_defaults_and_keep_the_comments() -> None:
    text = default_toml({"ftp": {"tls_cert": "tls/cert.pem", "tls_key": "tls/key.pem"}})
    ftp = tomllib.loads(text)["ftp"]
    assert (ftp["tls_cert"], ftp["tls_key"]) == ("tls/cert.pem", "tls/key.pem")
    assert "# PEM certificate and key for explicit FTPS" in text
