"""Compiled per-position passes of the ptychography kernel (Numba): each one loop over a
frame where numpy needs several calls and temporaries.

Between its FFTs a position needs four passes over its (M, h, w) fields: the probe moved
by its sub-pixel rest (the spectrum times a ramp), the exit waves ``P O_j``, the Fourier
projection (model amplitude, Fourier error, the amplitude's factor) and, for the block
engines, the sums (``conj(P) chi`` and ``|P|^2`` into the object box, ``conj(O_j) chi`` and
``|O_j|^2`` into the probe's, and the position step's dot products with the object's
gradient, taken on the fly as :func:`numpy.gradient` takes it over the box). In numpy these
are some thirty calls a position, each a pass of its own; here they are four.

Single precision in the fields as before (complex64, float32); the Fourier error and the
position step's row sums add up in double precision. The loops run along rows (slices, so that
LLVM sees unit strides), with numpy's error model (no Python division check) and the fast-math
flags that let LLVM vectorise them (reassociation, contraction; never the ones that assume
no NaN or inf): sums may differ in their last bits from numpy's, never between back ends.
Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["accumulate", "dm_exit", "dm_probe_sums", "dm_reflect", "exit_waves",
           "fourier_project", "fourier_project_bounded", "shift_spectrum", "step_tile"]

#: added to |F psi| before dividing by it: a zero spectrum pixel stays zero (not 0/0)
TINY = np.float32(1e-30)
_FAST = {"reassoc", "contract", "nsz", "arcp", "afn"}
_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST)


@_jit
def shift_spectrum(spectrum, ry, rx, out, ramp):
    """``ramp = ry (x) rx`` and ``out[k] = spectrum[k] * ramp`` (M, h, w): the spectra of
    the probe modes moved by a sub-pixel rest, before their inverse FFT."""
    m, h, w = spectrum.shape
    for i in range(h):
        r, a = ramp[i], ry[i]
        for j in range(w):
            r[j] = a * rx[j]
    for k in range(m):
        for i in range(h):
            s, r, o = spectrum[k, i], ramp[i], out[k, i]
            for j in range(w):
                o[j] = s[j] * r[j]


@_jit
def exit_waves(probe, obj, y, x, psi):
    """``psi[k] = probe[k] * obj[y:y+h, x:x+w]`` (M, h, w)."""
    m, h, w = probe.shape
    for k in range(m):
        for i in range(h):
            p, o, out = probe[k, i], obj[y + i, x:x + w], psi[k, i]
            for j in range(w):
                out[j] = p[j] * o[j]


@_jit
def dm_reflect(probe, obj, y, x, exit_wave, first, alpha, model, psi):
    """The difference map's field to project (M, h, w): ``model = probe * obj[y:y+h,
    x:x+w]`` (``P O_j``), ``exit_wave = model`` when ``first`` (the exit waves start as
    ``P O_j``), and ``psi = (1 + alpha) model - alpha exit_wave``."""
    m, h, w = probe.shape
    a1 = np.float32(1.0) + alpha
    for k in range(m):
        for i in range(h):
            p, o, mo, e, out = (probe[k, i], obj[y + i, x:x + w], model[k, i],
                                exit_wave[k, i], psi[k, i])
            for j in range(w):
                v = p[j] * o[j]
                mo[j] = v
                if first:
                    e[j] = v
                out[j] = a1 * v - alpha * e[j]


@_jit
def dm_exit(exit_wave, projected, model):
    """``exit_wave += projected - model`` (M, h, w): the difference map's new exit waves."""
    m, h, w = exit_wave.shape
    for k in range(m):
        for i in range(h):
            e, p, mo = exit_wave[k, i], projected[k, i], model[k, i]
            for j in range(w):
                e[j] = e[j] + (p[j] - mo[j])


