/*
 * exporter.native._speedups: prepare's per-row work for plain CSV text, in C. Optional:
 * exporter/native/__init__.py says whether it is built, and every caller has the pure-Python
 * path beside it, which stays the reference (tests/test_native.py and
 * tests/test_prepare_paths.py compare the two, byte for byte).
 *
 * "Plain" CSV is the subset of what csv.reader(stream, delimiter=D, strict=True) reads (from a
 * stream opened with newline="") whose meaning leaves no room for doubt: records end with
 * "\n" or "\r\n"; a field is either unquoted, with no quote, CR, LF or NUL in it, or quoted,
 * with no CR or NUL in it, a doubled quote for a quote, and followed directly by the
 * delimiter or the record's end; no field reaches the field-size limit. Anything else (a
 * stray quote, a lone CR, text after a closing quote, an over-long field) is not plain, and
 * the caller reads the text with the csv module, which gives it its meaning or its error.
 *
 * scan_records(text, delimiter, limit, final) -> bytes | None
 *     The start of each complete record of ``text`` and the end of the last one, as native
 *     int64s, or None when the text is not plain. Unless ``final``, a record that the text
 *     does not finish (no line end yet, or an open quoted field) is left out: the caller
 *     keeps it for the next read. Blank lines and ragged records are records here.
 *
 * map_plain(text, offsets, delimiter, spec) -> (fallback, keys, encoded, fingerprints, pids)
 *     The row function of exporter.planning.mapping.Mapper for the *common* records of
 *     scanned text (see exporter/planning/blockmap.py for what is common): their keys, their
 *     payloads as UTF-8, their fingerprints (8 bytes each, BLAKE2b-64 of the payload, little
 *     endian) and profile ids; ``fallback`` lists the records (by position) it leaves to the
 *     row function. ``spec`` is (ncols, email column, profile-id column or -1, value columns,
 *     date flags, JSON prefixes, number of plain (top-level) values, tail).
 *
 * blake2b64(items) -> bytes
 *     For each bytes object in the list, BLAKE2b with an 8-byte digest and no key (RFC 7693;
 *     hashlib.blake2b(item, digest_size=8).digest()), concatenated.
 *
 * KeySet().first_seen(keys) -> bytes
 *     exporter.planning.dedup.SeenKeys.first_seen, as a hash table: 1 for each key whose str
 *     hash was not seen before (nor earlier in the list), which it then remembers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* ---- BLAKE2b (RFC 7693, section 3 and appendix C) ------------------------------------- */

static const uint64_t B2_IV[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL,
    0xA54FF53A5F1D36F1ULL, 0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
    0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL};


#define ROTR64(x, y) (((x) >> (y)) ^ ((x) << (64 - (y))))

#define B2_G(a, b, c, d, x, y)       \
    do {                             \
        v[a] = v[a] + v[b] + (x);    \
        v[d] = ROTR64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];          \
        v[b] = ROTR64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y);    \
        v[d] = ROTR64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];          \
        v[b] = ROTR64(v[b] ^ v[c], 63); \
    } while (0)

static inline uint64_t load64(const uint8_t *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
#else
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = (x << 8) | p[i];
    return x;
#endif
}

/* One round, its message schedule (RFC 7693 section 2.7) spelled out so that every index is a
 * constant: the compiler keeps the message words in registers. */
#define B2_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) \
    do {                                                                               \
        B2_G(0, 4, 8, 12, m[s0], m[s1]);                                               \
        B2_G(1, 5, 9, 13, m[s2], m[s3]);                                               \
        B2_G(2, 6, 10, 14, m[s4], m[s5]);                                              \
        B2_G(3, 7, 11, 15, m[s6], m[s7]);                                              \
        B2_G(0, 5, 10, 15, m[s8], m[s9]);                                              \
        B2_G(1, 6, 11, 12, m[s10], m[s11]);                                            \
        B2_G(2, 7, 8, 13, m[s12], m[s13]);                                             \
        B2_G(3, 4, 9, 14, m[s14], m[s15]);                                             \
    } while (0)

