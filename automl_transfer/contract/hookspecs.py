"""The hooks a plugin can implement.

Registration hooks receive a ``register`` callback and push components into it, so a new
keyword argument never breaks an old plugin. Lifecycle hooks are for observers (loggers,
trackers, the built-in console output): their return values are ignored, and an exception in
one is reported as one warning per search naming the plugin, its distribution, the error and
the file and line that raised it, never allowed to stop the search. An implementation may
take fewer arguments than its spec names, never others.
"""

import pluggy

PROJECT_NAME = "automl_transfer"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backbones(register):
    """Register backbone builders: the pretrained models a search can transfer from.

    :param register: call ``register(name, build, description="", offline=None)`` once per
        builder. ``name`` is the part of a source before the colon (``timm`` in
        ``timm:resnet50.a1_in1k``). ``build(model, weights)`` receives the model name and
        ``weights``: ``None`` for the builder's default pretrained weights, ``"none"`` for
        random initialisation, or a pretrained tag the builder resolves. It must return an
        :class:`automl_transfer.plugin.Backbone`. Local weight files never reach the
        builder: the core builds with ``"none"`` and loads the file itself (a builder whose
        weights ship in a package sets ``Backbone.weights_file`` and the core loads that
        too). ``offline()``, when given, returns the source texts (``lite:lite0``) whose
        pretrained weights are on this machine, so that they start with no network;
        ``automl-transfer plugins`` lists them.
    """


@hookspec
def register_weight_layouts(register):
    """Register weights layouts: converters for files saved with other parameter names.

    A weights file (``PLUGIN:MODEL@FILE``, or a builder's packaged weights) is loaded as saved
    when its names fit the backbone, after removing a wrapper prefix (``module.``, ``model.``,
    ``backbone.``) when that fits; otherwise each registered layout is tried in turn, as timm's
    ``pretrained_filter_fn`` converts a checkpoint per model family.

    :param register: call ``register(name, convert, description="")`` once per layout.
        ``convert(architecture, state_dict, model)`` receives the backbone's architecture
        name (``Backbone.architecture``), the file's tensors by name (unwrapped from
        ``{"state_dict": ...}`` and similar) and the backbone module built with random
        weights. It returns the tensors renamed to ``model.state_dict()``'s names, or ``None``
        to decline. It must not change its arguments. The core accepts a result only when it
        fills every parameter and buffer of the backbone with the right shape (an old
        classifier is dropped); it never matches names by order alone.
    """


@hookspec
def register_regularizers(register):
    """Register regularizers: terms that change how every trial's model is trained.

    :param register: call ``register(name, build, settings=None, description="")`` once per
        regularizer. ``settings`` maps the ``extra`` keys of a search space the regularizer
        reads to the value that leaves it off (``{"delta": 0.0}``); a space searches them as
        ``extra: {delta: {low: 1.0e-3, high: 1.0e-1, log: true}}`` and a space that names an
        undeclared ``extra`` key is refused. ``build(context)`` is called once per fit, after
        freezing and before the first step, with an
        :class:`automl_transfer.plugin.TrainingContext` (the model, the trial's settings and
        this regularizer's ``values``). It returns ``None`` when its settings leave it off,
        or an object with any of:

        - ``loss(logits, targets)``: a differentiable scalar added to the batch's loss, after
          the forward pass (``targets`` are class indices, or class probabilities after a
          batch transform that mixes images);
        - ``add_gradient()``: called between ``loss.backward()`` and the optimiser's step, to
          add a term straight to parameters' ``.grad`` (no autograd graph over the weights);
        - ``undecayed``: parameters that AdamW's weight decay must skip (the regularizer
          replaces the decay on them);
        - ``reads_images``: ``True`` when ``loss`` uses what enters the backbone (through
          forward hooks it set up): the frozen layers then run every step instead of once.
    """


