"""Probe modes: the starting probe, orthogonal modes, the spectrum the kernel shifts."""

from __future__ import annotations

import numpy as np

from lensfree.engine import fft as fftlib
from lensfree.engine.simulate_ptycho import orthogonal_modes


def initial_probe(probe: np.ndarray | None, amplitude: np.ndarray, n_modes: int,
                  propagator=None) -> np.ndarray:
    """(n_modes, h, w) complex64 start: ``probe`` (or the mean amplitude propagated back:
    ``F^-1`` of it centred in the far field, ``D^-1`` of it in the near field), extra modes
    made as in `orthogonal_modes` at 5% power, scaled so that the model's total counts match
    the data's mean (with a unit object). ``amplitude`` as the engine takes it."""
    h, w = amplitude.shape[-2:]
    mean_counts = float(np.mean(np.sum(amplitude.astype(np.float64) ** 2, axis=(-2, -1))))
    far = propagator is None or propagator.kind == "far-field"
    if probe is None:
        mean_amp = np.mean(amplitude, axis=0)
        probe = (np.fft.fftshift(np.fft.ifft2(mean_amp)) if far
                 else propagator.to_sample(mean_amp))[None]
    probe = np.asarray(probe, np.complex128).reshape(-1, h, w)
    modes = probe[:n_modes]
    if len(modes) < n_modes:
        weights = np.r_[1.0, np.full(n_modes - 1, 0.05)]
        extra = orthogonal_modes(modes[0], n_modes, weights)[len(modes):]
        scale = np.linalg.norm(modes[0])
        modes = np.concatenate([modes, extra * scale / np.linalg.norm(extra[:1])
                                * np.sqrt(0.05)])
    # Parseval: sum |F psi|^2 = hw sum |psi|^2; the angular spectrum keeps the power
    power = np.sum(np.abs(modes) ** 2) * (h * w if far else 1)
    return (modes * np.sqrt(mean_counts / power)).astype(np.complex64)


def orthogonalise_modes(probe: np.ndarray) -> np.ndarray:
    """Probe modes made orthogonal (SVD), strongest first; the incoherent sum is unchanged.

    Each mode keeps the phase of the input mode it comes from (``u_kk``): the SVD's own
    phase per mode is arbitrary, and a mode whose phase jumps from one iteration to the
    next leaves an iteration's change (momentum's velocity) meaningless."""
    m = probe.shape[0]
    if m == 1:
        return probe
    flat = probe.reshape(m, -1).astype(np.complex128)
    u, s, vh = np.linalg.svd(flat, full_matrices=False)
    d = np.diagonal(u)
    gauge = np.where(np.abs(d) > 0, d / np.maximum(np.abs(d), 1e-300), 1.0)
    return ((gauge * s)[:, None] * vh).reshape(probe.shape).astype(probe.dtype)


def probe_spectrum(probe: np.ndarray) -> np.ndarray:
    """(M, h, w) ``F P_m / (h w)``: what :meth:`PositionKernel.shift_probe` multiplies by a
    ramp (the ``1 / (h w)`` of its unnormalised inverse FFT is folded in here, once)."""
    h, w = probe.shape[-2:]
    fft = fftlib.get_fft2((h, w), probe.dtype)
    return np.stack([fft.forward(p).copy() for p in probe]) / np.float32(h * w)
