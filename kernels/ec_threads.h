/* What the kernels need from OpenMP beyond Cython's prange, with stand-ins when the
 * extension is built without it (setup.py decides; then every prange runs serially and
 * these say so).  Cython's `cimport openmp` would include <omp.h> unconditionally, which
 * a clang without libomp does not have, so the few calls go through here.
 *
 * ec_thread_id()     the calling thread's number in the current team (0 outside one):
 *                    per-thread scratch is scratch + ec_thread_id() * per_thread_floats
 * ec_openmp_version  _OPENMP (yyyymm of the spec) or 0
 * EC_OPENMP_LINK     the link flags setup.py used ("" without OpenMP)
 * EC_COMPILER        compiler name and version, as the compiler spells it
 */
#ifndef EDGECORE_EC_THREADS_H
#define EDGECORE_EC_THREADS_H

#ifdef _OPENMP
#include <omp.h>
static int ec_thread_id(void) { return omp_get_thread_num(); }
static int ec_in_parallel(void) { return omp_in_parallel(); }
static const long ec_openmp_version = (long)_OPENMP;
#else
static int ec_thread_id(void) { return 0; }
static int ec_in_parallel(void) { return 0; }
static const long ec_openmp_version = 0;
#endif

#ifndef EC_OPENMP_LINK
#define EC_OPENMP_LINK ""
#endif
static const char ec_openmp_link[] = EC_OPENMP_LINK;

#if defined(__clang__)
static const char ec_compiler[] = "clang " __clang_version__;
#elif defined(__GNUC__)
static const char ec_compiler[] = "gcc " __VERSION__;
#else
static const char ec_compiler[] = "unknown";
#endif

#endif /* EDGECORE_EC_THREADS_H */
