"""Hardware targets on real speech: every model re-measured on every target, quality included;
unavailable targets give skipped rows, a model that cannot be exported fails only its row."""

import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path

import kdbench  # noqa: F401  first: its OpenMP settings must be in place before torch loads
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from pydantic import ValidationError

from kdbench import Deployable, ModelOutput, TargetError, hookimpl
from kdbench.cli import main
from kdbench.plugins import build_registry, get_registry
from kdbench.testing import check_target, tiny_bench
from kdbench_asr.models import GruCtc

from conftest import tiny_suite, write_suite

TARGETS = ["cpu", "cpu-1thread", "cpu-int8", {"name": "cpu-int8", "label": "cpu-int8-torch.ao",
                                               "options": {"backend": "torch.ao"}},
           "onnxruntime", "onnxruntime-int8", "cuda"]
METRICS = ["wer", "params", "size", {"name": "latency", "options": {"utterances": 4, "warmup": 1, "runs": 8, "min_seconds": 0}},
           {"name": "cold-start", "options": {"repeats": 1}}, {"name": "flops", "options": {"utterances": 2, "runs": 2, "min_seconds": 0}}]


class NumpyRoundTrip(GruCtc):
    """A student whose forward leaves torch (through numpy): it trains and runs eagerly, but
    neither ONNX exporter can follow it."""

    def forward(self, features, lengths):
        out = super().forward(features, lengths)
        if self.training:
            return out
        return ModelOutput(torch.from_numpy(out.output.numpy().copy()), out.lengths, out.hidden)


class Unexportable:
    @hookimpl
    def register_students(self, register):
        register("numpy-gru", NumpyRoundTrip)


@pytest.fixture(scope="module")
def targets_run(tmp_path_factory, fsdd_root):
    work = tmp_path_factory.mktemp("targets")
    suite = tiny_suite(fsdd_root, teachers=[], losses=["ctc"], targets=TARGETS, metrics=METRICS)
    path = write_suite(work / "t.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(work / "r"), "--cache-dir",
                                       str(work / "cache"), "--no-tracking"], catch_exceptions=False)
    return work, result, pd.read_csv(work / "r" / "tiny" / "rows.csv")


def test_one_row_per_model_and_target_with_quality_on_each(targets_run):
    _, result, board = targets_run
    assert result.exit_code == 0, result.output
    rows = board.set_index("target")
    assert sorted(rows.index) == sorted(t if isinstance(t, str) else t["label"] for t in TARGETS)
    ok = rows[rows["status"] == "ok"]
    assert set(ok.index) == {"cpu", "cpu-1thread", "cpu-int8", "cpu-int8-torch.ao", "onnxruntime", "onnxruntime-int8"}
    for column in ("test-unseen/wer", "latency_p50_ms", "latency_mean_ms", "rtf", "cold_start_ms",
                   "gflop_per_audio_s", "achieved_gflops", "pct_of_peak", "size_mb", "contention_cores"):
        assert ok[column].notna().all(), column
    # torch.ao also quantizes the GRU layers: a smaller artifact than fp32
    assert rows.loc["cpu-int8-torch.ao", "size_mb"] < rows.loc["cpu", "size_mb"]
    # compute per audio second is the model's, whatever the target
    assert rows.loc["cpu-1thread", "gflop_per_audio_s"] == pytest.approx(rows.loc["cpu", "gflop_per_audio_s"])


def test_unavailable_target_is_a_skipped_row_with_the_reason(targets_run):
    _, _, board = targets_run
    cuda = board[board["target"] == "cuda"].iloc[0]
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cuda["status"] == "skipped" and "no CUDA GPU on this machine" in cuda["error"]


def test_kdbench_targets_lists_availability():
    result = CliRunner().invoke(main, ["targets"], catch_exceptions=False)
    assert result.exit_code == 0
    for name in ("cpu", "cpu-1thread", "cpu-int8", "onnxruntime", "onnxruntime-int8", "cuda"):
        assert name in result.output
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in result.output


def test_missing_runtime_makes_the_target_unavailable_with_the_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    target = get_registry().get("targets", "onnxruntime").build()
    assert target.available() == (False, "onnxruntime is not installed (pip install onnxruntime)")


