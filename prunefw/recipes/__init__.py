"""Pruning recipes: one TOML file says what to prune and how.

A recipe has an optional ``[global]`` section (criteria ranking all selected
tensors together, through :class:`~prunefw.GlobalPruningContext`) and optional
``[[layer]]`` rules (criteria for the tensors of the modules a rule matches by
qualified-name glob and/or module type, through
:class:`~prunefw.LayerPruningContext`). Criteria are named by their registered
name with keyword arguments, so plugin criteria work by name. Every key is
documented in ``docs/recipes.md``::

    [global]
    criteria = [{ name = "magnitude", amount = 0.5 }]
    module_types = ["Linear", "Conv2d"]
    include = ["features.*"]

    [[layer]]
    match = "classifier"
    criteria = [{ name = "percentile", lower = 0.1, upper = 0.9 }]

Validation happens in two steps, both before the model is touched:

1. :func:`load_recipe` / :meth:`Recipe.from_dict` check everything that needs no
   model: keys, types, criterion names, and criterion parameters (each criterion
   is built once from them, then discarded), module type names, the strategy.
2. :meth:`Recipe.resolve` (called by :func:`apply_recipe`) finds the tensors in
   the model: a rule that matches no tensor, or a tensor matched by two rules,
   is an error.

Every error is a :class:`~prunefw.errors.RecipeError` saying
``<file>: [<section or rule>] <problem>. Fix: <how>``.

The package, one concept per module:

* :mod:`~prunefw.recipes.schema`: the frozen dataclasses (:class:`Recipe`, its
  sections, :class:`CriterionSpec`, :class:`ResolvedRecipe`) and the keys;
* :mod:`~prunefw.recipes.parse`: TOML text or a dict to a validated recipe
  (:func:`load_recipe`);
* :mod:`~prunefw.recipes.criteria`: a recipe's criterion checked against its class;
* :mod:`~prunefw.recipes.module_types`: module class names, looked up without
  importing anything;
* :mod:`~prunefw.recipes.resolve`: the tensors each section and rule selects in a model;
* :mod:`~prunefw.recipes.apply`: :func:`apply_recipe`, :func:`gradual_pruner` and
  the progress :class:`Tracker`;
* :mod:`~prunefw.recipes.messages`: the error message format.

Order of application: the ``[global]`` criteria first, then each tensor's rule
criteria, each on the weights still unpruned (so a tensor may be in the global
selection *and* in a layer rule; ``exclude`` it from ``[global]`` if it should
only follow its rule). :func:`apply_recipe` is all-or-nothing: if anything fails,
the model is left exactly as it was.

Example:
    >>> from torch import nn
    >>> from prunefw import sparsity_report
    >>> from prunefw.recipes import Recipe, apply_recipe
    >>> recipe = Recipe.from_dict(
    ...     {
    ...         "global": {"criteria": [{"name": "magnitude", "amount": 0.5}]},
    ...         "layer": [{"match": "2", "criteria": [{"name": "random", "prune_ratio": 0.5,
    ...                                               "seed": 0}]}],
    ...     }
    ... )
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> contexts = apply_recipe(model, recipe)
    >>> [type(ctx).__name__ for ctx in contexts]
    ['GlobalPruningContext', 'LayerPruningContext']
    >>> sparsity_report(model, pruned_only=True).zeros > 48
    True
"""

from __future__ import annotations

from prunefw.recipes.apply import Tracker, apply_recipe, gradual_pruner
from prunefw.recipes.parse import load_recipe
from prunefw.recipes.schema import (
    GLOBAL_KEYS,
    LAYER_KEYS,
    SCHEDULE_KEYS,
    TOP_KEYS,
    CriterionSpec,
    GlobalSection,
    LayerRule,
    Recipe,
    ResolvedRecipe,
    ScheduleSection,
)

__all__ = [
    "GLOBAL_KEYS",
    "LAYER_KEYS",
    "SCHEDULE_KEYS",
    "TOP_KEYS",
    "CriterionSpec",
    "GlobalSection",
    "LayerRule",
    "Recipe",
    "ResolvedRecipe",
    "ScheduleSection",
    "Tracker",
    "apply_recipe",
    "gradual_pruner",
    "load_recipe",
]