@hookspec
def register_batch_transforms(register):
    """Register batch transforms: functions of a training batch, such as mixup or cutmix.

    :param register: call ``register(name, build, settings=None, description="")`` once per
        transform; ``settings`` are the ``extra`` keys it reads, as for
        :func:`register_regularizers`. ``build(context)`` is called once per fit with an
        :class:`automl_transfer.plugin.TrainingContext` and returns ``None`` when its settings
        leave it off, or ``transform(images, labels) -> (images, targets)``. ``images`` are
        the augmented float batch ``(B, 3, H, W)`` in ``[0, 1]``; ``labels`` are class indices
        ``(B,)``, or probabilities ``(B, num_classes)`` when an earlier transform mixed them;
        ``targets`` may be either. Transforms run on training batches only, in registration
        order, and draw their randomness from torch's global generator (seeded per trial). A
        transform that changes the images (``changes_images``, assumed ``True`` unless the
        function sets it to ``False``) makes the frozen layers run every step.
    """


@hookspec
def register_heads(register):
    """Register classification heads that sit on a backbone's pooled features.

    :param register: call ``register(name, build, space=None, description="")`` once per
        head. ``build(in_features, num_classes, **params)`` must return an ``nn.Module``
        mapping ``(batch, in_features)`` to ``(batch, num_classes)`` logits. ``space`` is the
        search space of ``params`` in the search-space YAML format (for example
        ``{"hidden": [256, 512], "dropout": {"low": 0.0, "high": 0.5}}``); it is searched
        only in trials that choose this head.
    """


@hookspec
def register_datasets(register):
    """Register dataset loaders, written ``NAME[:LOCATION]`` on the command line.

    :param register: call ``register(name, load, description="")`` once per loader.
        ``load(location)`` receives the text after the colon (``None`` when there is none)
        and must return an :class:`automl_transfer.plugin.ImageDataset`, or raise
        :class:`automl_transfer.plugin.DatasetError` naming the file or folder at fault.
    """


@hookspec
def search_start(run_dir, study, settings):
    """Called once when a search (or a joining worker) starts, before its first trial.

    :param run_dir: the run directory, a ``pathlib.Path``.
    :param study: the ``optuna.Study`` being optimised.
    :param settings: the search settings as a JSON-ready dict (dataset, space, trials ...);
        ``settings["sources"]`` lists the sources trials start from and ``settings["resolved_device"]``
        the device this process trains on (``"cpu"``, ``"cuda:0"``);
        ``settings["worker"]`` is ``True`` in a worker process (``automl-transfer worker``, or
        one that ``search --workers K`` started).
    """


@hookspec
def search_phase(phase, done, total):
    """Called while the search works outside a trial: decoding images, caching features, refitting.

    Called once with ``done=0`` when a phase starts, then as it progresses, and once with
    ``done == total`` when it ends (the console draws a progress line from these calls).

    :param phase: a short description, e.g. ``"decoding images (32 px)"``.
    :param done: how many units (images, epochs) are done.
    :param total: how many units there are, or ``None`` when that is not known.
    """


@hookspec
def search_end(run_dir, study, summary):
    """Called once when a search ends, normally or by interruption.

    :param run_dir: the run directory, a ``pathlib.Path``.
    :param study: the ``optuna.Study``.
    :param summary: the dict written to ``summary.json``.
    """


@hookspec
def trial_start(trial, params):
    """Called when a trial starts, after its parameters are sampled.

    :param trial: the ``optuna.Trial``.
    :param params: the trial's parameters, a dict of name to value.
    """


@hookspec
def trial_end(trial, state, value, reason):
    """Called when a trial ends in any state.

    :param trial: the ``optuna.Trial``.
    :param state: the final ``optuna.trial.TrialState``.
    :param value: the objective value, or ``None`` for pruned and failed trials.
    :param reason: why a trial failed (``"non-finite loss"``, ``"out of memory"`` ...), else ``None``.
    """


@hookspec
def epoch_end(trial, epoch, metrics):
    """Called after each epoch's validation, before the pruner decides.

    :param trial: the ``optuna.Trial``.
    :param epoch: the epoch just finished, counting from 1.
    :param metrics: a dict with at least ``epoch``, ``train_loss``, ``val_loss``, ``accuracy``,
        ``macro_f1`` and ``train_images`` (the images the epoch trained on).
    """
