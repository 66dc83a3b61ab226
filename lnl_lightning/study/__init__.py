"""The paper's studies as Hydra multiruns, and the callbacks every multirun ends with."""
