/* Optional compiled versions of the per-pixel kernels that dominate sceneclass's own work
 * (pipeline/kernels.py and pipeline/stats.py have the numpy versions, used when this module is
 * not built, and the tests check both agree):
 *
 *   hist16(values, counts)    counts[v] += 1 for every uint16 v
 *   hist8(values, counts)     counts[v] += 1 for every uint8 v (class ids)
 *   lut16(values, lut, out)   out[i] = lut[values[i]] for a 65,536-entry uint8 table
 *   lutn(values, itemsize, lut, bands, out)
 *                             the same with 2-4 bytes (colours) per entry, for uint8 or uint16
 *                             values, pixel-interleaved
 *
 * and, for float32/float64 pixels (``itemsize`` 4 or 8; valid: finite and not ``nodata``):
 *
 *   fscan(values, itemsize, nodata, top)      (count, min, max) of the valid pixels; with
 *                                             ``top`` (int64[65536]), the histogram of the top
 *                                             16 bits of their order-preserving key too
 *   fkeyhist(values, itemsize, nodata, shift, prefixes, counts)
 *                                             the next 16 key bits below ``shift + 16`` of the
 *                                             valid pixels whose key prefix is in ``prefixes``
 *                                             (sorted uint64): counts[row * 65536 + digit]
 *   fclassify(values, itemsize, edges, nodata, out)
 *                                             class ids: numpy.searchsorted(edges, v, "right"),
 *                                             n for v == edges[n], 0 above, below, NaN, nodata
 *   fbinned(values, itemsize, nodata, edges, scale, counts, sums)
 *                                             counts and float64 sums of the valid pixels in
 *                                             the uniform bins ``edges`` (pipeline.stats.bin_index)
 *
 * and, to decode float32 TIFF tiles (pipeline/_engine/tiffread.py):
 *
 *   fpred32(tile, width, tile_row, tile_col, rows, cols, out, out_width, out_row, out_col)
 *                                             undo TIFF's floating-point predictor (3) on the
 *                                             inflated rows of a tile ``width`` pixels wide
 *                                             (in place), and put the float32 pixels of its
 *                                             rows x cols from (tile_row, tile_col) at
 *                                             (out_row, out_col) of ``out`` (``out_width`` wide)
 *
 * Buffers are C-contiguous (the buffer protocol's simple form); the GIL is released while the
 * loop runs. numpy's bincount and take first copy every uint16 index into a fresh int64 array
 * (and bincount also scans it for its minimum and maximum); these loops read the values where
 * they are. The float kernels make no temporaries at all (numpy's make several arrays of a
 * chunk's size per step). The histograms count into interleaved 32-bit tables (four for
 * uint16, eight for class ids), so consecutive equal values do not wait on each other's
 * increments; hist8 adds a word of eight equal class ids at once (4.5x the four-table loop on a
 * class image, never slower on random ids). Plain C99, no numpy headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define BINS 65536
/* pixels counted into the 32-bit tables before they are added to the int64 counts */
#define FLUSH ((Py_ssize_t)1 << 30)

/* This thread's four zeroed 65,536-entry count tables, kept from one hist16 call to the next
 * (freed when the thread ends): fresh calloc'ed tables for each chunk made the count take 2.2x
 * as long (11 against 5 ms for a 2048 x 2048 chunk), their pages faulted in again each time.
 * NULL where threads have no keys (then each call allocates its own). */
#ifndef _WIN32
#include <pthread.h>
static pthread_key_t hist_key;
static pthread_once_t hist_once = PTHREAD_ONCE_INIT;
static int hist_key_made = 0;
static void make_hist_key(void) { hist_key_made = pthread_key_create(&hist_key, free) == 0; }
#endif

static uint32_t *kept_hist_tables(void) {
#ifndef _WIN32
    pthread_once(&hist_once, make_hist_key);
    if (!hist_key_made)
        return NULL;
    uint32_t *tables = pthread_getspecific(hist_key);
    if (tables == NULL) {
        tables = calloc(4 * BINS, sizeof(uint32_t));
        if (tables != NULL && pthread_setspecific(hist_key, tables) != 0) {
            free(tables);
            tables = NULL;
        }
    }
    return tables;
#else
    return NULL;
#endif
}

