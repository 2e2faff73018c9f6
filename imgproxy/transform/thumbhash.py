"""ThumbHash: a picture's placeholder in about 25 bytes, painted by the page before the image loads.

Pure (no Pillow): RGBA bytes of at most 100x100 pixels in, the hash out. A port of Evan
Wallace's reference encoder (``rgbaToThumbHash`` in ``js/thumbhash.js`` of github.com/evanw/thumbhash,
MIT licence): the average colour, then a few DCT terms of luminance (L), yellow-blue (P),
red-green (Q) and, when any pixel is not opaque, alpha, each quantised to 4 bits, after a header
of the constants and the aspect ratio. The arithmetic is the reference's, in the same order with
the same doubles, and JavaScript's ``Math.round`` (half up, not Python's half to even), so the
bytes are the reference's: ``tests/transform/test_thumbhash.py`` checks them against hashes
the reference made under Node (``tests/transform/thumbhash_vectors.json``). Deterministic: the
same pixels always give the same hash. Pages decode it with the reference's ``thumbHashToDataURL``.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Final

MAX_SIDE: Final = 100


# The cosine is fdlibm's (Sun's 1993 libm, which V8 uses for Math.cos), not the host's libm: the
# two differ in the last bit for about one argument in 30, which moves a quantised term now and
# then; with fdlibm's the hash is the reference's, bit for bit, whatever libm the host has.
_C: Final = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
             -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)
_S: Final = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
             2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
_INVPIO2: Final = 6.36619772367581382433e-01
_PIO2: Final = ((1.57079632673412561417e+00, 6.07710050650619224932e-11),  # 33 bits of pi/2 and the rest,
                (6.07710050630396597660e-11, 2.02226624879595063154e-21),  # then the next 33 ...
                (2.02226624871116645580e-21, 8.47842766036889956997e-32))
# High words of n * pi/2 for n = 1..32: near them the first reduction may cancel.
_NPIO2_HW: Final = (
    0x3FF921FB, 0x400921FB, 0x4012D97C, 0x401921FB, 0x401F6A7A, 0x4022D97C, 0x4025FDBB, 0x402921FB,
    0x402C463A, 0x402F6A7A, 0x4031475C, 0x4032D97C, 0x40346B9C, 0x4035FDBB, 0x40378FDB, 0x403921FB,
    0x403AB41B, 0x403C463A, 0x403DD85A, 0x403F6A7A, 0x40407E4C, 0x4041475C, 0x4042106C, 0x4042D97C,
    0x4043A28C, 0x40446B9C, 0x404534AC, 0x4045FDBB, 0x4046C6CB, 0x40478FDB, 0x404858EB, 0x404921FB)


def _high(x: float) -> int:
    return int(struct.unpack("<q", struct.pack("<d", x))[0]) >> 32 & 0xFFFFFFFF


def _kernel_cos(x: float, y: float) -> float:
    ix = _high(x) & 0x7FFFFFFF
    if ix < 0x3E400000 and int(x) == 0:
        return 1.0
    z = x * x
    r = z * (_C[0] + z * (_C[1] + z * (_C[2] + z * (_C[3] + z * (_C[4] + z * _C[5])))))
    if ix < 0x3FD33333:
        return 1.0 - (0.5 * z - (z * r - x * y))
    qx = 0.28125 if ix > 0x3FE90000 else struct.unpack("<d", struct.pack("<q", (ix - 0x00200000) << 32))[0]
    return (1.0 - qx) - ((0.5 * z - qx) - (z * r - x * y))


def _kernel_sin(x: float, y: float) -> float:
    ix = _high(x) & 0x7FFFFFFF
    if ix < 0x3E400000 and int(x) == 0:
        return x
    z = x * x
    v = z * x
    r = _S[1] + z * (_S[2] + z * (_S[3] + z * (_S[4] + z * _S[5])))
    return x - ((z * (0.5 * y - v * r) - y) - v * _S[0])


def _rem_pio2(x: float) -> tuple[int, float, float]:
    """``x`` (0 <= x <= 2**19 * pi/2) as n * pi/2 + (y0 + y1), |y0 + y1| <= pi/4."""
    ix = _high(x) & 0x7FFFFFFF
    if ix <= 0x3FE921FB:
        return 0, x, 0.0
    if ix > 0x413921FB:
        raise ValueError("argument too large for this reduction")
    if ix < 0x4002D97C:  # below 3pi/4: n = 1
        (p1, p1t), (p2, p2t), _ = _PIO2
        z = x - p1
        if ix != 0x3FF921FB:
            y0 = z - p1t
            return 1, y0, (z - y0) - p1t
        z -= p2
        y0 = z - p2t
        return 1, y0, (z - y0) - p2t
    n = int(x * _INVPIO2 + 0.5)
    fn = float(n)
    r = x - fn * _PIO2[0][0]
    w = fn * _PIO2[0][1]
    y0 = r - w
    if n >= 32 or ix == _NPIO2_HW[n - 1]:
        exponent = ix >> 20
        for head, tail, bits in ((_PIO2[1][0], _PIO2[1][1], 16), (_PIO2[2][0], _PIO2[2][1], 49)):
            if exponent - ((_high(y0) >> 20) & 0x7FF) <= bits:
                break
            t = r
            w = fn * head
            r = t - w
            w = fn * tail - ((t - r) - w)
            y0 = r - w
    return n, y0, (r - y0) - w


def _cos(x: float) -> float:
    """fdlibm's cos for 0 <= x <= 2**19 * pi/2 (the DCT's angles lie within 0..100 pi)."""
    if _high(x) & 0x7FFFFFFF <= 0x3FE921FB:
        return _kernel_cos(x, 0.0)
    n, y0, y1 = _rem_pio2(x)
    quadrant = n & 3
    if quadrant == 0:
        return _kernel_cos(y0, y1)
    if quadrant == 1:
        return -_kernel_sin(y0, y1)
    if quadrant == 2:
        return -_kernel_cos(y0, y1)
    return _kernel_sin(y0, y1)


def _round(value: float) -> int:
    """JavaScript's ``Math.round``: halves go up."""
    return math.floor(value + 0.5)