@_jit
def dm_probe_sums(exit_wave, probe, obj, y, x, probe_num, probe_den):
    """The difference map's probe sums of one position against the new object:
    ``probe_num += conj(O_j) (exit_wave - probe O_j)`` (M, h, w), ``probe_den += |O_j|^2``
    (h, w), ``O_j = obj[y:y+h, x:x+w]``."""
    m, h, w = probe.shape
    for i in range(h):
        o, pd = obj[y + i, x:x + w], probe_den[i]
        for j in range(w):
            pd[j] += o[j].real * o[j].real + o[j].imag * o[j].imag
        for k in range(m):
            e, p, pn = exit_wave[k, i], probe[k, i], probe_num[k, i]
            for j in range(w):
                pn[j] += o[j].conjugate() * (e[j] - p[j] * o[j])


@_jit
def fourier_project(spec, amp, amp_scaled, invalid, masked, free, model):
    """The Fourier projection in place on the detector-plane fields ``spec`` (M, h, w):
    ``spec *= amp_scaled / (|spec| + TINY)`` with ``|spec|`` summed incoherently over
    modes, ``free`` (the inverse FFT's scale alone) on ``invalid`` pixels when ``masked``;
    ``model`` (h, w) float32 is scratch. Returns the Fourier error
    ``sum_valid (|spec| - amp)^2`` (double precision)."""
    m, h, w = spec.shape
    error = 0.0
    for i in range(h):
        mo, a, a_s = model[i], amp[i], amp_scaled[i]
        for j in range(w):
            mo[j] = 0.0
        for k in range(m):
            s = spec[k, i]
            for j in range(w):
                mo[j] += s[j].real * s[j].real + s[j].imag * s[j].imag
        if masked:
            bad = invalid[i]
            for j in range(w):
                mod = np.sqrt(mo[j])
                d = np.float32(0.0) if bad[j] else mod - a[j]
                error += d * d
                mo[j] = free if bad[j] else a_s[j] / (mod + TINY)
        else:
            for j in range(w):
                mod = np.sqrt(mo[j])
                d = mod - a[j]
                error += d * d
                mo[j] = a_s[j] / (mod + TINY)
        for k in range(m):
            s = spec[k, i]
            for j in range(w):
                s[j] = s[j] * mo[j]
    return error


@_jit
def fourier_project_bounded(spec, amp, invalid, masked, free, model, bound):
    """:func:`fourier_project` relaxed to a power bound (ptypy's difference map): with
    the Fourier error ``e = sum_valid (|spec| - amp)^2`` at most ``bound`` the fields are
    left as they are (times ``free``, the inverse FFT's scale), else every valid pixel's
    modulus moves to ``amp + (|spec| - amp) sqrt(bound / e)``, onto the bound. ``model``
    (h, w) float32 holds the moduli between the two passes. Returns ``e``."""
    m, h, w = spec.shape
    error = 0.0
    for i in range(h):
        mo, a = model[i], amp[i]
        for j in range(w):
            mo[j] = 0.0
        for k in range(m):
            s = spec[k, i]
            for j in range(w):
                mo[j] += s[j].real * s[j].real + s[j].imag * s[j].imag
        bad = invalid[i] if masked else invalid[0]
        for j in range(w):
            mod = np.sqrt(mo[j])
            mo[j] = mod
            if not (masked and bad[j]):
                d = mod - a[j]
                error += d * d
    if error <= bound:
        for k in range(m):
            for i in range(h):
                s = spec[k, i]
                for j in range(w):
                    s[j] = s[j] * free
        return error
    renorm = np.float32(np.sqrt(bound / error))
    for i in range(h):
        mo, a = model[i], amp[i]
        bad = invalid[i] if masked else invalid[0]
        for j in range(w):
            if masked and bad[j]:
                mo[j] = free
            else:
                mo[j] = free * (a[j] + (mo[j] - a[j]) * renorm) / (mo[j] + TINY)
        for k in range(m):
            s = spec[k, i]
            for j in range(w):
                s[j] = s[j] * mo[j]
    return error


