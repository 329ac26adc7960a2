"""The conformance kit on every component kdbench's own plugins register, each on the inputs of
its own plugin's task (ASR components on tone words, enhancement components on noisy/clean
clips): the built-ins hold themselves to what the kit demands of third-party plugins.

The list is read from the registry, not written here, so a new built-in component is checked
without touching this file; OPTIONS only keeps the big ones small."""

import re

import shutil

import pytest
import soundfile as sf

from conftest import BUILTIN_PLUGINS
from kdbench.plugins import build_registry
from kdbench.testing import CHECKS, ConformanceError, kit_inputs, tiny_bench
from kdbench_tts.testing import CLASS_VOCODER_INPUTS

REGISTRY = build_registry()  # the plugin set conftest pins: the built-ins only

#: (kind, name) -> options a suite would give, to keep the check to seconds
OPTIONS = {
    ("students", "gru-ctc"): {"hidden": 16, "layers": 1},
    ("teachers", "gru-ctc"): {"hidden": 16, "layers": 1},
    ("students", "conformer-ctc"): {"d_model": 32, "layers": 1, "ffn_dim": 64, "heads": 2},
    ("teachers", "conformer-ctc"): {"d_model": 32, "layers": 1, "ffn_dim": 64, "heads": 2},
    ("students", "deepspeech-ctc"): {"hidden": 16},
    ("teachers", "deepspeech-ctc"): {"hidden": 16},
    ("students", "convtasnet"): {"enc_num_feats": 16, "msk_num_feats": 8, "msk_num_hidden_feats": 16,
                                 "msk_num_layers": 2, "msk_num_stacks": 1},
    ("teachers", "convtasnet"): {"enc_num_feats": 16, "msk_num_feats": 8, "msk_num_hidden_feats": 16,
                                 "msk_num_layers": 2, "msk_num_stacks": 1},
    ("students", "stft-mask-gru"): {"hidden": 8},
    ("teachers", "stft-mask-gru"): {"hidden": 8, "bidirectional": True},
    ("students", "stft-mask-mlp"): {"hidden": 8},
    ("teachers", "stft-mask-mlp"): {"hidden": 8},
    ("losses", "ctc-kd"): {"alpha": 0.7},
    ("teachers", "tacotron2"): {"encoder_dim": 16, "attention_rnn_dim": 16, "decoder_rnn_dim": 16, "prenet_dim": 8,
                                "attention_hidden_dim": 8, "postnet_dim": 8, "postnet_convolutions": 2,
                                "max_decoder_steps": 40},
    ("students", "fastspeech"): {"dim": 16, "conv_dim": 16, "duration_filters": 8, "max_frames": 60},
    ("teachers", "hifigan-v3"): {"channels": 16, "resblock_kernel_sizes": [3, 5],
                                 "resblock_dilations": [[1, 2], [2, 6]]},
    ("students", "hifigan-student"): {"channels": 8},
    # decoding draws one sample per Python step: the narrowest WaveRNNs, so the kit's decodes take seconds
    ("teachers", "wavernn"): {"n_rnn": 16, "n_fc": 16, "n_res_block": 1, "n_hidden": 8, "n_output": 8},
    ("students", "wavernn-student"): {"n_rnn": 8, "n_fc": 8, "n_res_block": 1, "n_hidden": 8, "n_output": 8},
    ("augmentations", "additive-noise"): {"probability": 1.0},
    # the kit hands a combining teacher stand-in teachers under the names it gives
    ("teachers", "ctc-ensemble"): {"teachers": ["a", "b"]},
    ("frontends", "log-mel"): {"n_mels": 24},
    ("metrics", "latency"): {"utterances": 2, "warmup": 1, "runs": 4, "min_seconds": 0},
    ("metrics", "cold-start"): {"repeats": 1},
    ("metrics", "flops"): {"utterances": 2, "runs": 2, "min_seconds": 0},
    # one scoring process: the pool's spawn is tested in test_enhancement.py
    **{("metrics", m): {"workers": 1} for m in ("si-sdr", "pesq", "stoi", "dnsmos")},
}

