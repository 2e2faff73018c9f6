"""HEIF/HEIC input: pillow-heif's Pillow plugin, registered in the image worker processes only.

The plugin is the ``heif`` extra (``pip install '.[heif]'``; the Docker image has it). It is
imported and registered by ``pool._init_worker`` in each worker (the forkserver preloads the
module, so its libraries are mapped once), never in the serving process, which only asks whether
it is installed (``config`` refuses ``input_formats = ["HEIF", ...]`` without it).

Registered as the other decoders are used: the header read under the pixel limit before any
decoding (``decode.open_image``; libheif parses the boxes when the file is opened and decodes on
``load``), and only the primary image's pixels decoded:

- ``thumbnails=False``: a HEIC carries small JPEG-sized previews that its editor may not have
  updated (a cropped or retouched photo whose thumbnail still shows the original); with them on,
  the plugin's ``draft`` would decode one instead of the image.
- ``depth_images=False``, ``aux_images=False``: depth maps, alpha and HDR gain maps of portrait
  photos are never read.
- ``decode_threads=1``: the workers are already one per core, and more threads measured no
  faster for a 12-megapixel photo on the benchmark host (1.1 s of CPU either way).

The EXIF orientation: libheif applies the file's own rotation and mirroring (``irot``, ``imir``)
when it decodes, and the plugin resets the EXIF orientation it reports to 1, so ``steps.orient``
finds nothing left to do and a phone photo is turned exactly once; the size reported when the
file is opened is already the upright one.
"""

from __future__ import annotations

from typing import Final

FORMAT: Final = "HEIF"  # Pillow's format name for the plugin (``Image.open(formats=[...])``)


def register_opener() -> bool:
    """In a worker: register the plugin's opener, if the extra is installed; whether it is."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False,
                                     decode_threads=1)
    return True
