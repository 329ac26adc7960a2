"""The one training loop every teacher and student goes through."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from kdbench.interfaces import Example, Loss, Model, ModelOutput
from kdbench.pipeline import Features, InputPipeline
from kdbench.suite import TrainingConfig

#: given a batch's features and the augmented copy they come from, the teacher's outputs
TeacherSource = Callable[[Features, "int | None"], "ModelOutput | None"]


@dataclass
class TrainingReport:
    steps: int
    seconds: float
    final_loss: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last point)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def length_bucketed_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Shuffle, then sort within windows of 50 batches so padding stays small but order stays random."""
    order = list(examples)
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[Example]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=_length)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _length(example: Example) -> int:
    try:
        return len(example.input)
    except TypeError:
        return 0


def lr_factor(step: int, config: TrainingConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def _epochs(examples, config, rng) -> Iterator[tuple[int, list[Example]]]:
    epoch = 0
    while True:
        for batch in length_bucketed_batches(examples, config.batch_size, rng):
            yield epoch, batch
        epoch += 1


def _optimizer(model: Model, loss_fn: Loss, config: TrainingConfig, done: int):
    """AdamW over what trains now, its learning rate ``done`` steps into the schedule."""
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + done, config))
    return params, optimizer, scheduler


def train(
    model: Model,
    loss_fn: Loss,
    pipeline: InputPipeline,
    examples: Sequence[Example],
    config: TrainingConfig,
    seed: int,
    teacher: TeacherSource | None = None,
    copies: int | None = None,
    on_step: Callable[[int, float], bool | None] | None = None,
) -> TrainingReport:
    """Train ``model`` (and any parameters of ``loss_fn``) for ``config.steps`` steps.

    ``on_step(step, loss)`` returning True means it replaced the model's parameters (a gradual
    pruning step): the optimizer is rebuilt over the new ones, at the same point of its schedule.

    ``copies`` set: epoch *e* uses the replayable augmented copy ``e % copies`` (cached teacher
    outputs exist for exactly those). ``copies`` None: fresh augmentation every step.
    """
    threads = torch.get_num_threads()  # config.threads holds for this training only, not what runs next
    try:
        if not examples:
            raise ValueError("no training examples")
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(seed)
        rng = random.Random(seed)
        generator = torch.Generator().manual_seed(seed)
        params, optimizer, scheduler = _optimizer(model, loss_fn, config, done=0)
        model.train()
        loss_fn.train()
        history: list[tuple[int, float]] = []
        running, count, last = 0.0, 0, float("nan")
        start = time.perf_counter()
        for step, (epoch, batch_examples) in zip(range(config.steps), _epochs(examples, config, rng)):
            loss_fn.progress = step / config.steps  # a loss's schedule (Loss.progress)
            copy = (epoch % copies) if copies else None
            feats = pipeline(batch_examples, copy=copy, generator=None if copies else generator)
            teacher_out = teacher(feats, copy) if teacher is not None else None
            batch = loss_fn.student_batch(feats.batch, teacher_out)
            features, lengths = feats.features, feats.lengths
            if batch.inputs is not feats.batch.inputs:
                # the teacher's outputs became the student's inputs (Loss.student_batch: a vocoder
                # trained on the mels its acoustic teacher makes): featurised as the data's would be
                with torch.no_grad():
                    features, lengths = pipeline.frontend(batch.inputs, batch.input_lengths)
            out = pipeline.task.train_forward(model, features, lengths, batch)
            loss = loss_fn(out, batch, teacher_out)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            last = loss.item()
            running += last
            count += 1
            if on_step and on_step(step + 1, last):
                params, optimizer, scheduler = _optimizer(model, loss_fn, config, done=step + 1)
            if (step + 1) % 50 == 0 or step + 1 == config.steps:
                history.append((step + 1, running / count))
                running, count = 0.0, 0
        model.eval()
        loss_fn.eval()
        return TrainingReport(config.steps, time.perf_counter() - start, last, history)
    finally:
        torch.set_num_threads(threads)
