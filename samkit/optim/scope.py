r"""Perturbation scope: which parameters SAM perturbs (``samkit.scope``).

A parameter group with ``perturb=False`` is left out of the ascent: no ascent gradient is taken for
it (the ascent's backward asks autograd only for the perturbed parameters, so weight gradients
nobody uses are not computed), it is not part of the ascent norm, and it is not moved; its descent
gradient is the one at the perturbed point of the others, and the base optimizer steps it as usual.
With scope :math:`S`,

.. math::
    e_S = \rho\, \frac{g_S}{\lVert g_S \rVert}, \qquad
    w \leftarrow \operatorname{base\_step}\big(w,\ \nabla L(w_S + e_S,\ w_{\bar S})\big)

(``rho=0`` on a group is different: the group is not moved, but its gradient still enters the
norm, as in SAM over all parameters.) These helpers build the groups; each returns a list for
``samkit.SAM(groups, ...)``, the perturbed group first, with ``**options`` set on it (its ``rho``,
say) and the rest in one group with ``perturb=False``:

* :func:`norm_layers` — SAM-ON (Mueller et al., "Normalization Layers Are All That Sharpness-Aware
  Minimization Needs", NeurIPS 2023): only the affine parameters of normalisation layers;
* :func:`last_layer` — only the last linear layer (the classifier head);
* :func:`weights_only` — every parameter but biases and normalisation parameters;
* :func:`select` — any rule ``perturb(name, parameter) -> bool``.

Example::

    groups = samkit.scope.norm_layers(model)
    opt = samkit.SAM(groups, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from samkit.errors import SamkitError

__all__ = ["NORM_LAYERS", "last_layer", "norm_layers", "select", "weights_only"]

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    NORM_LAYERS = (*NORM_LAYERS, nn.RMSNorm)


def select(model: nn.Module, perturb: Callable[[str, nn.Parameter], bool], what: str = "the rule",
           **options: Any) -> list[dict[str, Any]]:
    """Groups of ``model``'s trainable parameters: those ``perturb(name, p)`` chooses (with
    ``options``), then the rest with ``perturb=False`` (left out when empty)."""
    _check_model(model)
    if not callable(perturb):
        raise SamkitError(f"perturb must be a function perturb(name, parameter) -> bool, got {perturb!r}")
    chosen: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (chosen if perturb(name, p) else rest).append(p)
    if not chosen:
        raise SamkitError(
            f"{what} selects no trainable parameter of this model: nothing would be perturbed; "
            "choose another scope or use samkit.SAM(model.parameters(), ...)"
        )
    groups: list[dict[str, Any]] = [{"params": chosen, **options}]
    if rest:
        groups.append({"params": rest, "perturb": False})
    return groups


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise SamkitError(f"model must be an nn.Module (whose parameters are grouped), got {model!r}")


def _owners(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> set[int]:
    """ids of the parameters that belong (directly) to modules of these kinds."""
    _check_model(model)
    return {id(p) for m in model.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False)}


def norm_layers(model: nn.Module, **options: Any) -> list[dict[str, Any]]:
    """SAM-ON: perturb only the normalisation layers' affine parameters (BatchNorm, GroupNorm,
    LayerNorm, InstanceNorm, RMSNorm)."""
    owned = _owners(model, NORM_LAYERS)
    return select(model, lambda name, p: id(p) in owned, "norm_layers (no affine normalisation layer)",
                  **options)


def last_layer(model: nn.Module, **options: Any) -> list[dict[str, Any]]:
    """Perturb only the last ``nn.Linear`` of the model (in registration order: the head)."""
    _check_model(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise SamkitError("last_layer: the model has no nn.Linear layer; use samkit.scope.select")
    owned = {id(p) for p in linears[-1].parameters(recurse=False)}
    return select(model, lambda name, p: id(p) in owned, "last_layer", **options)


def weights_only(model: nn.Module, **options: Any) -> list[dict[str, Any]]:
    """Perturb every parameter except biases and normalisation parameters."""
    norms = _owners(model, NORM_LAYERS)
    return select(model, lambda name, p: id(p) not in norms and not name.endswith("bias"),
                  "weights_only", **options)
