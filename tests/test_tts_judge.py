"""The TTS plugin's ASR judge (PocketSphinx, offline) on real eSpeak NG recordings of the
synthetic corpus: it understands them far better than noise or silence, its per-utterance samples
reproduce its value, its transcripts do not depend on order or sample rate, what it cannot judge
is left out of coverage, and a word outside its dictionary is one line naming the word."""

import math
import os

import numpy as np
import pytest

from kdbench.errors import DataError
from kdbench.interfaces import Evaluation, Example

pytest.importorskip("pocketsphinx")
pytest.importorskip("espeakng_loader")
from kdbench_asr import espeak  # noqa: E402
from kdbench_tts import audio  # noqa: E402
from kdbench_tts.data import EspeakSentences  # noqa: E402
from kdbench_tts.judge import AsrJudge  # noqa: E402

if not espeak.available()[0]:
    pytest.skip(f"eSpeak NG not available: {espeak.available()[1]}", allow_module_level=True)

RATE = audio.SAMPLE_RATE


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Eight test sentences spoken by the two male voices (the judge hears them best: ~40% WER
    against ~60% for the female voices on 50 test utterances)."""
    cache = os.environ.get("KDBENCH_CACHE_DIR") or tmp_path_factory.mktemp("tts-judge")
    options = EspeakSentences.Options(train_utterances=1, test_utterances=8, speakers=["m1", "m3"])
    return EspeakSentences(options, cache_dir=cache).load().tests["test"]


@pytest.fixture(scope="module")
def judge():
    return AsrJudge(AsrJudge.Options())  # one decoder for the module, as one metric instance in a run


def evaluation(examples, clips):
    """What evaluate() gives a split metric: the examples and how each prediction sounds."""
    return Evaluation("test", list(examples), [None] * len(examples), [None] * len(examples), None, None, None,
                      audio=lambda i: clips[i])


def judged(judge, examples, clips):
    return {m.name: m for m in judge.compute(evaluation(examples, clips))}


@pytest.fixture(scope="module")
def on_recordings(judge, recordings):
    return judged(judge, recordings, [(e.target, RATE) for e in recordings])


def test_the_judge_understands_the_recordings(on_recordings, recordings):
    cer, wer = on_recordings["judge_cer"], on_recordings["judge_wer"]
    # measured here: CER 14%, WER 19% (noise: 89%, 95%); 32% and 47% on 50 utterances of all four voices
    assert cer.value < 35.0 and wer.value < 60.0, (cer.value, wer.value)
    assert cer.coverage == wer.coverage == (len(recordings), len(recordings))
    assert cer.unit == "%" and cer.higher_is_better is False and cer.kind == "quality"
    assert cer.headline and not wer.headline and cer.tolerance == {"abs": 2.0}


def test_noise_and_silence_score_much_worse(judge, recordings, on_recordings):
    rng = np.random.default_rng(0)
    noise = [(0.3 * rng.standard_normal(len(e.target)).astype(np.float32), RATE) for e in recordings]
    on_noise = judged(judge, recordings, noise)
    # the word loop must emit words, so noise is heard as some; they are mostly wrong
    assert on_noise["judge_cer"].value > 70.0 and on_noise["judge_wer"].value > 80.0
    assert on_noise["judge_cer"].value > on_recordings["judge_cer"].value + 35.0
    silence = [(np.zeros(len(e.target), np.float32), RATE) for e in recordings[:4]]
    silence[-1] = (np.zeros(0, np.float32), RATE)  # a synthesizer that rendered nothing
    on_silence = judged(judge, recordings[:4], silence)
    # nothing heard is every reference unit deleted, and still scored (coverage full)
    assert on_silence["judge_cer"].value == on_silence["judge_wer"].value == 100.0
    assert on_silence["judge_cer"].coverage == (4, 4)


def test_samples_and_weights_reproduce_the_value(on_recordings, recordings):
    words = [len(e.meta["text"].split()) for e in recordings]
    weights = {"judge_cer": [len(e.meta["text"]) for e in recordings], "judge_wer": words}
    for name, m in on_recordings.items():
        assert m.weights == weights[name]  # reference characters (spaces included) or words
        assert len(m.samples) == len(recordings) and all(0.0 <= s for s in m.samples)
        assert m.value == pytest.approx(np.average(m.samples, weights=m.weights), abs=1e-9)
    assert any(s > 0 for s in on_recordings["judge_wer"].samples)  # an average, not a constant


def test_transcripts_depend_on_neither_order_nor_sample_rate(judge, recordings, on_recordings):
    import torch
    import torchaudio

    # a fresh judge hearing them backwards: PocketSphinx's feature extractor keeps state from one
    # clip to the next, and the first clip a decoder heard was transcribed differently before
    # the judge reset it per clip
    reversed_ = recordings[::-1]
    again = judged(AsrJudge(AsrJudge.Options()), reversed_, [(e.target, RATE) for e in reversed_])
    assert again["judge_cer"].samples[::-1] == on_recordings["judge_cer"].samples
    # at 22.05 kHz a clip is resampled back to 16 kHz before decoding: nearly the same audio
    four = recordings[:4]
    up = [(torchaudio.functional.resample(torch.from_numpy(e.target), RATE, 22050).numpy(), 22050) for e in four]
    native = judged(judge, four, [(e.target, RATE) for e in four])["judge_cer"].value
    assert abs(judged(judge, four, up)["judge_cer"].value - native) < 10.0


def test_what_cannot_be_judged_is_left_out(judge, recordings):
    clips = [(e.target, RATE) for e in recordings[:3]]
    clips[0] = (np.full(len(clips[0][0]), np.nan, np.float32), RATE)  # a NaN log-mel, heard as NaN
    ms = judged(judge, recordings[:3], clips)
    for m in ms.values():
        assert m.coverage == (2, 3) and m.weights[0] == 0.0 and not math.isnan(m.value)
    untexted = [Example(e.id, e.input, e.target, {k: v for k, v in e.meta.items() if k != "text"})
                for e in recordings[:2]]
    for m in judged(judge, untexted, [(e.target, RATE) for e in untexted]).values():
        assert math.isnan(m.value) and m.coverage == (0, 2) and m.samples is None
    silent_task = Evaluation("test", list(recordings[:2]), [None] * 2, [None] * 2, None, None, None)  # no audio
    assert all(math.isnan(m.value) and m.coverage == (0, 2) for m in judge.compute(silent_task))
    nothing = Evaluation("test", [], [], [], None, None, None, audio=lambda i: None)
    assert all(math.isnan(m.value) and m.coverage == (0, 0) for m in judge.compute(nothing))


def test_a_word_outside_the_dictionary_is_one_line_naming_it(judge, recordings):
    e = recordings[0]
    odd = Example(e.id, e.input, e.target, {**e.meta, "text": e.meta["text"] + " zqxjv"})
    with pytest.raises(DataError, match="'zqxjv' not in PocketSphinx's en-us dictionary") as caught:
        judge.compute(evaluation([odd], [(e.target, RATE)]))
    assert "\n" not in str(caught.value)


def test_config_and_cache_key_name_the_judge(judge):
    import importlib.metadata

    from kdbench.plugins import build_registry

    version = importlib.metadata.version("pocketsphinx")
    config = judge.config()
    assert config["judge"] == f"pocketsphinx {version} en-us"
    assert (config["grammar"], config["padding_s"], config["sample_rate"]) == ("word-loop", 0.1, 16000)
    registered = build_registry().get("metrics", "judge")
    assert registered.factory is AsrJudge
    assert version in AsrJudge.version  # Resolved.config() carries it: another judge, another cache key


def test_the_open_vocabulary_grammar_hears_speech_better_than_noise(recordings):
    # one clip each: the language model's search is slow (RTF ~1-3 on a loaded 2-core machine)
    lm = AsrJudge(AsrJudge.Options(grammar="lm"))
    assert lm.config()["grammar"] == "lm" and "wip" not in lm.config()["decoder"]
    one = recordings[1:2]
    speech = judged(lm, one, [(one[0].target, RATE)])["judge_cer"].value
    noise = judged(lm, one, [(0.3 * np.random.default_rng(1).standard_normal(RATE // 2).astype(np.float32), RATE)])
    # measured: "switch off the fan" heard as "we told the fan" (CER ~40%), noise as nothing or "if"
    assert speech < 70.0 and noise["judge_cer"].value > speech + 20.0, (speech, noise["judge_cer"].value)
