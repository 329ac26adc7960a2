"""``kdbench plugin new NAME``: write a plugin package that installs, registers one working
component through its hook, and tests it with the conformance kit (kdbench.testing).

No torch import here: the CLI imports this module just to list the kinds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from kdbench.errors import KdbenchError

# Templates are str.format()ed: {{ and }} are literal braces.
_MODEL = '''\
from pydantic import Field
from torch import nn

from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Model, ModelOutput
from kdbench.options import Options


class {cls}(Model):
    """A frame-wise MLP with a CTC head: replace with your architecture."""

    version = 1  # bump when outputs change for the same options: invalidates cached runs

    class Options(Options):
        hidden: int = Field(64, ge=1)

    def __init__(self, options, model_spec, **context):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(model_spec.input_dim, options.hidden), nn.GELU())
        self.head = nn.Linear(options.hidden, model_spec.output_dim)
        self.hidden_dims = {{"encoder": options.hidden}}  # layers a hint loss may match

    def forward(self, features, lengths):
        hidden = self.encoder(features)  # frame-wise, so padding cannot leak between utterances
        return ModelOutput(self.head(hidden), lengths, {{"encoder": hidden}})
'''

_TEMPLATES = {
    "student": ("register_students", _MODEL),
    "teacher": ("register_teachers", _MODEL),
    "loss": ("register_losses", '''\
import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Loss
from kdbench.options import Options


class {cls}(Loss):
    """(1 - alpha) CTC + alpha T^2-scaled KL to the teacher's frame posteriors."""

    requires_teacher = True  # a class attribute: the planner reads it before building

    class Options(Options):
        alpha: float = Field(0.5, ge=0, le=1)
        temperature: float = Field(2.0, gt=0)

    def __init__(self, options, student, teacher, task, **context):
        super().__init__()
        self.alpha, self.t = options.alpha, options.temperature

    def forward(self, student, batch, teacher):
        log_probs = student.output.log_softmax(-1).transpose(0, 1)
        hard = F.ctc_loss(log_probs, batch.targets, student.lengths, batch.target_lengths, zero_infinity=True)
        kd = []
        for i, (ns, nt) in enumerate(zip(student.lengths.tolist(), teacher.lengths.tolist())):
            # teacher and student may run at different frame rates: stretch the teacher's frames
            t = F.interpolate(teacher.output[i, :nt].T[None], size=ns, mode="linear", align_corners=True)[0].T
            s = F.log_softmax(student.output[i, :ns] / self.t, -1)
            kd.append(F.kl_div(s, F.log_softmax(t / self.t, -1), log_target=True, reduction="batchmean"))
        return (1 - self.alpha) * hard + self.alpha * self.t ** 2 * torch.stack(kd).mean()
'''),
    "metric": ("register_metrics", '''\
import math

from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Measurement, Metric


class {cls}(Metric):
    """Share of utterances with an empty hypothesis (tiny students often emit nothing)."""

    scope = "split"  # computed per test set from predictions

    def __init__(self, options, **context):
        pass

    def compute(self, ev):
        n = len(ev.predictions)
        if n == 0:  # nothing to score: NaN with coverage, never a made-up number
            return [Measurement("empty_hyp", math.nan, "%", False, coverage=(0, 0))]
        empty = sum(1 for p in ev.predictions if not str(p or "").strip())
        return [Measurement("empty_hyp", 100.0 * empty / n, "%", False, coverage=(n, n))]
'''),
    "target": ("register_targets", '''\
import os

import torch
from pydantic import Field

from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Target
from kdbench.options import Options


class {cls}(Target):
    """fp32 eager PyTorch on a fixed number of CPU threads."""

    class Options(Options):
        threads: int = Field(2, ge=1)

    def __init__(self, options, **context):
        self.threads = options.threads

    def available(self):
        cores = os.cpu_count() or 1
        return (True, "") if cores >= self.threads else (False, f"needs {{self.threads}} cores, has {{cores}}")

    def prepare(self, model):
        torch.set_num_threads(self.threads)
        return model.eval()

    def describe(self):
        return {{"threads": self.threads, "precision": "fp32", "runtime": f"torch {{torch.__version__}}"}}
'''),
    "frontend": ("register_frontends", '''\
import torch
from pydantic import Field

from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Frontend
from kdbench.options import Options


class {cls}(Frontend):
    """Log power spectrum, one utterance at a time (so padding never leaks into features)."""

    version = 1

    class Options(Options):
        n_fft: int = Field(256, ge=16)
        hop_ms: float = Field(10.0, gt=0)

    def __init__(self, options, corpus_info, **context):
        super().__init__()
        self.n_fft = options.n_fft
        self.hop = max(1, int(corpus_info["sample_rate"] * options.hop_ms / 1000))
        self.output_dim = options.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(options.n_fft), persistent=False)

    def forward(self, waves, lengths):
        feats = [self._one(w[:n]) for w, n in zip(waves, lengths.tolist())]
        return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), torch.tensor([len(f) for f in feats])

    def _one(self, wave):
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, return_complex=True)
        return torch.log(spec.abs() ** 2 + 1e-6).T  # (frames, n_fft // 2 + 1)
