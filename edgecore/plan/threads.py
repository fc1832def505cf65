"""Thread counts: the default a model gets, the check a user's value gets, and what the
build can do (edgecore.build_info).

A thread count belongs to a plan: its per-thread scratch is sized for it and the runner
passes it to every parallel kernel (kernels/threads.pxi), so two models in two Python
threads each run with their own.  Nothing here sets a process-wide OpenMP value.
"""
import os

from .. import _kernels


def default_num_threads():
    """The CPUs this process may run on (its affinity mask: a container's or taskset's
    share, not the machine's), or os.cpu_count() where that is unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_num_threads(value):
    """num_threads as given to load() or set on a model: None -> the default, else a
    positive int."""
    if value is None:
        return default_num_threads()
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {value!r}")
    return int(value)


def _openmp_runtime():
    """The OpenMP runtime library this process has mapped (Linux), else None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit("/", 1)[-1].strip()
                if name.startswith(("libgomp", "libomp", "libiomp")):
                    return name
    except OSError:
        pass
    return None


def build_info():
    """How edgecore._kernels was built and what it will use here."""
    version, link, compiler = _kernels.openmp_info()
    name, mr, nr = _kernels.gemm_isa()
    if not version:
        linked = None
    elif "-static-openmp" in link:
        linked = f"static libomp ({link})"
    else:
        linked = f"{_openmp_runtime() or 'shared runtime'} ({link})"
    return {
        "openmp": bool(version),
        "openmp_version": version or None,  # the spec date the compiler implements
        "openmp_linked": linked,
        "compiler": compiler,
        "gemm_isa": name,
        "gemm_tile": (mr, nr),
        "dwconv_isa": _kernels.dwconv_isa()[0],  # depthwise micro-kernels (EDGECORE_DWCONV_ISA)
        "activation_isa": _kernels.activation_isa(),  # the vector activations' variant
        "cpu_count": default_num_threads(),
    }
