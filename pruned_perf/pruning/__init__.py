"""Stage 1, pruning: size a method's cut, calibrate, plan it (methods/), cut the model physically
(surgery), and prepare the variants a sweep times, with their plans cached (variants)."""