static PyObject *hist16(PyObject *self, PyObject *args) {
    Py_buffer values, counts;
    if (!PyArg_ParseTuple(args, "y*w*:hist16", &values, &counts))
        return NULL;
    if (values.len % 2 != 0 || counts.len != BINS * (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_ValueError, "hist16: values must be uint16, counts int64[65536]");
        return NULL;
    }
    uint32_t *tables = kept_hist_tables();  /* zeroed: every call leaves them zeroed */
    const int kept = tables != NULL;
    if (!kept)
        tables = calloc(4 * BINS, sizeof(uint32_t));
    if (tables == NULL) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&counts);
        return PyErr_NoMemory();
    }
    const uint16_t *v = (const uint16_t *)values.buf;
    int64_t *out = (int64_t *)counts.buf;
    Py_ssize_t n = values.len / 2;
    Py_BEGIN_ALLOW_THREADS
    uint32_t *t0 = tables, *t1 = tables + BINS, *t2 = tables + 2 * BINS, *t3 = tables + 3 * BINS;
    for (Py_ssize_t start = 0; start < n; start += FLUSH) {
        Py_ssize_t end = n - start > FLUSH ? start + FLUSH : n, i = start;
        for (; i + 4 <= end; i += 4) {
            /* the four values are loaded before any count is stored: a load issued after a
             * store whose address matches it in the low 12 bits waits for that store (4K
             * aliasing), which made this loop 2.6x slower on a Landsat-like chunk */
            const uint16_t a = v[i], b = v[i + 1], c = v[i + 2], d = v[i + 3];
            t0[a]++;
            t1[b]++;
            t2[c]++;
            t3[d]++;
        }
        for (; i < end; i++)
            t0[v[i]]++;
        for (Py_ssize_t k = 0; k < BINS; k++) {
            out[k] += (int64_t)t0[k] + t1[k] + t2[k] + t3[k];
        }
        memset(tables, 0, 4 * BINS * sizeof(uint32_t));
    }
    Py_END_ALLOW_THREADS
    if (!kept)
        free(tables);
    PyBuffer_Release(&values);
    PyBuffer_Release(&counts);
    Py_RETURN_NONE;
}

static PyObject *hist8(PyObject *self, PyObject *args) {
    Py_buffer values, counts;
    if (!PyArg_ParseTuple(args, "y*w*:hist8", &values, &counts))
        return NULL;
    if (counts.len != 256 * (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_ValueError, "hist8: values must be uint8, counts int64[256]");
        return NULL;
    }
    const uint8_t *v = (const uint8_t *)values.buf;
    int64_t *out = (int64_t *)counts.buf;
    Py_ssize_t n = values.len;
    Py_BEGIN_ALLOW_THREADS
    /* eight 32-bit tables, one per byte of an 8-byte word, flushed every FLUSH pixels; a word
     * of eight equal ids (most words of a class image: classes come in regions) is one add */
    uint32_t t[8][256];
    for (Py_ssize_t start = 0; start < n; start += FLUSH) {
        Py_ssize_t end = n - start > FLUSH ? start + FLUSH : n, i = start;
        memset(t, 0, sizeof(t));
        for (; i + 8 <= end; i += 8) {
            uint64_t w;
            memcpy(&w, v + i, 8);
            if (w == (w & 0xFF) * 0x0101010101010101ull) {
                t[0][w & 0xFF] += 8;
                continue;
            }
            t[0][v[i]]++;
            t[1][v[i + 1]]++;
            t[2][v[i + 2]]++;
            t[3][v[i + 3]]++;
            t[4][v[i + 4]]++;
            t[5][v[i + 5]]++;
            t[6][v[i + 6]]++;
            t[7][v[i + 7]]++;
        }
        for (; i < end; i++)
            t[0][v[i]]++;
        for (int k = 0; k < 256; k++) {
            int64_t sum = 0;
            for (int j = 0; j < 8; j++)
                sum += t[j][k];
            out[k] += sum;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&values);
    PyBuffer_Release(&counts);
    Py_RETURN_NONE;
}

static PyObject *lut16(PyObject *self, PyObject *args) {
    Py_buffer values, lut, out;
    if (!PyArg_ParseTuple(args, "y*y*w*:lut16", &values, &lut, &out))
        return NULL;
    if (values.len % 2 != 0 || lut.len != BINS || out.len != values.len / 2) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&lut);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "lut16: values uint16[n], lut uint8[65536], out uint8[n]");
        return NULL;
    }
    const uint16_t *v = (const uint16_t *)values.buf;
    const uint8_t *table = (const uint8_t *)lut.buf;
    uint8_t *dst = (uint8_t *)out.buf;
    Py_ssize_t n = out.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        dst[i] = table[v[i]];
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&values);
    PyBuffer_Release(&lut);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}


