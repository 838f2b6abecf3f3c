"""The one family table (probgen.registry): every list of families reads it, lookups are lazy, errors name
the valid choices, and the old probgen.recipes names still work (with a warning where they moved)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from probgen import checkpoint, recipes, registry
from probgen.cli import build_parser


def test_every_row_resolves_to_its_model_class_and_recipe():
    for name, row in registry.FAMILIES.items():
        cls = registry.model_class(name)
        assert isinstance(cls, type)
        assert getattr(cls, "family") == (row.saved_as or name)
        if row.recipe is not None and row.fit:
            recipe = registry.recipe(name)
            assert isinstance(recipe, recipes.Recipe) and recipe.name == name
        elif row.recipe is not None:  # reads back models another family's recipe builds (image-flow)
            assert isinstance(registry.resolve(row.recipe)(), recipes.Recipe) and name not in registry.names()


def test_checkpoint_table_and_cli_choices_come_from_the_registry():
    assert checkpoint.FAMILIES == registry.checkpoint_families()
    assert set(checkpoint.FAMILIES) == {n for n, r in registry.FAMILIES.items() if r.saved_as is None}
    assert recipes.names() == registry.names() == sorted(n for n, r in registry.FAMILIES.items()
                                                                   if r.recipe and r.fit)
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    family_help = next(a.help for a in fit._actions if a.dest == "family")
    assert all(name in family_help for name in registry.names())


def test_reading_the_table_imports_no_family():
    code = ("import sys, probgen.registry as r, probgen.checkpoint; r.names(); "
            "print(any(m in sys.modules for m in ('probgen.flows.recipe', 'probgen.gan.recipe', "
            "'probgen.diffusion.recipe')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_family_names_the_valid_ones():
    with pytest.raises(ValueError, match="family.*'cnf'.*'wgan-gp'"):
        registry.recipe("nope")
    with pytest.raises(ValueError, match="family"):
        recipes.get("cvae")  # a model without a command-line recipe


def test_for_model_finds_the_recipe_through_the_family_and_through_a_standardized_wrapper():
    import torch

    from probgen.flows import Flow
    from probgen.ops.standardize import standardize

    flow = Flow(2, "realnvp", num_layers=2)
    assert recipes.for_model(flow).name == "flow"
    assert recipes.for_model(standardize(flow, torch.randn(10, 2))).name == "flow"
    assert recipes.for_model(Flow(2, "cnf", hidden_dims=(8,))).name == "flow"  # a CNF is read back as a flow
    with pytest.raises(ValueError, match="no command-line recipe for a model of family None"):
        recipes.for_model(torch.nn.Linear(2, 2))


def test_moved_recipe_names_still_import_with_a_deprecation_warning():
    from probgen.flows.recipe import FlowRecipe

    with pytest.warns(DeprecationWarning, match="moved to probgen.flows.recipe.FlowRecipe"):
        assert recipes.FlowRecipe is FlowRecipe
    with pytest.warns(DeprecationWarning, match="probgen.registry.FAMILIES"):
        assert recipes.RECIPES["flow"] is FlowRecipe


def test_options_are_checked_once_at_the_entry():
    recipe = registry.recipe("flow")
    with pytest.raises(ValueError, match="--kind.*'spline'"):
        recipe.check_options("nope", None)
    with pytest.raises(ValueError, match="--objective is not used by family 'flow'"):
        recipe.check_options(None, "cd")
