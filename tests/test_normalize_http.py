"""Through HTTP: chat markdown, the request's lexicon and the server's lexicon file reach
the model as the normalizer reads them; ``normalize: false`` sends the text as written."""

from __future__ import annotations

import httpx
import pytest
from conftest import LiveServer, tiny_settings


@pytest.fixture(scope="module")
def server(tiny_model, tiny_codec, tmp_path_factory):
    lex = tmp_path_factory.mktemp("lex") / "lexicon.txt"
    lex.write_text("# server-wide\nkubectl = kube control\nNginx = engine x\n")
    settings = tiny_settings(tiny_model, tiny_codec, text={"lexicon_file": str(lex)})
    with LiveServer(settings) as srv:
        model = srv.service.models["en"]
        prompts: list[str] = []
        original = model.backend.stream

        def recording_stream(prompt, *args, **kwargs):
            prompts.append(model.tokenizer.decode(prompt, skip_special_tokens=True))
            return original(prompt, *args, **kwargs)

        model.backend.stream = recording_stream
        srv.prompts = prompts
        yield srv


def _speak(srv, payload: dict) -> str:
    srv.prompts.clear()
    body = {"voice": "andrew", "response_format": "pcm", "max_tokens": 16, "seed": 1, **payload}
    r = httpx.post(srv.url + "/v1/audio/speech", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return " ".join(srv.prompts)


def test_markdown_and_request_lexicon_reach_the_model(server):
    text = ("### Setup\n- Run `kubectl apply` on **port 8080**.\n"
            "- See [the guide](https://example.com/guide) by Nguyen.\n\n```bash\nrm -rf /\n```")
    prompt = _speak(server, {"input": text, "lexicon": {"Nguyen": "win", "kubectl": "cube control"}})
    assert "Setup." in prompt
    assert "Run cube control apply on port eighty eighty." in prompt  # request entry beats the server's
    assert "See the guide by win." in prompt
    assert "Code block in bash." in prompt
    for marker in ("#", "`", "**", "](", "rm -rf", "kubectl", "Nguyen"):
        assert marker not in prompt, marker


def test_server_lexicon_file_applies(server):
    prompt = _speak(server, {"input": "Nginx and kubectl are tools."})
    assert "engine x and kube control are tools." in prompt


def test_normalize_false_turns_everything_off(server):
    text = "## Nginx costs $5"
    prompt = _speak(server, {"input": text, "normalize": False, "lexicon": {"Nginx": "engine x"}})
    assert "## Nginx costs $5" in prompt


@pytest.mark.parametrize("lexicon", [{"": "x"}, {"a" * 101: "x"}, {"a": "x" * 501}, ["a", "b"], "a=b"])
def test_bad_lexicon_is_a_400(server, lexicon):
    r = httpx.post(server.url + "/v1/audio/speech", json={"input": "Hi.", "lexicon": lexicon}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] is None or "lexicon" in str(r.json()["error"])
