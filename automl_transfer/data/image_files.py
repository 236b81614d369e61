"""Which files are images: every extension Pillow can open, less formats no photo folder holds.

Kept apart from decoding so that dataset plugins can test file names without importing
torch; Pillow itself is imported on the first call.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

#: Extensions PIL registers for formats it can open but that are not raster pictures a folder
#: of photos holds, or that need an external program: scientific and weather stubs, video,
#: vector formats (Ghostscript, Windows-only metafiles) and IPTC metadata.
EXCLUDED_EXTENSIONS = frozenset(
    {".bufr", ".grib", ".h5", ".hdf", ".fit", ".fits", ".mpeg", ".mpg", ".eps", ".ps", ".emf", ".wmf", ".iim"}
)


def image_extensions() -> frozenset[str]:
    """Return the lower-case extensions treated as images.

    Every extension Pillow registers for a format it can open (``.jpg``, ``.png``, ``.webp``,
    ``.tif``, ``.bmp``, ``.gif`` ...; ``.avif`` and ``.heic`` when the installed Pillow
    plugins read them), less :data:`EXCLUDED_EXTENSIONS`.
    """
    return _openable_extensions(every_plugin=True)


@lru_cache(maxsize=2)
def _openable_extensions(every_plugin: bool) -> frozenset[str]:
    """The extensions of :func:`image_extensions` that Pillow's plugins registered so far.

    :param every_plugin: load every Pillow plugin first (some forty modules); otherwise only
        the few Pillow loads before any other (BMP, GIF, JPEG, PPM, PNG).
    """
    from PIL import Image

    if every_plugin:
        Image.init()
    else:
        Image.preinit()
    return frozenset(
        extension
        for extension, image_format in Image.EXTENSION.items()
        if image_format in Image.OPEN and extension not in EXCLUDED_EXTENSIONS
    )


def is_image_file(path: str | Path) -> bool:
    """Return whether ``path`` names a visible file (not starting with ``.``) with an image extension.

    Only the name is looked at; the file is not opened. Pillow's less common plugins are
    loaded only for a name that none of the common formats claims.
    """
    name = os.path.basename(path)
    if name.startswith("."):
        return False
    extension = os.path.splitext(name)[1].lower()
    return extension in _openable_extensions(every_plugin=False) or extension in image_extensions()
