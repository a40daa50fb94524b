"""Neural-field phase retrieval without a support (CDIP, Hu et al. 2025).

The object is not an array but an untrained coordinate network: a SIREN (sinusoidal
activations; Sitzmann et al. 2020) maps the pixel coordinates ``(y, x)`` in ``[-1, 1]`` to
the exit wave. The rendered object is multiplied by the *anchoring window*, transformed to
the far field by the same unnormalised DFT the iterative engine uses, and the network's
weights are fitted with Adam to the measured ``amplitude`` on the ``valid`` pixels, with a
Poisson log-likelihood of the counts ``A^2`` (default) or the mean absolute error of the
amplitudes. There is no support: the *progressive anchoring* window (a centred disk,
soft-edged over ``ANCHOR_EDGE`` pixels) starts at ``anchor_start`` of the half-width and
widens linearly to ``anchor_end`` of it over the first ``anchor_growth`` of the epochs.
Starting small pins the object to the centre (the translation ambiguity) and grows it from
there. ``anchor_end`` 0.5 is the paper's "outer boundary, half the size in each
dimension": the disk any object that the sampling condition allows fits in, the same for
every object (no support is estimated); 1.42 or more lets the disk grow past the corners.

Why the field alone is not the answer, and the finishing refinement. On our 64^2 objects
(oversampling 3, a missing centre of 3 px) the field fits the data to R_F 0.05-0.07 but
stagnates: the object it renders fills the whole anchoring disk (the window's edge is an
easy source of the high frequencies the data ask for), and its error against the truth
after alignment and twin is 0.7-0.9, while the truth itself fits to R_F 0.003. The data
determine the object (HIO + ER with the true support recovers every one from random
starts), but from a support as loose as the disk it is not found (HIO from the true
support widened by 3 px fails on most starts). What is missing is a *tight* support, and
the object can give one itself. So each member ends with ``refine_cycles`` cycles of HIO
(``REFINE_HIO`` iterations, feedback ``REFINE_BETA``) then ER (``REFINE_ER``) on the
rendered grid, with the support renewed after every cycle from the member's own object:
:func:`energy_support`, the smallest set of pixels of ``|rho|`` blurred by a Gaussian
that holds ``refine_energy`` (0.99) of its energy, the blur narrowing from
``REFINE_SIGMA[0]`` to ``[1]`` px (capture: the spread field is pulled into a compact
object). The blurs are in pixels of a 64^2 grid and scale with the grid (the object
scales with it at a given oversampling): with the 64^2 blurs on a 128^2 grid the support
hugs the cell and clips its faint edge, and the members stop at 0.14-0.26 (R_F 0.08-0.10);
scaled, one stops at 0.07 (R_F 0.018) from the same field. An energy fraction rather
than a fraction of the maximum: a threshold on the peak cuts a faint part of an object
with one bright spot (blobs), while the energy held does not depend on how the
magnitude is spread. Then the captured object is polished
five ways and the one of lowest R_F is kept: ``POLISH_CYCLES`` cycles with a fixed
``POLISH_SIGMA`` blur and a looser ``POLISH_ENERGY`` (the capture support clips the faint
tails of smooth objects; a still looser 0.999 let a wrong letter member reach a lower
R_F than the right ones, so it was picked, at 0.19), then ``REFINE_FINAL_ER`` ER
iterations; four of the five first run ``KICK_CYCLES`` cycles on the captured support
less a ``KICK_SHIFT`` px sliver on one side (``S & roll(S, shift)``, the four
directions). That is Fienup & Wackerman's cure for twin stagnation (JOSA A 3, 1897,
1986): an object that is nearly centrosymmetric (the cell: an ellipse with an
off-centre nucleus) stagnates as a partial twin (a faint second nucleus at the mirrored
place, error 0.22 at R_F 0.018 on every member), which a support with a symmetric shape
cannot resolve; an asymmetric one tips it, and R_F picks the polish that escaped (0.06-0.09
at R_F 0.008-0.016 on three of three members). No support is given by the user or
estimated from the data: every support is what the member itself renders. The
refinement runs in torch on the member's device, so members stay deterministic.
Measured on the letter, blobs, cell, a smooth blob and a projected sphere (three field
starts each, ``benchmarks/bench_cdip.py`` for the population numbers): the field alone
gives 0.7-0.9, the refinement 0.02-0.13 on all fifteen starts (at 128^2 a cell member
still stops at 0.21, R_F 0.09). Started from a random
object in the anchoring disk instead of the field, the refinement without the kicks does
about as well on these objects (12 of 15 starts under 0.15, as from the field); from the
field's magnitude with random phases it does worse on the sphere (0.87 against 0.10):
the field's phases carry information, but most of the recovery is the refinement's.

The network outputs magnitude (through a softplus, so it is >= 0) and phase
(``output="polar"``, as the paper's field gives amplitude and phase), or real and
imaginary parts (``"cartesian"``).

Left out from the paper: the VGG perceptual loss (pretrained weights cannot be fetched
here), the X-Hexplane backbone (a plain SIREN renders 2D grids of this size well), and
the dynamic (2D + time) variant. ``field="3d"`` renders the paper's cross-dimensional
prior, a 3D field summed along ``z`` over ``depth`` samples; it costs ``depth`` times a
2D epoch.

Scale: the data are normalised so that the object's RMS over the grid is about 1 (the
network's natural range), and the result is scaled back, so ``|F rho|`` matches
``amplitude`` as for :func:`lensfree.engine.phasing.run`.

Determinism: the weights come from a ``torch.Generator`` seeded with the member's seed
(never the global one, so threads of a local back end do not share a stream), and
:func:`set_deterministic` makes the CPU kernels run the same way every time (one
thread, deterministic algorithms): a member is a pure function of its inputs and seed.

PyTorch is imported only by the functions here that need it (``pip install
'lensfree[cdip]'``): importing this module does not need it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .params import at_least, check_fields, one_of, param, positive, within
from .projections import fourier_r_factor

__all__ = ["CdipParams", "CdipResult", "anchor_radius", "energy_support", "require_torch",
           "run_member", "set_deterministic"]

LOSSES = ("poisson", "mae")
FIELDS = ("2d", "3d")
DEVICES = ("cpu", "cuda", "auto")
ANCHOR_EDGE = 1.5  # px: soft edge of the window, so pixels enter the fit gradually
REFINE_HIO, REFINE_ER, REFINE_FINAL_ER = 80, 20, 100  # iterations per cycle, and at the end
REFINE_BETA = 0.9  # HIO feedback
REFINE_SIGMA = (3.0, 1.5)  # px: blur of the support update, first and last capture cycle
SIGMA_GRID = 64  # px: the blurs are for this grid and scale with max(h, w) / SIGMA_GRID
POLISH_CYCLES, POLISH_SIGMA, POLISH_ENERGY = 10, 2.0, 0.995  # the looser polishing support
KICK_CYCLES, KICK_SHIFT = 5, 2  # cycles on a support cut by KICK_SHIFT px on one side
KICKS = (None, (KICK_SHIFT, 0), (-KICK_SHIFT, 0), (0, KICK_SHIFT), (0, -KICK_SHIFT))
EXTRA = "pip install 'lensfree[cdip]'"


@dataclass(frozen=True)
class CdipParams:
    """Parameters of one CDIP member (``lensfree phase --engine cdip``)."""

    epochs: int = param(800, "cdip: Adam steps per member", check=at_least(1))
    loss: str = param("poisson", "cdip: data fidelity, Poisson log-likelihood of A^2 or MAE "
                      "of A", check=one_of(*LOSSES))
    learning_rate: float = param(1e-3, "cdip: Adam learning rate", check=positive)
    anchor_start: float = param(0.25, "cdip: starting anchoring disk radius, fraction of the "
                                "half-width", check=within(0, 1.5, closed="hi"))
    anchor_end: float = param(0.5, "cdip: final anchoring disk radius, fraction of the "
                              "half-width (1.42 or more: the whole field)", check=positive)
    anchor_growth: float = param(0.5, "cdip: fraction of the epochs over which the disk "
                                 "widens to --anchor-end", check=within(0, 1, closed="hi"))
    hidden: int = param(64, "cdip: SIREN hidden width", check=at_least(1))
    layers: int = param(3, "cdip: SIREN hidden layers", check=at_least(1))
    omega: float = param(30.0, "cdip: SIREN first-layer frequency omega_0", check=positive)
    field: str = param("2d", "cdip: 2d field, or 3d field summed along z (the paper's "
                       "cross-dimensional prior)", check=one_of(*FIELDS))
    depth: int = param(8, "cdip: z samples of a 3d field", check=at_least(1))
    output: str = param("polar", "cdip: the network gives magnitude (softplus) and phase "
                        "(polar), or real and imaginary parts (cartesian)",
                        check=one_of("polar", "cartesian"))
    refine_cycles: int = param(40, "cdip: finishing cycles of HIO + ER on the rendered object "
                               "with a support taken from the object itself (0: the field "
                               "alone)", check=at_least(0))
    refine_energy: float = param(0.99, "cdip: the finishing support is the smallest set of "
                                 "the blurred object holding this fraction of its energy",
                                 check=within(0, 1, closed="hi"))
    object_threshold: float = param(0.1, "cdip: without refinement, phasing/supports is "
                                    "|rho| above this fraction of its maximum",
                                    check=within(0, 1))
    device: str = param("cpu", "cdip: torch device; auto takes a GPU when torch sees one",
                        check=one_of(*DEVICES))

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class CdipResult:
    """One member: the object (amplitude's scale), its support (the refinement's final one;
    without refinement |rho| above ``object_threshold``), R_F of every epoch of the field
    (of the windowed object the epoch fitted), the final R_F (after the refinement) and
    the seconds."""

    rho: np.ndarray
    support: np.ndarray
    r_fourier: np.ndarray
    final_r_fourier: float
    seconds: float


def require_torch():
    """The torch module, or ImportError naming the extra that installs it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"--engine cdip needs PyTorch: {EXTRA}") from exc
    return torch


