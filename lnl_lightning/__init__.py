"""Learning Not to Learn with PyTorch Lightning and Hydra."""
