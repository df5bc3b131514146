"""Building blocks, one module per family: scaling, momentum, adaptive, decay, clipping.

The public names are gathered in :mod:`gradtx`; import them from there.
"""
