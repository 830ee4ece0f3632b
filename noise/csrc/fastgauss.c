/* Fast, counter-based standard normal samples for CPU float32 tensors.
 *
 * Value k of a call with seed s depends only on (s, k): element pairs are numbered, pair p of
 * block b (BLOCK values each) takes the 64-bit SplitMix64 output at counter b*HALF + p, whose
 * two 32-bit halves feed one Box-Muller transform (cos half first, sin half second). So the
 * output is the same for every thread count and chunking, and calls with different seeds are
 * independent streams (SplitMix64 with the seed as its starting state).
 *
 * Built by noise/fast_rng.py with -O3 -ffast-math -fopenmp, so that logf, sinf and cosf
 * vectorise through glibc's libmvec and the threads come from the OpenMP runtime that torch has
 * already loaded (libgomp.so.1): its workers are the ones torch just used and are still hot,
 * whereas threads of our own would compete with them for the cores. Without OpenMP the work is
 * split over pthreads.
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 512
#define HALF (BLOCK / 2)

int wn_fastgauss_version(void) { return 1; }

static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* BLOCK standard normals of block b into z. */
static void normal_block(uint64_t seed, int64_t b, float *restrict z) {
    float r[HALF], a[HALF];
    const uint64_t base = seed + (uint64_t)b * HALF * 0x9E3779B97F4A7C15ULL;
    for (int p = 0; p < HALF; p++) {
        uint64_t v = splitmix64(base + (uint64_t)(p + 1) * 0x9E3779B97F4A7C15ULL);
        /* u1 in (0, 1]: never 0, so the log is finite; tails reach sqrt(64 ln 2) = 6.66 */
        float u1 = ((float)(uint32_t)(v >> 32) + 1.0f) * 2.3283064365386963e-10f;
        float u2 = (float)(uint32_t)v * 2.3283064365386963e-10f;
        r[p] = u1;
        a[p] = 6.283185307179586f * u2;
    }
    for (int p = 0; p < HALF; p++) r[p] = sqrtf(-2.0f * logf(r[p]));
    for (int p = 0; p < HALF; p++) z[p] = r[p] * cosf(a[p]);
    for (int p = 0; p < HALF; p++) z[HALF + p] = r[p] * sinf(a[p]);
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
#define MIN_BLOCKS_PER_THREAD 64 /* 32768 values: below that a thread costs more than it saves */

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
