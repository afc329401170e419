"""The stable public path of loading a pruned directory: `pruned_perf.surgery.load_pruned(DIR)`.

The loader file written beside every width-pruned model imports PrunedLlamaConfig and
PrunedLlamaForCausalLM from here, in directories saved by every version (the code behind them has lived in
pruned_perf.pruning.surgery and now lives in pruned_perf.llama.checkpoint); keep these names here so that those
directories keep loading.
"""
from pruned_perf.llama.checkpoint import PrunedLlamaConfig, PrunedLlamaForCausalLM, load_pruned

__all__ = ["PrunedLlamaConfig", "PrunedLlamaForCausalLM", "load_pruned"]