#: components the kit rightly fails, and why they are still registered
EXEMPT = {
    # the unprocessed input, listed under `references:` as the row every enhancer must beat;
    # it has nothing to train, so it cannot be a trained teacher or student
    ("students", "passthrough"): r"it has no trainable parameters: a teacher or student must learn",
    ("teachers", "passthrough"): r"it has no trainable parameters: a teacher or student must learn",
    # Griffin-Lim phase recovery, listed under `references:` as the row every neural vocoder must beat
    ("teachers", "griffin-lim"): r"it has no trainable parameters: a teacher or student must learn",
    # the TTS test recordings themselves, listed under `references:` as the ceiling row: a table
    # built from the suite's corpus (which only a reference's factory receives), not a network
    ("teachers", "recorded"): r"the 'recorded' reference needs the corpus",
    # CMU PocketSphinx, pretrained and outside PyTorch, listed under `references:` as the peer
    # row: its word loop is built from the suite's corpus, and the task reads back its transcripts
    ("teachers", "pocketsphinx"): r"the 'pocketsphinx' reference needs the task and the corpus",
}

#: (kind, name) -> the task a suite runs it in, for components of a plugin's second task: the kit's
#: default bench is the plugin's first task's (kdbench.testing.inputs), which a vocoder cannot run on
TASKS = {(kind, name): "vocoder" for kind, name in (
    ("frontends", "log-mel-input"), ("teachers", "hifigan-v3"), ("teachers", "griffin-lim"),
    ("students", "hifigan-student"), ("losses", "wave"), ("losses", "wave-kd"), ("teachers", "wavernn"),
    ("students", "wavernn-student"), ("losses", "wave-ce"), ("losses", "wave-class-kd"))}

#: (kind, name) -> stand-ins other than its task's own: the sample-class losses score logits, which
#: the vocoder task's stand-in (waveform) vocoders do not give
INPUTS = {("losses", "wave-ce"): CLASS_VOCODER_INPUTS, ("losses", "wave-class-kd"): CLASS_VOCODER_INPUTS}

#: known non-conformance, to fix in the component (strict: the test fails once it is fixed,
#: so the entry is removed)
KNOWN_BUGS: dict[tuple[str, str], str] = {}

COMPONENTS = sorted((c.plugin, kind, c.name) for kind in CHECKS for c in REGISTRY.qualified[kind].values()
                    if c.plugin in BUILTIN_PLUGINS)


def test_the_builtins_registered_components_of_every_checked_kind():
    # the parametrisation below is only as good as the registry it reads
    # but `ray`, which registers only an executor: the kit has no executor check (tests/test_ray.py
    # runs it on a real cluster)
    assert {plugin for plugin, _, _ in COMPONENTS} == set(BUILTIN_PLUGINS) - {"ray"}
    assert {kind for _, kind, _ in COMPONENTS} == set(CHECKS)


@pytest.fixture(scope="module")
def benches():
    """One bench per plugin and task (built on first use): components of a plugin without a task
    of its own share the default one; ``task`` picks one of a plugin's several tasks, ``inputs``
    other stand-ins for it (INPUTS)."""
    cache = {}

    def bench(plugin, task=None, inputs=None):
        if (plugin, task, id(inputs)) not in cache:
            cache[plugin, task, id(inputs)] = tiny_bench(REGISTRY, task=task, plugin=plugin, inputs=inputs)
        return cache[plugin, task, id(inputs)]
    return bench


