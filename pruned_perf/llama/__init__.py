"""The model code: presets and real weights, the pruning plan, modules of pruned shapes, and the pruned
checkpoint format."""
