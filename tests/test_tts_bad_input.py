"""What bad input gets in the TTS plugin, on the real components (no stubs): one line naming the
utterance (and, for LJSpeech, metadata.csv's line) for text it cannot speak or a recording too
long to synthesize; a bounded output and a row note for a decoder that never stops or a sentence
longer than a model's bound; NaN, silent and tiny predictions scored or left out by MCD as the
NaN policy says, never crashing an evaluation."""

import logging
import math
import pickle
from html import escape

import numpy as np
import pytest
import soundfile as sf
import torch

from kdbench import records
from kdbench.board import from_result, html_page, summary_text
from kdbench.errors import DataError
from kdbench.evaluation import evaluate
from kdbench.interfaces import Evaluation, Example, Measurement, ModelSpec
from kdbench.records import Row, SuiteResult
from kdbench_standard.targets.cpu import CpuTarget
from kdbench_tts import audio, text
from kdbench_tts.conditions import NOTE, CutOff
from kdbench_tts.ljspeech import LJSpeech
from kdbench_tts.metrics import MelCepstralDistortion
from kdbench_tts.models import FastSpeech, Tacotron2Teacher
from kdbench_tts.task import PhonemeIds, Synthesis, SynthesizedMel, griffin_lim
from kdbench_tts.testing import TinySynthesizer, tiny_corpus


def espeak_or_skip():
    pytest.importorskip("espeakng_loader")
    from kdbench_asr import espeak

    ok, reason = espeak.available()
    if not ok:
        pytest.skip(f"eSpeak NG not available: {reason}")


def write_ljspeech(root, lines, seconds=1.0, wavs=None):
    """The LJSpeech layout with a quiet tone per utterance (the text checks never listen to it);
    ``wavs``: the ids that get a file (default all)."""
    (root / "wavs").mkdir(parents=True)
    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(int(22050 * seconds)) / 22050)).astype("float32")
    for uid, _ in lines:
        if wavs is None or uid in wavs:
            sf.write(root / "wavs" / f"{uid}.wav", tone, 22050)
    (root / "metadata.csv").write_text("".join(f"{uid}|{words}\n" for uid, words in lines), encoding="utf-8")
    return root


def lj_error(root, **options) -> str:
    with pytest.raises(DataError) as caught:
        LJSpeech(LJSpeech.Options(root=root, test_utterances=1, **options)).load()
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- 1. empty text -------------------------------------------------------------------------------

@pytest.mark.parametrize("line, reason", [
    ("LJ001-0002|", "empty text"),
    ("LJ001-0002|  |  ", "empty text"),
    ('LJ001-0002|"()"|', "empty text after normalisation (was '\"()\"')"),
    # eSpeak would speak a lone pause for it (an example that is silence)
    ("LJ001-0002|...|...", "no letter or digit to speak after normalisation (was '...')"),
])
def test_an_empty_transcript_names_the_file_line_and_utterance(tmp_path, line, reason):
    # no recording for the bad line: the text is refused before any audio is read or spoken
    root = write_ljspeech(tmp_path / "lj", [("LJ001-0001", "Turn on the light."), ("LJ001-0003", "Stop.")],
                          wavs={"LJ001-0001", "LJ001-0003"})
    lines = (root / "metadata.csv").read_text().splitlines()
    (root / "metadata.csv").write_text("\n".join([lines[0], line, lines[1]]) + "\n")
    assert lj_error(root) == f"{root / 'metadata.csv'}:2: utterance LJ001-0002: {reason}"


def test_punctuation_alone_is_not_read_out_as_its_name():
    # eSpeak reads "!?" as "exclamation ..."; that is not the sentence, so it is refused
    with pytest.raises(DataError) as caught:
        text.normalize("!?", "u")
    assert str(caught.value) == "utterance u: no letter or digit to speak after normalisation (was '!?')"


@pytest.mark.parametrize("ids, message", [
    ([], "utterance bad-0: no phonemes to synthesize"),
    ([[3, 4]], "utterance bad-0: input of shape (1, 2) is not a sequence of phoneme ids"),
    ([3, 0, 5], f"utterance bad-0: phoneme id 0 is outside the symbol table {text.TEXT_VERSION} "
                f"(ids 1..{len(text.SYMBOLS) - 1}; 0 is padding)"),
    ([3, len(text.SYMBOLS)], f"utterance bad-0: phoneme id {len(text.SYMBOLS)} is outside the symbol table "
                             f"{text.TEXT_VERSION} (ids 1..{len(text.SYMBOLS) - 1}; 0 is padding)"),
])
def test_an_example_a_synthesizer_cannot_read_is_named_when_collated(ids, message):
    """A third-party corpus's example: one line instead of an embedding's IndexError or an
    encoder that cannot pack an empty sequence."""
    good = tiny_corpus().train[0]
    bad = Example("bad-0", torch.tensor(ids, dtype=torch.long), good.target, good.meta)
    with pytest.raises(DataError) as caught:
        Synthesis(Synthesis.Options()).collate([good, bad])
    assert str(caught.value) == message


