"""The hooks a kdbench plugin may implement.

Every hook receives a ``register`` callable. Call it once per component::

    register(name, factory, options=OptionsModel, summary="one line", default=False)

``factory(options, **context)`` builds the component; ``options`` is an instance of
the pydantic ``OptionsModel`` (unknown keys rejected), validated from the suite. The
context each kind receives is listed in its hook. Adding keyword context later is
backwards compatible, so factories should accept ``**context``.

``default=True`` makes the component what a suite gets when it omits the key of its kind
(``targets``, ``reporters``, ``executor``): the core names no component itself.

A factory may define a classmethod ``check_suite(options, suite)`` (``suite`` is the
``kdbench.suite.ResolvedSuite``). It runs when the suite is resolved, so ``kdbench validate``
catches options that do not fit the rest of the suite (a layer the teacher lacks); it raises
``ValueError`` with one sentence, or ``kdbench.suite.OptionMismatch(option, sentence)`` to
point at one option.
"""

import pluggy

hookspec = pluggy.HookspecMarker("kdbench")
hookimpl = pluggy.HookimplMarker("kdbench")


@hookspec
def register_datasets(register):
    """Register datasets: corpora split into a training set and named test sets.

    The factory is called as ``factory(options, cache_dir=Path)`` and returns an object
    with ``load() -> kdbench.interfaces.Corpus``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_tasks(register):
    """Register tasks: how examples become batches and model outputs become predictions.

    The factory is called as ``factory(options)`` and returns a ``kdbench.interfaces.Task``.
    The task keeps the core free of any assumption about inputs and outputs (audio to
    text for ASR, noisy to clean audio for enhancement, text to audio for TTS).

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_frontends(register):
    """Register front ends: the fixed transform from a batch's raw inputs to model inputs.

    The factory is called as ``factory(options, corpus_info=dict)`` and returns a
    ``kdbench.interfaces.Frontend`` (a ``torch.nn.Module``). Teacher and student share it,
    so it is part of every teacher-output cache key.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_augmentations(register):
    """Register augmentations applied to training batches (waveform or feature stage).

    The factory is called as ``factory(options, corpus_info=dict)`` and returns a
    ``kdbench.interfaces.Augmentation``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_compressions(register):
    """Register compressions: quantization-aware training, pruning, ... applied to a student
    before, during and after its distillation, crossed with the students in a suite's
    ``compressions`` (each student also runs without).

    The factory is called as ``factory(options, model_spec=ModelSpec)`` and returns a
    ``kdbench.interfaces.Compression``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_teachers(register):
    """Register teacher architectures or sources (trainable models, hub pipelines, ...).

    The factory is called as ``factory(options, model_spec=kdbench.interfaces.ModelSpec)``
    and returns a ``kdbench.interfaces.Model``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_students(register):
    """Register student architectures.

    The factory is called as ``factory(options, model_spec=kdbench.interfaces.ModelSpec)``
    and returns a ``kdbench.interfaces.Model``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_losses(register):
    """Register training losses (the no-KD baseline and distillation losses).

    The factory is called as ``factory(options, student=Model, teacher=Model | None,
    task=Task)`` and returns a ``kdbench.interfaces.Loss`` (a ``torch.nn.Module``;
    its parameters, such as a hint projection, are trained with the student).

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_metrics(register):
    """Register metrics computed on an evaluated model.

    The factory is called as ``factory(options)`` and returns a
    ``kdbench.interfaces.Metric`` declaring ``unit`` and ``higher_is_better``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_targets(register):
    """Register hardware targets on which every model is re-measured.

    The factory is called as ``factory(options)`` and returns a
    ``kdbench.interfaces.Target``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_reporters(register):
    """Register reporters that publish a suite's results (leaderboard files, ...).

    The factory is called as ``factory(options)`` and returns a
    ``kdbench.interfaces.Reporter``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """


@hookspec
def register_executors(register):
    """Register executors that run a suite's planned runs (in process, a cluster, ...).

    The factory is called as ``factory(options)`` and returns a
    ``kdbench.interfaces.Executor``.

    :param register: ``register(name, factory, options=OptionsModel, summary=str, default=False)``.
    """
