"""Sub-commands of the ``nnhealth`` command line, one module each (see nnhealth.cli)."""
