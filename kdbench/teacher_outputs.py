"""Teacher outputs computed once and reused by every student and loss, across invocations.

Each piece (the output sequence, or one hidden layer) of one augmented copy of the training
set is stored under a hash of everything that changes it: teacher weights, data, front end,
augmentations, copy index, task state and the piece's name (lm-evaluation-harness #2715 is
what happens when a cache key forgets one of these).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from kdbench.cache import Cache, move_aside
from kdbench.hashing import stable_hash
from kdbench.interfaces import Example, Model, ModelOutput
from kdbench.pipeline import Features, InputPipeline

NAMESPACE = "teacher-outputs"
OUTPUT = "output"


def _trim(t: torch.Tensor, n_out: int, t_out: int) -> torch.Tensor:
    """Valid frames of one item's hidden state, which may run at another frame rate."""
    n = n_out if t.shape[0] == t_out else -(-n_out * t.shape[0] // t_out)
    return t[:n]


def _pad(seqs: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)


def split_output(out: ModelOutput, layers: Sequence[str]) -> list[dict[str, torch.Tensor]]:
    """Per-item, unpadded fp16 tensors of the output and the requested hidden layers."""
    items = []
    t_out = out.output.shape[1]
    for i in range(out.output.shape[0]):
        n = int(out.lengths[i])
        item = {OUTPUT: out.output[i, :n].to(torch.float16).clone()}
        for layer in layers:
            hidden = out.hidden[layer][i]
            known = out.hidden_lengths.get(layer)
            valid = hidden[:int(known[i])] if known is not None else _trim(hidden, n, t_out)
            item[layer] = valid.to(torch.float16).clone()
        items.append(item)
    return items


@dataclass
class TeacherOutputStore:
    """``entries[copy][example_id][piece]`` -> tensor."""

    entries: dict[int, dict[str, dict[str, torch.Tensor]]]
    layers: tuple[str, ...]
    forward_passes: int = 0  # full passes over the training set made to build this store
    keys: dict[str, str] = field(default_factory=dict)

    def batch(self, ids: Sequence[str], copy: int | None) -> ModelOutput:
        rows = [self.entries[copy or 0][i] for i in ids]
        outputs = [r[OUTPUT].float() for r in rows]
        return ModelOutput(
            output=_pad(outputs),
            lengths=torch.tensor([o.shape[0] for o in outputs]),
            hidden={layer: _pad([r[layer].float() for r in rows]) for layer in self.layers},
            hidden_lengths={layer: torch.tensor([r[layer].shape[0] for r in rows]) for layer in self.layers},
        )


def build_teacher_outputs(
    cache: Cache,
    teacher: Model,
    key_parts: dict[str, Any],
    pipeline: InputPipeline,
    examples: Sequence[Example],
    copies: int,
    layers: Sequence[str],
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
    forward: Callable[[Model, Features], ModelOutput] | None = None,
) -> TeacherOutputStore:
    """Load every needed piece from the cache; compute the missing ones in one pass per copy.
    ``forward(teacher, features)`` runs the teacher (default: ``teacher(features, lengths)``, free
    running); the caller puts anything that changes it, such as teacher forcing, in ``key_parts``."""
    pieces = [OUTPUT, *layers]
    store = TeacherOutputStore({}, tuple(layers))
    teacher.eval()
    for copy in range(copies):
        keys = {p: stable_hash({**key_parts, "copy": copy, "piece": p}) for p in pieces}
        store.keys.update({f"{copy}:{p}": k for p, k in keys.items()})
        loaded = {p: _load(cache, k, examples) for p, k in keys.items()}
        missing = [p for p, v in loaded.items() if v is None]
        if missing:
            computed = _forward_pass(teacher, pipeline, examples, copy, [p for p in missing if p != OUTPUT],
                                     batch_size, on_progress, forward)
            store.forward_passes += 1
            for p in missing:
                loaded[p] = {i: item[p] for i, item in computed.items()}
                cache.save(NAMESPACE, keys[p], loaded[p])
        per_example: dict[str, dict[str, torch.Tensor]] = {}
        for p, by_id in loaded.items():
            for example_id, tensor in by_id.items():
                per_example.setdefault(example_id, {})[p] = tensor
        store.entries[copy] = per_example
    return store


def _load(cache: Cache, key: str, examples: Sequence[Example]) -> dict[str, torch.Tensor] | None:
    """A cached piece, or None to compute it: missing, unreadable or foreign (both moved aside)."""
    piece = cache.load(NAMESPACE, key)
    if piece is not None and not (isinstance(piece, dict)
                                  and all(isinstance(piece.get(e.id), torch.Tensor) for e in examples)):
        move_aside(cache.path(NAMESPACE, key), "does not hold a tensor for every training example")
        return None
    return piece


def _forward_pass(teacher, pipeline, examples, copy, layers, batch_size, on_progress,
                  forward=None) -> dict[str, dict[str, torch.Tensor]]:
    ordered = sorted(examples, key=lambda e: len(e.input) if hasattr(e.input, "__len__") else 0)
    result: dict[str, dict[str, torch.Tensor]] = {}
    with torch.inference_mode():
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start:start + batch_size]
            feats: Features = pipeline(chunk, copy=copy if pipeline.augments else None)
            out = forward(teacher, feats) if forward else teacher(feats.features, feats.lengths)
            for example, item in zip(chunk, split_output(out, layers)):
                result[example.id] = item
            if on_progress:
                on_progress(min(start + batch_size, len(ordered)), len(ordered))
    return result