# --- 2. characters outside the table ---------------------------------------------------------------

def test_typography_accents_and_digits_are_normalised_and_spoken():
    espeak_or_skip()
    raw = "Dr. Müller’s “café” — 7 items…"
    assert text.normalize(raw, "u") == "dr. muller's cafe - 7 items..."
    # the digit is read as the number: its phonemes are those of "seven"
    spoken, seven = text.phonemize(raw, "u"), text.phonemize("seven", "u")[:-1]  # without the final pause
    assert any(spoken[i:i + len(seven)] == seven for i in range(len(spoken)))
    assert all(p in text.SYMBOL_IDS for p in spoken)


@pytest.mark.parametrize("raw, char", [("AT&T", "'&' (U+0026)"), ("and/or", "'/' (U+002F)"),
                                       ("*loud*", "'*' (U+002A)"), ("東京 station", "'東' (U+6771)")])
def test_a_character_outside_the_table_is_refused_naming_it(raw, char):
    with pytest.raises(DataError) as caught:
        text.normalize(raw, "u7")
    assert str(caught.value) == (f"utterance u7: character {char} is outside the text table "
                                 "(a-z, 0-9, space and ' . , ; : ! ? -)")


def test_a_character_outside_the_table_in_metadata_names_the_line(tmp_path):
    root = write_ljspeech(tmp_path / "lj", [("LJ001-0001", "Turn on the light."), ("LJ001-0002", "Fish & chips"),
                                            ("LJ001-0003", "Stop.")])
    assert lj_error(root) == (f"{root / 'metadata.csv'}:2: utterance LJ001-0002: character '&' (U+0026) is outside "
                              "the text table (a-z, 0-9, space and ' . , ; : ! ? -)")


# --- 3. longer than a model allows ----------------------------------------------------------------

def test_a_recording_longer_than_max_frames_is_refused_at_load(tmp_path):
    espeak_or_skip()
    root = write_ljspeech(tmp_path / "lj", [("LJ001-0001", "Turn on the light."), ("LJ001-0002", "Stop.")],
                          seconds=1.0)
    frames = audio.frame_count(16000)
    assert lj_error(root, max_frames=50) == (
        f"{root / 'metadata.csv'}:1: utterance LJ001-0001 is 1.00 s ({frames} log-mel frames), longer than "
        "max_frames=50 (0.8 s): a model bounded there would only say it cut off; drop the line, or raise "
        "max_frames with the models' bounds (tacotron2 max_decoder_steps, fastspeech max_frames)")
    corpus = LJSpeech(LJSpeech.Options(root=root, test_utterances=1, max_frames=frames)).load()
    assert [e.meta["frames"] for e in corpus.train] == [frames]
    # a limit that only refuses is not part of the data's identity
    default = LJSpeech(LJSpeech.Options(root=root, test_utterances=1)).load()
    assert default.fingerprint == corpus.fingerprint


def test_a_student_whose_durations_overrun_max_frames_is_cut_bounded_and_flagged():
    corpus = tiny_corpus()
    spec = ModelSpec(len(text.SYMBOLS), audio.N_MELS)
    torch.manual_seed(0)
    model = FastSpeech(FastSpeech.Options(dim=16, conv_dim=16, duration_filters=8, max_frames=12),
                              model_spec=spec).eval()
    with torch.no_grad():  # 3 frames per phoneme: up to 4 phonemes fit in 12 frames, longer ones do not
        model.duration_predictor.out.weight.zero_()
        model.duration_predictor.out.bias.fill_(math.log(4.0))
    task = Synthesis(Synthesis.Options())
    tests = corpus.tests["test"]
    assert [len(e.input) for e in tests] == [3, 4, 5, 6]
    result = evaluate(model, PhonemeIds(), task, {"test": tests}, [CutOff()], CpuTarget(CpuTarget.Options(threads=1)))
    predictions = _predict(model, task, tests)
    assert [len(p) for p in predictions] == [9, 12, 12, 12]
    assert [p.cut_off for p in predictions] == [False, False, True, True]
    (m,) = result.measurements
    assert (m.name, m.value, m.coverage) == ("test/cut_off", 50.0, (4, 4))


def _predict(model, task, examples):
    with torch.inference_mode():
        batch = task.collate(examples)
        return task.predict(model(batch.inputs, batch.input_lengths))


# --- 4. a decoder that never stops ----------------------------------------------------------------