def test_unexportable_model_fails_only_its_onnx_rows(tmp_path, fsdd_root, shared_cache):
    registry = build_registry(extra_plugins=[Unexportable()])  # given to the CLI, not installed globally
    suite = tiny_suite(fsdd_root, teachers=[], losses=["ctc"], students=[{"name": "numpy-gru", "options": {"hidden": 16}}],
                       targets=["cpu", "onnxruntime"], metrics=["wer", "size"])
    path = write_suite(tmp_path / "t.yaml", suite)
    result = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--cache-dir",
                                       str(shared_cache), "--no-tracking"], obj=registry, catch_exceptions=False)
    assert result.exit_code == 5, result.output
    board = pd.read_csv(tmp_path / "r" / "tiny" / "rows.csv").set_index("target")
    assert board.loc["cpu", "status"] == "ok" and board.loc["cpu", "test-unseen/wer"] >= 0
    assert board.loc["onnxruntime", "status"] == "failed"
    assert "cannot export the model to ONNX" in board.loc["onnxruntime", "error"]


@pytest.mark.parametrize("student", ["gru-ctc", "conformer-ctc"])
def test_onnx_runtime_gives_the_eager_outputs_on_real_utterances(student):
    """Exported with a dynamic time axis, run one utterance at a time: the same logits as eager
    PyTorch on a batch of real utterances of different lengths."""
    bench = tiny_bench()
    torch.manual_seed(0)
    options = {"hidden": 24} if student == "gru-ctc" else {"d_model": 32, "layers": 2, "heads": 2, "ffn_dim": 64}
    model = bench.registry.get("students", student).build(options, model_spec=bench.model_spec).eval()
    batch = bench.task.collate(bench.corpus.tests["test"])
    assert len(set(batch.input_lengths.tolist())) > 1
    with torch.inference_mode():
        eager = Deployable(bench.frontend, model).eval()(batch.inputs, batch.input_lengths)
        deployed = bench.registry.get("targets", "onnxruntime").build().prepare(Deployable(bench.frontend, model).eval())
        out = deployed(batch.inputs, batch.input_lengths)
    assert torch.equal(out.lengths, eager.lengths)
    for i, n in enumerate(eager.lengths.tolist()):
        torch.testing.assert_close(out.output[i, :n], eager.output[i, :n], atol=1e-4, rtol=1e-4)


def test_both_onnx_runtime_targets_share_one_export_until_the_model_changes(monkeypatch):
    from kdbench_standard.targets import onnx

    exports = []
    real = onnx._export_module
    monkeypatch.setattr(onnx, "_export_module", lambda *args: exports.append(args) or real(*args))
    bench = tiny_bench()
    torch.manual_seed(0)
    model = bench.registry.get("students", "gru-ctc").build({"hidden": 16}, model_spec=bench.model_spec).eval()
    fp32, int8 = (bench.registry.get("targets", name).build() for name in ("onnxruntime", "onnxruntime-int8"))
    first = fp32.prepare(Deployable(bench.frontend, model).eval())
    quantized = int8.prepare(Deployable(bench.frontend, model).eval())
    assert len(exports) == 1 and quantized.onnx_bytes != first.onnx_bytes  # the int8 one quantized the shared graph
    with torch.no_grad():  # a model trained further is a new graph to export
        next(model.parameters()).add_(1.0)
    fp32.prepare(Deployable(bench.frontend, model).eval())
    assert len(exports) == 2


def test_an_onnx_artifact_does_not_depend_on_where_kdbench_is_installed():
    """The dynamo exporter (the conformer's path) wrote each node's source stack trace, with the
    absolute paths of the installed packages, into the model: a fresh clone elsewhere got another
    size_mb and failed the nightly gate."""
    bench = tiny_bench()
    torch.manual_seed(0)
    model = bench.registry.get("students", "conformer-ctc").build(
        {"d_model": 32, "layers": 1, "ffn_dim": 64, "heads": 2}, model_spec=bench.model_spec).eval()
    prepared = bench.registry.get("targets", "onnxruntime").build().prepare(Deployable(bench.frontend, model).eval())
    installed = str(Path(torch.__file__).resolve().parents[1]).encode()
    assert installed not in prepared.onnx_bytes and b"stack_trace" not in prepared.onnx_bytes


