/*
 * test_emitc_paper.c — the paper's network (models/pixelcnnpp_cifar10.yaml)
 * at full image size with --set nr_resnet=1 nr_filters=16 (10 mixture
 * components, dropout 0.5 in training mode): 32x32x3, and 28x28x1 with 10
 * classes, batch 2. The emitted C (cc -std=c11 -O2 -Wall -Wextra -Werror,
 * OpenBLAS) against the reference backend: data-dependent init, loss within
 * 1e-5 relative, l and nll within 1e-5 of their max, every parameter
 * gradient tensor within 1e-4 of its max, the likelihood entry, evaluation
 * (test_emitc_util.h).
 */
#include "test_emitc_util.h"

static void test_cifar_size(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=16", "dropout=0.5"};
    EmNet e;
    em_build(&e, "pixelcnnpp_cifar10", sets, 3, NULL);
    assert_int_equal(e.g.H, 32);
    assert_int_equal(e.g.C, 3);
    em_compare_with_ref(&e, 2, false, 17);
    em_free(&e);
}

static void test_mnist_size(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=16", "dropout=0.5", "height=28", "width=28", "channels=1", "classes=10"};
    EmNet e;
    em_build(&e, "pixelcnnpp_cifar10", sets, 7, NULL);
    em_compare_with_ref(&e, 2, true, 23);
    em_free(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cifar_size),
        cmocka_unit_test(test_mnist_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
