/* Fused CPU kernels of the exact denoiser (numerics "int8-exact-1"); see numerics/exact.py and
   native/kernels.py (which builds this file and coder.c into one library).

Each kernel computes, element by element, the same IEEE operations in the same order as the torch
operations it replaces in exact.py (which stay as the fallback), so both give the same bits: integer
arithmetic, maxima, and single float/double + - * / sqrt and round-half-even (nearbyint in the default
rounding mode: rint without the inexact flag, which compilers vectorize). Built with -fno-fast-math
-ffp-contract=off: no reassociation, no fused multiply-add.
Sums are over exact integers (int64, or doubles below 2^53), so their order does not matter.
Every array is contiguous, row-major; one call works on one block of rows on the calling thread. */
#define _GNU_SOURCE /* syscall() for the AMX permission */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

#if defined(__AVX512F__) || defined(__AMX_TILE__)
#include <immintrin.h>
#endif

/* Maximum and minimum of the floats y[0..k), k >= 1, in 16 lanes of GCC vector arithmetic (the widest
   registers the build has: one zmm, two ymm or four xmm; a compiler does not vectorize a float max it
   may not reorder), then the lanes combined. Each lane keeps v > m ? v : m, a bitwise select. A max is
   exact in any order; signed zeros may come out either way, and every use below gives the same integers
   for +0 and -0. */
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
static void min_max_f32(const float *restrict y, i64 k, float *hi, float *lo) {
    float h = y[0], l = y[0];
    i64 j = 0;
    if (k >= 16) {
        f32x16 vh, vl;
        memcpy(&vh, y, sizeof vh);
        vl = vh;
        for (j = 16; j + 16 <= k; j += 16) {
            f32x16 v;
            memcpy(&v, y + j, sizeof v);
            const i32x16 gt = v > vh, lt = v < vl;
            vh = (f32x16)(((i32x16)v & gt) | ((i32x16)vh & ~gt));
            vl = (f32x16)(((i32x16)v & lt) | ((i32x16)vl & ~lt));
        }
        /* the lanes combined by halving (4 steps, not 16 scalar ones: short rows, such as a head's
           64-channel query rows, are mostly this part) */
        const i32x16 by8 = {8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0};
        const i32x16 by4 = {4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        const i32x16 by2 = {2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        const i32x16 by1 = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        const i32x16 *steps[4] = {&by8, &by4, &by2, &by1};
        for (int t = 0; t < 4; t++) {
            const f32x16 sh = __builtin_shuffle(vh, *steps[t]), sl = __builtin_shuffle(vl, *steps[t]);
            const i32x16 gt = sh > vh, lt = sl < vl;
            vh = (f32x16)(((i32x16)sh & gt) | ((i32x16)vh & ~gt));
            vl = (f32x16)(((i32x16)sl & lt) | ((i32x16)vl & ~lt));
        }
        h = vh[0] > h ? vh[0] : h, l = vl[0] < l ? vl[0] : l;
    }
    for (; j < k; j++) {
        h = y[j] > h ? y[j] : h;
        l = y[j] < l ? y[j] : l;
    }
    *hi = h, *lo = l;
}

/* Attention weights of one block of query rows: u = min(nearbyint((max_j s - s) * unit), top) per score,
   then the exp table's two 7-bit digits (tab[u] = lo | hi << 8). Scores are int32 (int8 GEMM) or
   integer-valued fp32; max - s is an exact integer below 2^24, so its conversion to float is exact. */
#define ATT_DIGITS(NAME, S, D, CONV)                                                                      \
    void NAME(const S *restrict dot, i64 n, i64 L, const float *restrict unit, const int32_t *restrict tab, \
              int32_t top, D *restrict hi, D *restrict lo) {                                              \
        const float ftop = (float)top;                                                                    \
        for (i64 r = 0; r < n; r++) {                                                                     \
            const S *restrict d = dot + r * L;                                                            \
            S m = d[0];                                                                                   \
            for (i64 j = 1; j < L; j++) m = d[j] > m ? d[j] : m;                                          \
            const float u = unit[r];                                                                      \
            D *restrict h = hi + r * L, *restrict l = lo + r * L;                                         \
            for (i64 j = 0; j < L; j++) {                                                                 \
                float t = nearbyintf(CONV(m - d[j]) * u);                                                 \
                int32_t i = (int32_t)(t < ftop ? t : ftop);                                               \
                int32_t e = tab[i];                                                                       \
                h[j] = (D)(e >> 8);                                                                       \
                l[j] = (D)(int8_t)e; /* lo < 128 */                                                       \
            }                                                                                             \
        }                                                                                                 \
    }
#define TO_FLOAT(x) ((float)(x))
#define AS_IS(x) (x)
ATT_DIGITS(att_digits_f32, float, float, AS_IS)

#if defined(__AVX512F__) && defined(__AVX512BW__)
/* The largest integer x in [0, 2^24] with nearbyintf((float)x * u) < lim, -1 if none, 2^24 if all: the
   weights' table index rounds the product of the score gap x = max - score by the row's unit u, so for
   u > 0 it never decreases as x grows, and the gaps above x all index at or past lim. For u <= 0 (or
   NaN) it returns 2^24, which filters nothing out. */
#define GAP_ALL (1 << 24) /* score gaps are below 2^24 (|scores| <= D * 127^2) */
static int32_t att_gap_limit(float u, int32_t lim) {
    if (lim <= 0) return -1;
    if (!(u > 0.0f)) return GAP_ALL;
    const double e = ((double)lim - 0.5) / (double)u; /* near the answer; the loops make it exact */
    if (e >= (double)GAP_ALL) return GAP_ALL;
    int32_t x = (int32_t)e;
    while (x >= 0 && !(nearbyintf((float)x * u) < (float)lim)) x--;
    while (x < GAP_ALL && nearbyintf((float)(x + 1) * u) < (float)lim) x++;
    return x;
}

/* The int32 case with AVX-512 (the build is -march=native): the same operations 16 scores at a time.
   Most weights of a trained model are clamped at `top` (93% on text). A vector of 16 whose score gaps
   all exceed the row's att_gap_limit(u, top) is clamped whole, by one integer compare; the others take
   the float path: more than 4 inside the table read them with a masked gather, fewer list theirs for a
   scalar pass after the row (a gather costs as much for one lane as for 16). roundscale(.., nearest) is
   rint's round-half-even.
   With `flag` (else NULL): also, per row and block of 64 keys, flag[r * KB + j / 64] = 1 (KB = blocks
   per row) where a weight's lo digit may be nonzero (its index below top), and hflag[...] = 1 where its hi
   digit may be (index below hi_top: every entry from hi_top on has hi 0); the other bytes are left as
   they are. For a table whose entry at top has both digits 0, the value GEMM then skips zero blocks. */
static void att_digits_flagged(const int32_t *restrict dot, i64 n, i64 L, const float *restrict unit,
                               const int32_t *restrict tab, int32_t top, int8_t *restrict hi, int8_t *restrict lo,
                               uint8_t *restrict hflag, uint8_t *restrict flag, i64 KB, int32_t hi_top) {
    const float ftop = (float)top;
    const __m512 vtop = _mm512_set1_ps(ftop);
    const __m512i etop = _mm512_set1_epi32(tab[top]);
    const __m128i htop = _mm512_cvtepi32_epi8(_mm512_srli_epi32(etop, 8)), ltop = _mm512_cvtepi32_epi8(etop);
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    int32_t pos[L + 16], idx[L + 16]; /* the few weights inside the table: where, and their index */
    for (i64 r = 0; r < n; r++) {
        const int32_t *restrict d = dot + r * L;
        int32_t m = d[0];
        for (i64 j = 1; j < L; j++) m = d[j] > m ? d[j] : m;
        const float u = unit[r];
        const int32_t gap = att_gap_limit(u, top), hgap = flag ? att_gap_limit(u, hi_top) : -1;
        const __m512i vm = _mm512_set1_epi32(m);
        const __m512i near = _mm512_set1_epi32(m - gap), hnear = _mm512_set1_epi32(m - hgap); /* score >= these */
        const __m512 vu = _mm512_set1_ps(u);
        int8_t *restrict h = hi + r * L, *restrict l = lo + r * L;
        uint8_t *restrict hf = flag ? hflag + r * KB : NULL, *restrict lf = flag ? flag + r * KB : NULL;
        i64 j = 0, cnt = 0;
        for (; j + 16 <= L; j += 16) {
            const __m512i s = _mm512_loadu_si512((const void *)(d + j));
            const __mmask16 maybe = _mm512_cmpge_epi32_mask(s, near);
            if (!maybe) { /* every weight clamped at top */
                _mm_storeu_si128((__m128i *)(h + j), htop);
                _mm_storeu_si128((__m128i *)(l + j), ltop);
                continue;
            }
            if (lf) {
                lf[j >> 6] = 1;
                if (_mm512_mask_cmpge_epi32_mask(maybe, s, hnear)) hf[j >> 6] = 1;
            }
            __m512i diff = _mm512_sub_epi32(vm, s);
            __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(diff), vu),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __mmask16 in = _mm512_cmp_ps_mask(t, vtop, _CMP_LT_OQ);
            const __m512i ti = _mm512_cvttps_epi32(t);
            if (__builtin_popcount(in) > 4) { /* many inside: gather them */
                __m512i e = _mm512_mask_i32gather_epi32(etop, in, ti, (const void *)tab, 4);
                _mm_storeu_si128((__m128i *)(h + j), _mm512_cvtepi32_epi8(_mm512_srli_epi32(e, 8)));
                _mm_storeu_si128((__m128i *)(l + j), _mm512_cvtepi32_epi8(e));
                continue;
            }
            /* few or none: the clamped digits now; the others' positions and indices are listed and
               read one by one after the row */
            _mm_storeu_si128((__m128i *)(h + j), htop);
            _mm_storeu_si128((__m128i *)(l + j), ltop);
            _mm512_storeu_si512((void *)(pos + cnt), _mm512_maskz_compress_epi32(in, _mm512_add_epi32(iota, _mm512_set1_epi32((int32_t)j))));
            _mm512_storeu_si512((void *)(idx + cnt), _mm512_maskz_compress_epi32(in, ti));
            cnt += __builtin_popcount(in);
        }
        for (i64 c = 0; c < cnt; c++) {
            const int32_t e = tab[idx[c]];
            h[pos[c]] = (int8_t)(e >> 8);
            l[pos[c]] = (int8_t)e;
        }
        for (; j < L; j++) {
            float t = nearbyintf((float)(m - d[j]) * u);
            int32_t i = (int32_t)(t < ftop ? t : ftop);
            int32_t e = tab[i];
            h[j] = (int8_t)(e >> 8);
            l[j] = (int8_t)e;
            if (lf && i < top) {
                lf[j >> 6] = 1;
                if (i < hi_top) hf[j >> 6] = 1;
            }
        }
    }
}

void att_digits_i32(const int32_t *restrict dot, i64 n, i64 L, const float *restrict unit,
                    const int32_t *restrict tab, int32_t top, int8_t *restrict hi, int8_t *restrict lo) {
    att_digits_flagged(dot, n, L, unit, tab, top, hi, lo, NULL, NULL, 0, top);
}
#else
ATT_DIGITS(att_digits_i32, int32_t, int8_t, TO_FLOAT)
#endif

/* max |y| of a row (maximum of max and -min, as intlinear.max_abs) */
static float row_max_abs(const float *restrict y, i64 k) {
    float hi, lo;
    min_max_f32(y, k, &hi, &lo);
    return hi > -lo ? hi : -lo;
}

/* intlinear.quant_rows of one row: q = nearbyint(y * (127 / max|y|)) as int8, returns max|y| */
static float quant_row(const float *restrict y, i64 k, int8_t *restrict q) {
    const float m = row_max_abs(y, k);
    const float r = 127.0f / (m > 0.0f ? m : 1.0f);
    for (i64 j = 0; j < k; j++) q[j] = (int8_t)nearbyintf(y[j] * r);
    return m;
}

void quant_rows_f32(const float *restrict y, i64 n, i64 k, int8_t *restrict q, float *restrict mx) {
    for (i64 r = 0; r < n; r++) mx[r] = quant_row(y + r * k, k, q + r * k);
}

/* The exact linear layer's output (float)acc * row * col, two roundings, as ExactLinear.__call__.
   Integer sums as int32, or as the fp32 GEMM's exact integers (_f32). */
#define SCALE_ACC(NAME, A)                                                                                   \
    void NAME(const A *restrict acc, i64 n, i64 k, const float *restrict row, const float *restrict col,     \
              float *restrict out) {                                                                         \
        for (i64 r = 0; r < n; r++)                                                                          \
            for (i64 j = 0; j < k; j++) out[r * k + j] = ((float)acc[r * k + j] * row[r]) * col[j];          \
    }
SCALE_ACC(scale_acc_i32, int32_t)
SCALE_ACC(scale_acc_f32, float)

/* Residual update h + to_fixed(linear output): out = h + (int64)nearbyint(((acc * row) * col) * unit), with
   unit = 2^16 (the residual stream's fixed point; exact scaling). */
#define ADD_FIXED(NAME, A)                                                                                   \
    void NAME(const i64 *restrict h, const A *restrict acc, i64 n, i64 k, const float *restrict row,         \
              const float *restrict col, float unit, i64 *restrict out) {                                    \
        for (i64 r = 0; r < n; r++)                                                                          \
            for (i64 j = 0; j < k; j++) {                                                                    \
                float y = ((float)acc[r * k + j] * row[r]) * col[j];                                         \
                out[r * k + j] = h[r * k + j] + (i64)nearbyintf(y * unit);                                   \
            }                                                                                                \
    }
ADD_FIXED(add_fixed_i32, int32_t)
ADD_FIXED(add_fixed_f32, float)

/* GLU on the gate_up layer's integer sums, then int8 rows: gu = (acc * row) * col; gate, up = its two
   halves; m = (sig[clamp(nearbyint(gate * 2^frac), -half, half) + half] * gate) * up; q = quant_row(m).
   `m` (n, f) is scratch for the row before it is quantized. */
#define GLU_Q8(NAME, A)                                                                                      \
    void NAME(const A *restrict acc, i64 n, i64 f, const float *restrict row, const float *restrict col,     \
              const float *restrict sig, int32_t frac, int32_t half, int8_t *restrict q, float *restrict mx) { \
        const float scale = (float)(1 << frac), fh = (float)half;                                            \
        int32_t idx[f];                                                                                      \
        float sg[f], mr[f]; /* one row's m: it stays in L1 */                                                \
        for (i64 r = 0; r < n; r++) {                                                                        \
            const A *restrict a = acc + r * 2 * f;                                                           \
            /* three passes: the table lookups apart, so the arithmetic around them vectorizes */            \
            for (i64 j = 0; j < f; j++) {                                                                    \
                float gate = ((float)a[j] * row[r]) * col[j];                                                \
                float t = nearbyintf(gate * scale);                                                          \
                t = t < -fh ? -fh : (t > fh ? fh : t);                                                       \
                idx[j] = (int32_t)(t + fh);                                                                  \
                mr[j] = gate;                                                                                \
            }                                                                                                \
            for (i64 j = 0; j < f; j++) sg[j] = sig[idx[j]];                                                 \
            for (i64 j = 0; j < f; j++) {                                                                    \
                float up = ((float)a[f + j] * row[r]) * col[f + j];                                          \
                mr[j] = (sg[j] * mr[j]) * up;                                                                \
            }                                                                                                \
            mx[r] = quant_row(mr, f, q + r * f);                                                             \
        }                                                                                                    \
    }
GLU_Q8(glu_q8_i32, int32_t)
GLU_Q8(glu_q8_f32, float)

/* floor(a / b) for b > 0 */
static i64 floor_div(i64 a, i64 b) {
    i64 q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* LayerNorm(h) * gamma of Q.16 integer rows as int8 rows and their scales (exact.layer_norm, which
   computes in fp64 holding exact integers; here the same integers in int64): xc = h - floor(mean);
   rows with max |xc| >= 2^ln_bits are scaled by 2^-sh (floor(double(xc) * 2^-sh), as the reference);
   var = sum xs^2 (< 2^53); v = xs * g (|v| < 2^52); q = nearbyint(v * (127 / max|v|)) in double;
   scale = (float)(max|v| / (sqrt(var * (1 / d) + eps[sh]) * g_unit)), g_unit = 2^16 the unit of the
   integer gamma g. `xs` (d int64) is scratch. */
void layer_norm_q8(const i64 *restrict h, i64 n, i64 d, const i64 *restrict g, const double *restrict eps,
                   int32_t ln_bits, double g_unit, i64 *restrict xs, int8_t *restrict q, float *restrict scale) {
    const double inv_d = 1.0 / (double)d;
    /* |centred values| < 2^21 after the shift and |gamma| < 2^31 (checked at load): both fit int32, so
       the squares and products are 32 x 32 -> 64-bit multiplies (vpmuldq), exact */
    int32_t g32[d], x32[d];
    for (i64 j = 0; j < d; j++) g32[j] = (int32_t)g[j];
    for (i64 r = 0; r < n; r++) {
        const i64 *restrict x = h + r * d;
        if (r + 1 < n) /* the next row: a page of its own at d = 512, which the streamer would start cold */
            for (i64 j = 0; j < d; j += 8) __builtin_prefetch(x + d + j);
        i64 s = 0, hx = x[0], lx = x[0];
        for (i64 j = 0; j < d; j++) { /* the sum and the extremes in one pass: max(x - mean) = max x - mean */
            s += x[j];
            hx = x[j] > hx ? x[j] : hx;
            lx = x[j] < lx ? x[j] : lx;
        }
        const i64 mean = floor_div(s, d), hi = hx - mean, lo = lx - mean;
        /* the reference holds xc as doubles: above 2^53 they are rounded, so the shift branch works on
           the same doubles (double(max) = max of the doubles: the conversion is monotonic) */
        const double m = (double)(hi > -lo ? hi : -lo);
        int sh = 0;
        if (m >= (double)((i64)1 << ln_bits)) /* most rows of a trained model: it has outlier channels */
            for (int b = ln_bits; b < 63; b++) sh += m >= (double)((i64)1 << b); /* exact powers of two */
        if (m < 0x1p53) /* exact doubles: floor(xc * 2^-sh) is the arithmetic shift (sh = 0: xc itself) */
            for (i64 j = 0; j < d; j++) x32[j] = (int32_t)((x[j] - mean) >> sh);
        else {
            const double p = ldexp(1.0, -sh); /* exact power of two */
            for (i64 j = 0; j < d; j++) x32[j] = (int32_t)floor((double)(x[j] - mean) * p);
        }
        i64 var = 0, hv = (i64)x32[0] * g32[0], lv = hv;
        for (i64 j = 0; j < d; j++) { /* the squares' sum, the products and their extremes in one pass */
            const i64 v = (i64)x32[j] * g32[j];
            var += (i64)x32[j] * x32[j];
            xs[j] = v;
            hv = v > hv ? v : hv;
            lv = v < lv ? v : lv;
        }
        double mv = (double)(hv > -lv ? hv : -lv);
        mv = mv > 1.0 ? mv : 1.0;
        const double k = 127.0 / mv;
        int8_t *restrict qr = q + r * d;
        for (i64 j = 0; j < d; j++) qr[j] = (int8_t)nearbyint((double)xs[j] * k);
        const double sigma = sqrt((double)var * inv_d + eps[sh]);
        scale[r] = (float)(mv / (sigma * g_unit));
    }
}

#define HEAD_PREFETCH 8 /* rows ahead */
static void prefetch_row(const float *x, i64 D) {
    for (i64 c = 0; c < D; c += 16) __builtin_prefetch(x + c);
}

/* Rotary positions of one row x (D floats) at position p: out = [x1 c - x2 s, x2 c + x1 s]. */
static void rope_row(const float *restrict x, i64 D, const float *restrict c, const float *restrict s,
                     float *restrict out) {
    const i64 h = D / 2;
    for (i64 i = 0; i < h; i++) {
        out[i] = x[i] * c[i] - x[h + i] * s[i];
        out[h + i] = x[h + i] * c[i] + x[i] * s[i];
    }
}

/* Per-column int8 of y (L, D) as intlinear.quant_rows(y, dim=-2): m[c] = max |y[:, c]|,
   q = nearbyint(y * (127 / m[c])) into q with row stride qs. */
static void quant_cols(const float *restrict y, i64 L, i64 D, float *restrict m, int8_t *restrict q, i64 qs) {
    float hi[256], lo[256], r[256];
    for (i64 c = 0; c < D; c++) hi[c] = lo[c] = y[c];
    for (i64 j = 1; j < L; j++)
        for (i64 c = 0; c < D; c++) {
            float v = y[j * D + c];
            hi[c] = v > hi[c] ? v : hi[c];
            lo[c] = v < lo[c] ? v : lo[c];
        }
    for (i64 c = 0; c < D; c++) {
        m[c] = hi[c] > -lo[c] ? hi[c] : -lo[c];
        r[c] = 127.0f / (m[c] > 0.0f ? m[c] : 1.0f);
    }
    for (i64 j = 0; j < L; j++)
        for (i64 c = 0; c < D; c++) q[j * qs + c] = (int8_t)nearbyintf(y[j * D + c] * r[c]);
}

/* exact.head_inputs for one head (D <= 256): keys at positions 0..L-1 and queries at pos (or 0..n-1)
   rotated; keys int8 per channel (k8, scales sk), queries times sk then int8 per row (q8, sq);
   values int8 per channel into the first D columns of v1 (row stride vs), scales sv. Rows of q, k, v
   are `qs`, `kvs` floats apart (views into the qkv output). kr, qr: scratch of L * D and n * D floats. */
void head_inputs_q8(const float *restrict q, i64 qs, i64 n, const int64_t *restrict pos, const float *restrict k,
                    const float *restrict v, i64 kvs, i64 L, i64 D, const float *restrict cos_t,
                    const float *restrict sin_t, float *restrict kr, float *restrict qr, int8_t *restrict q8,
                    float *restrict sq, int8_t *restrict k8, float *restrict sk, int8_t *restrict v1, i64 vs,
                    float *restrict sv) {
    const i64 h = D / 2;
    /* rows of q, k and v a qkv row apart are too far for the hardware prefetcher (another page each), so
       the next ones are asked for while this key turns (head_inputs 1.1x on a trained model); adjacent
       rows (attention_head_qkv_amx's) need no help, and prefetching them only costs */
    const int far = kvs * (i64)sizeof(float) >= 4096;
    for (i64 j = 0; j < L; j++) {
        if (far && j + HEAD_PREFETCH < L) {
            prefetch_row(k + (j + HEAD_PREFETCH) * kvs, D);
            prefetch_row(v + (j + HEAD_PREFETCH) * kvs, D);
        }
        if (far && j + HEAD_PREFETCH < n) prefetch_row(q + (j + HEAD_PREFETCH) * qs, D);
        rope_row(k + j * kvs, D, cos_t + j * h, sin_t + j * h, kr + j * D);
    }
    quant_cols(kr, L, D, sk, k8, D);
    for (i64 i = 0; i < n; i++) {
        const i64 p = pos ? pos[i] : i;
        float *restrict row = qr + i * D;
        rope_row(q + i * qs, D, cos_t + p * h, sin_t + p * h, row);
        for (i64 c = 0; c < D; c++) row[c] = row[c] * sk[c];
        sq[i] = quant_row(row, D, q8 + i * D);
    }
    for (i64 j = 0; j < L; j++)
        for (i64 c = 0; c < D; c++) kr[j * D + c] = v[j * kvs + c]; /* values: contiguous copy */
    quant_cols(kr, L, D, sv, v1, vs);
}

/* Token embeddings in Q.16 (exact.embed): out[i][c] = nearbyint(q[x_i][c] * s[x_i]) as int64, q int8 rows
   of d, s their scales * 2^16 in fp64 (the product is exact: 8 bits times 24). */
void embed_q16(const int64_t *restrict x, i64 n, const int8_t *restrict q, const double *restrict s, i64 d,
               int64_t *restrict out) {
    for (i64 i = 0; i < n; i++) {
        const int8_t *restrict row = q + x[i] * d;
        const double si = s[x[i]];
        int64_t *restrict o = out + i * d;
        for (i64 c = 0; c < d; c++) o[c] = (int64_t)nearbyint((double)row[c] * si);
    }
}

/* The output head's frequencies (exact.frequencies): z = ((float)acc * col) * f (f = the row's scale
   * 2^10), u = nearbyint(max z - z) (one fp32 subtraction, then round-half-even), freq = tab[min(u, top)]. */
void head_freqs_i32(const int32_t *restrict acc, i64 n, i64 V, const float *restrict col, const float *restrict f,
                    const float *restrict tab, int32_t top, float *restrict out) {
    const float ftop = (float)top;
    for (i64 r = 0; r < n; r++) {
        const int32_t *restrict a = acc + r * V;
        float *restrict z = out + r * V;
        const float fr = f[r];
        /* the logits and their maximum in one pass, 16 lanes of GCC vector arithmetic (min_max_f32's select) */
        float m = -INFINITY;
        i64 j = 0;
        if (V >= 16) {
            f32x16 vm = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                         -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
            const f32x16 vf = {fr, fr, fr, fr, fr, fr, fr, fr, fr, fr, fr, fr, fr, fr, fr, fr};
            for (; j + 16 <= V; j += 16) {
                i32x16 ai;
                f32x16 c;
                memcpy(&ai, a + j, sizeof ai);
                memcpy(&c, col + j, sizeof c);
                const f32x16 v = (__builtin_convertvector(ai, f32x16) * c) * vf;
                memcpy(z + j, &v, sizeof v);
                const i32x16 gt = v > vm;
                vm = (f32x16)(((i32x16)v & gt) | ((i32x16)vm & ~gt));
            }
            for (int t = 0; t < 16; t++) m = vm[t] > m ? vm[t] : m;
        }
        for (; j < V; j++) {
            z[j] = ((float)a[j] * col[j]) * fr;
            m = z[j] > m ? z[j] : m;
        }
        for (i64 j = 0; j < V; j++) {
            float u = nearbyintf(m - z[j]);
            int32_t i = (int32_t)(u < ftop ? u : ftop);
            z[j] = tab[i];
        }
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__)

/* Keys of one head packed for att_scores_digits: k8 (L, D) int8 -> kpack[L/16][D/4][16 keys][4 bytes]
   as unsigned bytes k + 128 (one 64-byte vector per tile of 16 keys and group of 4 channels).
   L % 16 == 0, D % 4 == 0. */
void pack_keys(const int8_t *restrict k8, i64 L, i64 D, uint8_t *restrict kpack) {
    const i64 G = D / 4;
    for (i64 j = 0; j < L; j++)
        for (i64 c = 0; c < D; c++)
            kpack[(((j / 16) * G + c / 4) * 16 + j % 16) * 4 + c % 4] = (uint8_t)(k8[j * D + c] + 128);
}

/* Scores of SROWS query rows against all keys, exact int32: q.k = sum (k + 128) q - 128 sum q, the
   first sum by vpdpbusd (u8 x s8, four products per lane; |partial sums| <= D * 255 * 127 < 2^31),
   the query's 4 bytes broadcast. Each packed key vector is loaded once for all the rows. Rows past
   n repeat row 0 and are not stored. */
#define SROWS 16
static void scores_rows(const int8_t *restrict q, i64 nr, i64 L, i64 D, const uint8_t *restrict kpack,
                        int32_t *restrict out) {
    const i64 G = D / 4;
    int32_t qw[SROWS][64], qs[SROWS];
    for (i64 r = 0; r < SROWS; r++) {
        const int8_t *qr = q + (r < nr ? r : 0) * D;
        int32_t s = 0;
        for (i64 c = 0; c < D; c++) s += qr[c];
        qs[r] = 128 * s;
        for (i64 g = 0; g < G; g++) {
            uint32_t w = 0;
            for (int b = 0; b < 4; b++) w |= (uint32_t)(uint8_t)qr[4 * g + b] << (8 * b);
            qw[r][g] = (int32_t)w;
        }
    }
    for (i64 t = 0; t < L / 16; t++) {
        __m512i acc[SROWS];
        for (int r = 0; r < SROWS; r++) acc[r] = _mm512_setzero_si512();
        const uint8_t *kp = kpack + t * G * 64;
        for (i64 g = 0; g < G; g++) {
            const __m512i kv = _mm512_loadu_si512((const void *)(kp + g * 64));
            for (int r = 0; r < SROWS; r++) acc[r] = _mm512_dpbusd_epi32(acc[r], kv, _mm512_set1_epi32(qw[r][g]));
        }
        for (i64 r = 0; r < nr; r++)
            _mm512_storeu_si512((void *)(out + r * L + t * 16), _mm512_sub_epi32(acc[r], _mm512_set1_epi32(qs[r])));
    }
}

/* The int8 score GEMM q8 @ k8^T and att_digits_i32 fused, SROWS rows at a time: the scores never leave
   the L1/L2 cache. The same integers as torch._int_mm, then the same operations as att_digits_i32.
   `rows` is scratch of SROWS * L int32. D <= 256. */
void att_scores_digits(const int8_t *restrict q8, i64 n, i64 L, i64 D, const uint8_t *restrict kpack,
                       const float *restrict unit, const int32_t *restrict tab,
                       int32_t top, int32_t *restrict rows, int8_t *restrict hi, int8_t *restrict lo) {
    for (i64 r = 0; r < n; r += SROWS) {
        const i64 nr = n - r < SROWS ? n - r : SROWS;
        scores_rows(q8 + r * D, nr, L, D, kpack, rows);
        att_digits_i32(rows, nr, L, unit + r, tab, top, hi + r * L, lo + r * L);
    }
}
#endif

/* exact._weighted_values for a block of n query rows straight from the value GEMM's int32 sums acc
   (2n, Dp): rows [0, n) the hi digits' products, [n, 2n) the lo digits', column D the weights' sum.
   num = 128 hi + lo (int32, < 2^31), out[r][c] = (float)((double)num[c] / (double)num[D]) * svq[c],
   svq = the value scales / 127; out rows are `os` floats apart. */
/* With `bias` (else NULL): num = 128 hi + lo + bias (D + 1 int32, the den's last), for sums of weights
   less a constant (attention_head_amx). */
static void weighted_values_b(const int32_t *restrict acc, i64 n, i64 D, i64 Dp, const int32_t *restrict bias,
                              const float *restrict svq, float *restrict out, i64 os) {
    int32_t b[257] = {0};
    if (bias) memcpy(b, bias, (D + 1) * sizeof *b);
    for (i64 r = 0; r < n; r++) {
        const int32_t *restrict h = acc + r * Dp, *restrict l = acc + (n + r) * Dp;
        const double den = (double)(128 * h[D] + l[D] + b[D]);
        float *restrict o = out + r * os;
        for (i64 c = 0; c < D; c++) o[c] = (float)((double)(128 * h[c] + l[c] + b[c]) / den) * svq[c];
    }
}

void weighted_values(const int32_t *restrict acc, i64 n, i64 D, i64 Dp, const float *restrict svq,
                     float *restrict out, i64 os) {
    weighted_values_b(acc, n, D, Dp, NULL, svq, out, os);
}

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512BW__) && defined(__x86_64__) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

/* int8 GEMMs on the AMX tile unit (Sapphire Rapids and later): C = A B with int32 sums, the same
   integers as torch._int_mm (every product and partial sum is an exact integer, |sums| < 2^31 by the
   callers' bounds, so the order of summation does not matter). About 3x oneDNN's s8 GEMM on one core. */

/* Linux hands out the tile data state per process on request; 1 if granted. */
int amx_enable(void) { return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0; }

#define AMX_N 32 /* output columns per block (two tiles) */
#define AMX_K 64 /* sums per tile step */
static i64 round_up(i64 x, i64 m) { return (x + m - 1) / m * m; }

/* B (K x N, element (k, n) at w[n * sn + k * sk]) packed for amx_gemm: per tile of 16 columns, K/4 rows
   of 16 columns x 4 consecutive k (the tile unit's layout), zero beyond N and K:
   bp[round_up(N, 32) / 16][round_up(K, 64) / 4][16][4]. */
void amx_pack(const int8_t *restrict w, i64 N, i64 K, i64 sn, i64 sk, int8_t *restrict bp) {
    const i64 NT = round_up(N, AMX_N) / 16, K4 = round_up(K, AMX_K) / 4;
    for (i64 t = 0; t < NT; t++)
        for (i64 k4 = 0; k4 < K4; k4++) {
            int8_t *o = bp + (t * K4 + k4) * 64;
            const i64 n0 = t * 16, k0 = 4 * k4;
            if (sk == 1 && n0 + 16 <= N && k0 + 4 <= K) { /* rows of W: 4 consecutive bytes per column */
                for (i64 j = 0; j < 16; j++) memcpy(o + 4 * j, w + (n0 + j) * sn + k0, 4);
            } else if (sn == 1 && n0 + 16 <= N && k0 + 4 <= K) { /* rows of B: interleave 4 rows of 16 */
                const __m128i r0 = _mm_loadu_si128((const __m128i *)(w + k0 * sk + n0));
                const __m128i r1 = _mm_loadu_si128((const __m128i *)(w + (k0 + 1) * sk + n0));
                const __m128i r2 = _mm_loadu_si128((const __m128i *)(w + (k0 + 2) * sk + n0));
                const __m128i r3 = _mm_loadu_si128((const __m128i *)(w + (k0 + 3) * sk + n0));
                const __m128i a = _mm_unpacklo_epi8(r0, r1), b = _mm_unpackhi_epi8(r0, r1);
                const __m128i c = _mm_unpacklo_epi8(r2, r3), d = _mm_unpackhi_epi8(r2, r3);
                _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(a, c));
                _mm_storeu_si128((__m128i *)(o + 16), _mm_unpackhi_epi16(a, c));
                _mm_storeu_si128((__m128i *)(o + 32), _mm_unpacklo_epi16(b, d));
                _mm_storeu_si128((__m128i *)(o + 48), _mm_unpackhi_epi16(b, d));
            } else /* the edges: zero beyond N and K */
                for (i64 j = 0; j < 16; j++)
                    for (i64 b = 0; b < 4; b++) {
                        const i64 n = n0 + j, k = k0 + b;
                        o[4 * j + b] = n < N && k < K ? w[n * sn + k * sk] : 0;
                    }
        }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) tile_config;

/* One 32 x 32 block: tiles 0-3 the sums, 4-5 two 16-row slices of A, 6-7 two 16-column tiles of B. */
static inline void amx_block(const int8_t *a, i64 lda, const int8_t *b, i64 Kp, int32_t *c, i64 ldc) {
    const int8_t *b2 = b + Kp * 16;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (i64 k = 0; k < Kp; k += AMX_K) {
        _tile_loadd(4, a + k, lda);
        _tile_loadd(6, b + k * 16, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_loadd(7, b2 + k * 16, 64);
        _tile_dpbssd(1, 4, 7);
        _tile_loadd(5, a + 16 * lda + k, lda);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
    }
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c + 16, ldc * 4);
    _tile_stored(2, c + 16 * ldc, ldc * 4);
    _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

/* C (M x N int32, rows ldc apart) = A (M x K int8, rows lda apart) B, B packed by amx_pack. Tile loads
   read A up to round_up(K, 64) bytes per row (B's rows there are zero, so whatever they read adds 0);
   the last 32 rows go through a zero-padded copy, so nothing is read past the last row. Blocks that
   stick out of C are computed into a local block and copied. Returns 0 if out of memory. */
/* Where a block of sums goes: int32 into c (amx_gemm), or through an epilogue while the block is in L1:
   scale_acc's fp32 ((float)sum * row) * col into f (amx_gemm_scaled), or add_fixed's residual update
   h + (int64)nearbyint(((sum * row) * col) * unit) into o (amx_gemm_add_fixed); rows ld elements apart. */
typedef struct {
    int32_t *c;
    float *f;
    const i64 *h;
    i64 *o;
    i64 ld;
    const float *row, *col;
    float unit;
} amx_out;

static void amx_epilogue(const int32_t *restrict blk, i64 m, i64 n, i64 nr, i64 nc, const amx_out *out) {
    const i64 ld = out->ld;
    if (out->c)
        for (i64 r = 0; r < nr; r++)
            for (i64 j = 0; j < nc; j++) out->c[(m + r) * ld + n + j] = blk[r * 32 + j];
    else if (out->f)
        for (i64 r = 0; r < nr; r++) {
            const float rs = out->row[m + r];
            float *restrict f = out->f + (m + r) * ld + n;
            const float *restrict col = out->col + n;
            for (i64 j = 0; j < nc; j++) f[j] = ((float)blk[r * 32 + j] * rs) * col[j];
        }
    else
        for (i64 r = 0; r < nr; r++) {
            const float rs = out->row[m + r], unit = out->unit;
            const i64 *restrict h = out->h + (m + r) * ld + n;
            i64 *restrict o = out->o + (m + r) * ld + n;
            const float *restrict col = out->col + n;
            for (i64 j = 0; j < nc; j++) o[j] = h[j] + (i64)nearbyintf((((float)blk[r * 32 + j] * rs) * col[j]) * unit);
        }
}

static int amx_gemm_to(const int8_t *restrict a, i64 M, i64 K, i64 lda, const int8_t *restrict bp, i64 N,
                       const amx_out *out) {
    const i64 Kp = round_up(K, AMX_K), Np = round_up(N, AMX_N), Mf = (K == Kp ? M : M - 1) / 32 * 32;
    /* a weight matrix that fits in the core's L2 is swept once per 32 rows (the A rows stay in L1);
       a larger one (the output head) once for all rows */
    const i64 mb = Np * Kp <= (1 << 21) ? 32 : round_up(M, 32);
    int8_t *tail = NULL;
    int32_t local[32 * 32];
    if (Mf < M) {
        tail = calloc(32 * Kp, 1);
        if (!tail) return 0;
        for (i64 r = Mf; r < M; r++) memcpy(tail + (r - Mf) * Kp, a + r * lda, K);
    }
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
    for (i64 m0 = 0; m0 < M; m0 += mb)
        for (i64 n = 0; n < Np; n += AMX_N)
            for (i64 m = m0; m < m0 + mb && m < M; m += 32) {
                const int8_t *ab = m < Mf ? a + m * lda : tail;
                const i64 la = m < Mf ? lda : Kp;
                const i64 nr = M - m < 32 ? M - m : 32, nc = N - n < AMX_N ? N - n : AMX_N;
                if (out->c && nr == 32 && nc == AMX_N) { /* int32 straight from the tiles */
                    amx_block(ab, la, bp + n * Kp, Kp, out->c + m * out->ld + n, out->ld);
                    continue;
                }
                amx_block(ab, la, bp + n * Kp, Kp, local, 32);
                amx_epilogue(local, m, n, nr, nc, out);
            }
    _tile_release();
    free(tail);
    return 1;
}

int amx_gemm(const int8_t *restrict a, i64 M, i64 K, i64 lda, const int8_t *restrict bp, i64 N, int32_t *restrict c,
             i64 ldc) {
    const amx_out out = {.c = c, .ld = ldc};
    return amx_gemm_to(a, M, K, lda, bp, N, &out);
}

int amx_gemm_scaled(const int8_t *restrict a, i64 M, i64 K, i64 lda, const int8_t *restrict bp, i64 N,
                    const float *restrict row, const float *restrict col, float *restrict f, i64 ldf) {
    const amx_out out = {.f = f, .ld = ldf, .row = row, .col = col};
    return amx_gemm_to(a, M, K, lda, bp, N, &out);
}

int amx_gemm_add_fixed(const int8_t *restrict a, i64 M, i64 K, i64 lda, const int8_t *restrict bp, i64 N,
                       const float *restrict row, const float *restrict col, float unit, const i64 *restrict h,
                       i64 *restrict o, i64 ld) {
    const amx_out out = {.h = h, .o = o, .ld = ld, .row = row, .col = col, .unit = unit};
    return amx_gemm_to(a, M, K, lda, bp, N, &out);
}

/* C = A B (int32; rows of 16 and columns of 16 written in whole tiles: C has round_up(M, 16) rows, ldc
   >= round_up(N, 16)) over only the blocks of 64 sums that `flag` marks: a group of 16 rows of A goes
   through block kb of its sums if any of its rows r has flag[r * KB + kb] set (KB = round_up(K, 64) / 64).
   The caller sets the flag wherever a row's block may hold a nonzero A: the skipped products are zero,
   so the sums are the same integers. A is read up to round_up(M, 16) rows of round_up(K, 64) bytes.
   Tiles 0-4 hold the sums of up to 5 column tiles, 5 the A tile, 6 and 7 alternate B tiles. */
static void amx_gemm_flagged(const int8_t *restrict a, i64 M, i64 K, i64 lda, const uint8_t *restrict flag,
                             const int8_t *restrict bp, i64 N, int32_t *restrict c, i64 ldc) {
    const i64 Kp = round_up(K, AMX_K), KB = Kp / AMX_K, NT = (N + 15) / 16;
    uint8_t any[KB];
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
    for (i64 g = 0; g < M; g += 16) {
        memset(any, 0, KB);
        for (i64 r = g; r < g + 16 && r < M; r++)
            for (i64 kb = 0; kb < KB; kb++) any[kb] |= flag[r * KB + kb];
        for (i64 t0 = 0; t0 < NT; t0 += 5) {
            const i64 nt = NT - t0 < 5 ? NT - t0 : 5;
            const int8_t *b = bp + t0 * Kp * 16;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            _tile_zero(4);
            for (i64 kb = 0; kb < KB; kb++) {
                if (!any[kb]) continue;
                const int8_t *bk = b + kb * AMX_K * 16;
                _tile_loadd(5, a + g * lda + kb * AMX_K, lda);
                _tile_loadd(6, bk, 64);
                _tile_dpbssd(0, 5, 6);
                if (nt > 1) {
                    _tile_loadd(7, bk + Kp * 16, 64);
                    _tile_dpbssd(1, 5, 7);
                }
                if (nt > 2) {
                    _tile_loadd(6, bk + 2 * Kp * 16, 64);
                    _tile_dpbssd(2, 5, 6);
                }
                if (nt > 3) {
                    _tile_loadd(7, bk + 3 * Kp * 16, 64);
                    _tile_dpbssd(3, 5, 7);
                }
                if (nt > 4) {
                    _tile_loadd(6, bk + 4 * Kp * 16, 64);
                    _tile_dpbssd(4, 5, 6);
                }
            }
            int32_t *o = c + g * ldc + t0 * 16;
            _tile_stored(0, o, ldc * 4);
            if (nt > 1) _tile_stored(1, o + 16, ldc * 4);
            if (nt > 2) _tile_stored(2, o + 32, ldc * 4);
            if (nt > 3) _tile_stored(3, o + 48, ldc * 4);
            if (nt > 4) _tile_stored(4, o + 64, ldc * 4);
        }
    }
    _tile_release();
}

/* The attention's score GEMM q8 @ k8^T on the tiles and att_digits_flagged, 32 query rows at a time so
   the scores stay in cache (`rows`: scratch of 32 * L int32): the same integers as torch._int_mm, then
   the same operations as att_digits_i32, with the rows' hi and lo flags (KB bytes per row). kpack:
   amx_pack of the keys k8 (L, D). Returns 0 if out of memory. */
static int att_scores_digits_amx(const int8_t *restrict q8, i64 n, i64 L, i64 D, const int8_t *restrict kpack,
                                 const float *restrict unit, const int32_t *restrict tab, int32_t top,
                                 int32_t hi_top, int32_t *restrict rows, int8_t *restrict hi, int8_t *restrict lo,
                                 uint8_t *restrict hflag, uint8_t *restrict lflag, i64 KB) {
    for (i64 r = 0; r < n; r += 32) {
        const i64 nr = n - r < 32 ? n - r : 32;
        if (!amx_gemm(q8 + r * D, nr, D, D, kpack, L, rows, L)) return 0;
        att_digits_flagged(rows, nr, L, unit + r, tab, top, hi + r * L, lo + r * L, hflag + r * KB, lflag + r * KB,
                           KB, hi_top);
    }
    return 1;
}

/* Bytes of the workspace attention_head_amx needs for n query rows, L keys, head dimension D and
   `rows` query rows per pass. */
#define WS_ALIGN(x) (((x) + 63) / 64 * 64)
i64 attention_head_workspace(i64 n, i64 L, i64 D, i64 rows) {
    const i64 Dp = round_up(D + 1, 8), R = round_up(2 * rows, 16), KB = round_up(L, AMX_K) / AMX_K;
    return WS_ALIGN(4 * L * D) + WS_ALIGN(4 * n * D) + WS_ALIGN(n * D) + 2 * WS_ALIGN(4 * n) + WS_ALIGN(L * D) +
           3 * WS_ALIGN(4 * D) + WS_ALIGN(4 * (D + 1)) + WS_ALIGN(L * Dp) +
           WS_ALIGN(round_up(L, AMX_N) * round_up(D, AMX_K)) + WS_ALIGN(round_up(Dp, AMX_N) * round_up(L, AMX_K)) +
           WS_ALIGN(4 * 32 * L) + WS_ALIGN(R * L + AMX_K) + WS_ALIGN(4 * R * round_up(D + 1, 16)) + WS_ALIGN(R * KB);
}

/* One head's attention on the tiles, in one call (exact.py's per-thread loop with the C kernels, fused):
   head_inputs_q8; the logit units sq * att_unit and the value scales sv * sv_unit (single fp32 products,
   as torch's tensor * scalar); keys and [v8 | 1] packed; then per pass of `rows` query rows the scores
   and their digits (att_scores_digits_amx), the value GEMM and weighted_values into out (n, D), rows `os`
   floats apart. ws: attention_head_workspace bytes, 64-byte aligned. Returns 0 if out of memory.
   The weights are written e = e0 + e' with e0 the table's last entry (top) and `tab` the digits of e',
   so that a weight clamped at top (most of them) has digits 0: the value GEMM [hi'; lo'] @ [v8 | 1]
   then skips the blocks of 64 keys that its flags show to be zero, and the sums get e0 * sum_j [v8 | 1]
   added back: the same integers sum_j e_j [v8 | 1]_j as the dense GEMM of e's digits (every term an
   exact int32). hi_top: the first index from which the table's hi digits are all 0. */
int attention_head_amx(const float *restrict q, i64 qs, i64 n, const int64_t *restrict pos, const float *restrict k,
                       const float *restrict v, i64 kvs, i64 L, i64 D, const float *restrict cos_t,
                       const float *restrict sin_t, float att_unit, float sv_unit, const int32_t *restrict tab,
                       int32_t top, int32_t e0, int32_t hi_top, i64 rows, float *restrict out, i64 os,
                       int8_t *restrict ws) {
    const i64 Dp = round_up(D + 1, 8), R = round_up(2 * rows, 16), KB = round_up(L, AMX_K) / AMX_K;
    const i64 ldc = round_up(D + 1, 16);
    int8_t *p = ws;
#define TAKE(T, name, bytes) T *restrict name = (T *)p; p += WS_ALIGN(bytes)
    TAKE(float, kr, 4 * L * D);
    TAKE(float, qr, 4 * n * D);
    TAKE(int8_t, q8, n * D);
    TAKE(float, sq, 4 * n);
    TAKE(float, unit, 4 * n);
    TAKE(int8_t, k8, L * D);
    TAKE(float, sk, 4 * D);
    TAKE(float, sv, 4 * D);
    TAKE(float, svq, 4 * D);
    TAKE(int32_t, bias, 4 * (D + 1));
    TAKE(int8_t, v1, L * Dp);
    TAKE(int8_t, kpack, round_up(L, AMX_N) * round_up(D, AMX_K));
    TAKE(int8_t, vpack, round_up(Dp, AMX_N) * round_up(L, AMX_K));
    TAKE(int32_t, srows, 4 * 32 * L);
    TAKE(int8_t, hilo, R * L + AMX_K);
    TAKE(int32_t, acc, 4 * R * ldc);
    TAKE(uint8_t, flag, R * KB);
#undef TAKE
    memset(v1, 0, L * Dp);
    for (i64 j = 0; j < L; j++) v1[j * Dp + D] = 1; /* the column of ones: the weights' sums */
    head_inputs_q8(q, qs, n, pos, k, v, kvs, L, D, cos_t, sin_t, kr, qr, q8, sq, k8, sk, v1, Dp, sv);
    for (i64 i = 0; i < n; i++) unit[i] = sq[i] * att_unit;
    for (i64 c = 0; c < D; c++) svq[c] = sv[c] * sv_unit;
    for (i64 c = 0; c <= D; c++) bias[c] = 0;
    for (i64 j = 0; j < L; j++)
        for (i64 c = 0; c <= D; c++) bias[c] += v1[j * Dp + c];
    for (i64 c = 0; c <= D; c++) bias[c] *= e0;
    amx_pack(k8, L, D, D, 1, kpack);
    amx_pack(v1, Dp, L, 1, Dp, vpack);
    for (i64 r0 = 0; r0 < n; r0 += rows) {
        const i64 nr = n - r0 < rows ? n - r0 : rows;
        memset(flag, 0, R * KB);
        if (!att_scores_digits_amx(q8 + r0 * D, nr, L, D, kpack, unit + r0, tab, top, hi_top, srows, hilo,
                                   hilo + nr * L, flag, flag + nr * KB, KB))
            return 0;
        amx_gemm_flagged(hilo, 2 * nr, L, L, flag, vpack, D + 1, acc, ldc);
        weighted_values_b(acc, nr, D, ldc, bias, svq, out + r0 * os, os);
    }
    return 1;
}

/* Bytes of the workspace attention_head_qkv_amx needs (its q, k and v, the gathered query rows, then
   attention_head_amx's). */
i64 attention_head_qkv_workspace(i64 n, i64 L, i64 d, i64 D, i64 rows) {
    return WS_ALIGN(4 * n * D) + 2 * WS_ALIGN(4 * L * D) + WS_ALIGN(n * d) + WS_ALIGN(4 * n) +
           attention_head_workspace(n, L, D, rows);
}

/* attention_head_amx for head h with its q, k and v computed here, on the tiles, from the chunk's
   LayerNorm output x8 (L x d int8, rows lda apart, row scales xs) and the packed qkv weights wq
   (amx_pack of W_qkv^T, 3d columns): ((float)sum * xs) * col, amx_gemm_scaled's values, the ones
   attention_input stores, for the query rows pos (or all) and every key and value row. The chunk's qkv
   (6 MB at L = 1024, d = 512) then never goes out to memory and back; each head's 0.8 MB stays in the
   core's cache. D % 32 == 0 (the head's columns are whole blocks of the packed weights). */
int attention_head_qkv_amx(const int8_t *restrict x8, i64 lda, const float *restrict xs, i64 L, i64 d, i64 n,
                           const int64_t *restrict pos, const int8_t *restrict wq, const float *restrict col, i64 h,
                           i64 D, const float *restrict cos_t, const float *restrict sin_t, float att_unit,
                           float sv_unit, const int32_t *restrict tab, int32_t top, int32_t e0, int32_t hi_top,
                           i64 rows, float *restrict out, i64 os, int8_t *restrict ws) {
    const i64 Kp = round_up(d, AMX_K);
    int8_t *p = ws;
#define TAKE(T, name, bytes) T *restrict name = (T *)p; p += WS_ALIGN(bytes)
    TAKE(float, qf, 4 * n * D);
    TAKE(float, kf, 4 * L * D);
    TAKE(float, vf, 4 * L * D);
    TAKE(int8_t, xq, n * d);
    TAKE(float, xqs, 4 * n);
#undef TAKE
    const int8_t *qa = x8;
    const float *qs = xs;
    i64 qlda = lda;
    if (pos) { /* the query rows */
        for (i64 i = 0; i < n; i++) {
            memcpy(xq + i * d, x8 + pos[i] * lda, d);
            xqs[i] = xs[pos[i]];
        }
        qa = xq, qs = xqs, qlda = d;
    }
    if (!amx_gemm_scaled(qa, n, d, qlda, wq + h * D * Kp, D, qs, col + h * D, qf, D) ||
        !amx_gemm_scaled(x8, L, d, lda, wq + (d + h * D) * Kp, D, xs, col + d + h * D, kf, D) ||
        !amx_gemm_scaled(x8, L, d, lda, wq + (2 * d + h * D) * Kp, D, xs, col + 2 * d + h * D, vf, D))
        return 0;
    return attention_head_amx(qf, D, n, pos, kf, vf, D, L, D, cos_t, sin_t, att_unit, sv_unit, tab, top, e0, hi_top,
                              rows, out, os, p);
}

/* The MLP's gate_up GEMM on the tiles and glu_q8_i32, GLU_ROWS rows at a time: their int32 sums
   (GLU_ROWS x N2, 344 KB for the default model) are used from the core's cache instead of being written
   to memory and read back (5.5 MB per 512 rows). The same sums and operations as amx_gemm then
   glu_q8_i32. Returns 0 if out of memory. */
#define GLU_ROWS 32
int amx_gemm_glu_q8(const int8_t *restrict a, i64 M, i64 K, i64 lda, const int8_t *restrict bp, i64 N2,
                    const float *restrict row, const float *restrict col, const float *restrict sig, int32_t frac,
                    int32_t half, int8_t *restrict q, float *restrict mx) {
    const i64 f = N2 / 2;
    int32_t *acc = malloc(GLU_ROWS * N2 * sizeof *acc);
    if (!acc) return 0;
    for (i64 r = 0; r < M; r += GLU_ROWS) {
        const i64 nr = M - r < GLU_ROWS ? M - r : GLU_ROWS;
        if (!amx_gemm(a + r * lda, nr, K, lda, bp, N2, acc, N2)) {
            free(acc);
            return 0;
        }
        glu_q8_i32(acc, nr, f, row + r, col, sig, frac, half, q + r * f, mx + r);
    }
    free(acc);
    return 1;
}
#endif
