"""kdbench_tts's data and text front end on real eSpeak NG synthesis: the synthetic corpus
(determinism, exact durations, held-out sentences), the symbol table, the one-line errors
for bad text, and the LJSpeech-layout loader on a tiny corpus written here."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from kdbench.errors import DataError

pytest.importorskip("espeakng_loader")
from kdbench_asr import espeak  # noqa: E402
from kdbench_tts import audio, sentences, text  # noqa: E402
from kdbench_tts.data import EspeakSentences, frame_durations  # noqa: E402
from kdbench_tts.ljspeech import LJSpeech  # noqa: E402

if not espeak.available()[0]:
    pytest.skip(f"eSpeak NG not available: {espeak.available()[1]}", allow_module_level=True)

SMALL = {"train_utterances": 40, "test_utterances": 12, "held_out_speakers": ["m7"]}

# Built in a fresh process: eSpeak NG carries state between utterances, so only a build in a
# process where it has not spoken yet is reproducible (the data module's docstring).
_BUILD = """
import json, sys
from pathlib import Path
from kdbench_tts.data import EspeakSentences
c = EspeakSentences(EspeakSentences.Options(**json.loads(sys.argv[1])), cache_dir=Path(sys.argv[2])).load()
print(c.fingerprint)
"""


def build_in_fresh_process(cache_dir, options=SMALL):
    done = subprocess.run([sys.executable, "-c", _BUILD, json.dumps(options), str(cache_dir)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(corpus loaded from the cache of a fresh-process build, that build's fingerprint, a second one's)."""
    first, second = tmp_path_factory.mktemp("tts-a"), tmp_path_factory.mktemp("tts-b")
    fingerprints = build_in_fresh_process(first), build_in_fresh_process(second)
    corpus = EspeakSentences(EspeakSentences.Options(**SMALL), cache_dir=first).load()  # a cache hit
    return corpus, *fingerprints


def examples(corpus):
    return [*corpus.train, *(e for t in corpus.tests.values() for e in t)]


def test_corpus_is_deterministic_and_cached(built):
    corpus, first, second = built
    assert first == second  # two independent builds
    assert corpus.fingerprint == first  # the cache returns what was built


def test_other_options_give_another_fingerprint(built, tmp_path):
    assert build_in_fresh_process(tmp_path, {**SMALL, "seed": 1}) != built[1]


def test_example_shape(built):
    corpus = built[0]
    assert set(corpus.tests) == {"test", "test-unseen-speakers"}
    assert [len(corpus.train), len(corpus.tests["test"]), len(corpus.tests["test-unseen-speakers"])] == [40, 12, 12]
    for ex in examples(corpus):
        assert isinstance(ex.input, torch.Tensor) and ex.input.dtype == torch.int64 and ex.input.ndim == 1
        assert isinstance(ex.target, np.ndarray) and ex.target.dtype == np.float32 and ex.target.ndim == 1
        assert ex.meta["sample_rate"] == 16000
        assert ex.meta["duration"] == pytest.approx(len(ex.target) / 16000, abs=1e-4)
        assert 0.5 < ex.meta["duration"] < 4.0 and np.abs(ex.target).max() <= 1.0
        assert np.sqrt(np.mean(ex.target ** 2)) > 0.01  # speech, not silence
        assert corpus.info["speaker_ids"][ex.meta["speaker"]] == ex.meta["speaker_id"]
    assert corpus.info["text"] == text.TEXT_STATE and corpus.info["durations"] is True


def test_durations_sum_to_the_log_mel_frame_count(built):
    for ex in examples(built[0]):
        durations = ex.meta["durations"]
        assert len(durations) == len(ex.input) == len(ex.meta["phonemes"])
        assert min(durations) >= 0
        assert sum(durations) == ex.meta["frames"] == audio.log_mel(ex.target).shape[-1]


def test_durations_follow_the_speech():
    # slower speech, longer phonemes: the durations come from the audio, not a constant
    slow = text.speak("set an alarm for seven thirty", "slow", variant="m3", rate=100)
    fast = text.speak("set an alarm for seven thirty", "fast", variant="m3", rate=300)
    assert slow.phonemes == fast.phonemes
    assert slow.bounds[-1] == len(slow.wave) and fast.bounds[-1] == len(fast.wave)
    assert np.all(np.diff(slow.bounds) > 0)
    assert sum(np.diff(slow.bounds)) > 2 * sum(np.diff(fast.bounds))


def test_frame_durations_round_boundaries_to_frames():
    # 1000 samples = 4 frames (centred: 1 + 1000 // 256); boundaries at 0, 300, 700 and the end
    assert frame_durations([0, 300, 700, 1000], 1000) == [1, 2, 1]
    assert frame_durations([0, 10, 20, 1000], 1000) == [0, 0, 4]  # a very short phoneme gets no frame


def test_phoneme_ids_index_the_symbol_table(built):
    for ex in examples(built[0]):
        ids = ex.input.tolist()
        assert all(0 < i < len(text.SYMBOLS) for i in ids)
        assert text.decode(ids) == ex.meta["phonemes"]
    assert len(set(text.SYMBOLS)) == len(text.SYMBOLS) and text.SYMBOLS[text.PAD_ID] == text.PAD


def test_test_sentences_are_never_trained_on(built):
    corpus = built[0]
    train = {ex.meta["text"] for ex in corpus.train}
    for split in corpus.tests.values():
        assert not train & {ex.meta["text"] for ex in split}
    train_pool, test_pool = sentences.split_sentences()
    assert len(train_pool) + len(test_pool) > 300 and len(test_pool) > 50
    assert not set(train_pool) & set(test_pool)
    assert train <= set(train_pool)


