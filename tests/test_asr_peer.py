"""The ASR plugin's pretrained peer, ``pocketsphinx`` (CMU PocketSphinx's en-us model shipped in
its wheel, a word loop of the task's words), as a ``references:`` row on real FSDD speech: its
transcripts reach the leaderboard through the task's own decoding, it is measured on the targets
that run a model as it is and skipped on the others, its size is its files on disk, and bad
input (a missing model folder, one for another sample rate, a word its dictionary lacks, the
peer listed as a teacher) is one line each."""

import json
import shutil

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("pocketsphinx")

from conftest import tiny_suite, write_suite  # noqa: E402
from kdbench.cli import main  # noqa: E402
from kdbench.errors import DataError  # noqa: E402
from kdbench.interfaces import ModelSpec  # noqa: E402
from kdbench.plugins import get_registry  # noqa: E402
from kdbench_asr import pocketsphinx  # noqa: E402
from kdbench_asr.data.fsdd import FsddConnectedDigits  # noqa: E402
from kdbench_asr.references import PocketSphinx  # noqa: E402
from kdbench_asr.task import CtcAsr  # noqa: E402
from kdbench_asr.text import normalize  # noqa: E402

DIGITS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


@pytest.fixture(scope="module")
def corpus(fsdd_root, shared_cache):
    options = FsddConnectedDigits.Options(root=fsdd_root, held_out_speakers=["theo"], train_utterances=16,
                                          test_utterances=8, max_digits=3)
    return FsddConnectedDigits(options, cache_dir=shared_cache).load()


@pytest.fixture(scope="module")
def task(corpus):
    task = CtcAsr(CtcAsr.Options())
    task.setup(corpus)
    return task


def peer(corpus, task, **options):
    spec = ModelSpec(input_dim=24, output_dim=task.output_dim(), extras=dict(corpus.info))
    return PocketSphinx(PocketSphinx.Options(**options), model_spec=spec, corpus=corpus, task=task)


def test_the_task_reads_back_exactly_what_pocketsphinx_heard(corpus, task):
    model = peer(corpus, task)
    examples = corpus.tests["test-unseen"]
    batch = task.collate(examples)
    with torch.inference_mode():
        predicted = task.predict(model(batch.inputs, batch.input_lengths))
    heard = [model.recognizer.transcribe(pocketsphinx.pcm(e.input.numpy(), 8000, 0.1)) for e in examples]
    assert predicted == heard  # through the CTC frames and greedy decoding: doubled letters ("three") too
    assert all(set(p.split()) <= DIGITS for p in predicted)  # the word loop's words only
    words = [w for e in examples for w in normalize(e.target).split()]
    right = sum(p == normalize(e.target) for p, e in zip(predicted, examples))
    # measured: 7 of 8 of theo's utterances right (5.6% WER); a model hearing noise gets none
    assert right >= 5, (predicted, [e.target for e in examples], len(words))


def test_a_word_its_dictionary_lacks_is_one_line_naming_it_and_the_file(corpus, task, tmp_path):
    shipped = pocketsphinx.shipped_dictionary()
    lines = [line for line in shipped.read_text().splitlines() if line.split(" ")[0] in DIGITS - {"seven"}]
    small = tmp_path / "digits.dict"
    small.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        peer(corpus, task, dictionary=small)
    message = str(caught.value)
    assert "'seven'" in message and str(small) in message and "\n" not in message
    assert "cannot cover" in message


def _suite(fsdd_root, **overrides):
    return tiny_suite(fsdd_root, teachers=[], losses=["ctc"], references=[{"name": "pocketsphinx"}], **overrides)