def _channel(channel: list[float], w: int, h: int, nx: int, ny: int) -> tuple[float, list[float], float]:
    """DC term, AC terms normalised to 0..1, and their scale (the reference's ``encodeChannel``)."""
    dc, ac, scale = 0.0, [], 0.0
    fx = [0.0] * w
    for cy in range(ny):
        cx = 0
        while cx * ny < nx * (ny - cy):
            f = 0.0
            for x in range(w):
                fx[x] = _cos(math.pi / w * cx * (x + 0.5))
            for y in range(h):
                fy = _cos(math.pi / h * cy * (y + 0.5))
                row = y * w
                for x in range(w):
                    f += channel[x + row] * fx[x] * fy
            f /= w * h
            if cx or cy:
                ac.append(f)
                scale = max(scale, abs(f))
            else:
                dc = f
            cx += 1
    if scale:
        ac = [0.5 + 0.5 / scale * value for value in ac]
    return dc, ac, scale


def rgba_to_thumbhash(w: int, h: int, rgba: bytes) -> bytes:
    """The ThumbHash of a ``w`` x ``h`` RGBA image (not premultiplied), row by row."""
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE) or len(rgba) != w * h * 4:
        raise ValueError(f"{w}x{h} with {len(rgba)} bytes: at most {MAX_SIDE}x{MAX_SIDE} RGBA")
    n = w * h
    avg_r = avg_g = avg_b = avg_a = 0.0
    for j in range(0, n * 4, 4):
        alpha = rgba[j + 3] / 255
        avg_r += alpha / 255 * rgba[j]
        avg_g += alpha / 255 * rgba[j + 1]
        avg_b += alpha / 255 * rgba[j + 2]
        avg_a += alpha
    if avg_a:
        avg_r /= avg_a
        avg_g /= avg_a
        avg_b /= avg_a

    has_alpha = avg_a < n
    l_limit = 5 if has_alpha else 7  # fewer luminance terms when alpha needs room
    lx = max(1, _round(l_limit * w / max(w, h)))
    ly = max(1, _round(l_limit * h / max(w, h)))
    lum, yb, rg, al = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    for i in range(n):  # RGBA -> LPQA, composited over the average colour
        j = i * 4
        alpha = rgba[j + 3] / 255
        r = avg_r * (1 - alpha) + alpha / 255 * rgba[j]
        g = avg_g * (1 - alpha) + alpha / 255 * rgba[j + 1]
        b = avg_b * (1 - alpha) + alpha / 255 * rgba[j + 2]
        lum[i] = (r + g + b) / 3
        yb[i] = (r + g) / 2 - b
        rg[i] = r - g
        al[i] = alpha

    l_dc, l_ac, l_scale = _channel(lum, w, h, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _channel(yb, w, h, 3, 3)
    q_dc, q_ac, q_scale = _channel(rg, w, h, 3, 3)
    channels = [l_ac, p_ac, q_ac]
    is_landscape = w > h
    header24 = (_round(63 * l_dc) | (_round(31.5 + 31.5 * p_dc) << 6) | (_round(31.5 + 31.5 * q_dc) << 12)
                | (_round(31 * l_scale) << 18) | (int(has_alpha) << 23))
    header16 = ((ly if is_landscape else lx) | (_round(63 * p_scale) << 3) | (_round(63 * q_scale) << 9)
                | (int(is_landscape) << 15))
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    if has_alpha:
        a_dc, a_ac, a_scale = _channel(al, w, h, 5, 5)
        out.append(_round(15 * a_dc) | (_round(15 * a_scale) << 4))
        channels.append(a_ac)
    start, index = len(out), 0
    for ac in channels:
        for f in ac:
            slot = start + (index >> 1)
            if slot == len(out):
                out.append(0)
            out[slot] |= _round(15 * f) << ((index & 1) << 2)
            index += 1
    return bytes(out)


def encode_thumbhash(w: int, h: int, rgba: bytes) -> str:
    """The hash as the JSON carries it: standard base64 with padding (what the reference's
    ``thumbHashToDataURL`` takes after ``atob``)."""
    return base64.b64encode(rgba_to_thumbhash(w, h, rgba)).decode("ascii")
