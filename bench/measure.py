"""Shared by the benchmarks that measure fresh processes."""

# Pasted into each measured child process.  The process's own peak: /proc VmHWM.
# getrusage(RUSAGE_SELF).ru_maxrss of a child includes its parent's resident size at fork
# (Linux keeps that high-water mark across exec), so a child started from a large pytest
# process over-reports.
PEAK_RSS_SOURCE = """
def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