/* ------------------------------------------------------------------ float32 / float64 pixels */
typedef struct {
    int has_nodata;
    double nodata;  /* already in the pixels' dtype (cast by the caller) */
} rule_t;

static int parse_nodata(PyObject *obj, rule_t *rule) {
    rule->has_nodata = obj != Py_None;
    rule->nodata = 0.0;
    if (rule->has_nodata) {
        rule->nodata = PyFloat_AsDouble(obj);
        if (rule->nodata == -1.0 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static inline double pixel(const void *buf, int itemsize, Py_ssize_t i) {
    return itemsize == 4 ? (double)((const float *)buf)[i] : ((const double *)buf)[i];
}

static inline int valid(double v, const rule_t *rule) {
    return isfinite(v) && !(rule->has_nodata && v == rule->nodata);
}

/* the order-preserving key of pixel i: its bits, all flipped for negatives, the sign bit set
 * for positives (pipeline.stats.to_key) */
static inline uint64_t key_of(const void *buf, int itemsize, Py_ssize_t i) {
    if (itemsize == 4) {
        uint32_t u;
        memcpy(&u, (const char *)buf + 4 * i, 4);
        return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
    }
    uint64_t u;
    memcpy(&u, (const char *)buf + 8 * i, 8);
    return u ^ ((uint64_t)((int64_t)u >> 63) | 0x8000000000000000ull);
}

static int check_floats(Py_buffer *values, int itemsize, const char *name) {
    if ((itemsize != 4 && itemsize != 8) || values->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: values must be float32 or float64 (itemsize 4 or 8)", name);
        return -1;
    }
    return 0;
}

static PyObject *fscan(PyObject *self, PyObject *args) {
    Py_buffer values, top = {0};
    int itemsize;
    PyObject *nodata_obj, *top_obj;
    rule_t rule;
    if (!PyArg_ParseTuple(args, "y*iOO:fscan", &values, &itemsize, &nodata_obj, &top_obj))
        return NULL;
    if (check_floats(&values, itemsize, "fscan") < 0 || parse_nodata(nodata_obj, &rule) < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    if (top_obj != Py_None) {
        if (PyObject_GetBuffer(top_obj, &top, PyBUF_WRITABLE) < 0) {
            PyBuffer_Release(&values);
            return NULL;
        }
        if (top.len != BINS * (Py_ssize_t)sizeof(int64_t)) {
            PyBuffer_Release(&values);
            PyBuffer_Release(&top);
            PyErr_SetString(PyExc_ValueError, "fscan: top must be int64[65536]");
            return NULL;
        }
    }
    Py_ssize_t n = values.len / itemsize, count = 0;
    double lo = INFINITY, hi = -INFINITY;
    int64_t *counts = top.buf;
    int shift = itemsize * 8 - 16;
    const void *buf = values.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = pixel(buf, itemsize, i);
        if (!valid(v, &rule))
            continue;
        count++;
        if (v < lo)
            lo = v;
        if (v > hi)
            hi = v;
        if (counts != NULL)
            counts[key_of(buf, itemsize, i) >> shift]++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&values);
    if (top_obj != Py_None)
        PyBuffer_Release(&top);
    return Py_BuildValue("(ndd)", count, lo, hi);
}

static PyObject *fkeyhist(PyObject *self, PyObject *args) {
    Py_buffer values, prefixes, counts;
    int itemsize, shift;
    PyObject *nodata_obj;
    rule_t rule;
    if (!PyArg_ParseTuple(args, "y*iOiy*w*:fkeyhist", &values, &itemsize, &nodata_obj, &shift, &prefixes, &counts))
        return NULL;
    Py_ssize_t rows = prefixes.len / (Py_ssize_t)sizeof(uint64_t);
    int bad = check_floats(&values, itemsize, "fkeyhist") < 0 || parse_nodata(nodata_obj, &rule) < 0;
    if (!bad && (prefixes.len % sizeof(uint64_t) != 0 || rows < 1 || shift < 0 || shift + 16 >= itemsize * 8
                 || counts.len != rows * BINS * (Py_ssize_t)sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError,
                        "fkeyhist: prefixes uint64[rows] (rows >= 1), counts int64[rows * 65536], "
                        "0 <= shift < key bits - 16");
        bad = 1;
    }
    if (bad) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&prefixes);
        PyBuffer_Release(&counts);
        return NULL;
    }
    /* a pixel's top 16 key bits settle, for almost all pixels, that its prefix is in none, and
     * where they begin exactly one prefix of 16 bits (float32), its row: row[top] is -1 for no
     * prefix, -2 for several (then a binary search), else the row */
    int32_t *row = malloc(BINS * sizeof(int32_t));
    if (row == NULL) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&prefixes);
        PyBuffer_Release(&counts);
        return PyErr_NoMemory();
    }
    const uint64_t *pre = prefixes.buf;
    int bits = itemsize * 8, pre_bits = bits - shift - 16;
    for (Py_ssize_t k = 0; k < BINS; k++)
        row[k] = -1;
    for (Py_ssize_t r = 0; r < rows; r++) {
        int32_t *slot = &row[(pre[r] >> (pre_bits - 16)) & 0xFFFF];
        *slot = (*slot == -1 && pre_bits == 16) ? (int32_t)r : -2;
    }
    int64_t *out = counts.buf;
    Py_ssize_t n = values.len / itemsize;
    const void *buf = values.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = key_of(buf, itemsize, i);
        int32_t r = row[key >> (bits - 16)];
        if (r == -1)
            continue;
        if (!valid(pixel(buf, itemsize, i), &rule))
            continue;
        if (r >= 0) {
            out[r * BINS + ((key >> shift) & 0xFFFF)]++;
            continue;
        }
        uint64_t p = key >> (shift + 16);
        Py_ssize_t a = 0, b = rows;  /* the first prefix >= p */
        while (a < b) {
            Py_ssize_t m = (a + b) / 2;
            if (pre[m] < p)
                a = m + 1;
            else
                b = m;
        }
        if (a < rows && pre[a] == p)
            out[a * BINS + ((key >> shift) & 0xFFFF)]++;
    }
    Py_END_ALLOW_THREADS
    free(row);
    PyBuffer_Release(&values);
    PyBuffer_Release(&prefixes);
    PyBuffer_Release(&counts);
    Py_RETURN_NONE;
}

