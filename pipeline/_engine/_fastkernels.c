/* Optional compiled versions of the per-pixel kernels that dominate sceneclass's own work
 * (pipeline/kernels.py and pipeline/stats.py have the numpy versions, used when this module is
 * not built, and the tests check both agree):
 *
 *   hist16(values, counts)    counts[v] += 1 for every uint16 v
 *   lut16(values, lut, out)   out[i] = lut[values[i]] for a 65,536-entry uint8 table
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
 * Buffers are C-contiguous (the buffer protocol's simple form); the GIL is released while the
 * loop runs. numpy's bincount and take first copy every uint16 index into a fresh int64 array
 * (and bincount also scans it for its minimum and maximum); these loops read the values where
 * they are. The float kernels make no temporaries at all (numpy's make several arrays of a
 * chunk's size per step). The histogram counts into four interleaved 32-bit tables, so
 * consecutive equal values do not wait on each other's increments. Plain C99, no numpy headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define BINS 65536
/* pixels counted into the 32-bit tables before they are added to the int64 counts */
#define FLUSH ((Py_ssize_t)1 << 30)

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
    uint32_t *tables = calloc(4 * BINS, sizeof(uint32_t));
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
            t0[v[i]]++;
            t1[v[i + 1]]++;
            t2[v[i + 2]]++;
            t3[v[i + 3]]++;
        }
        for (; i < end; i++)
            t0[v[i]]++;
        for (Py_ssize_t k = 0; k < BINS; k++) {
            out[k] += (int64_t)t0[k] + t1[k] + t2[k] + t3[k];
        }
        memset(tables, 0, 4 * BINS * sizeof(uint32_t));
    }
    Py_END_ALLOW_THREADS
    free(tables);
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
        return (u & 0x80000000u) ? (uint32_t)~u : (u | 0x80000000u);
    }
    uint64_t u;
    memcpy(&u, (const char *)buf + 8 * i, 8);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
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
    /* a pixel's top 16 key bits first settle, for almost all pixels, that its prefix is in none */
    uint8_t *maybe = calloc(BINS, 1);
    if (maybe == NULL) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&prefixes);
        PyBuffer_Release(&counts);
        return PyErr_NoMemory();
    }
    const uint64_t *pre = prefixes.buf;
    int bits = itemsize * 8, pre_bits = bits - shift - 16;
    for (Py_ssize_t r = 0; r < rows; r++)
        maybe[(pre[r] >> (pre_bits - 16)) & 0xFFFF] = 1;
    int64_t *out = counts.buf;
    Py_ssize_t n = values.len / itemsize;
    const void *buf = values.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = key_of(buf, itemsize, i);
        if (!maybe[key >> (bits - 16)])
            continue;
        if (!valid(pixel(buf, itemsize, i), &rule))
            continue;
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
    free(maybe);
    PyBuffer_Release(&values);
    PyBuffer_Release(&prefixes);
    PyBuffer_Release(&counts);
    Py_RETURN_NONE;
}

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
        PyErr_SetString(PyExc_ValueError, "fclassify: edges float64[2..256], out uint8[n]");
        bad = 1;
    }
    if (bad) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&edges);
        PyBuffer_Release(&out);
        return NULL;
    }
    const double *e = edges.buf;
    const void *buf = values.buf;
    uint8_t *dst = out.buf;
    Py_ssize_t n = out.len, last = ne - 1;
    double lo = e[0], hi = e[last];
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = pixel(buf, itemsize, i);
        uint8_t c = 0;
        if (v >= lo && v <= hi && !(rule.has_nodata && v == rule.nodata)) {  /* NaN fails both */
            if (v == hi) {
                c = (uint8_t)last;
            } else {
                Py_ssize_t a = 0, b = ne;  /* edges <= v: the first edge > v */
                while (a < b) {
                    Py_ssize_t m = (a + b) / 2;
                    if (e[m] <= v)
                        a = m + 1;
                    else
                        b = m;
                }
                c = (uint8_t)a;
            }
        }
        dst[i] = c;
    }
    Py_END_ALLOW_THREADS
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

static PyMethodDef methods[] = {
    {"hist16", hist16, METH_VARARGS, "hist16(values, counts): counts[v] += 1 for every uint16 value"},
    {"lut16", lut16, METH_VARARGS, "lut16(values, lut, out): out[i] = lut[values[i]] (uint16 -> uint8)"},
    {"fscan", fscan, METH_VARARGS, "fscan(values, itemsize, nodata, top): (count, min, max) of valid floats"},
    {"fkeyhist", fkeyhist, METH_VARARGS, "fkeyhist(values, itemsize, nodata, shift, prefixes, counts)"},
    {"fclassify", fclassify, METH_VARARGS, "fclassify(values, itemsize, edges, nodata, out): float class ids"},
    {"fbinned", fbinned, METH_VARARGS, "fbinned(values, itemsize, nodata, edges, scale, counts, sums)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastkernels", "Compiled per-pixel kernels (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastkernels(void) { return PyModule_Create(&module); }
