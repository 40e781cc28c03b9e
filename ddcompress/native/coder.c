/* The entropy coder's kernels: format 4's rANS (codec/rans.py defines it and holds the reference in
   Python) and format 5's mixed rows (codec/mixing.py). Built with denoiser.c into one library by
   native/kernels.py, with the same flags: -fno-fast-math -ffp-contract=off, every operation rounds as
   written. Every array is contiguous, row-major. */
#include <stdint.h>
#include <string.h>

typedef int64_t i64;

/* ---- The entropy coder of format 4 (rans.py defines it and holds the reference in Python) ----
   A row of V integer frequencies f_j (floats, each an integer <= 2^24) is quantized to 24 bits as
   cdf(i) = floor(C_i W / T) + i, C_i = sum_{j<i} f_j, T = C_V, W = 2^24 - V; symbol s codes as
   [cdf(s), cdf(s+1)). rANS: state x in [2^31, 2^64), 32-bit words, encoded in reverse, payload words in
   decode order. Sums of frequencies are exact in doubles (< 2^53) in any order; the products in 128 bits. */
#define RANS_M (1ull << 24)
#define RANS_L (1ull << 31)
#define RANS_BLOCK 64
typedef unsigned __int128 u128;
typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x8 __attribute__((vector_size(64)));

static double sum_freqs(const float *restrict p, i64 n) {
    f64x8 a = {0}, b = {0};
    i64 j = 0;
    for (; j + 16 <= n; j += 16) {
        f32x8 x, y;
        memcpy(&x, p + j, sizeof x);
        memcpy(&y, p + j + 8, sizeof y);
        a += __builtin_convertvector(x, f64x8);
        b += __builtin_convertvector(y, f64x8);
    }
    a += b;
    double s = 0;
    for (int t = 0; t < 8; t++) s += a[t];
    for (; j < n; j++) s += p[j];
    return s;
}

static uint64_t rans_cdf(uint64_t C, uint64_t T, uint64_t W, i64 i) {
    return (uint64_t)((u128)C * W / T) + (uint64_t)i;
}

/* Encoder side: for row r and its symbol sym[r], start[r] = cdf(s) and width[r] = cdf(s+1) - cdf(s);
   tot[r] = T and fs[r] = f_s (the ideal code length). Returns 0, or -1 for a symbol out of range or a
   row without mass. */
int rans_symbols_f32(const float *restrict freq, i64 n, i64 V, const int32_t *restrict sym,
                     uint32_t *restrict start, uint32_t *restrict width, double *restrict tot,
                     double *restrict fs) {
    const uint64_t W = RANS_M - (uint64_t)V;
    for (i64 r = 0; r < n; r++) {
        const float *restrict p = freq + r * V;
        const i64 s = sym[r];
        if (s < 0 || s >= V) return -1;
        const double c = sum_freqs(p, s), f = p[s], t = c + f + sum_freqs(p + s + 1, V - s - 1);
        const uint64_t C = (uint64_t)c, F = (uint64_t)f, T = (uint64_t)t;
        if (T == 0) return -1;
        const uint64_t lo = rans_cdf(C, T, W, s);
        start[r] = (uint32_t)lo;
        width[r] = (uint32_t)(rans_cdf(C + F, T, W, s + 1) - lo);
        tot[r] = t;
        fs[r] = f;
    }
    return 0;
}

/* Encodes the n symbols (start, width) into out[0..cap), last symbol first, so that a decoder reads
   them first to last; the words are moved to the front of out. Returns their number, or -1 (cap too
   small: n + 2 always suffices; or an invalid interval). */
i64 rans_encode(const uint32_t *restrict start, const uint32_t *restrict width, i64 n, uint32_t *restrict out,
                i64 cap) {
    i64 k = cap;
    uint64_t x = RANS_L;
    for (i64 i = n - 1; i >= 0; i--) {
        const uint64_t w = width[i];
        if (w == 0 || (uint64_t)start[i] + w > RANS_M) return -1;
        if (x >= w << 39) { /* ((RANS_L >> 24) << 32) * w: after the step x stays below 2^63 */
            if (k == 0) return -1;
            out[--k] = (uint32_t)x;
            x >>= 32;
        }
        x = ((x / w) << 24) + x % w + start[i];
    }
    if (k < 2) return -1;
    out[--k] = (uint32_t)(x >> 32);
    out[--k] = (uint32_t)x;
    memmove(out, out + k, (size_t)(cap - k) * sizeof *out);
    return cap - k;
}

/* A row's frequencies: floats (f), or exp-table indices u into the integer table tab (a GPU's rows
   cross to the host as int16 indices, half the bytes). */
