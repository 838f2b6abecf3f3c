"""The one family table: a family name -> its model class and its command-line recipe.

Every list of families in probgen is read from :data:`FAMILIES` — the command line's ``probgen fit
<family>`` choices and dispatch, the checkpoint loader's ``family -> class`` table
(:data:`probgen.checkpoint.FAMILIES`), and the protocol test that every family must pass. Entries are
import paths (``"package.module:QualifiedName"``), imported only when first used, so reading the table
imports no family.

Adding a family is one folder (``probgen/<family>/`` with its model and its ``recipe.py``) and one line
below; see docs/design.md.

Example:
    >>> from probgen import registry
    >>> registry.names()[:3]
    ['cnf', 'ddpm', 'ebm']
    >>> registry.model_class("flow").__name__
    'Flow'
    >>> registry.recipe("flow").name
    'flow'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from probgen._checks import check_choice

__all__ = ["Family", "FAMILIES", "names", "model_class", "recipe", "recipe_for", "checkpoint_families", "resolve"]


@dataclass(frozen=True)
class Family:
    """One row of the family table.

    Attributes:
        model: ``"module:Class"`` of the model class (rebuilt from checkpoints as ``Class(**config)``).
        recipe: ``"module:Class"`` of its command-line recipe, or ``None`` for a model the CLI does not fit
            (it still loads from checkpoints).
        saved_as: the ``model.family`` its checkpoints carry, when another row owns it (a CNF is a
            ``Flow``, saved as ``"flow"``); ``None``: this row's own name.
        fit: whether ``probgen fit <name>`` takes this row; ``False``: its recipe only reads back models
            another family's recipe built (``probgen fit flow`` builds an ``ImageFlow`` for images).
    """

    model: str
    recipe: str | None = None
    saved_as: str | None = None
    fit: bool = True


#: family name -> (model class, recipe), the only list of families in probgen
FAMILIES: dict[str, Family] = {
    "flow": Family("probgen.flows:Flow", "probgen.flows.recipe:FlowRecipe"),
    "image-flow": Family("probgen.flows:ImageFlow", "probgen.flows.recipe:ImageFlowRecipe", fit=False),
    "fm": Family("probgen.flows:FlowMatching", "probgen.flows.recipe_fm:FlowMatchingRecipe"),
    "cnf": Family("probgen.flows:Flow", "probgen.flows.recipe:CNFRecipe", saved_as="flow"),
    "made": Family("probgen.flows:MADE", "probgen.flows.recipe:MADERecipe"),
    "vae": Family("probgen.vae:VAE", "probgen.vae.recipe:VAERecipe"),
    "cvae": Family("probgen.vae:ConditionalVAE"),
    "ebm": Family("probgen.ebm:EBM", "probgen.ebm.recipe:EBMRecipe"),
    "rbm": Family("probgen.ebm:BernoulliRBM", "probgen.ebm.recipe:RBMRecipe"),
    "gaussian-rbm": Family("probgen.ebm:GaussianBernoulliRBM"),
    "score-sde": Family("probgen.diffusion:ScoreSDE", "probgen.diffusion.recipe:ScoreSDERecipe"),
    "ddpm": Family("probgen.diffusion:DDPM", "probgen.diffusion.recipe:DDPMRecipe"),
    "edm": Family("probgen.diffusion:EDM", "probgen.diffusion.recipe_edm:EDMRecipe"),
    "gan": Family("probgen.gan:GAN", "probgen.gan.recipe:GANRecipe"),
    "wgan-gp": Family("probgen.gan:WGANGP", "probgen.gan.recipe:WGANGPRecipe"),
    # a continuous model wrapped in the standardizing bijection (any family above; see probgen.ops.standardize)
    "standardized": Family("probgen.ops.standardize:Standardized"),
    # ... or in the whitening bijection (full covariance; the tabular rows of flow)
    "whitened": Family("probgen.ops.standardize:Whitened"),
}


def resolve(path: str) -> Any:
    """The object named by ``"package.module:QualifiedName"``, imported now.

    Example:
        >>> resolve("probgen.flows:Flow").__name__
        'Flow'
    """
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def names() -> list[str]:
    """The family names ``probgen fit`` accepts (the rows with a recipe and ``fit``), sorted."""
    return sorted(name for name, row in FAMILIES.items() if row.recipe is not None and row.fit)


def model_class(name: str) -> type:
    """The model class of family ``name``.

    Raises:
        ValueError: an unknown family, naming the valid ones.
    """
    check_choice("family", name, sorted(FAMILIES))
    return resolve(FAMILIES[name].model)


def recipe(name: str):
    """A fresh recipe (:class:`probgen.recipes.Recipe`) for the ``probgen fit`` family ``name``.

    Raises:
        ValueError: ``name`` is not a family the command line fits, naming the valid ones.
    """
    check_choice("family", name, names())
    return resolve(FAMILIES[name].recipe)()


def recipe_for(model):
    """The recipe that reads back a loaded model, found through ``model.family`` (a standardized model
    through the family of the model it wraps).

    Raises:
        ValueError: no recipe reads models of that family.
    """
    family = getattr(model, "inner_family", None) or getattr(model, "family", None)
    row = FAMILIES.get(family) if isinstance(family, str) else None
    if row is None or row.recipe is None or row.saved_as is not None:
        raise ValueError(f"no command-line recipe for a model of family {family!r}")
    return resolve(row.recipe)()


def checkpoint_families() -> dict[str, str]:
    """``model.family -> "module:Class"`` for the checkpoint loader (rows saved under their own name)."""
    return {name: row.model for name, row in FAMILIES.items() if row.saved_as is None}