/* the value of a key (the inverse of key_of) as a double */
static inline double value_of_key(uint64_t key, int itemsize) {
    if (itemsize == 4) {
        uint32_t k = (uint32_t)key, u = (k & 0x80000000u) ? (k ^ 0x80000000u) : ~k;
        float f;
        memcpy(&f, &u, 4);
        return (double)f;
    }
    uint64_t u = (key & 0x8000000000000000ull) ? (key ^ 0x8000000000000000ull) : ~key;
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* numpy.searchsorted(e, v, side="right"): the edges <= v */
static inline Py_ssize_t edges_at_or_below(const double *e, Py_ssize_t ne, double v) {
    Py_ssize_t a = 0, b = ne;
    while (a < b) {
        Py_ssize_t m = (a + b) / 2;
        if (e[m] <= v)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

static inline uint8_t class_of(const double *e, Py_ssize_t ne, double v, const rule_t *rule) {
    Py_ssize_t last = ne - 1;
    if (!(v >= e[0] && v <= e[last]) || (rule->has_nodata && v == rule->nodata))  /* NaN fails both */
        return 0;
    return v == e[last] ? (uint8_t)last : (uint8_t)edges_at_or_below(e, ne, v);
}

#define SLOW 0xFFFF
#define SUB_BITS 8
#define SUB_SIZE (1 << SUB_BITS)
#define MAX_SPLIT 1024

/* Class of every bucket of keys [first + k * width, first + (k + 1) * width), k < count, into
 * out[k]: where the bucket's values all get one class (no edge, no nodata value, NaN or
 * infinity inside), that class, else SLOW. Buckets in key order are in value order, so one walk
 * along the edges serves them all. */
static void fill_buckets(uint16_t *out, uint64_t first, uint64_t width, Py_ssize_t count, int itemsize,
                         const double *e, Py_ssize_t ne, const rule_t *rule) {
    Py_ssize_t j = -1;  /* edges <= the current bucket's first value (-1: not found yet) */
    for (Py_ssize_t k = 0; k < count; k++) {
        uint64_t start = first + (uint64_t)k * width;
        double lo = value_of_key(start, itemsize), hi = value_of_key(start + (width - 1), itemsize);
        out[k] = SLOW;
        if (!isfinite(lo) || !isfinite(hi) || (rule->has_nodata && lo <= rule->nodata && rule->nodata <= hi)
            || lo == e[ne - 1])
            continue;
        if (j < 0)
            j = edges_at_or_below(e, ne, lo);
        while (j < ne && e[j] <= lo)
            j++;
        if (j < ne && e[j] <= hi)  /* an edge inside */
            continue;
        out[k] = (j == 0 || j == ne) ? 0 : (uint16_t)j;
    }
}

/* the per-pixel loop of fclassify, one per pixel type: two dependent look-ups, no branch but
 * the rare one to the pixel-by-pixel path */
#define CLASSIFY_LOOP(NAME, FLOAT, UINT, SINT, BITS)                                                    \
    static void NAME(const void *buf, Py_ssize_t n, const uint16_t *top, const uint16_t *subs,            \
                     const double *e, Py_ssize_t ne, const rule_t *rule, uint8_t *dst) {                  \
        const UINT *u = (const UINT *)buf;                                                                \
        const FLOAT *f = (const FLOAT *)buf;                                                              \
        for (Py_ssize_t i = 0; i < n; i++) {                                                              \
            UINT key = u[i] ^ ((UINT)((SINT)u[i] >> (BITS - 1)) | ((UINT)1 << (BITS - 1)));                \
            uint16_t t = subs[((Py_ssize_t)top[key >> (BITS - 16)] << SUB_BITS)                           \
                              + (Py_ssize_t)((key >> (BITS - 16 - SUB_BITS)) & (SUB_SIZE - 1))];          \
            if (t == SLOW)                                                                                \
                t = class_of(e, ne, (double)f[i], rule);                                                  \
            dst[i] = (uint8_t)t;                                                                          \
        }                                                                                                 \
    }
CLASSIFY_LOOP(classify_loop32, float, uint32_t, int32_t, 32)
CLASSIFY_LOOP(classify_loop64, double, uint64_t, int64_t, 64)

static PyObject *fclassify(PyObject *self, PyObject *args) {
    Py_buffer values, edges, out;
    int itemsize;
    PyObject *nodata_obj;
    rule_t rule;
    if (!PyArg_ParseTuple(args, "y*iy*Ow*:fclassify", &values, &itemsize, &edges, &nodata_obj, &out))
        return NULL;
    Py_ssize_t ne = edges.len / (Py_ssize_t)sizeof(double);
    int bad = check_floats(&values, itemsize, "fclassify") < 0 || parse_nodata(nodata_obj, &rule) < 0;
    if (!bad && (edges.len % sizeof(double) != 0 || ne < 2 || ne > 256 || out.len != values.len / itemsize)) {
        PyErr_SetString(PyExc_ValueError, "fclassify: edges float64[2..256] (sorted), out uint8[n]");
        bad = 1;
    }
    /* top: the sub-table of each bucket of the top 16 key bits; subs: sub-tables of SUB_SIZE
     * entries for the next 8 bits: one of one class each (0 .. ne - 1), one all SLOW, then
     * one per bucket split by an edge */
    uint16_t *top = bad ? NULL : malloc((BINS + (ne + 1 + MAX_SPLIT) * SUB_SIZE) * sizeof(uint16_t));
    if (!bad && top == NULL) {
        PyErr_NoMemory();
        bad = 1;
    }
    if (bad) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&edges);
        PyBuffer_Release(&out);
        return NULL;
    }
    const double *e = edges.buf;
    uint8_t *dst = out.buf;
    uint16_t *subs = top + BINS;
    Py_ssize_t n = out.len;
    int low = itemsize * 8 - 16, sub_low = low - SUB_BITS;
    Py_BEGIN_ALLOW_THREADS
    /* The pixels whose keys share their top 16 bits form one interval of values; where every
     * value of it gets one class, its sub-table is that class's. Buckets with an edge inside
     * are split by the next 8 key bits (an edge lies in few of those); the rest, and NaN,
     * infinities and nodata, are classified pixel by pixel. */
    for (Py_ssize_t c = 0; c <= ne; c++)
        for (Py_ssize_t k = 0; k < SUB_SIZE; k++)
            subs[(c << SUB_BITS) + k] = c < ne ? (uint16_t)c : SLOW;
    fill_buckets(top, 0, (uint64_t)1 << low, BINS, itemsize, e, ne, &rule);
    Py_ssize_t split = 0;
    for (Py_ssize_t b = 0; b < BINS; b++) {
        if (top[b] != SLOW) {
            continue;  /* the class's own sub-table: index = class */
        }
        uint64_t start = (uint64_t)b << low;
        double lo = value_of_key(start, itemsize), hi = value_of_key(start + (((uint64_t)1 << low) - 1), itemsize);
        if (split == MAX_SPLIT || !isfinite(lo) || !isfinite(hi)) {
            top[b] = (uint16_t)ne;  /* all SLOW */
            continue;
        }
        Py_ssize_t index = ne + 1 + split++;
        fill_buckets(subs + (index << SUB_BITS), start, (uint64_t)1 << sub_low, SUB_SIZE, itemsize, e, ne, &rule);
        top[b] = (uint16_t)index;
    }
    if (itemsize == 4)
        classify_loop32(values.buf, n, top, subs, e, ne, &rule, dst);
    else
        classify_loop64(values.buf, n, top, subs, e, ne, &rule, dst);
    Py_END_ALLOW_THREADS
    free(top);
    PyBuffer_Release(&values);
    PyBuffer_Release(&edges);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyObject *fbinned(PyObject *self, PyObject *args) {
    Py_buffer values, edges, counts, sums;
    int itemsize;
    double scale;
    PyObject *nodata_obj;
    rule_t rule;
    if (!PyArg_ParseTuple(args, "y*iOy*dw*w*:fbinned", &values, &itemsize, &nodata_obj, &edges, &scale, &counts,
                          &sums))
        return NULL;
    Py_ssize_t bins = edges.len / (Py_ssize_t)sizeof(double) - 1;
    int bad = check_floats(&values, itemsize, "fbinned") < 0 || parse_nodata(nodata_obj, &rule) < 0;
    if (!bad && (edges.len % sizeof(double) != 0 || bins < 1 || counts.len != bins * (Py_ssize_t)sizeof(double)
                 || sums.len != counts.len)) {
        PyErr_SetString(PyExc_ValueError, "fbinned: edges float64[bins + 1], counts and sums float64[bins]");
        bad = 1;
    }
    if (bad) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&edges);
        PyBuffer_Release(&counts);
        PyBuffer_Release(&sums);
        return NULL;
    }
    const double *e = edges.buf;
    double *cnt = counts.buf, *sum = sums.buf, lo = e[0], hi = e[bins];
    const void *buf = values.buf;
    Py_ssize_t n = values.len / itemsize;
    int single = bins == 1 || hi == lo;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = pixel(buf, itemsize, i);
        if (!(v >= lo && v <= hi) || !valid(v, &rule))
            continue;
        Py_ssize_t k = 0;
        if (!single) {
            double t = (v - lo) * scale;
            k = t >= (double)(bins - 1) ? bins - 1 : (t > 0 ? (Py_ssize_t)t : 0);
            if (v < e[k])
                k--;
            if (k < bins - 1 && v >= e[k + 1])  /* the comparison uses the index after the step above */
                k++;
        }
        cnt[k] += 1.0;
        sum[k] += v;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&values);
    PyBuffer_Release(&edges);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&sums);
    Py_RETURN_NONE;
}

