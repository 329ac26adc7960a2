"""TTS teacher vs student speed, side by side in one process on the same inputs.

Times the acoustic models (autoregressive Tacotron2 teacher, FastSpeech-style student) and the
vocoders (HiFi-GAN V3-sized teacher, small HiFi-GAN student, Griffin-Lim reference) at batch 1
on `cpu`, with 1 and 2 intra-op threads, in interleaved blocks (this VM's speed drifts over
seconds, so models timed minutes apart would compare the machine with itself). Reports per
model the median milliseconds per utterance and the RTF (compute seconds / seconds of audio
synthesized), and each teacher-over-student ratio.

Weights are untrained (speed does not depend on their values), so the work per utterance is
fixed explicitly: every utterance is synthesised at ``--frames-per-phoneme`` frames per
phoneme by both acoustic models (the teacher's stop token is disabled and its decode bounded
at that many frames; the student's duration predictor is set to predict exactly that), and the
vocoders get mels of those frame counts. An untrained teacher would otherwise stop at a random
step or run to its bound, and an untrained student predicts near-zero durations.

    python benchmarks/tts_teacher_vs_student.py [--phonemes 20 35 50 70] [--block 1.0]
"""

from __future__ import annotations

import argparse
import math
import statistics

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once when it loads
import torch

from kdbench import measurement
from kdbench.interfaces import ModelSpec
from kdbench_tts import audio
from kdbench_tts.models import FastSpeech, Tacotron2Teacher
from kdbench_tts.vocoders import GriffinLim, HifiGan, HifiGanStudent

SYMBOLS = 80  # only the embedding's size depends on it


def build(frames_per_phoneme: int):
    torch.manual_seed(0)
    acoustic = ModelSpec(input_dim=SYMBOLS, output_dim=audio.N_MELS)
    vocoder = ModelSpec(input_dim=audio.N_MELS, output_dim=1)
    teacher = Tacotron2Teacher(Tacotron2Teacher.Options(max_frames_per_phoneme=frames_per_phoneme),
                               model_spec=acoustic).eval()
    student = FastSpeech(FastSpeech.Options(), model_spec=acoustic).eval()
    with torch.no_grad():
        teacher.net.decoder.gate_layer.bias.fill_(-50.0)  # never stops: decodes to its bound
        student.duration_predictor.out.weight.zero_()
        student.duration_predictor.out.bias.fill_(math.log1p(frames_per_phoneme))
    return {
        "acoustic": {"Tacotron2 teacher": teacher, "FastSpeech student": student},
        "vocoder": {"HiFi-GAN V3 teacher": HifiGan(HifiGan.Options(), model_spec=vocoder).eval(),
                    "HiFi-GAN student": HifiGanStudent(HifiGanStudent.Options(), model_spec=vocoder).eval(),
                    "Griffin-Lim (reference)": GriffinLim(GriffinLim.Options(), model_spec=vocoder).eval()},
    }


def inputs(stage: str, phonemes: list[int], frames_per_phoneme: int):
    """(id, (features, lengths), seconds of audio synthesized) per utterance."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n in phonemes:
        frames = n * frames_per_phoneme
        seconds = frames * audio.HOP_LENGTH / audio.SAMPLE_RATE
        if stage == "acoustic":
            x = torch.randint(1, SYMBOLS, (1, n), generator=g)
            out.append((f"{n}ph", (x, torch.tensor([n])), seconds))
        else:
            x = torch.randn(1, frames, audio.N_MELS, generator=g) - 4.0
            out.append((f"{frames}fr", (x, torch.tensor([frames])), seconds))
    return out


def check_workload(stage: str, models, stage_inputs):
    """The fixed workload holds: every model outputs the planned frames (acoustic) or samples."""
    per_second = audio.SAMPLE_RATE / (audio.HOP_LENGTH if stage == "acoustic" else 1)
    for name, model in models.items():
        for ident, (x, n), seconds in stage_inputs:
            with torch.inference_mode():
                got = int(model(x, n).lengths[0])
            planned = round(seconds * per_second)
            assert got == planned, f"{name} on {ident}: {got} output steps, planned {planned}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phonemes", type=int, nargs="+", default=[20, 35, 50, 70],
                        help="utterance lengths in phonemes (about 12 phonemes per second of speech)")
    parser.add_argument("--frames-per-phoneme", type=int, default=5, help="5 frames = 80 ms, eSpeak's rate")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block", type=float, default=1.0, help="seconds per model per block")
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args()

    stages = build(args.frames_per_phoneme)
    stage_inputs = {stage: inputs(stage, args.phonemes, args.frames_per_phoneme) for stage in stages}
    for stage, models in stages.items():
        check_workload(stage, models, stage_inputs[stage])
    audio_seconds = sum(s for _, _, s in stage_inputs["acoustic"])
    print(f"untrained weights, batch 1, {len(args.phonemes)} utterances of {args.phonemes} phonemes at "
          f"{args.frames_per_phoneme} frames per phoneme ({audio_seconds:.2f} s of audio in all), "
          f"{args.blocks} interleaved blocks of {args.block} s per model")
    params = {name: sum(p.numel() for p in m.parameters()) for models in stages.values() for name, m in models.items()}
    for threads in args.threads:
        torch.set_num_threads(threads)
        results = {}
        for stage, models in stages.items():
            seconds = {name: [] for name in models}
            sizes = {name: [] for name in models}
            busy = []
            for _ in range(args.blocks):
                for name, model in models.items():
                    def forward(x, model=model):
                        with torch.inference_mode():
                            return model(*x)
                    timing = measurement.time_runs(forward, stage_inputs[stage], warmup=1,
                                                   runs=len(stage_inputs[stage]), min_seconds=args.block)
                    seconds[name] += timing.seconds
                    sizes[name] += timing.sizes
                    busy.append(timing.other_cores)
            for name in models:
                results[name] = (1000 * statistics.median(seconds[name]), sum(seconds[name]) / sum(sizes[name]))
            results[f"_busy_{stage}"] = statistics.fmean(b for b in busy if not math.isnan(b)) if any(
                not math.isnan(b) for b in busy) else math.nan
        print(f"\n## {threads} thread(s)")
        print("| model | params | median ms / utterance | RTF |")
        print("| --- | --- | --- | --- |")
        for models in stages.values():
            for name in models:
                ms, rtf = results[name]
                print(f"| {name} | {params[name]:,} | {ms:.1f} | {rtf:.4f} |")
        t_a, s_a = results["Tacotron2 teacher"][1], results["FastSpeech student"][1]
        t_v, s_v = results["HiFi-GAN V3 teacher"][1], results["HiFi-GAN student"][1]
        print(f"acoustic teacher / student: {t_a / s_a:.1f}x; vocoder teacher / student: {t_v / s_v:.1f}x; "
              f"end to end (acoustic + vocoder) RTF: teacher {t_a + t_v:.4f}, student {s_a + s_v:.4f} "
              f"({(t_a + t_v) / (s_a + s_v):.1f}x)")
        print(f"other cores busy while timing (fraction): acoustic {results['_busy_acoustic']:.2f}, "
              f"vocoder {results['_busy_vocoder']:.2f}")


if __name__ == "__main__":
    main()
