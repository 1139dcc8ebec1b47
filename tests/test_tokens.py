import pytest
from _reference_sampler import SpeechConstraint

from kanitts import tokens as p


class FakeTok:
    def encode(self, text, add_special_tokens=True):
        ids = [ord(c) % 500 + 3 for c in text]
        return ([p.START_OF_TEXT] if add_special_tokens else []) + ids


def test_token_layout_constants():
    assert (p.START_OF_SPEECH, p.END_OF_SPEECH, p.START_OF_HUMAN, p.END_OF_HUMAN) == (64401, 64402, 64403, 64404)
    assert (p.START_OF_AI, p.END_OF_AI, p.PAD, p.AUDIO_TOKEN_START) == (64405, 64406, 64407, 64410)
    assert p.AUDIO_TOKEN_END == 64410 + 4 * 4032 == 80538
    assert p.END_OF_TEXT not in p.STOP_TOKEN_IDS


@pytest.mark.parametrize("k,code", [(0, 0), (1, 17), (2, 4031), (3, 2000)])
def test_audio_token_round_trip(k, code):
    t = p.audio_token(k, code)
    assert t == 64410 + k * 4032 + code
    assert p.split_audio_token(t) == (k, code)


@pytest.mark.parametrize("k,code", [(4, 0), (-1, 0), (0, 4032), (0, -1)])
def test_audio_token_rejects_out_of_range(k, code):
    with pytest.raises(ValueError):
        p.audio_token(k, code)


def test_prompt_matches_training_layout():
    ids = p.build_prompt(FakeTok(), "Hello", "andrew")
    assert ids[0] == p.START_OF_HUMAN and ids[1] == p.START_OF_TEXT
    assert ids[-2:] == [p.END_OF_TEXT, p.END_OF_HUMAN]
    assert ids[2:-2] == FakeTok().encode("andrew: Hello", add_special_tokens=False)
    # voiceless models get the bare text
    assert p.build_prompt(FakeTok(), "Hi", None)[2:-2] == FakeTok().encode("Hi", add_special_tokens=False)


def test_prompt_template_is_configurable():
    t = p.PromptTemplate(prefix=[7], suffix=[8], text_format="[{voice}] {text}", add_special_tokens=False)
    assert p.build_prompt(FakeTok(), "x", "v", t) == [7, *FakeTok().encode("[v] x", False), 8]


def frames_tokens(frames):
    return [t for f in frames for t in p.frame_tokens(f)]


def test_parser_round_trip_in_any_split():
    frames = [[i, (i * 7) % 4032, 4031 - i, 5] for i in range(10)]
    toks = [p.START_OF_AI, p.START_OF_SPEECH, *frames_tokens(frames), p.END_OF_SPEECH, p.END_OF_AI]
    for step in (1, 3, 4, 5, 100):
        parser = p.FrameParser()
        got = []
        for i in range(0, len(toks), step):
            got += parser.feed(toks[i : i + step])
        assert got == frames and parser.finished


@pytest.mark.parametrize(
    "bad",
    [
        [p.START_OF_SPEECH, p.audio_token(1, 0)],  # codebook out of order
        [p.START_OF_SPEECH, p.audio_token(0, 1), 500],  # text token inside speech
        [p.START_OF_SPEECH, p.audio_token(0, 1), p.END_OF_SPEECH],  # stop mid-frame
        [p.START_OF_SPEECH, p.audio_token(0, 1), p.audio_token(1, 1), p.audio_token(3, 1)],
        [p.START_OF_SPEECH, p.audio_token(0, 1), p.START_OF_SPEECH],
        [p.START_OF_SPEECH, p.END_OF_TEXT],
    ],
)
def test_parser_rejects_malformed(bad):
    with pytest.raises(p.MalformedStreamError):
        p.FrameParser().feed(bad)


def test_parser_close_drops_partial_frame_from_max_tokens():
    parser = p.FrameParser()
    out = parser.feed([p.START_OF_SPEECH, *p.frame_tokens([1, 2, 3, 4]), p.audio_token(0, 9)])
    assert out == [[1, 2, 3, 4]]
    parser.close()
    assert parser.finished


def test_constraint_walks_the_layout():
    c = SpeechConstraint()
    assert c.allowed()[0] == [p.START_OF_AI, p.START_OF_SPEECH]
    c.advance(p.START_OF_AI)
    assert c.allowed() == ([p.START_OF_SPEECH], None)
    c.advance(p.START_OF_SPEECH)
    for frame in range(2):
        for k in range(4):
            singles, rng = c.allowed()
            assert rng == p.allowed_range(k)
            assert singles == ([p.END_OF_SPEECH] if k == 0 else [])
            c.advance(rng[0] + 5)
    assert c.allowed(allow_stop=False)[0] == []


def test_constraint_accepts_streams_that_start_with_audio():
    # prompts ending with START_OF_SPEECH (opening teacher-forced): codebook 0 comes first
    c = SpeechConstraint.for_prompt([p.END_OF_HUMAN, p.START_OF_AI, p.START_OF_SPEECH])
    assert c.allowed() == ([p.END_OF_SPEECH], p.allowed_range(0))
    assert SpeechConstraint.for_prompt([p.START_OF_AI]).allowed() == ([p.START_OF_SPEECH], None)
    assert SpeechConstraint.for_prompt([p.END_OF_HUMAN]).allowed()[0] == [p.START_OF_AI, p.START_OF_SPEECH]
    toks = [*p.frame_tokens([1, 2, 3, 4]), *p.frame_tokens([5, 6, 7, 8]), p.END_OF_SPEECH]
    assert p.FrameParser().feed(toks) == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_speakers_from_config(tmp_path):
    (tmp_path / "config.json").write_text('{"speaker_settings": {"status": "multispeaker", "speaker_list": ["a", "b"]}}')
    assert p.read_speakers(tmp_path) == ["a", "b"]
    (tmp_path / "config.json").write_text('{"model_type": "lfm2"}')
    assert p.read_speakers(tmp_path) is None
    assert p.read_speakers(tmp_path / "missing") is None


def test_with_opening_teacher_forces_the_training_layout():
    prompt = [p.START_OF_HUMAN, 1, 5, p.END_OF_TEXT, p.END_OF_HUMAN]
    assert p.with_opening(prompt) == [*prompt, p.START_OF_AI, p.START_OF_SPEECH]
    assert p.with_opening([7, 8]) == [7, 8]  # other templates untouched
    c = SpeechConstraint.for_prompt(p.with_opening(prompt))
    assert c.allowed()[1] == p.allowed_range(0)
