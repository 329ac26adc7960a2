"""The teacher-output cache: computed once, keyed by everything that changes it, and equal to
what the teacher says online on the same replayed augmented copy."""

import torch

from kdbench.cache import Cache
from kdbench.interfaces import ModelSpec
from kdbench.pipeline import InputPipeline
from kdbench.teacher_outputs import build_teacher_outputs
from kdbench_asr.augment import SpecAugment, SpeedPerturb
from kdbench_asr.data.fsdd import FsddConnectedDigits
from kdbench_asr.frontend import LogMel
from kdbench_asr.models import ConformerCtc
from kdbench_asr.task import CtcAsr


def setup(fsdd_root, cache_dir):
    corpus = FsddConnectedDigits(FsddConnectedDigits.Options(root=fsdd_root, train_utterances=12, test_utterances=2,
                                                             max_digits=3), cache_dir=cache_dir).load()
    task = CtcAsr(CtcAsr.Options())
    task.setup(corpus)
    frontend = LogMel(LogMel.Options(n_mels=24), corpus_info=corpus.info)
    augs = [SpeedPerturb(SpeedPerturb.Options(), corpus_info=corpus.info), SpecAugment(SpecAugment.Options())]
    pipeline = InputPipeline(task, frontend, augs, salt="test")
    torch.manual_seed(0)
    teacher = ConformerCtc(ConformerCtc.Options(d_model=16, layers=2, ffn_dim=32, heads=2),
                           ModelSpec(24, task.output_dim())).eval()
    return corpus, pipeline, teacher


def test_cached_outputs_match_online_teacher_on_the_replayed_copy(fsdd_root, shared_cache, tmp_path):
    corpus, pipeline, teacher = setup(fsdd_root, shared_cache)
    cache = Cache(tmp_path)
    store = build_teacher_outputs(cache, teacher, {"teacher": "t1"}, pipeline, corpus.train, copies=2,
                                  layers=["layer1"], batch_size=5)
    assert store.forward_passes == 2  # one pass per augmented copy
    batch_examples = corpus.train[3:7]
    for copy in (0, 1):
        feats = pipeline(batch_examples, copy=copy)
        with torch.no_grad():
            online = teacher(feats.features, feats.lengths)
        cached = store.batch(feats.batch.ids, copy)
        assert torch.equal(cached.lengths, online.lengths)
        for i, n in enumerate(online.lengths.tolist()):  # valid frames; fp16 storage
            torch.testing.assert_close(cached.output[i, :n], online.output[i, :n], atol=5e-3, rtol=5e-3)
        assert cached.hidden["layer1"].shape[-1] == 16
    # the two copies are different augmentations of the same utterances
    c0, c1 = store.entries[0][corpus.train[0].id]["output"], store.entries[1][corpus.train[0].id]["output"]
    assert c0.shape != c1.shape or not torch.equal(c0, c1)


def test_second_build_reads_the_cache_and_new_layers_cost_one_pass(fsdd_root, shared_cache, tmp_path):
    corpus, pipeline, teacher = setup(fsdd_root, shared_cache)
    cache = Cache(tmp_path)
    build_teacher_outputs(cache, teacher, {"teacher": "t1"}, pipeline, corpus.train, 1, [])
    again = build_teacher_outputs(cache, teacher, {"teacher": "t1"}, pipeline, corpus.train, 1, [])
    assert again.forward_passes == 0
    with_layer = build_teacher_outputs(cache, teacher, {"teacher": "t1"}, pipeline, corpus.train, 1, ["encoder"])
    assert with_layer.forward_passes == 1
    other_teacher = build_teacher_outputs(cache, teacher, {"teacher": "t2"}, pipeline, corpus.train, 1, [])
    assert other_teacher.forward_passes == 1  # a different teacher never reads another's outputs
