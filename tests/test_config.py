import pytest

from recsys.config import load_settings
from recsys.errors import ConfigError


def test_defaults():
    s = load_settings()
    assert s.top_k == 50 and s.spark_master == "local[*]" and s.database_url is None
    assert str(s.lake_root) == "var/lake"
    assert s.model_kind == "mtrl"  # the nightly model; cooc is its baseline and first-night fallback


def test_override_order_cli_over_env_over_file(monkeypatch, tmp_path):
    f = tmp_path / "recsys.toml"
    f.write_text("top_k = 7\nretention_days = 3\nseed = 5\n")
    monkeypatch.setenv("RECSYS_CONFIG_FILE", str(f))
    monkeypatch.setenv("RECSYS_TOP_K", "9")
    monkeypatch.setenv("RECSYS_SEED", "6")
    s = load_settings(top_k=11)
    assert (s.top_k, s.seed, s.retention_days) == (11, 6, 3)


@pytest.mark.parametrize(
    "key,value,needle",
    [("RECSYS_TOP_K", "abc", "RECSYS_TOP_K"), ("RECSYS_TOP_K", "0", "top_k"), ("RECSYS_DATABASE_URL", "mysql://x", "postgresql")],
)
def test_bad_value_is_one_line_naming_the_setting(monkeypatch, key, value, needle):
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_misspelt_setting_is_refused(monkeypatch):
    monkeypatch.setenv("RECSYS_TOPK", "5")
    with pytest.raises(ConfigError, match="RECSYS_TOPK"):
        load_settings()


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_CONFIG_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()
