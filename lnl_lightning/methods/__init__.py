"""The debiasing methods, each an update rule over the engine's member axis, and their losses."""
