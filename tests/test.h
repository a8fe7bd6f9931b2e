// test.h: the few macros every C test uses. A test binary counts its checks, prints each
// failure with file and line, and ends with "RESULT <passed> <failed>", which tests/run.sh
// sums into the suite's last line.
#pragma once
#include <math.h>
#include <stdio.h>

static int test_passed, test_failed;

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (cond) {                                                                 \
            test_passed++;                                                          \
        } else {                                                                    \
            test_failed++;                                                          \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                             \
            printf(__VA_ARGS__);                                                    \
            printf("\n");                                                           \
        }                                                                           \
    } while (0)

// |got - want| <= tol, with NaN always failing.
#define CHECK_NEAR(got, want, tol, what)                                            \
    do {                                                                            \
        double got_ = (got), want_ = (want);                                        \
        CHECK(fabs(got_ - want_) <= (tol), "%s: got %.9g, want %.9g (tol %.3g)",    \
              (what), got_, want_, (double)(tol));                                  \
    } while (0)

static inline int test_finish(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, test_passed, test_failed);
    printf("RESULT %d %d\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}
