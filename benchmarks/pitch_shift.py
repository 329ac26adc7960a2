"""Pitch shift per utterance: torchaudio.functional.pitch_shift at quarter-tone steps (what
``pitch-shift`` did first) against kdbench's ratio rounded to 1/80, side by side in one run on real
FSDD recordings at 1 thread (a data worker's share).

    python benchmarks/pitch_shift.py [--fsdd tests/data/fsdd] [--utterances 120]
"""

from __future__ import annotations

import kdbench  # noqa: F401  (sets the OpenMP environment before torch loads)

import argparse
import glob
import os
import time

import soundfile
import torch
import torchaudio

from kdbench_asr.augment import PitchShift


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default="tests/data/fsdd")
    parser.add_argument("--utterances", type=int, default=120)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted(glob.glob(os.path.join(args.fsdd, "recordings", "*.wav")))[: args.utterances]
    waves = [torch.as_tensor(soundfile.read(p, dtype="float32")[0]) for p in paths]
    # FSDD clips are single digits (~0.4 s); a training utterance joins several, so time 2.5 s ones
    joined = [torch.cat(waves[i:i + 6]) for i in range(0, len(waves), 6)]
    seconds = sum(w.numel() for w in joined) / 8000
    ours = PitchShift(PitchShift.Options(probability=1.0), corpus_info={"sample_rate": 8000})
    generator = torch.Generator().manual_seed(0)

    def old(x):
        steps = round((-3 + 6 * float(torch.rand(1, generator=generator))) * 4) or 1
        return torchaudio.functional.pitch_shift(x[None], 8000, steps, bins_per_octave=48, n_fft=256)[0]

    for name, shift in [("torchaudio pitch_shift, quarter tones", old),
                        ("kdbench pitch-shift, ratio m/80", lambda x: ours(x, generator))]:
        start = time.perf_counter()
        for x in joined:
            shift(x)
        took = time.perf_counter() - start
        print(f"{name:40s} {took / len(joined) * 1000:8.1f} ms per utterance "
              f"({took / seconds:.3f} s per second of audio, {len(joined)} utterances)")


if __name__ == "__main__":
    main()
