"""Framework adapters, one thin file per framework (installed as ``nnhealth.hooks``).

Adapters only observe: they hand arrays to the Monitor's manual API and never
decide anything. Importing this package imports no framework.
"""