TINY_TACOTRON = dict(encoder_dim=16, attention_rnn_dim=16, decoder_rnn_dim=16, prenet_dim=8, attention_hidden_dim=8,
                     attention_location_filters=4, postnet_dim=8, postnet_convolutions=2, max_decoder_steps=30)


@pytest.fixture(scope="module")
def never_stops():
    """An untrained Tacotron2 whose stop token never fires, evaluated by the harness: (result,
    the task's predictions, the test examples)."""
    corpus = tiny_corpus()
    torch.manual_seed(0)
    model = Tacotron2Teacher(Tacotron2Teacher.Options(**TINY_TACOTRON),
                             model_spec=ModelSpec(len(text.SYMBOLS), audio.N_MELS)).eval()
    with torch.no_grad():
        # random weights may fire the stop token by chance; this one never does
        model.net.decoder.gate_layer.weight.zero_()
        model.net.decoder.gate_layer.bias.fill_(-50.0)
    task = Synthesis(Synthesis.Options(listen_iterations=2))
    tests = corpus.tests["test"]
    result = evaluate(model, PhonemeIds(), task, {"test": tests}, [CutOff(), MelCepstralDistortion(
        MelCepstralDistortion.Options())], CpuTarget(CpuTarget.Options(threads=1)))
    return result, _predict(model, task, tests), tests


def test_a_decoder_that_never_stops_gives_bounded_outputs_all_flagged_cut_off(never_stops):
    result, predictions, tests = never_stops
    # the bound: min(max_decoder_steps, max_frames_per_phoneme (25) x phonemes) frames
    assert [len(p) for p in predictions] == [min(30, 25 * len(e.input)) for e in tests] == [30] * len(tests)
    assert all(isinstance(p, SynthesizedMel) and p.cut_off is True for p in predictions)
    # the flag survives a trip to a worker process, and the array reads as a plain one
    again = pickle.loads(pickle.dumps(predictions[0]))
    assert again.cut_off is True and np.array_equal(again, predictions[0])
    assert type(np.asarray(predictions[0])) is np.ndarray
    got = {m.name: m for m in result.measurements}
    cut = got["test/cut_off"]
    assert (cut.value, cut.unit, cut.coverage, cut.kind, cut.warn_above, cut.gated) == \
        (100.0, "%", (4, 4), "condition", 0.0, False)
    # the output is still real speech-shaped output and is scored
    assert got["test/mcd"].coverage == (4, 4) and math.isfinite(got["test/mcd"].value)


def test_the_cut_off_is_a_note_on_the_leaderboard_row(never_stops):
    result, _, _ = never_stops
    board = from_result(_suite_result({"tacotron2": result.measurements}))
    row = board.frame.iloc[0]
    assert row["timing"] == f"{NOTE}: test/cut_off 100.00 % > 0"
    assert row["flag"] == "" and math.isnan(row["rank"])  # a teacher: not ranked, and not flagged either
    summary = summary_text(board)
    assert [line for line in summary.splitlines() if line.startswith("tacotron2")][0].endswith(" *")
    html = html_page(board, "bad input", {})
    assert f'<span class="note" title="{escape(NOTE)}: test/cut_off 100.00 % &gt; 0">⚠</span>' in html


def test_an_unknown_cut_off_unranks_nothing_and_notes_join(never_stops):
    """On a target that drops hidden states (ONNX Runtime) the cut-off is unknown: NaN with
    coverage (0, n), which must not flag the row as a coverage gap; and a row under two
    conditions carries both notes."""
    result, predictions, tests = never_stops
    unknown = CutOff().compute(_evaluation([np.asarray(p) for p in predictions], tests))
    assert math.isnan(unknown[0].value) and unknown[0].coverage == (0, 4)
    unknown[0].name = "test/cut_off"
    mcd = next(m for m in result.measurements if m.name == "test/mcd")
    load = _load(1.5)
    board = from_result(_suite_result({"student-a": [*result.measurements, load],
                                       "student-b": [mcd, unknown[0]]}, role="student"))
    rows = board.frame.set_index("model")
    assert rows.loc["student-b", "flag"] == "" and rows.loc["student-b", "timing"] == ""
    assert rows.loc["student-b", "rank"] == 1 and rows.loc["student-a", "rank"] == 1  # the same MCD
    assert rows.loc["student-a", "timing"] == (f"{NOTE}: test/cut_off 100.00 % > 0; "
                                               "measured under load: contention_cores 1.50 cores > 0.25")


def _load(cores):
    return Measurement("contention_cores", cores, "cores", False, kind="condition", gated=False, warn_above=0.25)


def _evaluation(predictions, examples):
    task = Synthesis(Synthesis.Options())
    return Evaluation("test", list(examples), list(predictions), [task.reference(e) for e in examples], None, None,
                      None)


