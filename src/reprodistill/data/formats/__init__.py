"""Image file formats, one file each, registered by name in :data:`FORMATS` (see :mod:`.base`).

Every module of this package is imported here, so a new format is one new file with ``@register_format(name)``:
:mod:`reprodistill.data.image_files` then lists, checks and decodes its files wherever image files are read
(folders, label tables, unlabelled folders, ``predict``).
"""

import importlib
import pkgutil

from reprodistill.data.formats.base import FORMATS, ImageFormat, format_of, register_format

for _module in pkgutil.iter_modules(__path__):  # registration side effects: importing a format file registers it
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FORMATS", "ImageFormat", "format_of", "register_format"]