/* out[i * bands + b] = lut[v[i] * bands + b]: colours (bands 2..4) of uint8 class ids or of
 * uint16 values, pixel-interleaved */
#define LUTN_LOOP(UINT, BANDS)                                                                          \
    for (Py_ssize_t i = 0; i < n; i++) {                                                                \
        const uint8_t *src = table + (Py_ssize_t)((const UINT *)v)[i] * BANDS;                          \
        for (int b = 0; b < BANDS; b++)                                                                 \
            dst[i * BANDS + b] = src[b];                                                                \
    }

/* Three bytes a pixel: one 4-byte load and one 4-byte store per pixel instead of three of
 * each (about 2x). The fourth byte stored is the next pixel's first, which the next
 * iteration writes; the last pixel, and an entry whose fourth byte would lie past the
 * table's end, go byte by byte. */
#define LUTN3_LOOP(UINT)                                                                                \
    {                                                                                                   \
        const Py_ssize_t last_word = lut.len - 4;                                                       \
        for (Py_ssize_t i = 0; i + 1 < n; i++) {                                                        \
            const Py_ssize_t at = (Py_ssize_t)((const UINT *)v)[i] * 3;                                 \
            uint32_t word;                                                                              \
            if (at <= last_word) {                                                                      \
                memcpy(&word, table + at, 4);                                                           \
                memcpy(dst + i * 3, &word, 4);                                                          \
            } else {                                                                                    \
                dst[i * 3] = table[at]; dst[i * 3 + 1] = table[at + 1]; dst[i * 3 + 2] = table[at + 2]; \
            }                                                                                           \
        }                                                                                               \
        if (n > 0) {                                                                                    \
            const Py_ssize_t at = (Py_ssize_t)((const UINT *)v)[n - 1] * 3;                             \
            for (int b = 0; b < 3; b++)                                                                 \
                dst[(n - 1) * 3 + b] = table[at + b];                                                   \
        }                                                                                               \
    }

