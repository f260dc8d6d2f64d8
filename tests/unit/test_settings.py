from __future__ import annotations

from pathlib import Path

import pytest

from recast.settings import Settings


def test_defaults_and_env_override(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a recast.yaml in the checkout would replace the defaults
    monkeypatch.setenv("RECAST_GATEWAY__PORT", "9123")
    monkeypatch.setenv("RECAST_TRAIN__EPOCHS", "3")
    monkeypatch.delenv("RECAST_CONFIG", raising=False)
    s = Settings()
    assert s.gateway.port == 9123 and s.train.epochs == 3
    assert s.triton.http_port == 18000


def test_yaml_file_then_env(tmp_path, monkeypatch):
    cfg = tmp_path / "recast.yaml"
    cfg.write_text("gateway:\n  port: 9001\n  model_name: dcnv2\ntriton:\n  http_port: 8100\n")
    monkeypatch.setenv("RECAST_CONFIG", str(cfg))
    monkeypatch.setenv("RECAST_TRITON__HTTP_PORT", "8200")
    s = Settings()
    assert s.gateway.port == 9001 and s.gateway.model_name == "dcnv2"
    assert s.triton.http_port == 8200  # environment wins over the file


def test_missing_config_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RECAST_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match="RECAST_CONFIG"):
        Settings()


def test_paths_resolve_against_home(tmp_path):
    s = Settings(home=tmp_path)
    assert s.path(s.data.features_dir) == tmp_path / "data" / "features"
    assert s.path(Path("/abs")) == Path("/abs")
