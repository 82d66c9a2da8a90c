"""Demo patients for nnhealth: a plain-numpy network with switchable training faults."""
