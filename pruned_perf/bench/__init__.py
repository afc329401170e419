"""Stage 2, measuring: the timing protocol of one point (measure, steadiness), the sweep and its point
loop (sweep, session), the hardware fingerprint, and the thin pytest plugin that drives them."""