@_jit
def accumulate(psi, psi_new, probe, obj, y, x, lo_y, lo_x, hi_y, hi_x, obj_num, obj_den,
               probe_num, probe_den, refine, chi, power):
    """One position's sums, ``chi = psi_new - psi`` (M, h, w), its crop at ``(y, x)`` of
    ``obj``, the block's box ``[lo, hi)``: ``obj_num[crop - lo] += sum_k conj(P_k) chi_k``,
    ``obj_den[crop - lo] += sum_k |P_k|^2``, ``probe_num += conj(O_j) chi``,
    ``probe_den += |O_j|^2``; ``chi`` (w,) complex64 and ``power`` (w,) float32 are
    scratch. With ``refine``, returns the gradient-form position step ``(dy, dx)``,
    ``Re sum conj(dO/dr) c / sum |dO/dr|^2 p`` (``c = sum_k conj(P_k) chi_k``,
    ``p = sum_k |P_k|^2``), the gradient being :func:`numpy.gradient`'s over the box
    (central, one-sided at its edges); else ``(0, 0)``."""
    m, h, w = probe.shape
    num_y = den_y = num_x = den_x = 0.0
    half = np.float32(0.5)
    for i in range(h):
        yy = y + i
        o = obj[yy, x:x + w]
        for j in range(w):
            chi[j] = 0
            power[j] = 0
        for k in range(m):
            p, a, b, pn = probe[k, i], psi_new[k, i], psi[k, i], probe_num[k, i]
            for j in range(w):
                d = a[j] - b[j]
                chi[j] += p[j].conjugate() * d
                power[j] += p[j].real * p[j].real + p[j].imag * p[j].imag
                pn[j] += o[j].conjugate() * d
        num = obj_num[yy - lo_y, x - lo_x:x - lo_x + w]
        den = obj_den[yy - lo_y, x - lo_x:x - lo_x + w]
        pd = probe_den[i]
        for j in range(w):
            num[j] += chi[j]
            den[j] += power[j]
            pd[j] += o[j].real * o[j].real + o[j].imag * o[j].imag
        if refine:
            # d/dy: rows yy - 1 and yy + 1 (one-sided at the box's edge rows)
            ym, yp = max(yy - 1, lo_y), min(yy + 1, hi_y - 1)
            fy = half if yp - ym == 2 else np.float32(1.0)
            a, b = obj[yp, x:x + w], obj[ym, x:x + w]
            ny = dy = nx = dx = np.float32(0.0)  # the row's sums, then into double
            for j in range(w):
                g = (a[j] - b[j]) * fy
                ny += g.real * chi[j].real + g.imag * chi[j].imag
                dy += (g.real * g.real + g.imag * g.imag) * power[j]
            # d/dx: columns xx - 1 and xx + 1, inside the crop; its edge columns apart
            for j in range(1, w - 1):
                g = (o[j + 1] - o[j - 1]) * half
                nx += g.real * chi[j].real + g.imag * chi[j].imag
                dx += (g.real * g.real + g.imag * g.imag) * power[j]
            row = obj[yy]
            for j in (0, w - 1):
                xx = x + j
                xm, xp = max(xx - 1, lo_x), min(xx + 1, hi_x - 1)
                g = (row[xp] - row[xm]) * (half if xp - xm == 2 else np.float32(1.0))
                nx += g.real * chi[j].real + g.imag * chi[j].imag
                dx += (g.real * g.real + g.imag * g.imag) * power[j]
            num_y += ny
            den_y += dy
            num_x += nx
            den_x += dx
    if not refine:
        return 0.0, 0.0
    return num_y / max(den_y, 1e-30), num_x / max(den_x, 1e-30)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def step_tile(part, num, den, reg):
    """``part = num / (den + reg) + part`` (in double, rounded once to ``part``'s type;
    no fast-math): one object tile of the block engines' update, in place."""
    h, w = part.shape
    for i in range(h):
        p, n, d = part[i], num[i], den[i]
        for j in range(w):
            p[j] = n[j] / (d[j] + reg) + p[j]