/* Compress one 128-byte block; ``t`` bytes hashed so far (this block included). */
static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= t;  /* the counter's high word stays 0: no payload reaches 2^64 bytes */
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    B2_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    B2_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
    B2_ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4);
    B2_ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8);
    B2_ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13);
    B2_ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9);
    B2_ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11);
    B2_ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10);
    B2_ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5);
    B2_ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0);
    B2_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    B2_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* BLAKE2b-64 (8-byte digest, no key) of ``data``, written little-endian to ``out``. */
static void b2_64(const uint8_t *data, size_t len, uint8_t out[8]) {
    uint64_t h[8];
    uint8_t block[128];
    memcpy(h, B2_IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ 8;  /* parameter block: depth 1, fanout 1, no key, 8-byte digest */
    size_t done = 0;
    while (len - done > 128) {  /* every full block but the last */
        b2_compress(h, data + done, (uint64_t)(done + 128), 0);
        done += 128;
    }
    size_t rest = len - done;
    memset(block, 0, sizeof block);
    if (rest) memcpy(block, data + done, rest);
    b2_compress(h, block, (uint64_t)len, 1);
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(h[0] >> (8 * i));
}

static PyObject *blake2b64(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "blake2b64 takes a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (out == NULL) return NULL;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(arg, i);
        if (!PyBytes_Check(item)) {
            Py_DECREF(out);
            PyErr_Format(PyExc_TypeError, "item %zd is not bytes", i);
            return NULL;
        }
        b2_64((const uint8_t *)PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item),
              dst + 8 * i);
    }
    return out;
}

/* ---- the plain-CSV scanner ------------------------------------------------------------- */
/* ---- plain CSV ------------------------------------------------------------------------ */

#define R(i) PyUnicode_READ(kind, data, (i))
#define NOT_PLAIN (-1)
#define UNFINISHED (-2)

typedef struct {
    Py_ssize_t start, end; /* the value's text (inside the quotes, when quoted) */
    int doubled;           /* it holds a doubled quote (its value is not the text as is) */
} Field;

/* One record from ``i``: the position after its line end (or ``len`` when ``final`` and the
 * text ends first), NOT_PLAIN, or UNFINISHED. ``*nf``: its fields (a blank line has none);
 * the first ``maxf`` are stored in ``fields``. */
static inline __attribute__((always_inline)) Py_ssize_t scan_record(
    const int kind, const void *data, Py_ssize_t len, Py_ssize_t i, Py_UCS4 delim,
    Py_ssize_t limit, int final, Field *fields, int maxf, int *nf) {
    *nf = 0;
    Py_UCS4 c = R(i);
    if (c == '\n') return i + 1;
    if (c == '\r') {
        if (i + 1 >= len) return final ? NOT_PLAIN : UNFINISHED;
        return R(i + 1) == '\n' ? i + 2 : NOT_PLAIN;
    }
    for (;;) {
        Py_ssize_t start, end, next, j;
        int doubled = 0;
        if (i < len && R(i) == '"') {
            start = j = i + 1;
            for (;;) {
                if (j >= len) return final ? NOT_PLAIN : UNFINISHED;
                c = R(j);
                if (c == '"') {
                    if (j + 1 >= len) {
                        if (!final) return UNFINISHED; /* a doubled quote may follow */
                        break;
                    }
                    if (R(j + 1) == '"') {
                        doubled = 1;
                        j += 2;
                        continue;
                    }
                    break;
                }
                if (c == '\r' || c == 0) return NOT_PLAIN;
                j++;
            }
            end = j;
            next = j + 1;
        } else {
            start = j = i;
            while (j < len) {
                c = R(j);
                if (c == delim || c == '\n' || c == '\r') break;
                if (c == '"' || c == 0) return NOT_PLAIN;
                j++;
            }
            end = next = j;
        }
        if (end - start >= limit) return NOT_PLAIN; /* csv's own error names it */
        if (*nf < maxf) {
            fields[*nf].start = start;
            fields[*nf].end = end;
            fields[*nf].doubled = doubled;
        }
        (*nf)++;
        if (next >= len) return final ? len : UNFINISHED;
        c = R(next);
        if (c == delim) {
            i = next + 1;
            continue;
        }
        if (c == '\n') return next + 1;
        if (c == '\r') {
            if (next + 1 >= len) return final ? NOT_PLAIN : UNFINISHED;
            return R(next + 1) == '\n' ? next + 2 : NOT_PLAIN;
        }
        return NOT_PLAIN; /* text after a closing quote */
    }
}

