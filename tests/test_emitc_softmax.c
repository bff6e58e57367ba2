/*
 * test_emitc_softmax.c — the paper's ablation head, a 256-way softmax per
 * sub-pixel (models/ablations/softmax256.yaml, R=1, F=8, 8x8x3, dropout 0.5
 * in training mode): emitted C built with -Wall -Wextra -Werror against the
 * reference backend (init, training step, every gradient, the likelihood
 * entry, evaluation; test_emitc_util.h).
 */
#include "test_emitc_util.h"

/* The paper's ablation: a 256-way softmax per sub-pixel instead of the mixture. */
static void test_softmax_head(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "height=8", "width=8", "channels=3", "classes=0", "dropout=0.5"};
    EmNet e;
    em_build(&e, "ablations/softmax256", sets, 7, NULL);
    assert_int_equal(e.m.model->head, PXC_HEAD_SOFTMAX256);
    assert_int_equal(e.m.model->out_channels, 3 * 256);
    em_compare_with_ref(&e, 2, false, 31);
    em_free(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
