"""One real FSDD test utterance prepared as an ASR target times it (features in, decoding out),
shared by the latency benchmarks."""

from __future__ import annotations

import os

from kdbench_asr.data.fsdd import FsddConnectedDigits
from kdbench_asr.frontend import LogMel
from kdbench_asr.task import CtcAsr


def fsdd_asr_input(fsdd_root: str, n_mels: int = 40):
    """``(example, task, frontend, (inputs, lengths))`` for the first test utterance."""
    corpus = FsddConnectedDigits(FsddConnectedDigits.Options(root=fsdd_root, train_utterances=8, test_utterances=8),
                                 cache_dir=os.path.expanduser("~/.cache/kdbench")).load()
    task = CtcAsr(CtcAsr.Options())
    task.setup(corpus)
    frontend = LogMel(LogMel.Options(n_mels=n_mels), corpus_info=corpus.info)
    example = next(iter(corpus.tests.values()))[0]
    batch = task.collate([example])
    return example, task, frontend, (batch.inputs, batch.input_lengths)
