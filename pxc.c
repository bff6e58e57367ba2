/*
 * pxc.c — the pxc program: a thin driver over libpxc and the runtime. It is
 * the only place that prints diagnostics and exits.
 */
#include <stdio.h>
#include <string.h>

#include "base/base.h"

static const char *usage =
    "usage: pxc <command> [options]\n"
    "\n"
    "commands:\n"
    "  check SPEC [--set k=v]...   parse, expand and shape-check a spec; print its layer table\n"
    "  help                        this text\n";

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("pxc %s\n", PXC_VERSION);
        return 0;
    }
    fprintf(stderr, "pxc: unknown command '%s'\n%s", argv[1], usage);
    return 2;
}