def test_held_out_speakers_are_never_trained_on(built):
    corpus = built[0]
    assert corpus.info["speakers"]["test-unseen-speakers"] == ["m7"]
    assert "m7" not in corpus.info["speakers"]["train"]


def test_normalisation():
    assert text.normalize("  Café — “Done”  (now)! ", "u") == "cafe - done now !"
    assert text.normalize("It’s 7 o'clock.", "u") == "it's 7 o'clock."


@pytest.mark.parametrize("raw, message", [
    ("", "utterance u1: empty text"),
    ("   ", "utterance u1: empty text"),
    ('"()"', "utterance u1: empty text after normalisation (was '\"()\"')"),
    ("turn on & off", "utterance u1: character '&' (U+0026) is outside the text table "
                      "(a-z, 0-9, space and ' . , ; : ! ? -)"),
    ("set 50% volume", "utterance u1: character '%' (U+0025) is outside the text table "
                       "(a-z, 0-9, space and ' . , ; : ! ? -)"),
])
def test_bad_text_is_one_line(raw, message):
    with pytest.raises(DataError) as caught:
        text.phonemize(raw, "u1")
    assert str(caught.value) == message


def test_phoneme_outside_the_table_is_one_line():
    with pytest.raises(DataError) as caught:
        text.encode(["h", "'aI", "xx"], "u2")
    assert str(caught.value) == "utterance u2: phoneme 'xx' is outside the symbol table kdbench-tts-text-1"


def test_unknown_speaker_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"unknown eSpeak NG variant\(s\) nosuch;"):
        EspeakSentences(EspeakSentences.Options(speakers=["m1", "nosuch"]), cache_dir=tmp_path).load()


# --- LJSpeech layout ---------------------------------------------------------------------

LJ_LINES = [
    ("LJ001-0001", "Turn on the light.", "Turn on the light."),
    ("LJ001-0002", "It's 7 o'clock", "It's seven o'clock"),
    ("LJ001-0003", "Dr. Müller (aged 40)", "Doctor Müller, aged forty"),
]


def write_ljspeech(root, lines=LJ_LINES):
    """A tiny corpus in the LJSpeech layout: 22.05 kHz 16-bit WAVs, as LJSpeech ships."""
    (root / "wavs").mkdir(parents=True)
    for uid, raw, normalized in lines:
        wave, rate = espeak.synthesize(normalized, variant="f1")
        sf.write(root / "wavs" / f"{uid}.wav", wave, rate, subtype="PCM_16")
    (root / "metadata.csv").write_text("".join(f"{u}|{r}|{n}\n" for u, r, n in lines), encoding="utf-8")
    return root


def test_ljspeech_layout_loads(tmp_path):
    root = write_ljspeech(tmp_path / "LJSpeech-1.1")
    corpus = LJSpeech(LJSpeech.Options(root=root, test_utterances=1)).load()
    assert [e.id for e in corpus.train] == ["LJ001-0001", "LJ001-0002"]
    assert [e.id for e in corpus.tests["test"]] == ["LJ001-0003"]
    assert corpus.info["durations"] is False
    for ex, (uid, _, normalized) in zip(examples(corpus), LJ_LINES):
        source, rate = sf.read(root / "wavs" / f"{uid}.wav")
        assert rate == 22050
        assert isinstance(ex.target, np.ndarray) and ex.target.dtype == np.float32
        assert abs(len(ex.target) - len(source) * 16000 / 22050) <= 1
        assert ex.meta["text"] == text.normalize(normalized, uid)  # the normalized column
        assert "durations" not in ex.meta and ex.meta["speaker"] == "LJ"
        assert ex.meta["frames"] == audio.frame_count(len(ex.target))
        assert text.decode(ex.input.tolist()) == ex.meta["phonemes"] == text.phonemize(normalized, uid)
    assert corpus.tests["test"][0].meta["text"] == "doctor muller, aged forty"
    again = LJSpeech(LJSpeech.Options(root=root, test_utterances=1)).load()
    assert again.fingerprint == corpus.fingerprint


def test_ljspeech_bad_inputs_are_one_line(tmp_path):
    with pytest.raises(DataError, match=r"^LJSpeech metadata not found: .*metadata.csv \(expected"):
        LJSpeech(LJSpeech.Options(root=tmp_path)).load()
    root = write_ljspeech(tmp_path / "lj", [*LJ_LINES[:2], ("LJ009-0009", "Fish & chips", "Fish & chips")])
    with pytest.raises(DataError) as caught:
        LJSpeech(LJSpeech.Options(root=root, test_utterances=1)).load()
    assert str(caught.value) == (f"{root / 'metadata.csv'}:3: utterance LJ009-0009: character '&' (U+0026) is "
                                 "outside the text table (a-z, 0-9, space and ' . , ; : ! ? -)")
    # every line's text is checked before any audio is read: fix the text to reach the audio
    (root / "metadata.csv").write_text((root / "metadata.csv").read_text().replace("&", "and"))
    (root / "wavs" / "LJ001-0002.wav").unlink()
    with pytest.raises(DataError, match=r"^utterance LJ001-0002: audio file not found: .*LJ001-0002.wav$"):
        LJSpeech(LJSpeech.Options(root=root, test_utterances=1)).load()
    (root / "metadata.csv").write_text("LJ001-0001 Turn on the light\n")
    with pytest.raises(DataError, match=r"metadata.csv:1: expected 'id\|text\|normalized text', got 1 field"):
        LJSpeech(LJSpeech.Options(root=root, test_utterances=1)).load()


def test_conformance_kit(tmp_path):
    from kdbench.testing import check_dataset

    check_dataset("synth-sentences", {"train_utterances": 6, "test_utterances": 3}, cache_dir=tmp_path, plugin="tts")