def _dataset_options(name, fsdd_root, tmp_path):
    wavs = sorted((fsdd_root / "recordings").glob("*.wav"))[:12]
    fsdd = {"root": str(fsdd_root), "held_out_speakers": ["theo"], "train_utterances": 8, "test_utterances": 4,
            "max_digits": 2}
    if name == "fsdd-digits":
        return fsdd
    if name == "noisy-speech":
        return {"clean": {"name": "fsdd-digits", "options": fsdd}}
    if name == "synth-digits":
        from kdbench_asr import espeak

        ok, reason = espeak.available()
        if not ok:
            pytest.skip(f"eSpeak NG not available: {reason}")
        return {"train_utterances": 6, "test_utterances": 3, "sample_rate": 8000}
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    if name == "manifest":
        lines = {"train": [], "test": []}
        for i, wav in enumerate(wavs):
            lines["train" if i < 8 else "test"].append(
                f'{{"audio_filepath": "{wav}", "text": "{words[int(wav.name[0])]}"}}')
        for split, rows in lines.items():
            (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
        return {"train": str(tmp_path / "train.jsonl"), "tests": {"test": str(tmp_path / "test.jsonl")},
                "sample_rate": 8000}
    if name == "librispeech":  # torchaudio's layout, FSDD recordings as its flac files
        for subset, speaker, chosen in (("train-clean-100", 19, wavs[:8]), ("test-clean", 61, wavs[8:])):
            chapter = tmp_path / "LibriSpeech" / subset / str(speaker) / "100"
            chapter.mkdir(parents=True)
            lines = []
            for u, wav in enumerate(chosen):
                audio, rate = sf.read(wav, dtype="float32")
                sf.write(chapter / f"{speaker}-100-{u:04d}.flac", audio, rate)
                lines.append(f"{speaker}-100-{u:04d} {words[int(wav.name[0])].upper()}")
            (chapter / f"{speaker}-100.trans.txt").write_text("\n".join(lines) + "\n")
        return {"root": str(tmp_path)}
    if name == "synth-sentences":
        return {"train_utterances": 6, "test_utterances": 3}
    if name == "ljspeech":  # its layout, written here (FSDD clips resampled by the loader)
        root = tmp_path / "LJSpeech-1.1"
        (root / "wavs").mkdir(parents=True)
        lines = []
        for i, wav in enumerate(wavs[:6]):
            shutil.copy(wav, root / "wavs" / f"LJ001-{i:04d}.wav")
            word = words[int(wav.name[0])]
            lines.append(f"LJ001-{i:04d}|{word.title()}.|{word}.")
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
        return {"root": str(root), "test_utterances": 2}
    pytest.fail(f"no test inputs for the built-in dataset {name!r}: add them to _dataset_options")


#: checks of a minute or more (`make test` leaves them out; `-k tts` and `make test-all` run them): a
#: WaveRNN's check decodes the kit's utterances six times, one sample per Python step
SLOW = {("teachers", "wavernn"), ("students", "wavernn-student")}

PARAMS = [pytest.param(*c, id=":".join(c), marks=([pytest.mark.xfail(reason=KNOWN_BUGS[c[1:]], strict=True,
                                                                      raises=ConformanceError)]
                                                  if c[1:] in KNOWN_BUGS else [])
                       + ([pytest.mark.slow] if c[1:] in SLOW else [])) for c in COMPONENTS]


@pytest.mark.parametrize("plugin, kind, name", PARAMS)
def test_builtin_component_conforms(plugin, kind, name, benches, fsdd_root, shared_cache, tmp_path):
    component = REGISTRY.get(kind, f"{plugin}:{name}")  # qualified: losses and metrics share 'si-sdr'
    if kind == "datasets":
        options = _dataset_options(name, fsdd_root, tmp_path)
        run = lambda: CHECKS[kind](component, options, cache_dir=shared_cache, registry=REGISTRY)  # noqa: E731
    else:
        bench = benches(plugin, TASKS.get((kind, name)), INPUTS.get((kind, name)))
        run = lambda: CHECKS[kind](component, OPTIONS.get((kind, name)), bench=bench)  # noqa: E731
    if (kind, name) in EXEMPT:
        with pytest.raises(ConformanceError) as failure:
            run()
        assert re.search(EXEMPT[kind, name], str(failure.value)), failure.value
        return
    run()


def test_every_builtin_task_gives_the_kit_inputs():
    """What lets the kit check a plugin's components on its own task."""
    tasks = [c for c in REGISTRY.qualified["tasks"].values() if c.plugin in BUILTIN_PLUGINS]
    assert tasks
    for task in tasks:
        assert kit_inputs(task) is not None, f"task {task.name!r} ({task.plugin}) has no KIT_INPUTS"
        bench = tiny_bench(REGISTRY, task=task.name)
        assert bench.corpus.train and bench.corpus.tests and bench.model_spec.output_dim > 0


def test_a_component_is_checked_on_its_own_plugins_task():
    assert tiny_bench(REGISTRY, plugin="enhance").corpus.info["task"] == "enhancement"
    assert tiny_bench(REGISTRY, plugin="asr").corpus.info["task"] == "asr"
    # a plugin without a task of its own gets the first loaded plugin's inputs (kdbench's own, by name)
    assert tiny_bench(REGISTRY, plugin="standard").corpus.info["task"] == "asr"


def test_without_any_task_inputs_the_kit_says_what_to_do(monkeypatch):
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "standard")
    with pytest.raises(ConformanceError, match=r"the conformance kit has no inputs: no loaded task provides "
                                               r"KIT_INPUTS .*\(tasks: none; is KDBENCH_LOAD_PLUGINS excluding"):
        tiny_bench(build_registry())