static inline __attribute__((always_inline)) uint64_t row_at(const float *f, const uint16_t *u, const int32_t *tab, i64 j) {
    return f ? (uint64_t)f[j] : (uint64_t)tab[u[j]];
}

static inline __attribute__((always_inline)) double row_sum(const float *f, const uint16_t *u, const int32_t *tab,
                                                              i64 j0, i64 n) {
    if (f) return sum_freqs(f + j0, n);
    int64_t s = 0;
    for (i64 j = j0; j < j0 + n; j++) s += tab[u[j]];
    return (double)s;
}

/* Decodes n symbols into sym, row r's under row r, continuing a stream whose state and read position
   are *state and *pos (*pos == 0: a new stream, the state from its first two words). One pass over a
   row takes T and its sums per block of 64 (bsum: scratch of ceil(V/64) doubles); the block that holds
   the quantile is found from those, the symbol inside it. Returns 0; -1 when the words run out or the
   initial state is out of range (corrupt data); -2 for a row without mass. */
static inline __attribute__((always_inline)) int rans_decode_rows(
        const float *restrict freq, const uint16_t *restrict idx, const int32_t *restrict tab, i64 n, i64 V,
        const uint32_t *restrict words, i64 nwords, uint64_t *restrict state, i64 *restrict pos,
        int32_t *restrict sym, double *restrict bsum) {
    const uint64_t W = RANS_M - (uint64_t)V;
    uint64_t x = *state;
    i64 k = *pos;
    if (k == 0) {
        if (nwords < 2) return -1;
        x = (uint64_t)words[0] | (uint64_t)words[1] << 32;
        k = 2;
        if (x < RANS_L || x >> 63) return -1; /* states lie in [2^31, 2^63) */
    }
    const i64 nb = (V + RANS_BLOCK - 1) / RANS_BLOCK;
    for (i64 r = 0; r < n; r++) {
        const float *p = freq ? freq + r * V : 0;
        const uint16_t *pu = idx ? idx + r * V : 0;
        double t = 0;
        for (i64 b = 0; b < nb; b++) {
            const i64 i0 = b * RANS_BLOCK, m = V - i0 < RANS_BLOCK ? V - i0 : RANS_BLOCK;
            bsum[b] = row_sum(p, pu, tab, i0, m);
            t += bsum[b];
        }
        const uint64_t T = (uint64_t)t, q = x & (RANS_M - 1);
        if (T == 0) return -2;
        const u128 thr = (u128)(q + 1) * T; /* cdf(i) <= q  <=>  C_i W + i T < thr */
        uint64_t C = 0;
        i64 b = 0;
        for (; b + 1 < nb; b++) { /* the last block always holds it: C_V W + V T = T 2^24 >= thr */
            const i64 i1 = (b + 1) * RANS_BLOCK;
            const uint64_t C1 = C + (uint64_t)bsum[b];
            if ((u128)C1 * W + (u128)i1 * T >= thr) break;
            C = C1;
        }
        i64 s = b * RANS_BLOCK;
        const i64 end = s + RANS_BLOCK < V ? s + RANS_BLOCK : V;
        for (i64 i = s + 1; i < end; i++) {
            const uint64_t Ci = C + row_at(p, pu, tab, i - 1);
            if ((u128)Ci * W + (u128)i * T >= thr) break;
            s = i;
            C = Ci;
        }
        const uint64_t lo = rans_cdf(C, T, W, s), w = rans_cdf(C + row_at(p, pu, tab, s), T, W, s + 1) - lo;
        x = w * (x >> 24) + q - lo;
        if (x < RANS_L) {
            if (k >= nwords) return -1;
            x = x << 32 | words[k++];
        }
        sym[r] = (int32_t)s;
    }
    *state = x;
    *pos = k;
    return 0;
}

int rans_decode_f32(const float *restrict freq, i64 n, i64 V, const uint32_t *restrict words, i64 nwords,
                    uint64_t *restrict state, i64 *restrict pos, int32_t *restrict sym, double *restrict bsum) {
    return rans_decode_rows(freq, 0, 0, n, V, words, nwords, state, pos, sym, bsum);
}

/* The same for rows of exp-table indices idx (n, V) into the integer frequencies tab. */
int rans_decode_u16(const uint16_t *restrict idx, const int32_t *restrict tab, i64 n, i64 V,
                    const uint32_t *restrict words, i64 nwords, uint64_t *restrict state, i64 *restrict pos,
                    int32_t *restrict sym, double *restrict bsum) {
    return rans_decode_rows(0, idx, tab, n, V, words, nwords, state, pos, sym, bsum);
}

