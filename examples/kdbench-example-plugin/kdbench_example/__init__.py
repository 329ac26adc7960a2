"""An example third-party kdbench plugin: one student architecture and one metric,
registered through kdbench's hooks and found through the ``kdbench`` entry point."""

from kdbench.hookspecs import hookimpl

from kdbench_example.metrics import SentenceErrorRate
from kdbench_example.models import DepthwiseConvCtc

__version__ = "0.1.0"


@hookimpl
def register_students(register):
    register("dsconv-ctc", DepthwiseConvCtc, summary="depthwise-separable 1-D conv blocks + CTC head (QuartzNet-like)")


@hookimpl
def register_metrics(register):
    register("ser", SentenceErrorRate, summary="sentence error rate: % of utterances not recognised exactly")
