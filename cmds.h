/*
 * cmds.h — the pxc commands that run a model: train, eval, sample, import
 * (cmd_run.c). Each takes the whole command line (argv[1] is the command's
 * name), prints its own errors, and returns the process exit status:
 * 0 success, 1 failure, 2 a usage error, 130 interrupted.
 */
#ifndef PXC_CMDS_H
#define PXC_CMDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_emit(int argc, char **argv);

/* Print "pxc CMD: error: <message>" and a newline to stderr; returns 1. */
int cmd_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Their usage text, for `pxc help`. */
extern const char cmd_run_usage[];

#endif