static PyObject *lutn(PyObject *self, PyObject *args) {
    Py_buffer values, lut, out;
    int itemsize, bands;
    if (!PyArg_ParseTuple(args, "y*iy*iw*:lutn", &values, &itemsize, &lut, &bands, &out))
        return NULL;
    Py_ssize_t n = itemsize > 0 ? values.len / itemsize : 0;
    if ((itemsize != 1 && itemsize != 2) || values.len % itemsize != 0 || bands < 2 || bands > 4
        || lut.len != ((Py_ssize_t)1 << (8 * itemsize)) * bands || out.len != n * bands) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&lut);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError,
                        "lutn: values uint8 or uint16 (itemsize 1, 2), lut uint8[256 or 65536][bands], "
                        "bands 2..4, out uint8[n][bands]");
        return NULL;
    }
    const void *v = values.buf;
    const uint8_t *table = (const uint8_t *)lut.buf;
    uint8_t *dst = (uint8_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    if (itemsize == 1) {
        if (bands == 2) { LUTN_LOOP(uint8_t, 2) } else if (bands == 3) { LUTN3_LOOP(uint8_t) } else { LUTN_LOOP(uint8_t, 4) }
    } else {
        if (bands == 2) { LUTN_LOOP(uint16_t, 2) } else if (bands == 3) { LUTN3_LOOP(uint16_t) } else { LUTN_LOOP(uint16_t, 4) }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&values);
    PyBuffer_Release(&lut);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------- TIFF floating-point predictor (3) */
/* A row of a tile W pixels wide is stored as 4 byte planes of W bytes each, the most
 * significant bytes of every pixel first (TIFF Technical Note 3, whatever the file's byte
 * order), each byte the difference from the one before it along the whole row. Decoding is a
 * running sum of the row's bytes (mod 256), then every pixel's 4 bytes gathered from the
 * planes. libtiff's fpAcc does the same with a temporary copy of each row. */
static void fpred_row_sum(uint8_t *b, Py_ssize_t len) {
    uint8_t acc = 0;
    Py_ssize_t i = 0;
#ifdef __SSE2__
    /* 16 bytes at a time: their running sums in 4 shifted adds, plus the sum of every byte
     * before them (carried as 16 copies, so the next block waits on one add only) */
    __m128i carry = _mm_setzero_si128();
    for (; i + 16 <= len; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(b + i));
        x = _mm_add_epi8(x, _mm_slli_si128(x, 1));
        x = _mm_add_epi8(x, _mm_slli_si128(x, 2));
        x = _mm_add_epi8(x, _mm_slli_si128(x, 4));
        x = _mm_add_epi8(x, _mm_slli_si128(x, 8));
        __m128i last = _mm_srli_si128(x, 15);
        last = _mm_unpacklo_epi8(last, last);
        last = _mm_shuffle_epi32(_mm_unpacklo_epi16(last, last), 0);
        _mm_storeu_si128((__m128i *)(b + i), _mm_add_epi8(x, carry));
        carry = _mm_add_epi8(carry, last);
    }
    acc = (uint8_t)_mm_cvtsi128_si32(carry);
#endif
    for (; i < len; i++) {
        acc = (uint8_t)(acc + b[i]);
        b[i] = acc;
    }
}

