/* Test helper for lr_schedule.py: prints af_lr_at (worker/worker.c), the
 * learning rate the trainer gives each optimizer step, for one schedule.
 *
 * usage: lr_dump BASE_LR GRADIENT_ACC WARMUP_MICRO TOTAL_MICRO STEPS
 * prints STEPS lines "step lr" (%.9g: every bit of a float). */
#include <stdio.h>
#include <stdlib.h>

#include "arcface/worker.h"

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: lr_dump BASE_LR GRADIENT_ACC WARMUP_MICRO TOTAL_MICRO STEPS\n");
        return 2;
    }
    float base = strtof(argv[1], NULL);
    int acc = atoi(argv[2]);
    long long warmup = atoll(argv[3]), total = atoll(argv[4]), steps = atoll(argv[5]);
    for (long long s = 0; s < steps; s++) printf("%lld %.9g\n", s, af_lr_at(base, s, acc, warmup, total));
    return 0;
}
