"""The stable public path of loading a pruned directory: `pruned_perf.surgery.load_pruned(DIR)`.

The loader file written beside every width-pruned model imports PrunedLlamaConfig and
PrunedLlamaForCausalLM from here, in directories saved before and after the code moved to
pruned_perf.pruning.surgery; keep these names here so that those directories keep loading.
"""
from pruned_perf.pruning.surgery import PrunedLlamaConfig, PrunedLlamaForCausalLM, load_pruned

__all__ = ["PrunedLlamaConfig", "PrunedLlamaForCausalLM", "load_pruned"]