static PyObject *fpred32(PyObject *self, PyObject *args) {
    Py_buffer tile, out;
    Py_ssize_t width, trow, tcol, rows, cols, owidth, orow, ocol;
    if (!PyArg_ParseTuple(args, "w*nnnnnw*nnn:fpred32", &tile, &width, &trow, &tcol, &rows, &cols, &out, &owidth,
                          &orow, &ocol))
        return NULL;
    Py_ssize_t row_bytes = 4 * width, out_px = out.len / 4;
    if (width < 1 || trow < 0 || tcol < 0 || rows < 0 || cols < 0 || tcol + cols > width || owidth < 1
        || orow < 0 || ocol < 0 || ocol + cols > owidth || out.len % 4 != 0
        || (trow + rows) * row_bytes > tile.len || (rows > 0 && (orow + rows) * owidth > out_px)) {
        PyBuffer_Release(&tile);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "fpred32: the rows x cols block must lie in the tile and in out");
        return NULL;
    }
    uint8_t *t = tile.buf;
    uint32_t *dst = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        uint8_t *row = t + (trow + r) * row_bytes;
        fpred_row_sum(row, row_bytes);
        const uint8_t *p0 = row + tcol, *p1 = p0 + width, *p2 = p1 + width, *p3 = p2 + width;
        uint32_t *o = dst + (orow + r) * owidth + ocol;
        for (Py_ssize_t c = 0; c < cols; c++)
            o[c] = ((uint32_t)p0[c] << 24) | ((uint32_t)p1[c] << 16) | ((uint32_t)p2[c] << 8) | (uint32_t)p3[c];
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&tile);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"hist16", hist16, METH_VARARGS, "hist16(values, counts): counts[v] += 1 for every uint16 value"},
    {"hist8", hist8, METH_VARARGS, "hist8(values, counts): counts[v] += 1 for every uint8 value"},
    {"lut16", lut16, METH_VARARGS, "lut16(values, lut, out): out[i] = lut[values[i]] (uint16 -> uint8)"},
    {"lutn", lutn, METH_VARARGS, "lutn(values, itemsize, lut, bands, out): colours of uint8/uint16 values"},
    {"fscan", fscan, METH_VARARGS, "fscan(values, itemsize, nodata, top): (count, min, max) of valid floats"},
    {"fkeyhist", fkeyhist, METH_VARARGS, "fkeyhist(values, itemsize, nodata, shift, prefixes, counts)"},
    {"fclassify", fclassify, METH_VARARGS, "fclassify(values, itemsize, edges, nodata, out): float class ids"},
    {"fbinned", fbinned, METH_VARARGS, "fbinned(values, itemsize, nodata, edges, scale, counts, sums)"},
    {"fpred32", fpred32, METH_VARARGS, "fpred32(tile, width, tile_row, tile_col, rows, cols, out, out_width, "
                                       "out_row, out_col): float32 pixels of TIFF predictor-3 tile rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastkernels", "Compiled per-pixel kernels (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastkernels(void) { return PyModule_Create(&module); }