static inline __attribute__((always_inline)) PyObject *scan_kind(
    PyObject *text, const int kind, Py_UCS4 delim, Py_ssize_t limit, int final) {
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    Py_ssize_t cap = 1024, n = 0;
    int64_t *off = malloc(sizeof(int64_t) * cap);
    if (off == NULL) return PyErr_NoMemory();
    Py_ssize_t i = 0;
    off[n++] = 0;
    while (i < len) {
        int nf;
        Py_ssize_t next = scan_record(kind, data, len, i, delim, limit, final, NULL, 0, &nf);
        if (next == NOT_PLAIN) {
            free(off);
            Py_RETURN_NONE;
        }
        if (next == UNFINISHED) break;
        if (n == cap) {
            cap *= 2;
            int64_t *grown = realloc(off, sizeof(int64_t) * cap);
            if (grown == NULL) {
                free(off);
                return PyErr_NoMemory();
            }
            off = grown;
        }
        off[n++] = next;
        i = next;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)off, sizeof(int64_t) * n);
    free(off);
    return out;
}

static int one_delimiter(PyObject *delim_obj, Py_UCS4 *delim) {
    if (PyUnicode_GET_LENGTH(delim_obj) != 1) {
        PyErr_SetString(PyExc_ValueError, "the delimiter is one character");
        return -1;
    }
    *delim = PyUnicode_READ_CHAR(delim_obj, 0);
    return 0;
}

static PyObject *scan_records(PyObject *self, PyObject *args) {
    PyObject *text, *delim_obj;
    Py_ssize_t limit;
    int final;
    Py_UCS4 delim;
    if (!PyArg_ParseTuple(args, "UUnp", &text, &delim_obj, &limit, &final)) return NULL;
    if (one_delimiter(delim_obj, &delim) < 0) return NULL;
    if (delim == '"' || delim == '\r' || delim == '\n' || delim == 0) Py_RETURN_NONE;
    switch (PyUnicode_KIND(text)) {
        case PyUnicode_1BYTE_KIND:
            return scan_kind(text, PyUnicode_1BYTE_KIND, delim, limit, final);
        case PyUnicode_2BYTE_KIND:
            return scan_kind(text, PyUnicode_2BYTE_KIND, delim, limit, final);
        default:
            return scan_kind(text, PyUnicode_4BYTE_KIND, delim, limit, final);
    }
}

/* ---- the common row ----------------------------------------------------------------- */

static inline int is_alnum(Py_UCS4 c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static inline int is_alpha(Py_UCS4 c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static inline int is_atext(Py_UCS4 c) {
    return is_alnum(c) || (c < 128 && c != 0 && strchr("!#$%&'*+/=?^_`{|}~-", (int)c) != NULL);
}

/* mapping._email_fast (fullmatch) on [s, e): atext runs joined by single dots, "@", one or
 * more LDH labels each followed by a dot, and an alphabetic top-level label of 2 to 63. */
static inline __attribute__((always_inline)) int email_fast(
    const int kind, const void *data, Py_ssize_t s, Py_ssize_t e) {
    Py_ssize_t i = s;
    for (;;) { /* the local part */
        if (i >= e || !is_atext(R(i))) return 0;
        while (i < e && is_atext(R(i))) i++;
        if (i < e && R(i) == '.') {
            i++;
            continue;
        }
        break;
    }
    if (i >= e || R(i) != '@') return 0;
    i++;
    int labels = 0;
    for (;;) {
        Py_ssize_t p = i;
        while (i < e && R(i) != '.') i++;
        if (i >= e) { /* the top-level label */
            if (labels == 0 || i - p < 2 || i - p > 63) return 0;
            for (Py_ssize_t k = p; k < i; k++)
                if (!is_alpha(R(k))) return 0;
            return 1;
        }
        if (i == p || !is_alnum(R(p)) || !is_alnum(R(i - 1))) return 0;
        for (Py_ssize_t k = p; k < i; k++)
            if (!is_alnum(R(k)) && R(k) != '-') return 0;
        labels++;
        i++;
    }
}

/* A date that date.fromisoformat takes and format_date sends as it is: YYYY-MM-DD. */
static inline __attribute__((always_inline)) int iso_date(
    const int kind, const void *data, Py_ssize_t s, Py_ssize_t e) {
    if (e - s != 10 || R(s + 4) != '-' || R(s + 7) != '-') return 0;
    int d[10];
    for (int k = 0; k < 10; k++) {
        if (k == 4 || k == 7) continue;
        Py_UCS4 c = R(s + k);
        if (c < '0' || c > '9') return 0;
        d[k] = (int)(c - '0');
    }
    int y = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3];
    int m = d[5] * 10 + d[6], day = d[8] * 10 + d[9];
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || day < 1) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return day <= dim[m - 1] + (m == 2 && leap);
}

