/* Optimizer updates in Keras 3's float32 operation order (see optimizers.pxi), and the
 * BatchNormalization moving-statistics update, the one other Keras variable assignment
 * edgecore reproduces (see batchnorm.pxi).
 *
 * Why C and not Cython: these loops must round every operation to float32 exactly where
 * TensorFlow does, one op at a time.  GCC contracts a * b + c into a fused multiply-add by
 * default (-ffp-contract=fast) wherever the target has one — always on aarch64, on x86-64
 * under EDGECORE_NATIVE=1 — and Clang does within an expression; that changes the last bit
 * of m, v and w and the training trajectory drifts from Keras's.  Cython cannot turn
 * contraction off for one function, C can: GCC through the optimize pragma (measured: no
 * vfmadd left under -march=native), Clang through FP_CONTRACT.  Everything else about the
 * optimizers (argument checks, which update runs) is Cython.
 *
 * Each function updates n elements in place; the comments give Keras's line.  Hyper-
 * parameters arrive as float32 where Keras casts them to the variable dtype, and as the
 * float32 rounding of a double expression where Keras computes it in Python first (1 - rho,
 * 1 - beta_1).  Non-goals: denormal flushing (TF runs its CPU ops with FTZ/DAZ; values that
 * tiny are the only place these loops and Keras can differ), sparse (IndexedSlices) updates.
 */
#ifndef EDGECORE_F32_OPTIMIZER_UPDATES_H
#define EDGECORE_F32_OPTIMIZER_UPDATES_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* GCC: for the functions up to the pop below.  Clang: per function body (EC_NO_CONTRACT),
 * so the Cython code after this header keeps the command line's contraction.  The checked
 * wrappers guarantee the arrays do not overlap, hence `restrict`.  The loops with a square
 * root stay scalar: sqrtf may set errno, and GCC 12 ignores no-math-errno in an optimize
 * pragma (checked); ~2 ns per weight, well under the backward pass that precedes them. */
#if defined(__clang__)
#define EC_NO_CONTRACT _Pragma("STDC FP_CONTRACT OFF")
#else
#define EC_NO_CONTRACT
#if defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#endif

/* SGD without momentum: variable -= gradient * learning_rate. */
static void ec_sgd_update(float *restrict w, const float *restrict g, size_t n, float lr) {
    EC_NO_CONTRACT
    for (size_t i = 0; i < n; i++) w[i] = w[i] - g[i] * lr;
}

/* SGD with momentum: m = m * momentum - gradient * lr; then variable += m, or with
 * Nesterov variable += m * momentum - gradient * lr (with the new m). */
static void ec_sgd_momentum_update(float *restrict w, float *restrict m, const float *restrict g,
                                   size_t n, float lr, float momentum, int nesterov) {
    EC_NO_CONTRACT
    for (size_t i = 0; i < n; i++) {
        float mi = m[i] * momentum - g[i] * lr;
        m[i] = mi;
        w[i] = nesterov ? w[i] + (mi * momentum - g[i] * lr) : w[i] + mi;
    }
}

/* Adam: m += (g - m) * (1 - beta_1); v += (g^2 - v) * (1 - beta_2); with amsgrad
 * v_hat = max(v_hat, v) replaces v below; variable -= (m * alpha) / (sqrt(v) + epsilon). */
static void ec_adam_update(float *restrict w, float *restrict m, float *restrict v,
                           float *restrict v_hat, const float *restrict g, size_t n,
                           float alpha, float one_minus_beta_1, float one_minus_beta_2,
                           float epsilon) {
    EC_NO_CONTRACT
    if (!v_hat) {
        for (size_t i = 0; i < n; i++) {
            float gi = g[i];
            float mi = m[i] + (gi - m[i]) * one_minus_beta_1;
            float vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2;
            m[i] = mi;
            v[i] = vi;
            w[i] = w[i] - (mi * alpha) / (sqrtf(vi) + epsilon);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * one_minus_beta_1;
        float vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2;
        float vh = v_hat[i] > vi ? v_hat[i] : vi;
        m[i] = mi;
        v[i] = vi;
        v_hat[i] = vh;
        w[i] = w[i] - (mi * alpha) / (sqrtf(vh) + epsilon);
    }
}

/* RMSprop: v = rho * v + (1 - rho) * g^2; centered: mg = rho * mg + (1 - rho) * g and the
 * denominator v - mg^2 + epsilon, else v + epsilon; increment = (lr * g) / sqrt(den);
 * momentum: mom = momentum * mom + increment, variable -= mom; else variable -= increment.
 * Under model.fit (tf.function) TensorFlow's grappler rewrites x / sqrt(y) into
 * x * rsqrt(y) (checked: that is what reproduces Keras bit for bit on x86-64), so the
 * increment is (lr * g) * rsqrt(den) with rsqrt correctly rounded; TF's own rsqrt is an
 * approximation within 2 ulp of it, the one difference left. */
static void ec_rmsprop_update(float *restrict w, float *restrict v, float *restrict mg,
                              float *restrict mom, const float *restrict g, size_t n, float lr,
                              float rho, float one_minus_rho, float momentum, float epsilon) {
    EC_NO_CONTRACT
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float vi = rho * v[i] + one_minus_rho * (gi * gi);
        float den;
        v[i] = vi;
        if (mg) {
            float a = rho * mg[i] + one_minus_rho * gi;
            mg[i] = a;
            den = vi - a * a + epsilon;
        } else {
            den = vi + epsilon;
        }
        float inc = (lr * gi) * (float)(1.0 / sqrt((double)den));
        if (mom) {
            float mo = momentum * mom[i] + inc;
            mom[i] = mo;
            w[i] = w[i] - mo;
        } else {
            w[i] = w[i] - inc;
        }
    }
}

/* Decoupled weight decay before the update (BaseOptimizer._apply_weight_decay):
 * variable - variable * wd * lr, which grappler's constant push-down evaluates as
 * variable - variable * (wd * lr) under model.fit (checked bit for bit; eager Keras rounds
 * (variable * wd) * lr instead). */
static void ec_weight_decay_update(float *restrict w, size_t n, float lr, float wd) {
    EC_NO_CONTRACT
    float decay = wd * lr;
    for (size_t i = 0; i < n; i++) w[i] = w[i] - w[i] * decay;
}

/* BatchNormalization's moving statistics (Keras 3 BatchNormalization.call, training):
 * moving = moving * momentum + batch_value * (1 - momentum), each product rounded to
 * float32 and then added, as TF's Mul, Mul, AddV2 do; keep = float32(momentum),
 * take = float32(1 - momentum) with the difference taken in double (batchnorm.pxi). */
static void ec_moving_average_update(float *restrict moving, const float *restrict value,
                                     size_t n, float keep, float take) {
    EC_NO_CONTRACT
    for (size_t i = 0; i < n; i++) moving[i] = moving[i] * keep + value[i] * take;
}

/* Adam's step size for 1-based step t, as Keras computes it in float32:
 * lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) with beta^t = pow(float32(beta), float32(t)).
 * TF's float Pow matched the correctly rounded power on 18,000 (beta, t) pairs; the double
 * pow rounded once is that. */
static float ec_adam_alpha(float lr, double beta_1, double beta_2, int64_t step) {
    EC_NO_CONTRACT
    float t = (float)step;
    float b1p = (float)pow((double)(float)beta_1, (double)t);
    float b2p = (float)pow((double)(float)beta_2, (double)t);
    return lr * sqrtf(1.0f - b2p) / (1.0f - b1p);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#undef EC_NO_CONTRACT

#endif /* EDGECORE_F32_OPTIMIZER_UPDATES_H */