'''),
    "augmentation": ("register_augmentations", '''\
import torch
from pydantic import Field

from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Augmentation
from kdbench.options import Options


class {cls}(Augmentation):
    """Random gain in [-max_db, +max_db] dB on the waveform."""

    stage = "input"  # or "features"

    class Options(Options):
        max_db: float = Field(6.0, ge=0)

    def __init__(self, options, **context):
        self.max_db = options.max_db

    def __call__(self, x, generator):
        # every random draw from `generator`: kdbench replays it for teacher and student
        db = (2 * float(torch.rand(1, generator=generator)) - 1) * self.max_db
        return torch.as_tensor(x) * 10 ** (db / 20)
'''),
    "dataset": ("register_datasets", '''\
from pathlib import Path

import soundfile
import torch
from pydantic import Field

from kdbench.errors import DataError
from kdbench.hashing import file_hash, stable_hash
from kdbench.hookspecs import hookimpl
from kdbench.interfaces import Corpus, Example
from kdbench.options import Options


class {cls}:
    """<root>/<split>/<id>.wav with its transcript in <id>.txt: a train/ folder and test folders."""

    class Options(Options):
        root: Path
        sample_rate: int = Field(16000, gt=0)

    def __init__(self, options, cache_dir, **context):
        self.options = options

    def load(self):
        root = self.options.root
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        splits = {{f.name: [self._example(f.name, wav) for wav in sorted(f.glob("*.wav"))] for f in folders}}
        if not splits.get("train") or len(splits) < 2:
            raise DataError(f"{{root}}: needs train/ and at least one test folder of .wav + .txt files")
        # the fingerprint keys every cache: it must change whenever any file does
        files = sorted(f"{{p.relative_to(root)}}:{{file_hash(p)}}" for p in root.rglob("*") if p.is_file())
        tests = {{name: examples for name, examples in splits.items() if name != "train"}}
        return Corpus("{component}", splits["train"], tests, {{"sample_rate": self.options.sample_rate}},
                      stable_hash(files))

    def _example(self, split, wav):
        data, rate = soundfile.read(wav, dtype="float32")
        if rate != self.options.sample_rate:
            raise DataError(f"{{wav}}: sample rate {{rate}}, expected {{self.options.sample_rate}}")
        text = wav.with_suffix(".txt").read_text().strip()
        return Example(f"{{split}}/{{wav.stem}}", torch.from_numpy(data), text, {{"duration": len(data) / rate}})
'''),
}

#: the component kinds ``kdbench plugin new --kind`` can write
KINDS = tuple(_TEMPLATES)

_HOOK = '''

@hookimpl
def {hook}(register):
    register("{component}", {cls}, summary="{kind} from {dist} (template: replace me)")
'''

_TEST = '''\
"""Conformance of {dist}: `pip install -e .[test]`, then `pytest`."""

from kdbench.testing import check_loaded, {checks}


def test_plugin_loads_through_its_entry_point():
    check_loaded("{entry}")
'''

_KIND_TEST = '''

def test_{kind}_conforms({args}):
{body}
'''

_DATASET_TEST_BODY = '''\
    import soundfile
    from kdbench_asr.testing import tiny_corpus

    corpus = tiny_corpus()  # a few synthesized utterances, laid out as the dataset reads them
    for split, examples in {{"train": corpus.train, **corpus.tests}}.items():
        (tmp_path / split).mkdir()
        for e in examples:
            soundfile.write(tmp_path / split / f"{{e.id}}.wav", e.input.numpy(), 8000)
            (tmp_path / split / f"{{e.id}}.txt").write_text(e.target)
    check_dataset("{component}", {{"root": str(tmp_path), "sample_rate": 8000}}, plugin="{entry}")'''

_USAGE = {
    "student": "students: [{{name: {component}, options: {{hidden: 64}}}}]",
    "teacher": "teachers: [{{name: {component}, options: {{hidden: 128}}, training: {{steps: 600}}}}]",
    "loss": "losses: [ctc, {{name: {component}, options: {{alpha: 0.5}}}}]",
    "metric": "metrics: [wer, {component}]",
    "target": "targets: [cpu, {{name: {component}, options: {{threads: 2}}}}]",
    "frontend": "frontend: {{name: {component}, options: {{n_fft: 256}}}}",
    "augmentation": "augmentations: [{component}]",
    "dataset": "dataset: {{name: {component}, options: {{root: /data/my-corpus, sample_rate: 16000}}}}",
}

_README = '''\
# {dist}

