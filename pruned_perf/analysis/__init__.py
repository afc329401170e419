"""Stage 3, analysis: results files and baselines, verdicts, report tables and figures. Torch-free
(tests/test_torch_free.py): it reads JSON, so it runs where torch is not installed, and starts fast."""
