/*
 * test_emitc_ablations.c — the ablation specs of models/ablations change the
 * graph's shape (no U-net shortcuts: no concat into the ul stream's nin; no
 * downsampling: every stage at full size, no deconvolutions), and the
 * conditional Fashion-MNIST model conditions every block on a class: emitted C
 * of each (R=2, F=6, 8x8) against the reference backend (init, training
 * step, every gradient, likelihood entry, evaluation; test_emitc_util.h).
 */
#include "test_emitc_util.h"

static void run(const char *model, uint64_t seed) {
    const char *sets[] = {"nr_resnet=2", "nr_filters=6", "height=8", "width=8"};
    EmNet e;
    em_build(&e, model, sets, 4, NULL);
    printf("%s\n", model);
    em_compare_with_ref(&e, 2, e.g.classes > 0, seed);
    em_free(&e);
}

static void test_no_shortcuts(void **state) {
    (void)state;
    run("ablations/no_shortcuts", 101);
}

static void test_no_downsampling(void **state) {
    (void)state;
    run("ablations/no_downsampling", 102);
}

static void test_fashion_conditional(void **state) {
    (void)state;
    run("fashion_mnist_conditional", 103);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_shortcuts),
        cmocka_unit_test(test_no_downsampling),
        cmocka_unit_test(test_fashion_conditional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
