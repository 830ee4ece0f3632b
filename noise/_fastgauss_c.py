"""C source of the compiled Gaussian kernel used by :mod:`noise.fast_rng`.

It lives in a Python module, not a ``.c`` file, so that it travels with the code wherever
Python sources go: seml stores an experiment's Python sources in MongoDB and runs jobs from a
restored copy that holds ``.py`` files only.
"""

C_SOURCE = r"""/* Fast, counter-based standard normal samples for CPU float32 tensors.
 *
 * Values are made in blocks of BLOCK. Block b of a call with seed s runs LANES xoshiro256++
 * generators side by side, lane l seeded with the SplitMix64 outputs at counters
 * 4 (LANES b + l) + 1..4 of the stream that starts at s; step t of lane l gives the 64-bit word
 * of pair p = t LANES + l. Its high 32 bits make the radius sqrt(-2 ln u1), u1 in (0, 1]; of
 * its low 32 bits, the top two pick the quadrant and the other 30 the angle within it. Pair p
 * fills values p (cos) and HALF + p (sin) of the block. So value k depends only on (s, k): the
 * same for every thread count and chunking.
 *
 * ln, sin and cos are short polynomials (below) rather than libm calls, so that the whole
 * transform vectorises with any compiler and C library. Built by noise/fast_rng.py with
 * -O3 -ffast-math -fopenmp: the threads come from the OpenMP runtime that torch has already
 * loaded (libgomp.so.1), whose workers torch just used and are still hot; threads of our own
 * would compete with them for the cores. Without OpenMP the work is split over pthreads.
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 2048
#define HALF (BLOCK / 2)

int wn_fastgauss_version(void) { return 2; }

static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

#define LANES 16

/* ln(u) for u in (0, 1] (normal floats), to ~1e-7: u = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh(t), t = (m - 1) / (m + 1), |t| <= 0.172, series to t^9. */
static inline float log_unit(float u) {
    union { float f; uint32_t i; } x = {u};
    int32_t e = (int32_t)(x.i >> 23) - 127;
    x.i = (x.i & 0x007FFFFFu) | 0x3F800000u;          /* m in [1, 2) */
    float m = x.f;
    const int big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e += big;
    const float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    const float series = t * (2.0f + t2 * (0.6666666667f + t2 * (0.4f + t2 * (0.2857142857f
                          + t2 * 0.2222222222f))));
    return (float)e * 0.6931471805599453f + series;
}

/* sin and cos of phi in [0, pi/2), Taylor series to x^11 / x^12 (error < 6e-8). */
static inline void sincos_quarter(float x, float *s, float *c) {
    const float x2 = x * x;
    *s = x * (1.0f + x2 * (-1.6666666667e-1f + x2 * (8.3333333333e-3f + x2 * (-1.9841269841e-4f
             + x2 * (2.7557319224e-6f + x2 * -2.5052108385e-8f)))));
    *c = 1.0f + x2 * (-0.5f + x2 * (4.1666666667e-2f + x2 * (-1.3888888889e-3f
             + x2 * (2.4801587302e-5f + x2 * (-2.7557319224e-7f + x2 * 2.0876756988e-9f)))));
}
#define GAMMA 0x9E3779B97F4A7C15ULL

/* BLOCK standard normals of block b into z. */
static void normal_block(uint64_t seed, int64_t b, float *restrict z) {
    uint64_t s0[LANES], s1[LANES], s2[LANES], s3[LANES];
    uint64_t bits[HALF];
    const uint64_t base = seed + (uint64_t)b * (4 * LANES) * GAMMA;
    for (int l = 0; l < LANES; l++) {
        s0[l] = splitmix64(base + (uint64_t)(4 * l + 1) * GAMMA);
        s1[l] = splitmix64(base + (uint64_t)(4 * l + 2) * GAMMA);
        s2[l] = splitmix64(base + (uint64_t)(4 * l + 3) * GAMMA);
        s3[l] = splitmix64(base + (uint64_t)(4 * l + 4) * GAMMA);
    }
    for (int step = 0; step < HALF / LANES; step++) {
        for (int l = 0; l < LANES; l++) {
            uint64_t v = rotl64(s0[l] + s3[l], 23) + s0[l];
            uint64_t t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = rotl64(s3[l], 45);
            bits[step * LANES + l] = v;
        }
    }
    for (int p = 0; p < HALF; p++) {
        const uint64_t v = bits[p];
        /* radius: u1 in (0, 1], sqrt(-2 ln u1) */
        const float u1 = ((float)(uint32_t)(v >> 32) + 1.0f) * 2.3283064365386963e-10f;
        const float r = sqrtf(-2.0f * log_unit(u1));
        /* angle: 2 bits pick the quadrant, 30 bits the angle within it */
        const uint32_t lo = (uint32_t)v;
        const float phi = (float)(lo & 0x3FFFFFFFu) * (1.5707963267948966f / 1073741824.0f);
        float c, s;
        sincos_quarter(phi, &s, &c);
        const float c1 = (lo & 0x40000000u) ? -s : c;
        const float s1 = (lo & 0x40000000u) ? c : s;
        const float sign = (lo & 0x80000000u) ? -r : r;
        z[p] = sign * c1;
        z[HALF + p] = sign * s1;
    }
}

typedef struct {
    float *out;
    const float *x;   /* NULL: out = mean + std z; else out = x + mean + std z */
    int64_t n;
    uint64_t seed;
    float mean, std;
    int64_t b0, b1;   /* blocks [b0, b1) */
} job_t;

static void *run_job(void *arg) {
    job_t *j = (job_t *)arg;
    float z[BLOCK];
    for (int64_t b = j->b0; b < j->b1; b++) {
        normal_block(j->seed, b, z);
        int64_t start = b * BLOCK;
        int64_t len = j->n - start < BLOCK ? j->n - start : BLOCK;
        float *restrict o = j->out + start;
        const float mean = j->mean, std = j->std;
        if (j->x) {
            const float *restrict x = j->x + start;
            for (int64_t i = 0; i < len; i++) o[i] = x[i] + (mean + std * z[i]);
        } else {
            for (int64_t i = 0; i < len; i++) o[i] = mean + std * z[i];
        }
    }
    return NULL;
}

#define MAX_THREADS 256
#define MIN_BLOCKS_PER_THREAD 4  /* 8192 values: below that a thread costs more than it saves */

static void dispatch(float *out, const float *x, int64_t n, uint64_t seed, float mean, float std,
                     int nthreads) {
    if (n <= 0) return;
    int64_t nblocks = (n + BLOCK - 1) / BLOCK;
    int64_t t = nthreads < 1 ? 1 : nthreads;
    if (t > MAX_THREADS) t = MAX_THREADS;
    if (t > nblocks / MIN_BLOCKS_PER_THREAD) t = nblocks / MIN_BLOCKS_PER_THREAD;
    if (t < 1) t = 1;
#ifdef _OPENMP
    if (t > 1) {
#pragma omp parallel num_threads((int)t)
        {
            int64_t i = omp_get_thread_num(), nt = omp_get_num_threads();
            job_t job = {out, x, n, seed, mean, std, nblocks * i / nt, nblocks * (i + 1) / nt};
            run_job(&job);
        }
        return;
    }
#endif
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int64_t i = 0; i < t; i++) {
        jobs[i] = (job_t){out, x, n, seed, mean, std, nblocks * i / t, nblocks * (i + 1) / t};
        started[i] = 0;
    }
    for (int64_t i = 1; i < t; i++)
        started[i] = pthread_create(&tids[i], NULL, run_job, &jobs[i]) == 0;
    run_job(&jobs[0]);
    for (int64_t i = 1; i < t; i++) {
        if (started[i]) pthread_join(tids[i], NULL);
        else run_job(&jobs[i]); /* no thread available: do its share here */
    }
}

/* out[k] = mean + std * z_k */
void wn_normal_f32(float *out, int64_t n, uint64_t seed, float mean, float std, int nthreads) {
    dispatch(out, NULL, n, seed, mean, std, nthreads);
}

/* out[k] = x[k] + mean + std * z_k (out may be x) */
void wn_add_normal_f32(float *out, const float *x, int64_t n, uint64_t seed, float mean,
                       float std, int nthreads) {
    dispatch(out, x, n, seed, mean, std, nthreads);
}
"""
