"""Ptychography, far and near field: exit waves, object/probe updates, position refinement.

Conventions: a position ``(y, x)`` is where the probe array's pixel ``(0, 0)`` falls on the
object, in object pixels of the position frame; the object array starts at ``origin`` of
that frame (see :func:`object_frame`), so position ``j`` crops
``O[c_y:c_y+h, c_x:c_x+w]`` with ``c = round(r_j - origin)`` (whole pixels; the positions
themselves are refined continuously). Amplitudes handed to the engine are unshifted
(zero frequency at ``[0, 0]``), see :func:`prepare_amplitudes`.

Model (SCIENCE.md section 5): ``psi_jm = P_m O_j``, ``I_j = sum_m |D psi_jm|^2``; the
Fourier projection ``psi'_jm = D^-1[A_j D psi_jm / sqrt(I_j)]`` on measured pixels, with
``D`` the far-field FFT or the near-field angular spectrum (``propagate``).

Modules, along the seams of the method:

- ``propagate``: sample plane to detector, far-field FFT or angular spectrum
  (:class:`Propagator`), and the Fresnel-scaling geometry.
- ``geometry``: the object frame, crops and sub-pixel rests, illumination.
- ``probe``: the starting probe, orthogonal modes, the probe spectrum.
- ``kernel``: one position (exit waves, Fourier projection, Fourier error, position
  step), :class:`PositionKernel`, shared by both engines.
- ``pie``: ePIE and rPIE, serial, :func:`pie_iteration`.
- ``parallel``: blocks of positions return sums that the root folds in block order,
  :func:`block_update` and :func:`apply_update`.
- ``lsqml``: LSQML (Odstrcil et al. 2018): the parallel form's directions with every
  position's optimal step lengths, a second pass of block sums.
- ``dm``: the difference map (Thibault et al. 2009): every position's exit waves kept
  between iterations (the caller keeps them), the overlap projection from the parallel
  form's block sums, :func:`dm.dm_block`, then the probe's, :func:`dm.dm_probe_block`.
- ``positions``: the steps applied, bounded, global part removed, :func:`refine_positions`.
- ``score``: object and position errors against a truth, :func:`score`.
- ``params``: :class:`PtychoParams`.

Updates return new state: :func:`pie_iteration` and :func:`apply_update` leave the object
and probe they are given untouched.

References
----------
A. M. Maiden and J. M. Rodenburg, Ultramicroscopy 109, 1256 (2009).
A. M. Maiden, D. Johnson and P. Li, Optica 4, 736 (2017).
M. Odstrcil, A. Menzel and M. Guizar-Sicairos, Opt. Express 26, 3108 (2018) (LSQML).
P. Thibault, M. Dierolf, O. Bunk, A. Menzel and F. Pfeiffer, Ultramicroscopy 109, 338
(2009) (the difference map).
P. Thibault and A. Menzel, Nature 494, 68 (2013) (mixed states).
P. Dwivedi et al., Ultramicroscopy 192, 29 (2018) (gradient position correction).
"""

from lensfree.engine.ptycho.geometry import corners, illumination, in_frame, object_frame
from lensfree.engine.ptycho.kernel import PositionKernel, prepare_amplitudes
from lensfree.engine.ptycho.parallel import BlockResult, apply_update, block_update, momentum_step
from lensfree.engine.ptycho.params import ENGINES, PtychoParams
from lensfree.engine.ptycho.pie import pie_iteration
from lensfree.engine.ptycho.positions import refine_positions
from lensfree.engine.ptycho.probe import initial_probe, orthogonalise_modes
from lensfree.engine.ptycho.propagate import PROPAGATIONS, Propagator, fresnel_scaling
from lensfree.engine.ptycho.score import Score, object_error, position_error, score

__all__ = ["BlockResult", "ENGINES", "PROPAGATIONS", "PositionKernel", "Propagator",
           "PtychoParams", "Score", "fresnel_scaling",
           "apply_update", "block_update", "corners", "illumination", "in_frame",
           "initial_probe", "momentum_step", "object_error", "object_frame",
           "orthogonalise_modes",
           "pie_iteration", "position_error", "prepare_amplitudes", "refine_positions",
           "score"]