A kdbench plugin providing {provides}.

```bash
pip install -e '.[test]'   # registers entry point `{entry}` in the `kdbench` group
pytest                     # conformance tests (kdbench.testing)
kdbench plugins            # lists `{entry}` with its version and hooks
```

Use it in a suite by its registered name:

```yaml
{usage}
```

Edit {edit} and keep `pytest` green. kdbench's `docs/plugins.md` describes every hook,
what each component must provide, and the conformance kit.
'''

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "kdbench plugin: {provides}"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["kdbench"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How kdbench finds the plugin; the entry-point name is the plugin's name in `kdbench plugins`.
[project.entry-points.kdbench]
{entry} = "{module}"

[tool.setuptools]
{layout}
'''

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _fields(short: str, kind: str) -> dict[str, str]:
    entry = short.replace("-", "_")
    return {"dist": f"kdbench-{short}", "entry": entry, "module": f"kdbench_{entry}",
            "component": f"{short}-{kind}", "kind": kind, "hook": _TEMPLATES[kind][0],
            "cls": "".join(part.capitalize() for part in short.split("-")) + kind.capitalize()}


def _kind_test(f: dict[str, str]) -> str:
    if f["kind"] == "dataset":
        return _KIND_TEST.format(args="tmp_path", body=_DATASET_TEST_BODY.format(**f), **f)
    # plugin=: the check fails, rather than passes, when the name is another plugin's class
    return _KIND_TEST.format(args="", body=f'    check_{f["kind"]}("{f["component"]}", plugin="{f["entry"]}")', **f)


def new_plugin(name: str, kind: str | Sequence[str] = "student", directory: str | Path = ".") -> Path:
    """Write ``<directory>/kdbench-<name>/`` and return its path. ``name`` may carry the
    ``kdbench-`` prefix; the entry point and the components are named after the rest
    (``<name>-<kind>``). One kind: a single module. Several: a package with one module per
    kind and the hooks in its ``__init__``."""
    kinds = [kind] if isinstance(kind, str) else list(dict.fromkeys(kind))
    unknown = [k for k in kinds if k not in _TEMPLATES]
    if unknown or not kinds:
        raise KdbenchError(f"unknown plugin kind {(unknown or [''])[0]!r}; choose one of {', '.join(KINDS)}")
    short = name.removeprefix("kdbench-")
    if not _NAME.match(short):
        raise KdbenchError(f"plugin name {name!r}: use lower-case letters, digits and single dashes, e.g. 'whisper'")
    root = Path(directory) / f"kdbench-{short}"
    if root.exists():
        raise KdbenchError(f"{root} already exists; choose another name or --dir")
    per_kind = [_fields(short, k) for k in kinds]
    f = per_kind[0]
    named = [f"the {x['kind']} `{x['component']}`" for x in per_kind]
    package = {**f, "provides": " and ".join(filter(None, [", ".join(named[:-1]), named[-1]])),
               "usage": "\n".join(_USAGE[x["kind"]].format(**x) for x in per_kind),
               "checks": ", ".join(f"check_{x['kind']}" for x in per_kind)}
    files = {}
    if len(kinds) == 1:
        files[f"{f['module']}.py"] = (f'"""kdbench plugin {f["dist"]}: the {f["kind"]} {f["component"]!r}."""\n\n'
                                      + _TEMPLATES[f["kind"]][1].format(**f) + _HOOK.format(**f))
        layout, edit = f'py-modules = ["{f["module"]}"]', f"`{f['module']}.py`"
    else:  # the hooks in __init__, each component in a module of its own
        imports = "".join(f"from {f['module']}.{x['kind']} import {x['cls']}\n" for x in per_kind)
        files[f"{f['module']}/__init__.py"] = (f'"""kdbench plugin {f["dist"]}: {package["provides"]}."""\n\n'
                                               "from kdbench.hookspecs import hookimpl\n\n" + imports
                                               + "".join(_HOOK.format(**x) for x in per_kind))
        for x in per_kind:
            source = _TEMPLATES[x["kind"]][1].format(**x).replace("from kdbench.hookspecs import hookimpl\n", "")
            files[f"{f['module']}/{x['kind']}.py"] = f'"""The {x["kind"]} {x["component"]!r}."""\n\n' + source
        layout, edit = f'packages = ["{f["module"]}"]', f"the modules in `{f['module']}/`"
    files["pyproject.toml"] = _PYPROJECT.format(layout=layout, **package)
    files["README.md"] = _README.format(edit=edit, **package)
    files[f"tests/test_{f['module']}.py"] = _TEST.format(**package) + "".join(_kind_test(x) for x in per_kind)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
