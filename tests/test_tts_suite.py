"""A tiny TTS suite through the real runner and MLflow: Tacotron2 teacher, FastSpeech students
trained on the recordings and on the teacher's sequence-level outputs, MCD, speed per second
synthesized, and audio kept to listen to."""

import json

import pandas as pd
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import write_suite
from kdbench.cli import main


def tts_suite(**overrides) -> dict:
    suite = {
        "name": "tiny-tts", "task": "tts",
        "dataset": {"name": "synth-sentences", "options": {"train_utterances": 16, "test_utterances": 4,
                                                            "speakers": ["m1"]}},
        "frontend": "phonemes",
        "teachers": [{"name": "tacotron2", "label": "tacotron2-tiny",
                      "options": {"encoder_dim": 32, "attention_rnn_dim": 32, "decoder_rnn_dim": 32, "prenet_dim": 16,
                                  "attention_hidden_dim": 16, "postnet_dim": 16, "postnet_convolutions": 2,
                                  "max_decoder_steps": 120},
                      "training": {"steps": 3, "batch_size": 4}}],
        "students": [{"name": "fastspeech", "label": "fastspeech-tiny",
                      "options": {"dim": 16, "conv_dim": 16, "duration_filters": 8, "max_frames": 200}}],
        "losses": ["mel", "mel-sequence-kd"],
        "training": {"steps": 3, "batch_size": 4},
        "metrics": ["mcd", "params", {"name": "latency", "options": {"utterances": 2, "warmup": 1, "runs": 4,
                                                                     "min_seconds": 0}}],
        "targets": ["cpu"],
    }
    suite.update(overrides)
    return suite


def test_tiny_tts_suite_end_to_end(tmp_path, shared_cache):
    path = write_suite(tmp_path / "tts.yaml", tts_suite())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--tracking-uri", uri], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    board = pd.read_csv(tmp_path / "r" / "tiny-tts" / "leaderboard.csv")
    assert sorted(board["loss"]) == ["mel", "mel", "mel-sequence-kd"]
    assert board["test/mcd"].notna().all() and (board["test/mcd"] > 0).all()
    # one teacher pass caches its free-running mels and durations for the sequence-KD student
    assert "teacher forward passes 1" in result.output
    # speed per second synthesized: the real-time factor is over the seconds each model produced
    assert board["rtf"].notna().all() and (board["rtf"] > 0).all()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kdbench-tiny-tts")
    kd = client.search_runs([exp.experiment_id], "tags.`kdbench.role` = 'evaluation' and "
                            "tags.`kdbench.loss` = 'mel-sequence-kd'")[0]
    assert [a.path for a in client.list_artifacts(kd.info.run_id, "audio/test")][0].endswith(".wav")
    # each value carries how it was measured (the metric's config()), so two MCD recipes never mix
    meta = json.loads(next(v for k, v in kd.data.tags.items() if k.endswith("test/mcd.meta")))
    assert meta["method"]["implementation"].startswith("dct-ii log-mel cepstra")
    html = (tmp_path / "r" / "tiny-tts" / "leaderboard.html").read_text()
    assert html.count("<audio controls") == 3