def test_the_peer_row_on_the_targets_that_can_run_it(fsdd_root, shared_cache, tmp_path):
    metrics = ["wer", "cer", "params", "size", "flops", {"name": "cold-start", "options": {"repeats": 2}},
               {"name": "latency", "options": {"utterances": 2, "warmup": 1, "runs": 4, "min_seconds": 0}}]
    path = write_suite(tmp_path / "peer.yaml", _suite(fsdd_root, metrics=metrics,
                                                       targets=["cpu", "cpu-1thread", "cpu-int8", "onnxruntime"]))
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--no-tracking"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "r" / "tiny" / "rows.csv")
    ours = rows[rows["model"] == "pocketsphinx"].set_index("target")
    assert (ours["role"] == "reference").all()
    assert list(ours.loc[["cpu", "cpu-1thread"], "status"]) == ["ok", "ok"]
    for target in ("cpu-int8", "onnxruntime"):  # they convert a PyTorch network: nothing to convert
        assert ours.loc[target, "status"] == "skipped"
        assert ours.loc[target, "error"].startswith("PocketSphinx runs outside PyTorch")
        # the terminal says the peer was skipped there, not the target (the student ran on it)
        assert f"skipped pocketsphinx @ {target}: PocketSphinx runs outside PyTorch" in result.output
        assert f"skipped target {target}" not in result.output
    student = rows[rows["model"] == "gru-ctc"].set_index("target")
    assert (student["status"] == "ok").all()  # the student is measured on all four as before
    row = ours.loc["cpu"]
    # the same utterances as every model, scored by the task's WER
    assert row["test-unseen/wer"] < 30.0 < student.loc["cpu", "test-unseen/wer"]
    assert row["test-unseen/wer"] == ours.loc["cpu-1thread", "test-unseen/wer"]
    # size: the files PocketSphinx loads, the acoustic model folder and the dictionary
    files = [*pocketsphinx.shipped_acoustic_model().iterdir(), pocketsphinx.shipped_dictionary()]
    assert row["size_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 1e6)
    assert row["latency_p50_ms"] > 0 and row["rtf"] > 0 and row["cold_start_ms"] > 0
    # PyTorch sees neither its parameters nor its FLOPs: not reported, rather than reported as 0
    assert pd.isna(row["gflop_per_audio_s"]) and student.loc["cpu", "gflop_per_audio_s"] > 0
    board = json.loads((tmp_path / "r" / "tiny" / "leaderboard.json").read_text())
    assert "pocketsphinx" in json.dumps(board)


@pytest.fixture
def model_at_8k(tmp_path):
    """The shipped acoustic model's files, its feat.params saying it was trained on 8 kHz audio."""
    folder = tmp_path / "en-us-8k"
    shutil.copytree(pocketsphinx.shipped_acoustic_model(), folder)
    params = (folder / "feat.params").read_text().replace("-upperf 6800", "-upperf 3500")
    (folder / "feat.params").write_text(params + "-samprate 8000\n")
    return folder


@pytest.mark.parametrize("case", ["missing", "8 kHz model", "sample rate below the model's", "as a teacher"])
def test_bad_peer_input_is_one_line_before_anything_trains(case, fsdd_root, tmp_path, model_at_8k):
    reference = {"name": "pocketsphinx"}
    suite = _suite(fsdd_root)
    if case == "missing":
        reference["options"] = {"model_dir": str(tmp_path / "nowhere")}
        says = ("references[0].options.model_dir", str(tmp_path / "nowhere"), "no such folder")
    elif case == "8 kHz model":
        reference["options"] = {"model_dir": str(model_at_8k)}
        says = ("references[0].options.model_dir", "for 8000 Hz audio", "set sample_rate: 8000")
    elif case == "sample rate below the model's":
        reference["options"] = {"sample_rate": 8000}
        says = ("references[0].options.model_dir", "-upperf 6800 Hz", "8000 Hz")
    else:
        suite["teachers"] = [reference]
        says = ("teachers[0]", "list it under references:")
    suite["references"] = [] if case == "as a teacher" else [reference]
    path = write_suite(tmp_path / "bad.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--no-tracking", "--results-dir", str(tmp_path / "r"),
                                       "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert str(path) in line and all(s in line for s in says), line
    assert not (tmp_path / "r").exists()  # refused before anything ran


def test_registered_as_a_teacher_kind_for_references():
    component = get_registry().get("teachers", "pocketsphinx")
    assert component.factory is PocketSphinx and PocketSphinx.external
    assert pocketsphinx.version() in PocketSphinx.version  # another PocketSphinx, another cache key
