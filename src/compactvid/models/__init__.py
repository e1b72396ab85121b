"""Models: frame aggregations, video-level classifiers, the paper's network, and the registry.

Import from the modules (`compactvid.models.registry`, `.args`, `.report`, ...): the package itself
imports nothing, so that reading `ModelArgs` (as the flag parser does) does not load torch.
"""