/* Format 5 (mixing.py): a row's denoiser statistics and the symbol of a mixed quantized cdf.

   mix_row_stats: per row r, T (sum), f_max, and its sums per block of 64 (bsum: n x ceil(V/64));
   with sym, also C_s (sum below sym[r]) and f_s. Returns 0, or -1 for a symbol out of range. */
int mix_row_stats(const float *restrict freq, i64 n, i64 V, const int32_t *restrict sym, int64_t *restrict tot,
                  int64_t *restrict fmax, int64_t *restrict bsum, int64_t *restrict cs, int64_t *restrict fs) {
    const i64 nb = (V + RANS_BLOCK - 1) / RANS_BLOCK;
    for (i64 r = 0; r < n; r++) {
        const float *restrict p = freq + r * V;
        int64_t t = 0;
        float mx = 0;
        for (i64 b = 0; b < nb; b++) {
            const i64 i0 = b * RANS_BLOCK, m = V - i0 < RANS_BLOCK ? V - i0 : RANS_BLOCK;
            const int64_t s = (int64_t)sum_freqs(p + i0, m); /* exact: at most 64 values <= 2^24 */
            for (i64 j = i0; j < i0 + m; j++) mx = p[j] > mx ? p[j] : mx;
            if (bsum) bsum[r * nb + b] = s;
            t += s;
        }
        tot[r] = t;
        fmax[r] = (int64_t)mx;
        if (sym) {
            const i64 s = sym[r];
            if (s < 0 || s >= V) return -1;
            cs[r] = (int64_t)sum_freqs(p, s);
            fs[r] = (int64_t)p[s];
        }
    }
    return 0;
}

/* The largest s with Q(s) <= q, where
       Q(i) = floor(C_i B0 / T) + floor(U_i Bu / Nu) + E(i) + i,   E(i) = sum of inc[k] over tok[k] < i
   (C_i: sums of the row below i; U: the unigram's cumulative counts, ucum[0..V]; tok ascending).
   out = {s, Q(s), Q(s+1) - Q(s), f_s}. bsum: the row's block sums (mix_row_stats). Returns 0, or -1
   for a row without mass or q >= Q(V). */
int mix_find(const float *restrict p, i64 V, int64_t T, int64_t B0, const int64_t *restrict bsum,
             const int64_t *restrict ucum, int64_t Bu, int64_t Nu, const int64_t *restrict tok,
             const int64_t *restrict inc, i64 m, int64_t q, int64_t *restrict out) {
    if (T <= 0 || q < 0) return -1;
    const i64 nb = (V + RANS_BLOCK - 1) / RANS_BLOCK;
#define MIX_Q(C, i, E) ((int64_t)((u128)(C) * (uint64_t)B0 / (uint64_t)T) + \
        (Bu ? (int64_t)((u128)ucum[i] * (uint64_t)Bu / (uint64_t)Nu) : 0) + (E) + (int64_t)(i))
    int64_t C = 0, E = 0;
    i64 k = 0, b = 0;
    for (; b < nb; b++) { /* the last block boundary i1 <= V with Q(i1) <= q */
        const i64 i1 = (b + 1) * RANS_BLOCK < V ? (b + 1) * RANS_BLOCK : V;
        int64_t E1 = E;
        i64 k1 = k;
        while (k1 < m && tok[k1] < i1) E1 += inc[k1++];
        const int64_t C1 = C + bsum[b];
        if (MIX_Q(C1, i1, E1) > q) break;
        C = C1, E = E1, k = k1;
    }
    if (b == nb) return -1;
    i64 s = b * RANS_BLOCK;
    const i64 end = (b + 1) * RANS_BLOCK < V ? (b + 1) * RANS_BLOCK : V;
    /* Q(s) <= q here; step while Q(s + 1) <= q */
    while (k < m && tok[k] < s) E += inc[k++];
    for (;;) {
        const i64 i = s + 1;
        if (i >= end) break;
        int64_t Ei = E;
        i64 ki = k;
        while (ki < m && tok[ki] < i) Ei += inc[ki++];
        const int64_t Ci = C + (int64_t)p[s];
        if (MIX_Q(Ci, i, Ei) > q) break;
        s = i, C = Ci, E = Ei, k = ki;
    }
    int64_t E1 = E;
    i64 k1 = k;
    while (k1 < m && tok[k1] < s + 1) E1 += inc[k1++];
    const int64_t lo = MIX_Q(C, s, E), hi = MIX_Q(C + (int64_t)p[s], s + 1, E1);
#undef MIX_Q
    out[0] = s, out[1] = lo, out[2] = hi - lo, out[3] = (int64_t)p[s];
    return 0;
}
