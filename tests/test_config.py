import pytest

from kanitts.config import ConfigError, explain_settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("KANITTS_"):
            monkeypatch.delenv(k)


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_match_the_seed():
    s = load_settings()
    assert s.server.port == 32855
    assert (s.generation.temperature, s.generation.top_p, s.generation.repetition_penalty) == (0.6, 0.95, 1.1)
    assert s.generation.max_tokens == 1200
    assert (s.long_form.threshold_seconds, s.long_form.chunk_seconds, s.long_form.silence_duration) == (15, 12, 0.2)
    assert s.languages["en"].model == "nineninesix/kani-tts-400m-en"
    assert s.languages["es"].default_voice == "nova"
    assert s.engine.mode == "low_vram"


def test_precedence_defaults_file_env_cli(tmp_path, monkeypatch):
    f = write(tmp_path, '[engine]\nmode = "balanced"\nmax_num_seqs = 4\n[server]\nport = 9000\nhost = "0.0.0.0"\n')
    s = load_settings(f)
    assert (s.engine.mode, s.server.port) == ("balanced", 9000)
    monkeypatch.setenv("KANITTS_SERVER__PORT", "9100")
    monkeypatch.setenv("KANITTS_ENGINE__MODE", "high_performance")
    s = load_settings(f)
    assert (s.engine.mode, s.server.port, s.engine.max_num_seqs, s.server.host) == ("high_performance", 9100, 4, "0.0.0.0")
    s = load_settings(f, {"server": {"port": 9200, "host": None}})
    assert s.server.port == 9200 and s.server.host == "0.0.0.0"
    rows = {k: src for k, _, src in explain_settings(f, {"server": {"port": 9200}})}
    assert rows["server.port"] == "cli"
    assert rows["engine.mode"] == "env"
    assert rows["engine.max_num_seqs"].startswith("file:")
    assert rows["generation.temperature"] == "default"


def test_config_file_from_env(tmp_path, monkeypatch):
    f = write(tmp_path, 'default_language = "es"\n')
    monkeypatch.setenv("KANITTS_CONFIG", str(f))
    assert load_settings().default_language == "es"


def test_api_keys_env_comma_separated(monkeypatch):
    monkeypatch.setenv("KANITTS_API_KEYS", "k1, k2")
    assert load_settings().api_keys == ["k1", "k2"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[engine]\nmode = "turbo"\n', "engine.mode"),
        ('[server]\nprot = 1\n', "server.prot: unknown key"),
        ('[server]\nport = "x"\n', "server.port"),
        ('default_language = "fr"\n', "default_language 'fr'"),  # was "de": German is a default language since issue 16
        ('[languages.en]\nmodel = "m"\nvoices = ["a"]\ndefault_voice = "b"\n', "languages.en.default_voice"),
        ('[generation]\ntemperature = 5\n', "generation.temperature"),
        ("this is not toml = = \n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, text))
    assert needle in str(e.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/kanitts.toml")


def test_bad_env_value_is_named(monkeypatch):
    monkeypatch.setenv("KANITTS_SERVER__PORT", "notanumber")
    with pytest.raises(ConfigError, match="server.port"):
        load_settings()


def test_languages_table_and_template(tmp_path):
    f = write(tmp_path, """
multi_language = true
default_language = "en"
[languages.en]
model = "/m/en"
[languages.de]
model = "/m/de"
default_voice = "thorsten"
template = { prefix = [64403], suffix = [2, 64404], text_format = "{voice}: {text}" }
""")
    s = load_settings(f)
    assert set(s.languages) == {"en", "de"}
    assert s.languages["de"].template.suffix == [2, 64404]
    assert s.active_languages() == ["en", "de"]
    s2 = load_settings(f, {"multi_language": False})
    assert s2.active_languages() == ["en"]