def _suite_result(models: dict, role: str = "teacher") -> SuiteResult:
    """A SuiteResult whose rows carry exactly the tags the runner logs for these measurements."""
    rows = []
    for i, (model, measurements) in enumerate(models.items()):
        rows.append(Row(role, model, "", "mel", 0, "cpu", "ok", f"key-{model}", started=1000.0 + i,
                        measurements={m.name: m.value for m in measurements},
                        tags={**records.metric_tags(measurements), records.RUN_KIND: "evaluation",
                              records.TARGET_KEY: "tk", records.PRIMARY_METRIC: "test/mcd"}))
    return SuiteResult("bad-input", rows, {}, out_dir=None)


# --- 5. silent or NaN output -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def references():
    task = Synthesis(Synthesis.Options())
    tests = tiny_corpus().tests["test"]
    return tests, [task.reference(e) for e in tests]


def mcd(predictions, examples, references):
    ev = Evaluation("test", list(examples), list(predictions), list(references), None, None, None)
    (m,) = MelCepstralDistortion(MelCepstralDistortion.Options()).compute(ev)
    return m


def test_mcd_leaves_nan_predictions_unscored_with_a_warning_line(references, caplog):
    tests, refs = references
    nan = np.full_like(refs[1], np.nan)
    partly = refs[2].copy()
    partly[3, 7] = np.nan
    infinite = np.full_like(refs[3], -np.inf)
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        m = mcd([refs[0], nan, partly, infinite], tests, refs)
    assert m.coverage == (1, 4)
    assert m.value == pytest.approx(0.0)  # the one scored utterance, not a mean with NaN counted as 0
    assert m.weights == [1.0, 0.0, 0.0, 0.0] and m.samples[1:] == [0.0, 0.0, 0.0]
    assert [r.getMessage() for r in caplog.records] == [
        "mcd on test: 3 of 4 utterances not scored: prediction has NaN or infinite values"]


def test_mcd_of_all_nan_predictions_is_nan_with_no_coverage(references, caplog):
    tests, refs = references
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        m = mcd([np.full_like(r, np.nan) for r in refs], tests, refs)
    assert math.isnan(m.value) and m.coverage == (0, 4) and m.samples is None
    assert len(caplog.records) == 1


def test_mcd_scores_silence_and_a_frame_or_two(references, caplog):
    """A model that says nothing, or almost nothing, is scored (badly), not dropped from the mean."""
    tests, refs = references
    silent = [np.full_like(r, math.log(audio.LOG_CLAMP)) for r in refs]
    tiny = [refs[0][:1], refs[1][:2], refs[2][:1], refs[3][:2]]
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        quiet, short, exact = mcd(silent, tests, refs), mcd(tiny, tests, refs), mcd(refs, tests, refs)
    assert not caplog.records
    assert quiet.coverage == short.coverage == (4, 4)
    assert exact.value == pytest.approx(0.0)
    assert math.isfinite(quiet.value) and quiet.value > 1.0
    assert math.isfinite(short.value) and short.value > 0.0


def test_nan_output_is_heard_as_nan_saved_as_silence_and_the_evaluation_finishes(tmp_path, caplog):
    corpus = tiny_corpus()
    spec = ModelSpec(len(text.SYMBOLS), audio.N_MELS)
    torch.manual_seed(0)
    model = TinySynthesizer(spec, hidden=8, frames=6).eval()
    with torch.no_grad():
        model.head.bias.fill_(math.nan)  # a diverged model: NaN everywhere
    task = Synthesis(Synthesis.Options(listen_iterations=2))
    wave = griffin_lim(torch.full((10, audio.N_MELS), math.nan))
    assert wave.shape == (9 * audio.HOP_LENGTH,) and bool(torch.isnan(wave).all())
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        result = evaluate(model, PhonemeIds(), task, corpus.tests, [MelCepstralDistortion(
            MelCepstralDistortion.Options()), CutOff()], CpuTarget(CpuTarget.Options(threads=1)),
            audio_dir=tmp_path, keep_audio=2)
    got = {m.name: m for m in result.measurements}
    assert math.isnan(got["test/mcd"].value) and got["test/mcd"].coverage == (0, 4)
    # TinySynthesizer has no length bound and says nothing about one: unknown, not "never cut off"
    assert math.isnan(got["test/cut_off"].value) and got["test/cut_off"].coverage == (0, 4)
    assert "mcd on test: 4 of 4 utterances not scored: prediction has NaN or infinite values" in caplog.text
    assert len(result.audio) == 2
    for path in result.audio:
        clip, rate = sf.read(path, dtype="int16")
        assert rate == audio.SAMPLE_RATE and len(clip) > 0 and not clip.any()  # silence, not full-scale clicks
