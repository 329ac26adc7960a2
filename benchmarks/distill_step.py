"""One distillation step in kdbench against a minimal hand-written PyTorch KD loop.

Same student, same batch of real FSDD utterances, same teacher logits (precomputed), same
loss (CTC mixed with T^2-scaled frame KL, alpha 0.5, T 2), same optimiser. The hand loop is
what a researcher would write; kdbench's step adds its pipeline, cache lookup, scheduler and
bookkeeping. Both are timed in one process, interleaved, so machine noise hits both alike.

    OMP_WAIT_POLICY=PASSIVE KDBENCH_FSDD_ROOT=/path/to/fsdd python benchmarks/distill_step.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import kdbench  # noqa: F401  first: it sets OpenMP's wait policy, which torch reads once when it loads
import torch
import torch.nn.functional as F

from kdbench.interfaces import ModelSpec
from kdbench.pipeline import InputPipeline
from kdbench.suite import TrainingConfig
from kdbench.teacher_outputs import TeacherOutputStore, split_output
from kdbench.training import train
from kdbench_asr.data.fsdd import FsddConnectedDigits
from kdbench_asr.frontend import LogMel
from kdbench_asr.losses import CtcKd
from kdbench_asr.models import ConformerCtc, GruCtc
from kdbench_asr.task import CtcAsr
from fsdd_default import FSDD_FIXTURE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=os.environ.get("KDBENCH_FSDD_ROOT", FSDD_FIXTURE))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    corpus = FsddConnectedDigits(FsddConnectedDigits.Options(root=args.fsdd, train_utterances=32, test_utterances=4),
                                 cache_dir=os.path.expanduser("~/.cache/kdbench")).load()
    examples = corpus.train[:32]
    task = CtcAsr(CtcAsr.Options())
    task.setup(corpus)
    frontend = LogMel(LogMel.Options(n_mels=40), corpus_info=corpus.info)
    pipeline = InputPipeline(task, frontend)
    spec = ModelSpec(40, task.output_dim())
    teacher = ConformerCtc(ConformerCtc.Options(d_model=96, layers=3, ffn_dim=384), spec).eval()
    feats = pipeline(examples)
    with torch.no_grad():
        t_out = teacher(feats.features, feats.lengths)
    store = TeacherOutputStore({0: {e.id: item for e, item in zip(examples, split_output(t_out, []))}}, ())
    t_logits, t_lengths = store.batch(feats.batch.ids, 0).output, store.batch(feats.batch.ids, 0).lengths

    def student():
        torch.manual_seed(0)
        return GruCtc(GruCtc.Options(hidden=96, bidirectional=False), spec)

    config = TrainingConfig(steps=args.steps, batch_size=32, lr=1e-3, warmup_steps=0, threads=args.threads)

    def kdbench_loop():
        model = student()
        loss = CtcKd(CtcKd.Options(alpha=0.5, temperature=2.0))
        start = time.perf_counter()
        train(model, loss, pipeline, examples, config, seed=0, teacher=lambda f, c: store.batch(f.batch.ids, c), copies=1)
        return (time.perf_counter() - start) / args.steps

    def hand_loop():
        model = student()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
        start = time.perf_counter()
        for _ in range(args.steps):
            batch = task.collate(examples)
            with torch.no_grad():
                x, x_len = frontend(batch.inputs, batch.input_lengths)
            out = model(x, x_len)
            logp = out.output.log_softmax(-1)
            ctc = F.ctc_loss(logp.transpose(0, 1), batch.targets, out.lengths, batch.target_lengths, zero_infinity=True)
            # same frame rate here (both subsample 4x): plain masked KL, no resampling needed
            n = min(out.output.shape[1], t_logits.shape[1])
            p_t = F.softmax(t_logits[:, :n] / 2.0, -1)
            kl = (p_t * (torch.log(p_t.clamp_min(1e-8)) - F.log_softmax(out.output[:, :n] / 2.0, -1))).sum(-1)
            mask = torch.arange(n)[None] < torch.minimum(out.lengths, t_lengths)[:, None]
            loss = 0.5 * ctc + 0.5 * 4.0 * (kl * mask).sum() / mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        return (time.perf_counter() - start) / args.steps

    kdbench_loop(), hand_loop()  # warm-up
    kd, hand = [], []
    for _ in range(args.rounds):
        kd.append(kdbench_loop())
        hand.append(hand_loop())
    k, h = statistics.median(kd), statistics.median(hand)
    print(f"batch 32 real FSDD utterances, GRU student {sum(p.numel() for p in student().parameters())} params, "
          f"{args.threads} thread(s), {args.steps} steps x {args.rounds} rounds (median ms/step)")
    print(f"kdbench   {1000 * k:7.1f} ms/step   (rounds: {', '.join(f'{1000 * v:.1f}' for v in kd)})")
    print(f"hand loop {1000 * h:7.1f} ms/step   (rounds: {', '.join(f'{1000 * v:.1f}' for v in hand)})")
    print(f"kdbench / hand = {k / h:.3f}")


if __name__ == "__main__":
    main()