/* Whether [s, e) goes into a JSON string as it is (nothing ensure_ascii=False would escape)
 * and encodes to UTF-8 (no lone surrogate). */
static inline __attribute__((always_inline)) int plain_value(
    const int kind, const void *data, Py_ssize_t s, Py_ssize_t e) {
    for (Py_ssize_t k = s; k < e; k++) {
        Py_UCS4 c = R(k);
        if (c < 0x20 || c == '"' || c == '\\' || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    }
    return 1;
}

static inline void strip(const int kind, const void *data, Py_ssize_t *s, Py_ssize_t *e) {
    while (*s < *e && Py_UNICODE_ISSPACE(R(*s))) (*s)++;
    while (*e > *s && Py_UNICODE_ISSPACE(R(*e - 1))) (*e)--;
}

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Buf;

static int buf_room(Buf *b, Py_ssize_t more) {
    if (b->n + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + more) cap *= 2;
    char *p = realloc(b->p, (size_t)cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_ascii(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_room(b, n) < 0) return -1;
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}

static inline __attribute__((always_inline)) int buf_text(
    Buf *b, const int kind, const void *data, Py_ssize_t s, Py_ssize_t e) {
    if (buf_room(b, 4 * (e - s)) < 0) return -1;
    char *o = b->p + b->n;
    for (Py_ssize_t k = s; k < e; k++) {
        Py_UCS4 c = R(k);
        if (c < 0x80) {
            *o++ = (char)c;
        } else if (c < 0x800) {
            *o++ = (char)(0xC0 | (c >> 6));
            *o++ = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *o++ = (char)(0xE0 | (c >> 12));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        } else {
            *o++ = (char)(0xF0 | (c >> 18));
            *o++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        }
    }
    b->n = o - b->p;
    return 0;
}

#define MAX_VALUES 64
#define MAX_LOCAL 64

typedef struct {
    int ncols, email, pid, nvalues, nplain;
    int cols[MAX_VALUES], date[MAX_VALUES];
    const char *prefix[MAX_VALUES];
    Py_ssize_t prefix_len[MAX_VALUES];
    const char *tail;
    Py_ssize_t tail_len;
} Spec;

static int parse_spec(PyObject *obj, Spec *sp) {
    PyObject *cols, *dates, *prefixes, *tail;
    if (!PyArg_ParseTuple(obj, "iiiO!O!O!iU", &sp->ncols, &sp->email, &sp->pid, &PyTuple_Type,
                          &cols, &PyTuple_Type, &dates, &PyTuple_Type, &prefixes, &sp->nplain,
                          &tail))
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(cols);
    if (n > MAX_VALUES || PyTuple_GET_SIZE(dates) != n || PyTuple_GET_SIZE(prefixes) != n ||
        sp->ncols < 1 || sp->ncols > 4096 || sp->nplain > n) {
        PyErr_SetString(PyExc_ValueError, "a malformed spec");
        return -1;
    }
    sp->nvalues = (int)n;
    int top = sp->email > sp->pid ? sp->email : sp->pid;
    for (Py_ssize_t k = 0; k < n; k++) {
        sp->cols[k] = (int)PyLong_AsLong(PyTuple_GET_ITEM(cols, k));
        sp->date[k] = PyObject_IsTrue(PyTuple_GET_ITEM(dates, k));
        sp->prefix[k] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(prefixes, k), &sp->prefix_len[k]);
        if (sp->prefix[k] == NULL || PyErr_Occurred()) return -1;
        if (sp->cols[k] > top) top = sp->cols[k];
        if (sp->cols[k] < 0) top = sp->ncols;
    }
    if (sp->email < 0 || top >= sp->ncols) {
        PyErr_SetString(PyExc_ValueError, "a spec column outside the record");
        return -1;
    }
    sp->tail = PyUnicode_AsUTF8AndSize(tail, &sp->tail_len);
    return sp->tail == NULL ? -1 : 0;
}

static const char EMAIL_HEAD[] = "{\"email\":\"";
static const char FIELDS_HEAD[] = ",\"fields\":[";

static inline __attribute__((always_inline)) PyObject *map_kind(
    PyObject *text, const int kind, const int64_t *off, Py_ssize_t nrec, Py_UCS4 delim,
    const Spec *sp) {
    const void *data = PyUnicode_DATA(text);
    Field *fields = malloc(sizeof(Field) * (size_t)sp->ncols);
    Buf b = {NULL, 0, 0};
    PyObject *fallback = PyList_New(0), *keys = PyList_New(0), *encoded = PyList_New(0);
    PyObject *pids = sp->pid >= 0 ? PyList_New(0) : Py_NewRef(Py_None);
    PyObject *fps = PyBytes_FromStringAndSize(NULL, 8 * nrec);
    PyObject *result = NULL;
    Py_ssize_t made = 0;
    if (fields == NULL || !fallback || !keys || !encoded || !pids || !fps) goto done;
    uint8_t *fp = (uint8_t *)PyBytes_AS_STRING(fps);
    for (Py_ssize_t r = 0; r < nrec; r++) {
        Py_ssize_t i = off[r], stop = off[r + 1];
        int nf;
        Py_ssize_t s, e, vs[MAX_VALUES], ve[MAX_VALUES];
        Py_ssize_t end = scan_record(kind, data, stop, i, delim, PY_SSIZE_T_MAX, 1, fields,
                                     sp->ncols, &nf);
        if (end != stop) {
            PyErr_SetString(PyExc_ValueError, "offsets that scan_records did not give");
            goto done;
        }
        if (nf != sp->ncols || fields[sp->email].doubled) goto fall;
        s = fields[sp->email].start;
        e = fields[sp->email].end;
        strip(kind, data, &s, &e);
        if (e - s > MAX_LOCAL || !email_fast(kind, data, s, e)) goto fall;
        for (int k = 0; k < sp->nvalues; k++) {
            const Field *f = &fields[sp->cols[k]];
            if (f->doubled) goto fall; /* a quote: JSON escapes it */
            vs[k] = f->start;
            ve[k] = f->end;
            strip(kind, data, &vs[k], &ve[k]);
            if (!plain_value(kind, data, vs[k], ve[k])) goto fall;
            if (sp->date[k] && ve[k] > vs[k] && !iso_date(kind, data, vs[k], ve[k])) goto fall;
        }
        if (sp->pid >= 0 && fields[sp->pid].doubled) goto fall;
        /* the payload, as the row function writes it */
        b.n = 0;
        if (buf_ascii(&b, EMAIL_HEAD, sizeof EMAIL_HEAD - 1) < 0 ||
            buf_text(&b, kind, data, s, e) < 0 || buf_ascii(&b, "\"", 1) < 0)
            goto nomem;
        int first_field = 1;
        for (int k = 0; k < sp->nvalues; k++) {
            if (ve[k] == vs[k]) continue; /* an empty value is not sent */
            if (k >= sp->nplain) {
                if (buf_ascii(&b, first_field ? FIELDS_HEAD : ",",
                              first_field ? (Py_ssize_t)(sizeof FIELDS_HEAD - 1) : 1) < 0)
                    goto nomem;
                first_field = 0;
            }
            if (buf_ascii(&b, sp->prefix[k], sp->prefix_len[k]) < 0 ||
                buf_ascii(&b, "\"", 1) < 0 || buf_text(&b, kind, data, vs[k], ve[k]) < 0 ||
                buf_ascii(&b, k >= sp->nplain ? "\"}" : "\"", k >= sp->nplain ? 2 : 1) < 0)
                goto nomem;
        }
        if (!first_field && buf_ascii(&b, "]", 1) < 0) goto nomem;
        if (buf_ascii(&b, sp->tail, sp->tail_len) < 0) goto nomem;
        b2_64((const uint8_t *)b.p, (size_t)b.n, fp + 8 * made);
        {
            PyObject *payload = PyBytes_FromStringAndSize(b.p, b.n);
            PyObject *key = PyUnicode_New(e - s, 127);
            if (payload == NULL || key == NULL) {
                Py_XDECREF(payload);
                Py_XDECREF(key);
                goto done;
            }
            Py_UCS1 *k8 = PyUnicode_1BYTE_DATA(key);
            for (Py_ssize_t k = s; k < e; k++) {
                Py_UCS4 c = R(k);
                k8[k - s] = (Py_UCS1)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            }
            int bad = PyList_Append(encoded, payload) < 0 || PyList_Append(keys, key) < 0;
            Py_DECREF(payload);
            Py_DECREF(key);
            if (bad) goto done;
        }
        if (sp->pid >= 0) {
            Py_ssize_t ps = fields[sp->pid].start, pe = fields[sp->pid].end;
            strip(kind, data, &ps, &pe);
            PyObject *pid = pe > ps ? PyUnicode_Substring(text, ps, pe) : Py_NewRef(Py_None);
            if (pid == NULL) goto done;
            int bad = PyList_Append(pids, pid) < 0;
            Py_DECREF(pid);
            if (bad) goto done;
        }
        made++;
        continue;
    fall: {
        PyObject *at = PyLong_FromSsize_t(r);
        if (at == NULL) goto done;
        int bad = PyList_Append(fallback, at) < 0;
        Py_DECREF(at);
        if (bad) goto done;
    }
    }
    if (_PyBytes_Resize(&fps, 8 * made) < 0) goto done;
    result = PyTuple_Pack(5, fallback, keys, encoded, fps, pids);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    free(fields);
    free(b.p);
    Py_XDECREF(fallback);
    Py_XDECREF(keys);
    Py_XDECREF(encoded);
    Py_XDECREF(fps);
    Py_XDECREF(pids);
    return result;
}

static PyObject *map_plain(PyObject *self, PyObject *args) {
    PyObject *text, *offsets, *delim_obj, *spec_obj;
    Py_UCS4 delim;
    Spec sp;
    if (!PyArg_ParseTuple(args, "UO!UO!", &text, &PyBytes_Type, &offsets, &delim_obj,
                          &PyTuple_Type, &spec_obj))
        return NULL;
    if (one_delimiter(delim_obj, &delim) < 0 || parse_spec(spec_obj, &sp) < 0) return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(offsets);
    if (size % 8 || size < 8) {
        PyErr_SetString(PyExc_ValueError, "offsets are int64s, at least one");
        return NULL;
    }
    const int64_t *off = (const int64_t *)PyBytes_AS_STRING(offsets);
    Py_ssize_t nrec = size / 8 - 1;
    if (off[0] < 0 || off[nrec] > PyUnicode_GET_LENGTH(text)) {
        PyErr_SetString(PyExc_ValueError, "offsets outside the text");
        return NULL;
    }
    for (Py_ssize_t r = 0; r < nrec; r++) {
        if (off[r + 1] <= off[r]) {
            PyErr_SetString(PyExc_ValueError, "offsets that do not increase");
            return NULL;
        }
    }
    switch (PyUnicode_KIND(text)) {
        case PyUnicode_1BYTE_KIND:
            return map_kind(text, PyUnicode_1BYTE_KIND, off, nrec, delim, &sp);
        case PyUnicode_2BYTE_KIND:
            return map_kind(text, PyUnicode_2BYTE_KIND, off, nrec, delim, &sp);
        default:
            return map_kind(text, PyUnicode_4BYTE_KIND, off, nrec, delim, &sp);
    }
}

/* ---- KeySet: the hashes of the keys seen so far ------------------------------------------ */

/* Open addressing with linear probing over the keys' own str hashes (cached on each str);
 * 0 marks an empty slot, so a key whose hash is 0 is remembered in ``has_zero``. */
typedef struct {
    PyObject_HEAD
    uint64_t *slots;
    Py_ssize_t mask;  /* capacity - 1 (a power of two) */
    Py_ssize_t count;
    int has_zero;
} KeySet;

#define KEYSET_MIN_SLOTS 1024

static inline Py_ssize_t keyset_home(uint64_t h, Py_ssize_t mask) {
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL; /* str hashes are already mixed; this spreads the low bits */
    return (Py_ssize_t)(h >> 17) & mask;
}

/* Insert ``h`` (non-zero) unless present: 1 when it was new. */
static inline int keyset_insert(uint64_t *slots, Py_ssize_t mask, uint64_t h) {
    Py_ssize_t i = keyset_home(h, mask);
    for (;;) {
        uint64_t v = slots[i];
        if (v == 0) {
            slots[i] = h;
            return 1;
        }
        if (v == h) return 0;
        i = (i + 1) & mask;
    }
}

static int keyset_grow(KeySet *self) {
    Py_ssize_t cap = (self->mask + 1) * 2;
    uint64_t *slots = calloc((size_t)cap, sizeof(uint64_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i <= self->mask; i++)
        if (self->slots[i]) keyset_insert(slots, cap - 1, self->slots[i]);
    free(self->slots);
    self->slots = slots;
    self->mask = cap - 1;
    return 0;
}

static PyObject *KeySet_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (!_PyArg_NoPositional("KeySet", args) || !_PyArg_NoKeywords("KeySet", kwds)) return NULL;
    KeySet *self = (KeySet *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->slots = calloc(KEYSET_MIN_SLOTS, sizeof(uint64_t));
    if (self->slots == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->mask = KEYSET_MIN_SLOTS - 1;
    return (PyObject *)self;
}

static void KeySet_dealloc(KeySet *self) {
    free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t KeySet_len(KeySet *self) { return self->count + self->has_zero; }

/* first_seen(keys) -> bytes: for each key, 1 when its hash was not seen before (earlier in
 * ``keys`` included), and it is remembered; else 0. */
static PyObject *KeySet_first_seen(KeySet *self, PyObject *keys) {
    if (!PyList_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "first_seen takes a list of str");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) return NULL;
    char *mark = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_hash_t hash = PyObject_Hash(PyList_GET_ITEM(keys, i));
        if (hash == -1 && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        uint64_t h = (uint64_t)hash;
        if (h == 0) {
            mark[i] = !self->has_zero;
            self->has_zero = 1;
            continue;
        }
        if ((self->count + 1) * 4 > (self->mask + 1) * 3 && keyset_grow(self) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        mark[i] = (char)keyset_insert(self->slots, self->mask, h);
        self->count += mark[i];
    }
    return out;
}

static PyObject *KeySet_nbytes(KeySet *self, void *closure) {
    return PyLong_FromSsize_t((self->mask + 1) * (Py_ssize_t)sizeof(uint64_t));
}

static PyMethodDef KeySet_methods[] = {
    {"first_seen", (PyCFunction)KeySet_first_seen, METH_O,
     "first_seen(keys: list[str]) -> bytes (1 for each key first seen, else 0)"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef KeySet_getset[] = {
    {"nbytes", (getter)KeySet_nbytes, NULL, "bytes the table takes", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PySequenceMethods KeySet_as_sequence = {.sq_length = (lenfunc)KeySet_len};

static PyTypeObject KeySetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "exporter.native._speedups.KeySet",
    .tp_basicsize = sizeof(KeySet),
    .tp_dealloc = (destructor)KeySet_dealloc,
    .tp_as_sequence = &KeySet_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The str hashes of the keys seen so far (a set of 64-bit values, 8-16 bytes each)",
    .tp_methods = KeySet_methods,
    .tp_getset = KeySet_getset,
    .tp_new = KeySet_new,
};

static PyMethodDef methods[] = {
    {"scan_records", scan_records, METH_VARARGS,
     "scan_records(text, delimiter, limit, final) -> bytes | None"},
    {"map_plain", map_plain, METH_VARARGS,
     "map_plain(text, offsets, delimiter, spec) -> (fallback, keys, encoded, fps, pids)"},
    {"blake2b64", blake2b64, METH_O, "blake2b64(items: list[bytes]) -> bytes"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups",
                                    "Prepare's per-row work on plain CSV text, in C.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&KeySetType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "KeySet", (PyObject *)&KeySetType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
