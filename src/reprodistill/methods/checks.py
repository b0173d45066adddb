"""Config checks that need the method registry (``config`` sits below the methods and cannot see it)."""

from __future__ import annotations

from reprodistill.config import RunConfig, method_variant
from reprodistill.errors import ConfigError
from reprodistill.methods.base import METHODS


def check_config(cfg: RunConfig) -> RunConfig:
    """Check ``cfg.methods`` and ``cfg.method_options`` against the registry: every name is a registered method or a
    bench variant of one, and every option parses. Call after :func:`reprodistill.config.load_config`; the engine
    and the bench call it too, so a bad name fails before any expensive work."""
    for name, opts in cfg.method_options.items():
        METHODS.get(name).parse_options(opts)
    for name in cfg.methods:  # a variant's merged options are checked now, not hours into a bench
        base, opts = method_variant(cfg, name)
        METHODS.get(base).parse_options(opts)
    clash = sorted(set(cfg.bench.variants) & set(METHODS.names()))
    if clash:
        raise ConfigError(f"bench.variants {clash} shadow registered methods; give the variants other names")
    return cfg