def test_onnxruntime_int8_is_the_onnxruntime_target_with_quantize_held_on():
    registry = get_registry()
    fp32, int8 = registry.get("targets", "onnxruntime"), registry.get("targets", "onnxruntime-int8")
    assert int8.factory is fp32.factory
    assert int8.build().quantize is True and fp32.build().quantize is False
    assert int8.build({"threads": 1}).threads == 1
    with pytest.raises(ValidationError, match="quantize"):  # the int8 name never means fp32
        int8.build({"quantize": False})


@pytest.mark.parametrize("name", ["cpu", "cpu-1thread", "cpu-int8", "onnxruntime", "onnxruntime-int8", "cuda"])
def test_built_in_targets_pass_the_conformance_kit(name):
    check_target(name)


class _ComplexStft(torch.nn.Module):
    def forward(self, features):
        # a complex STFT stops the TorchScript exporter, a branch on the data stops torch.export
        spec = torch.stft(features[0, :, 0], 64, 16, window=torch.hann_window(64), return_complex=True).abs()
        return spec.T.unsqueeze(0) if bool(features.sum() > 0) else -spec.T.unsqueeze(0)


def test_an_unexportable_model_gets_one_line_per_exporter_and_no_graph_dump(capfd):
    from kdbench_standard.targets.onnx import _export_module

    with pytest.raises(TargetError) as caught:
        _export_module(_ComplexStft(), 1, (400, 273))
    message = str(caught.value)
    assert message.startswith("cannot export the model to ONNX (torchscript: STFT does not currently support complex")
    assert "\n" not in message and "dynamo: " in message and "\x1b[" not in message
    out, err = capfd.readouterr()
    assert "graph" not in out + err and "aten::" not in out + err  # the exporter's C++ dump stays out of the log


def _documented_onnx_runtime_target() -> str:
    """The python block of docs/plugins.md that writes a target for another ONNX runtime."""
    docs = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    section = docs.split("#### A target for another ONNX runtime", 1)[1].split("\n### ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def _ort_as_openvino() -> types.ModuleType:
    """The part of OpenVINO's API the documented example calls, run by ONNX Runtime: the example's
    use of the shared export and of OnnxDeployed is checked where OpenVINO is not installed."""
    import onnxruntime as ort

    class Core:
        def read_model(self, path):
            return Path(path).read_bytes()

        def compile_model(self, graph, device, config):
            session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
            return lambda features: session.run(None, {"features": features})

    module = types.ModuleType("openvino")
    module.__spec__ = importlib.machinery.ModuleSpec("openvino", None)  # found by available()
    module.__version__ = "stand-in"
    module.Core = Core
    return module


# the real OpenVINO only where it is installed (it is not in the lock): a test that always skips
# on CI would only hide that it never ran
RUNTIMES = ["onnxruntime posing as openvino"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_documented_onnx_runtime_target_reuses_the_export_and_conforms(runtime, monkeypatch):
    if runtime != "openvino":
        monkeypatch.setitem(sys.modules, "openvino", _ort_as_openvino())
    from kdbench_standard.targets import onnx

    plugin = types.ModuleType("docs_openvino_target")
    exec(compile(_documented_onnx_runtime_target(), "docs/plugins.md (openvino)", "exec"), plugin.__dict__)
    registry = build_registry(extra_plugins=[plugin])
    check_target("openvino", registry=registry, require_available=True)

    # one export serves both runtimes, and both give eager PyTorch's outputs
    exports = []
    real = onnx._export_module
    monkeypatch.setattr(onnx, "_export_module", lambda *args: exports.append(args) or real(*args))
    bench = tiny_bench(registry)
    torch.manual_seed(0)
    model = registry.get("students", "gru-ctc").build({"hidden": 16}, model_spec=bench.model_spec).eval()
    batch = bench.task.collate(bench.corpus.tests["test"])
    with torch.inference_mode():
        eager = Deployable(bench.frontend, model).eval()(batch.inputs, batch.input_lengths)
        deployed = [registry.get("targets", name).build().prepare(Deployable(bench.frontend, model).eval())
                    for name in ("openvino", "onnxruntime")]
        outputs = [d(batch.inputs, batch.input_lengths) for d in deployed]
    assert len(exports) == 1 and deployed[0].onnx_bytes == deployed[1].onnx_bytes
    for out in outputs:
        assert torch.equal(out.lengths, eager.lengths)
        for i, n in enumerate(eager.lengths.tolist()):
            torch.testing.assert_close(out.output[i, :n], eager.output[i, :n], atol=1e-4, rtol=1e-4)
