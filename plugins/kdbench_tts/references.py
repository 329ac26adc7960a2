"""Reference rows for the ``tts`` task: the recordings themselves, heard the way every model is.

``recorded`` answers each test sentence with its recording's own log-mel, so on a TTS
leaderboard it is the ceiling a synthesizer is measured against: MCD and F0 error 0 by
construction, and the judge's CER, DNSMOS and the Griffin-Lim rendering those hear are what the
recording itself scores. It needs the corpus (a reference's factory receives ``corpus=``), and
it knows only the test sentences: any other phoneme sequence is an error naming it.
"""

from __future__ import annotations

import math

import torch

from kdbench.interfaces import Corpus, Model, ModelOutput, ModelSpec
from kdbench_tts import audio


class Recorded(Model):
    """The recording's log-mel for each test utterance, looked up by its phoneme ids (a test
    sentence is spoken once per test set: ``synth-sentences`` cycles through its test
    sentences before repeating one; were two test utterances the same phonemes, the first
    one's recording stands for both). No parameters; not exportable (a table, not a network)."""

    version = 1

    def __init__(self, options=None, model_spec: ModelSpec | None = None, corpus: Corpus | None = None, **context):
        super().__init__()
        if corpus is None:
            raise ValueError("the 'recorded' reference needs the corpus: use it under references:")
        self.table: dict[tuple[int, ...], torch.Tensor] = {}
        for examples in corpus.tests.values():
            for e in examples:
                key = tuple(int(i) for i in torch.as_tensor(e.input).tolist())
                self.table.setdefault(key, audio.log_mel(e.target).T.contiguous())
        self.hidden_dims = {}

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        mels = []
        for i, n in enumerate(lengths.tolist()):
            key = tuple(int(t) for t in features[i, :n].tolist())
            if key not in self.table:
                raise KeyError(f"'recorded' has no recording of phoneme ids {list(key)[:12]}...: "
                               "it answers the corpus's test sentences only")
            mels.append(self.table[key])
        out = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True, padding_value=math.log(audio.LOG_CLAMP))
        return ModelOutput(out.to(torch.float32), torch.tensor([len(m) for m in mels]), {})
