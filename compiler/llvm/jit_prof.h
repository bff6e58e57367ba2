/*
 * jit_prof.h — compiler/llvm internal: the call-site table of a JIT model's
 * profile (jit_prof.c). A site is a JitProfRow without its measurements.
 */
#ifndef PXC_JIT_PROF_H
#define PXC_JIT_PROF_H

#include "jit.h"

struct KirProgram;
typedef JitProfRow JitProfSite;

/* One site per step of every entry, in entry then step order; free with
 * jit_prof_sites_free. */
JitProfSite *jit_prof_sites(const struct KirProgram *prog, int *nsites);
void jit_prof_sites_free(JitProfSite *t, int n);

#endif
