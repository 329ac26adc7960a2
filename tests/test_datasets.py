"""Dataset components of kdbench_asr, exercised on real data (FSDD, eSpeak NG) and
small files written here (manifests, a fake LibriSpeech tree)."""

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from kdbench.errors import DataError
from kdbench_asr.data import EspeakDigitsCommands, FsddConnectedDigits, JsonlManifest, LibriSpeech
from kdbench_asr.data import fsdd as fsdd_module
from kdbench_asr.data.audio import read_audio, write_audio

DIGIT_WORDS = fsdd_module.DIGITS


def tone(seconds, sr, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def assert_waveforms(examples, sr):
    for ex in examples:
        assert ex.input.dtype == torch.float32 and ex.input.ndim == 1 and len(ex.input) > 0
        assert ex.meta["duration"] == pytest.approx(len(ex.input) / sr, abs=1e-3)
        assert isinstance(ex.meta["speaker"], str)


# --- FSDD -----------------------------------------------------------------------------

SMALL = dict(train_utterances=40, test_utterances=12, held_out_speakers=["theo"])


def fsdd(cache_dir, **options):
    return FsddConnectedDigits(FsddConnectedDigits.Options(**{**SMALL, **options}), cache_dir=cache_dir)


@pytest.fixture(scope="module")
def fsdd_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fsdd-cache")


@pytest.fixture(scope="module")
def fsdd_corpus(fsdd_root, fsdd_cache):
    return fsdd(fsdd_cache, root=fsdd_root).load()


def test_fsdd_splits_and_info(fsdd_corpus):
    c = fsdd_corpus
    assert len(c.train) == 40
    assert {k: len(v) for k, v in c.tests.items()} == {"test-seen": 12, "test-unseen": 12}
    assert c.info["sample_rate"] == 8000 and c.info["modality"] == "audio" and c.info["task"] == "asr"
    ids = [ex.id for exs in [c.train, *c.tests.values()] for ex in exs]
    assert len(ids) == len(set(ids))
    assert_waveforms(c.train + c.tests["test-seen"], 8000)


def test_fsdd_held_out_speaker_only_in_unseen_split(fsdd_corpus):
    c = fsdd_corpus
    assert "theo" not in {ex.meta["speaker"] for ex in c.train + c.tests["test-seen"]}
    assert {ex.meta["speaker"] for ex in c.tests["test-unseen"]} == {"theo"}
    assert "theo" not in c.info["speakers"]["train"]


def test_fsdd_takes_policy(fsdd_corpus):
    c = fsdd_corpus
    assert all(t >= 5 for ex in c.train for t in ex.meta["takes"])
    assert all(t < 5 for ex in c.tests["test-seen"] for t in ex.meta["takes"])
    unseen_takes = {t for ex in c.tests["test-unseen"] for t in ex.meta["takes"]}
    assert min(unseen_takes) < 5 <= max(unseen_takes)  # held-out speakers use all their takes


def test_fsdd_transcripts_match_digits(fsdd_corpus):
    for ex in fsdd_corpus.train + fsdd_corpus.tests["test-unseen"]:
        words = ex.target.split()
        assert 2 <= len(words) <= 6
        assert words == [DIGIT_WORDS[int(d)] for d in ex.meta["digits"]]
        assert len(ex.meta["takes"]) == len(words)


def test_fsdd_single_test_split_without_held_out_speakers(fsdd_root, tmp_path):
    c = fsdd(tmp_path, root=fsdd_root, held_out_speakers=[], train_utterances=30, test_utterances=3).load()
    assert list(c.tests) == ["test"]
    assert c.info["speakers"]["train"] == ["george", "jackson", "nicolas", "theo", "yweweler"]


def test_fsdd_deterministic(fsdd_root, fsdd_corpus, tmp_path):
    again = fsdd(tmp_path / "other-cache", root=fsdd_root).load()
    assert again.fingerprint == fsdd_corpus.fingerprint
    assert all(a.target == b.target and torch.equal(a.input, b.input) for a, b in zip(again.train, fsdd_corpus.train))
    other_seed = fsdd(tmp_path / "other-cache", root=fsdd_root, seed=1).load()
    assert other_seed.fingerprint != fsdd_corpus.fingerprint


def test_fsdd_cache_reused_without_reading_sources(fsdd_root, fsdd_corpus, fsdd_cache, monkeypatch):
    assert len(list((fsdd_cache / "datasets").glob("fsdd-*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("a cached corpus must not read the recordings again")

    monkeypatch.setattr(fsdd_module, "read_audio", fail)
    again = fsdd(fsdd_cache, root=fsdd_root).load()
    assert again.fingerprint == fsdd_corpus.fingerprint
    assert [ex.target for ex in again.train] == [ex.target for ex in fsdd_corpus.train]
    assert all(torch.equal(a.input, b.input) for a, b in zip(again.tests["test-unseen"], fsdd_corpus.tests["test-unseen"]))


def test_fsdd_root_from_env(fsdd_root, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_FSDD_ROOT", str(fsdd_root))
    assert len(fsdd(tmp_path, train_utterances=2, test_utterances=1).load().train) == 2


def test_fsdd_missing_root(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        fsdd(tmp_path, root=tmp_path / "nowhere").load()
    monkeypatch.delenv("KDBENCH_FSDD_ROOT", raising=False)
    with pytest.raises(DataError, match="KDBENCH_FSDD_ROOT"):
        fsdd(tmp_path).load()


def test_fsdd_download_path(fsdd_root, tmp_path, monkeypatch):
    """The real download code (urllib, unzip, atomic rename, cache) against a GitHub-style
    archive of the committed recordings, served on 127.0.0.1."""
    import functools
    import http.server
    import threading
    import zipfile

    served = tmp_path / "served"
    served.mkdir()
    chosen = sorted((fsdd_root / "recordings").glob("*_jackson_*.wav"))
    with zipfile.ZipFile(served / "master.zip", "w") as zf:
        zf.writestr("free-spoken-digit-dataset-master/README.md", "FSDD")
        for wav in chosen:
            zf.write(wav, f"free-spoken-digit-dataset-master/recordings/{wav.name}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(fsdd_module, "ZIP_URL", f"http://127.0.0.1:{server.server_port}/master.zip")
        monkeypatch.delenv("KDBENCH_FSDD_ROOT", raising=False)
        c = fsdd(tmp_path / "cache", download=True, held_out_speakers=[], train_utterances=4, test_utterances=2).load()
    finally:
        server.shutdown()
        server.server_close()
    assert len(c.train) == 4 and c.info["speakers"]["test"] == ["jackson"]
    downloaded = sorted((tmp_path / "cache" / "downloads" / "free-spoken-digit-dataset" / "recordings").iterdir())
    assert [p.name for p in downloaded] == [p.name for p in chosen]
    assert all(p.read_bytes() == (fsdd_root / "recordings" / p.name).read_bytes() for p in downloaded)


def test_fsdd_unknown_speaker(fsdd_root, tmp_path):
    with pytest.raises(DataError, match="nobody.*available: george, jackson"):
        fsdd(tmp_path, root=fsdd_root, held_out_speakers=["nobody"]).load()


def test_fsdd_options_validated():
    with pytest.raises(pydantic.ValidationError):
        FsddConnectedDigits.Options(no_such_option=1)
    with pytest.raises(pydantic.ValidationError):
        FsddConnectedDigits.Options(min_digits=4, max_digits=3)


# --- eSpeak NG synthetic corpus -------------------------------------------------------

@pytest.fixture(scope="module")
def espeak():
    from kdbench_asr import espeak

    ok, reason = espeak.available()
    if not ok:
        pytest.skip(f"eSpeak NG not available: {reason}")
    return espeak


def test_synth_tiny_corpus_with_disjoint_voices(espeak, tmp_path):
    c = EspeakDigitsCommands(EspeakDigitsCommands.Options(train_utterances=6, test_utterances=3),
                             cache_dir=tmp_path).load()
    assert len(c.train) == 6 and list(c.tests) == ["test"] and len(c.tests["test"]) == 3
    assert c.info["sample_rate"] == 16000
    assert_waveforms(c.train + c.tests["test"], 16000)
    assert all(0.1 < ex.meta["duration"] < 4 for ex in c.train + c.tests["test"])
    train_voices = {ex.meta["speaker"] for ex in c.train}
    test_voices = {ex.meta["speaker"] for ex in c.tests["test"]}
    assert train_voices.isdisjoint(test_voices)
    assert set(c.info["variants"]["train"]).isdisjoint(c.info["variants"]["test"])
    assert test_voices <= set(c.info["variants"]["test"])
    assert len(list((tmp_path / "datasets").glob("espeak-*.pt"))) == 1


def test_synth_explicit_test_variants(espeak, tmp_path):
    opts = EspeakDigitsCommands.Options(train_utterances=2, test_utterances=2, test_variants=["m3", "f2"],
                                        include_commands=False)
    c = EspeakDigitsCommands(opts, cache_dir=tmp_path).load()
    assert {ex.meta["speaker"] for ex in c.tests["test"]} <= {"m3", "f2"}
    assert all(w in DIGIT_WORDS for ex in c.train + c.tests["test"] for w in ex.target.split())
    with pytest.raises(DataError, match="nosuchvoice"):
        EspeakDigitsCommands(EspeakDigitsCommands.Options(test_variants=["nosuchvoice"]), cache_dir=tmp_path).load()


def test_synth_corpus_is_identical_on_every_build(espeak, tmp_path):
    """Noisy variants (f2, f5, whisper) once differed with the wall clock, and every voice with
    what the process had synthesized before: two builds, with other synthesis and a second's
    pause between them, must give the same samples and data hash."""
    import time

    opts = EspeakDigitsCommands.Options(train_utterances=6, test_utterances=4, seed=3,
                                        test_variants=["f2", "f5", "whisper", "m3"])
    first = EspeakDigitsCommands(opts, cache_dir=tmp_path / "a").load()
    espeak.synthesize("an unrelated sentence in between", variant="f5")
    time.sleep(1.1)
    second = EspeakDigitsCommands(opts, cache_dir=tmp_path / "b").load()
    assert first.fingerprint == second.fingerprint
    for a, b in zip(first.train + first.tests["test"], second.train + second.tests["test"]):
        assert torch.equal(a.input, b.input)
    assert {ex.meta["speaker"] for ex in first.tests["test"]} & {"f2", "f5", "whisper"}


# --- JSONL manifests ------------------------------------------------------------------

@pytest.fixture
def audio_dir(tmp_path):
    write_audio(tmp_path / "audio" / "a.wav", tone(0.5, 8000), 8000)
    write_audio(tmp_path / "audio" / "b.flac", tone(0.25, 16000), 16000)
    return tmp_path


def write_manifest(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_manifest_loads_and_resamples(audio_dir):
    train = write_manifest(audio_dir / "train.jsonl", [
        {"audio_filepath": "audio/a.wav", "text": "seven three", "duration": 0.5, "speaker": "s1"},
        {"audio_filepath": str(audio_dir / "audio" / "b.flac"), "text": "go", "duration": 0.25},
    ])
    test = write_manifest(audio_dir / "test.jsonl", [{"audio_filepath": "audio/b.flac", "text": "stop"}])
    opts = JsonlManifest.Options(train=train, tests={"dev": test})
    c = JsonlManifest(opts, cache_dir=audio_dir).load()
    assert [ex.target for ex in c.train] == ["seven three", "go"] and list(c.tests) == ["dev"]
    assert c.train[0].meta["duration"] == pytest.approx(0.5, abs=1e-3)
    assert len(c.train[0].input) == 8000  # 8 kHz file resampled to 16 kHz
    assert c.train[0].meta["speaker"] == "s1"
    assert_waveforms(c.train + c.tests["dev"], 16000)
    assert JsonlManifest(opts).load().fingerprint == c.fingerprint


@pytest.mark.parametrize("bad_line, message", [
    ({"audio_filepath": "audio/missing.wav", "text": "one"}, r"train\.jsonl:2: audio file not found: .*missing\.wav"),
    ({"audio_filepath": "audio/a.wav", "text": "  "}, r"train\.jsonl:2: empty"),
    ('{"audio_filepath": "audio/a.wav", "text": ', r"train\.jsonl:2: malformed JSON"),
])
def test_manifest_errors_name_the_line(audio_dir, bad_line, message):
    good = {"audio_filepath": "audio/a.wav", "text": "one"}
    train = write_manifest(audio_dir / "train.jsonl", [good, bad_line, good])
    with pytest.raises(DataError, match=message):
        JsonlManifest(JsonlManifest.Options(train=train, tests={}), cache_dir=audio_dir).load()


def test_read_audio_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_audio(tmp_path / "none.wav", None)
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(DataError, match="cannot read audio file .*junk.wav"):
        read_audio(tmp_path / "junk.wav", None)


# --- LibriSpeech (fake tree in torchaudio's layout) -----------------------------------

def fake_librispeech(root, subset, speakers, utterances=3):
    for spk in speakers:
        chapter = root / "LibriSpeech" / subset / str(spk) / "100"
        lines = []
        for u in range(utterances):
            write_audio(chapter / f"{spk}-100-{u:04d}.flac", tone(0.2 + 0.1 * u, 16000, 200 + 50 * u), 16000)
            lines.append(f"{spk}-100-{u:04d} HELLO WORLD NUMBER {u}")
        (chapter / f"{spk}-100.trans.txt").write_text("\n".join(lines) + "\n")


def test_librispeech_fake_layout(tmp_path):
    fake_librispeech(tmp_path, "train-clean-100", [19, 26])
    fake_librispeech(tmp_path, "test-clean", [61])
    c = LibriSpeech(LibriSpeech.Options(root=tmp_path), cache_dir=tmp_path).load()
    assert len(c.train) == 6 and list(c.tests) == ["test-clean"] and len(c.tests["test-clean"]) == 3
    assert c.train[1].target == "HELLO WORLD NUMBER 1"
    assert c.train[1].id == "train-19-100-0001"
    assert c.info["speakers"] == {"train": ["19", "26"], "test-clean": ["61"]}
    assert c.train[2].meta["duration"] == pytest.approx(0.4, abs=1e-3)
    assert_waveforms(c.train + c.tests["test-clean"], 16000)

    limited = LibriSpeech(LibriSpeech.Options(root=tmp_path, max_train_utterances=2), cache_dir=tmp_path).load()
    assert {ex.meta["speaker"] for ex in limited.train} == {"19", "26"}  # spread over speakers
    assert limited.fingerprint != c.fingerprint

    with pytest.raises(DataError, match="test-other"):
        LibriSpeech(LibriSpeech.Options(root=tmp_path, test_subsets=["test-other"]), cache_dir=tmp_path).load()
