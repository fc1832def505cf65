"""Plain NumPy float64 references for every kernel family in ``edgecore._kernels``.

Written for clarity, not speed: each function states the Keras semantics it implements and
computes in float64 from the (float32) inputs, so a kernel's error is measured against the
exact result of the same inputs.  ``check.py`` holds the comparison helpers the kernel tests
share (tolerance bounded by the magnitude of the summed terms, readable failure reports).
"""
