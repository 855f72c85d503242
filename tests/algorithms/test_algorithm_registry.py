"""The Registry used at every extension point, and the `python3 -m longrl.algorithms` listing.

(Named test_algorithm_registry.py, not test_registry.py: without __init__.py files pytest needs
test basenames that are unique across the whole tests/ tree.)
"""

from __future__ import annotations

import runpy

import pytest

from longrl.algorithms import ADVANTAGES, KL_PENALTIES, POLICY_LOSSES
from longrl.config import ConfigError
from longrl.registry import Registry


def make_registry() -> Registry:
    registry = Registry("section.choice")

    @registry.register("beta")
    def beta() -> str:
        return "b"

    registry.register("alpha")(lambda: "a")
    return registry


def test_registered_names_are_looked_up_listed_and_counted():
    registry = make_registry()
    assert registry["beta"]() == "b"
    assert "alpha" in registry and "gamma" not in registry
    assert sorted(registry) == ["alpha", "beta"] and len(registry) == 2
    assert registry.get("gamma") is None


def test_registering_a_taken_name_is_refused():
    registry = make_registry()
    with pytest.raises(ValueError, match=r"section.choice: the name 'beta' is already registered"):
        registry.register("beta")(lambda: "other")
    assert registry["beta"]() == "b"


def test_unknown_name_error_names_the_config_key_and_lists_sorted_choices():
    with pytest.raises(ConfigError, match=r"^section.choice='gamma' is unknown; choose from \['alpha', 'beta'\]$"):
        make_registry()["gamma"]


def test_cli_prints_one_section_per_registry_with_every_name(capsys):
    runpy.run_module("longrl.algorithms", run_name="__main__")
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert sections == ["algorithm.adv_estimator:", "worker.actor.loss_type:", "algorithm.kl_penalty:"]
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == set(ADVANTAGES) | set(POLICY_LOSSES) | set(KL_PENALTIES)


def test_an_entry_declares_what_it_needs_and_an_undeclared_one_gets_the_registry_default():
    registry = Registry("section.choice", default_requires="nothing")
    registry.register("plain")(lambda: "p")
    registry.register("grouped", requires="groups")(lambda: "g")
    assert registry.requires("plain") == "nothing" and registry.requires("grouped") == "groups"
    with pytest.raises(ConfigError, match=r"section.choice='gamma' is unknown"):
        registry.requires("gamma")
