"""The frozen FM's features: extraction passes, the on-disk cache, cached augmented views, and the per-split
features a method reads (:class:`~reprodistill.features.split.FeatureSplit`). Methods and the engine both build on
this package; it never imports either."""
