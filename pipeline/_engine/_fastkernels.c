/* Optional compiled versions of the two per-pixel kernels that dominate sceneclass's own work
 * on 16-bit scenes (pipeline/kernels.py has the numpy versions, used when this module is not
 * built, and the tests check both agree):
 *
 *   hist16(values, counts)    counts[v] += 1 for every uint16 v
 *   lut16(values, lut, out)   out[i] = lut[values[i]] for a 65,536-entry uint8 table
 *
 * Buffers are C-contiguous (the buffer protocol's simple form); the GIL is released while the
 * loop runs. numpy's bincount and take first copy every uint16 index into a fresh int64 array
 * (and bincount also scans it for its minimum and maximum); these loops read the values where
 * they are. The histogram counts into four interleaved 32-bit tables, so consecutive equal
 * values do not wait on each other's increments. Plain C99, no numpy headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static PyMethodDef methods[] = {
    {"hist16", hist16, METH_VARARGS, "hist16(values, counts): counts[v] += 1 for every uint16 value"},
    {"lut16", lut16, METH_VARARGS, "lut16(values, lut, out): out[i] = lut[values[i]] (uint16 -> uint8)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastkernels", "Compiled uint16 histogram and look-up (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__fastkernels(void) { return PyModule_Create(&module); }
