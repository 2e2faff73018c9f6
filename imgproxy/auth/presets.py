"""``presets_only``: what a signing key, token or grant limited to presets may ask for.

Pure. Such a credential (``presets_only = true`` on ``[auth.keys.NAME]`` or
``[auth.tokens.NAME]``, inherited by the grants and ``POST /sign`` URLs it mints) renders only
the operator's ``[transform.presets.NAME]`` definitions: its URLs may carry ``preset`` and the
per-image ``fp`` (a focal point) and ``initials`` (a missing photo's avatar), and no other
transform parameter, so one key can be handed to a BI tool without letting it ask for
arbitrary renders. A URL with no transform parameter at all asks for the untransformed
original, which the credential's scopes allow or refuse as for any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from imgproxy.auth.signing import RESERVED_PARAMS
from imgproxy.errors import ParamsNotAllowed

PRESET_PARAM: Final = "preset"
# What describes the image rather than the render: allowed beside any preset, and presets-only.
PER_IMAGE_PARAMS: Final = frozenset({"fp", "initials"})
PRESETS_ONLY_PARAMS: Final = frozenset({PRESET_PARAM, *PER_IMAGE_PARAMS})


def check_presets_only(params: Mapping[str, str]) -> None:
    """``ParamsNotAllowed`` naming the first parameter a presets-only credential may not give."""
    refused = sorted(params.keys() - RESERVED_PARAMS - PRESETS_ONLY_PARAMS)
    if refused:
        raise ParamsNotAllowed(f"presets-only credential with param {refused[0][:16]!r}", public_message=(
            f"Parameter '{refused[0][:16]}' is not allowed: these credentials transform only by "
            "preset= (with fp and initials)."))