def set_deterministic() -> None:
    """One intra-op thread and deterministic kernels for this process (CPU bits repeat)."""
    # deterministic cuBLAS needs a fixed workspace, set before CUDA starts (no-op on CPU)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch = require_torch()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def resolve_device(name: str) -> str:
    torch = require_torch()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no GPU")
    return name


def anchor_radius(epoch: int, params: CdipParams, half: float) -> float:
    """Radius in px of the anchoring disk at ``epoch``: ``anchor_start * half`` widening
    linearly to ``anchor_end * half`` (at most just past the corners: the whole field)
    after ``anchor_growth * epochs``."""
    full = min(params.anchor_end * half, math.sqrt(2.0) * half + 2 * ANCHOR_EDGE)
    start = params.anchor_start * half
    ramp = params.anchor_growth * params.epochs
    frac = 1.0 if ramp <= 0 else min(1.0, epoch / ramp)
    return start + (full - start) * frac


def _siren(torch, params: CdipParams, n_in: int, generator):
    """SIREN weights (Sitzmann et al. 2020 initialisation) drawn from ``generator``."""
    sizes = [n_in] + [params.hidden] * params.layers + [2]
    weights = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / a if i == 0 else math.sqrt(6.0 / a) / params.omega
        w = (torch.rand(b, a, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        bias = (torch.rand(b, generator=generator, dtype=torch.float32) * 2 - 1) / math.sqrt(a)
        weights += [w, bias]
    return weights


def _render(torch, weights, coords, omega: float):
    h = coords
    n = len(weights) // 2
    for i in range(n):
        w, b = weights[2 * i], weights[2 * i + 1]
        h = torch.nn.functional.linear(h, w, b)
        if i < n - 1:
            h = torch.sin(omega * h)
    return h


def _coords(torch, shape, params: CdipParams):
    """Pixel coordinates in [-1, 1] about the grid centre ``(h // 2, w // 2)`` (plus z)."""
    h, w = shape
    half = max(h // 2, w // 2)
    y = (torch.arange(h, dtype=torch.float32) - h // 2) / half
    x = (torch.arange(w, dtype=torch.float32) - w // 2) / half
    if params.field == "2d":
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        return torch.stack([yy, xx], dim=-1).reshape(-1, 2)
    z = torch.linspace(-1, 1, params.depth, dtype=torch.float32)
    yy, xx, zz = torch.meshgrid(y, x, z, indexing="ij")
    return torch.stack([yy, xx, zz], dim=-1).reshape(-1, 3)


def energy_support(rho: np.ndarray, sigma: float, energy: float) -> np.ndarray:
    """The smallest set of pixels of ``|rho|`` blurred by ``sigma`` px (periodic) that holds
    ``energy`` of its total energy ``sum |blurred|^2`` (ties at the cut are kept)."""
    power = ndimage.gaussian_filter(np.abs(rho).astype(np.float64), sigma, mode="wrap") ** 2
    ranked = np.sort(power.ravel())[::-1]
    total = np.cumsum(ranked)
    if total[-1] <= 0:
        return np.ones(rho.shape, bool)
    cut = ranked[min(int(np.searchsorted(total, energy * total[-1])), ranked.size - 1)]
    return power >= cut


def _refine(torch, rho, target, mask, params: CdipParams):
    """The finishing refinement of a rendered object (fft layout, normalised units).

    Capture: ``refine_cycles`` cycles of HIO then ER, each followed by a new support, the
    :func:`energy_support` (``refine_energy``) of the object itself, its blur narrowing
    from ``REFINE_SIGMA[0]`` to ``[1]`` px (times ``max(h, w) / SIGMA_GRID``, as is
    ``POLISH_SIGMA``). Then one polish per entry of ``KICKS``: for a
    shift, ``KICK_CYCLES`` cycles on the captured support less a ``KICK_SHIFT`` px sliver
    on one side (an asymmetric support, against twin stagnation), then ``POLISH_CYCLES``
    with a fixed ``POLISH_SIGMA`` blur and ``POLISH_ENERGY``, then ER. The polish of
    lowest R_F is kept. Returns the object and its support (numpy bool)."""
    def modulus(x):
        f = torch.fft.fft2(x)
        scaled = f * (target / torch.clamp(torch.abs(f), min=1e-12))
        return torch.fft.ifft2(torch.where(mask, scaled, f))

    def support_of(x, sigma, energy):
        s = energy_support(x.cpu().numpy(), sigma, energy)
        return torch.as_tensor(s, device=x.device)

    zero = torch.zeros((), dtype=rho.dtype, device=rho.device)

    def cycle(x, support):
        for _ in range(REFINE_HIO):
            p = modulus(x)
            x = torch.where(support, p, x - REFINE_BETA * p)
        for _ in range(REFINE_ER):
            x = torch.where(support, modulus(x), zero)
        return x

    n = params.refine_cycles
    scale = max(rho.shape) / SIGMA_GRID
    sig0, sig1 = REFINE_SIGMA[0] * scale, REFINE_SIGMA[1] * scale
    polish_sigma = POLISH_SIGMA * scale
    support = support_of(rho, sig0, params.refine_energy)
    for c in range(n):
        rho = cycle(rho, support)
        support = support_of(rho, sig0 + (sig1 - sig0) * c / max(1, n - 1),
                             params.refine_energy)
    best = None
    for shift in KICKS:
        x = rho
        if shift is not None:
            cut = support & torch.roll(support, shift, dims=(0, 1))
            for _ in range(KICK_CYCLES):
                x = cycle(x, cut)
        polish = support_of(x, polish_sigma, POLISH_ENERGY)
        for _ in range(POLISH_CYCLES):
            x = cycle(x, polish)
            polish = support_of(x, polish_sigma, POLISH_ENERGY)
        for _ in range(REFINE_FINAL_ER):
            x = torch.where(polish, modulus(x), zero)
        r_f = float(torch.abs(torch.abs(torch.fft.fft2(x))[mask] - target[mask]).sum())
        if best is None or r_f < best[0]:
            best = (r_f, x, polish)
    return best[1], best[2].cpu().numpy()


def run_member(amplitude: np.ndarray, valid: np.ndarray, params: CdipParams,
               seed: int) -> CdipResult:
    """Fit one neural field to the centred ``amplitude`` on ``valid`` pixels.

    Parameters
    ----------
    amplitude, valid : (h, w) arrays, centred (zero frequency at ``(h // 2, w // 2)``)
    params : CdipParams
    seed : int
        The member's seed (:func:`lensfree.engine.ghio.member_seed`), 0 <= seed < 2**64.

    Returns
    -------
    CdipResult
    """
    torch = require_torch()
    t0 = time.perf_counter()
    device = resolve_device(params.device)
    shape = amplitude.shape
    hh, ww = shape
    n_pix = hh * ww
    amp = np.where(valid, amplitude, 0).astype(np.float64)
    # data scale: object RMS ~1 over the grid, i.e. sum |F rho|^2 = N^2 (Parseval)
    norm = math.sqrt(float((amp**2).sum())) / n_pix if amp.any() else 1.0
    shifted = np.fft.ifftshift(amp / norm)  # zero frequency at [0, 0], as the FFT's
    target = torch.as_tensor(shifted, dtype=torch.float32, device=device)
    mask = torch.as_tensor(np.fft.ifftshift(valid), device=device)
    target_v = target[mask]
    counts_v = target_v**2
    generator = torch.Generator().manual_seed(int(seed))
    weights = [w.to(device).requires_grad_() for w in _siren(torch, params,
                                                             2 if params.field == "2d" else 3,
                                                             generator)]
    coords = _coords(torch, shape, params).to(device)
    yy, xx = np.mgrid[0:hh, 0:ww]
    half = max(hh // 2, ww // 2)
    r = torch.as_tensor(np.hypot(yy - hh // 2, xx - ww // 2), dtype=torch.float32,
                        device=device)
    optimiser = torch.optim.Adam(weights, lr=params.learning_rate)
    history = np.empty(params.epochs, np.float32)
    sum_a = float(target_v.sum())
    sum_i = float(counts_v.sum())

    def field():
        out = _render(torch, weights, coords, params.omega)
        if params.field == "3d":
            out = out.reshape(hh, ww, params.depth, 2).mean(dim=2)
        out = out.reshape(hh, ww, 2)
        if params.output == "polar":
            return torch.polar(torch.nn.functional.softplus(out[..., 0]), out[..., 1])
        return torch.complex(out[..., 0], out[..., 1])

    for epoch in range(params.epochs):
        radius = anchor_radius(epoch, params, half)
        window = torch.sigmoid((radius - r) / (ANCHOR_EDGE / 4))
        rho = field() * window
        mag = torch.abs(torch.fft.fft2(rho))[mask]
        if params.loss == "poisson":
            model = mag**2
            loss = (model - counts_v * torch.log(model + 1e-8)).sum() / sum_i
        else:
            loss = torch.abs(mag - target_v).sum() / sum_a
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            history[epoch] = float(torch.abs(mag - target_v).sum()) / sum_a
    with torch.no_grad():
        radius = anchor_radius(params.epochs, params, half)
        window = torch.sigmoid((radius - r) / (ANCHOR_EDGE / 4))
        rho = field() * window
        if params.refine_cycles:
            rho, support = _refine(torch, rho, target, mask, params)
        rho = rho.cpu().numpy().astype(np.complex128) * norm
    mag = np.abs(rho)
    if not params.refine_cycles:
        support = mag > params.object_threshold * mag.max() if mag.any() else np.zeros(shape, bool)
    final = fourier_r_factor(rho, amplitude, valid)
    return CdipResult(rho.astype(np.complex64), support, history, final,
                      time.perf_counter() - t0)
