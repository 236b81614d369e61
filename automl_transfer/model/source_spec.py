"""The text of a source model, ``PLUGIN:MODEL[@WEIGHTS]``, parsed without building anything.

A search space names its sources this way; reading and checking a space only parses the text
(:class:`SourceSpec`), so it needs no torch. :mod:`automl_transfer.model.sources` builds the
backbone a source names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from automl_transfer.contract.components import NO_WEIGHTS
from automl_transfer.errors import UnknownComponentError

#: File name endings read as weight files, in the order the error messages list them.
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

#: What a source looks like, for error messages.
SOURCE_FORMAT = "PLUGIN:MODEL[@WEIGHTS], for example timm:resnet50.a1_in1k or torchvision:resnet18@none"


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source model.

    :param plugin: the backbone builder's registered name (``timm``).
    :param model: the architecture, as the builder names it (``resnet50.a1_in1k``).
    :param weights: ``None`` for the builder's default pretrained weights, ``"none"`` for
        random initialisation, a pretrained tag, or a local file path as written.
    """

    plugin: str
    model: str
    weights: str | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """Parse ``PLUGIN:MODEL[@WEIGHTS]``; ``@none`` is matched in any case.

        Only the syntax is checked here; :func:`build_backbone` checks that the plugin,
        model and weights exist.

        :param text: the source as the user wrote it.
        :returns: the parsed source; ``str()`` of it gives the canonical text back.
        :raises UnknownComponentError: when the plugin or model part is missing; the message
            shows the format and an example.
        """
        plugin, colon, rest = text.strip().partition(":")
        model, at, weights = rest.partition("@")
        if not colon or not plugin or not model:
            raise UnknownComponentError(f"source {text!r} is not of the form {SOURCE_FORMAT}")
        if at and not weights:
            raise UnknownComponentError(
                f"source {text!r} ends in '@' without weights; drop the '@' for the default pretrained "
                f"weights or write @{NO_WEIGHTS}, @TAG or @path/to/weights.safetensors"
            )
        if weights.lower() == NO_WEIGHTS:
            weights = NO_WEIGHTS
        return cls(plugin=plugin, model=model, weights=weights or None)

    @property
    def weights_file(self) -> Path | None:
        """The local weight file this source names, resolved against the working directory.

        :returns: the absolute path, or ``None`` when ``weights`` is a tag, ``none`` or unset.
        """
        if self.weights is None or self.weights == NO_WEIGHTS:
            return None
        separators = [os.sep] + ([os.altsep] if os.altsep else []) + ["/"]
        is_file = self.weights.lower().endswith(WEIGHTS_SUFFIXES) or any(sep in self.weights for sep in separators)
        # Absolute but links kept: `run/best/model.safetensors` follows `best` when it is read.
        return Path(os.path.abspath(os.path.expanduser(self.weights))) if is_file else None

    def __str__(self) -> str:
        text = f"{self.plugin}:{self.model}"
        return text if self.weights is None else f"{text}@{self.weights}"


def random_weights(source: str) -> bool:
    """Whether ``source`` (``PLUGIN:MODEL[@WEIGHTS]``) starts from random weights (``@none``, any case).

    :raises UnknownComponentError: ``source`` is not of that form (see :meth:`SourceSpec.parse`).
    """
    return SourceSpec.parse(source).weights == NO_WEIGHTS
