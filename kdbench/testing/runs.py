"""Synthetic evaluation runs, tagged exactly as the runner tags real ones: for tests (a second
"machine" logging into the same store) and for benchmarking ``search_runs`` on large stores."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kdbench import records
from kdbench.provenance import provenance
from kdbench.records import MetricMeta, RunIdentity

# declared as the built-in metrics declare theirs
METRICS = {"test-unseen/wer": MetricMeta("%", False, tolerance={"abs": 1.0}, headline=True),
           "test-unseen/cer": MetricMeta("%", False, tolerance={"abs": 1.0}),
           "latency_ms": MetricMeta("ms", False, kind="cost", tolerance={"ratio": 3.0}, headline=True, speedup=True,
                                     timed=True),
           "size_mb": MetricMeta("MB", False, kind="cost", headline=True, scale="log")}


def log_evaluation(client, experiment_id: str, *, suite: str = "tiny", role: str = "student", model: str = "gru-ctc",
                   teacher: str = "", loss: str = "ctc", seed: int | None = 0, target: str = "cpu",
                   metrics: dict[str, float] | None = None, coverage: dict[str, tuple[int, int]] | None = None,
                   tags: dict[str, str] | None = None, scores: dict[str, dict[str, list]] | None = None,
                   config_hash: str | None = None, meta: dict[str, tuple[str, bool] | MetricMeta] | None = None,
                   end_time: int | None = None) -> str:
    """One FINISHED evaluation run; ``tags`` override provenance (e.g. another ``host.cpu``);
    ``end_time`` (ms since the epoch) backdates it, as runs of past nights would be."""
    from mlflow.entities import Metric, RunTag

    metrics = metrics if metrics is not None else {"test-unseen/wer": 20.0, "test-unseen/cer": 10.0,
                                                   "latency_ms": 5.0, "size_mb": 0.1}
    meta = {**METRICS, **(meta or {})}
    identity = f"{suite}|{role}|{model}|{teacher}|{loss}|{target}"
    all_tags: dict[str, Any] = {
        **provenance(), "task.normalizer": "kdbench-en-1", records.DATA_HASH: "synthetic-data",
        records.RUN_KIND: "evaluation", **RunIdentity(suite, role, model, teacher, loss, seed).tags(),
        records.TARGET: target, records.CONFIG_HASH: config_hash or f"cfg-{abs(hash(identity)) % 10**8}",
        records.TEACHER_HASH: f"t-{teacher}" if teacher else (f"t-{model}" if role == "teacher" else ""),
        records.STUDENT_HASH: f"s-{model}" if role == "student" else "",
        records.RUN_KEY: f"{identity}|{seed}", records.TARGET_KEY: "tk", records.PRIMARY_METRIC: "test-unseen/wer",
    }
    for name in metrics:
        declared = meta.get(name, ("", False))
        semantics = declared if isinstance(declared, MetricMeta) else MetricMeta(
            *declared, kind="quality" if "/" in name else "cost")
        all_tags[f"{records.METRIC}{name}.meta"] = semantics.to_tag()
        if "/" in name:
            scored, total = (coverage or {}).get(name, (10, 10))
            all_tags[f"{records.METRIC}{name}.coverage"] = f"{scored}/{total}"
    all_tags.update(tags or {})
    name = f"{model} · {loss} · seed {seed} @ {target}"
    run = client.create_run(experiment_id, tags={"mlflow.runName": name}, run_name=name)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    tag_rows = [RunTag(k, str(v)) for k, v in all_tags.items()]
    for i in range(0, len(tag_rows), 100):
        client.log_batch(run_id, tags=tag_rows[i:i + 100],
                         metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()] if i == 0 else [])
    if scores:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "scores.json"
            path.write_text(json.dumps(scores))
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED", end_time=end_time)
    return run_id
