"""The model as a graph of layer calls: building it from a parsed config (graph.py),
inlining nested models (flatten.py) and the rewrites that fold layers together
(rewrites.py).  Imports layers; never plan/ or kernels."""
