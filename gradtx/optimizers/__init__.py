"""Optimizers: compositions of transforms, one module per family.

The public names are gathered in :mod:`gradtx`; import them from there.
"""
