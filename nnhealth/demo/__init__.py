"""Demo patients for nnhealth: a small network (plain numpy, or the same model in PyTorch) with switchable training faults, and a learning-rate search over it."""
