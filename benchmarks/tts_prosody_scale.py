"""The scale of the `f0` metric (log-F0 RMSE, V/UV error) and of `mcd` on the synth-sentences test set.

(a) each recording's own log-mel heard through the tts task's Griffin-Lim (32 iterations) against
    the recording: what the rendering alone costs, the floor a synthesizer cannot beat;
(b) one eSpeak NG voice's recording against another voice's recording of the same sentence (two
    single-voice corpora built with the same seed say the same sentences in the same order): what
    a wrong speaker costs.

Every score goes through the registered metrics on a kdbench Evaluation, as a suite computes it.

    KDBENCH_CACHE_DIR=/tmp/kdc python benchmarks/tts_prosody_scale.py --utterances 50
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy before torch loads
from kdbench.interfaces import Evaluation
from kdbench.plugins import get_registry
from kdbench_tts import audio


def log_mel(example):
    # not Synthesis.reference: the task caches log-mels by example id, which two corpora share
    return audio.log_mel(example.target).T.numpy()


def corpus(registry, cache: Path, utterances: int, speakers: list[str] | None = None):
    options = {"test_utterances": utterances, **({"speakers": speakers} if speakers else {})}
    return registry.get("datasets", "synth-sentences").build(options, cache_dir=cache).load().tests["test"]


def scores(registry, examples, predictions, references, audio) -> dict[str, str]:
    out = {}
    for name in ("f0", "mcd"):
        ev = Evaluation("test", examples, predictions, references, None, None, None, audio=audio)
        for m in registry.get("metrics", name).build({}).compute(ev):
            out[m.name] = f"{m.value:.2f} {m.unit} ({m.coverage[0]}/{m.coverage[1]})"
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=50)
    parser.add_argument("--pairs", default="m1:m3,f1:f4,m1:f1", help="voice pairs for (b), a:b,...")
    args = parser.parse_args()
    cache = Path(os.environ.get("KDBENCH_CACHE_DIR", "~/.cache/kdbench")).expanduser()
    registry = get_registry()
    task = registry.get("tasks", "tts").build({})  # listen_iterations 32 by default

    test = corpus(registry, cache, args.utterances)
    mels = [log_mel(e) for e in test]
    rendered = [task.audio(m)[0] for m in mels]
    # as the tts task scores it: the DTW reads the predicted log-mel (here the recording's own,
    # so MCD is 0 by construction), F0 the Griffin-Lim audio
    print("(a) Griffin-Lim of the recording's log-mel vs the recording:",
          scores(registry, test, mels, mels, lambda i: (rendered[i], 16000)))
    # as a vocoder is scored: the rendered waveform is the prediction (DTW on its log-mel, MCD too)
    print("(a') the same audio scored as a waveform:",
          scores(registry, test, rendered, [e.target for e in test], None))

    for pair in args.pairs.split(","):
        a, b = pair.split(":")
        said, heard = corpus(registry, cache, args.utterances, [a]), corpus(registry, cache, args.utterances, [b])
        assert [e.meta["text"] for e in said] == [e.meta["text"] for e in heard], "the corpora say other sentences"
        print(f"(b) voice {a} vs voice {b}, same sentences:",
              scores(registry, heard, [log_mel(e) for e in said], [log_mel(e) for e in heard],
                     lambda i: (said[i].target, 16000)))


if __name__ == "__main__":
    main()
