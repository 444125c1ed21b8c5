"""Jobs: typed config, one run, batches with manifests, atomic outputs, locks, schedulers."""
