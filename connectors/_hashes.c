/* The hashes verification computes on our side, in C: the numpy forms cost 0.6 to 0.8 CPU-s per
 * million rows on the copy's own thread, these a few hundredths.
 *
 * CopyHasher: the row hash of postgres_hash.same_types_checksum_sql, over PostgreSQL's binary COPY
 * stream. A PostgreSQL-to-PostgreSQL copy forwards the source's COPY output undecoded; hashing the
 * pieces as they pass replaces a second scan of the source table on its server. Each value is
 * hashed as PostgreSQL's own hash function for its type does (lookup3, hash_bytes_extended and
 * hash_bytes_uint32_extended in src/common/hashfn.c, little-endian), seeded with the column's
 * position; a row is the XOR of its values' hashes (a NULL's hash is given per column) and the
 * checksum is the wrapping sum of the rows' hashes.
 *
 *     hasher = CopyHasher(kinds, null_hashes)   # one kind byte and one NULL hash per column
 *     hasher.update(piece)                      # any split of the stream, in order
 *     hasher.finish()                           # -> (rows, sum); raises if the stream is cut
 *
 * lookup3_each, lookup3_uint32_each, xxh64_each, xxh64_uint64_each: one hash per value of an
 * array (postgres_hash.py and clickhouse_hash.py build rows from them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

enum kind {  /* how a column's binary value is read and hashed (postgres_hash._STREAM_KINDS) */
    K_INT2 = 1, K_INT4, K_INT8, K_BOOL, K_FLOAT4, K_FLOAT8, K_NUMERIC, K_BYTES, K_BPCHAR, K_JSONB,
};

/* ---- lookup3, as src/common/hashfn.c has it -------------------------------------------- */
#define ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
#define MIX(a, b, c) { \
    a -= c; a ^= ROT(c, 4);  c += b; \
    b -= a; b ^= ROT(a, 6);  a += c; \
    c -= b; c ^= ROT(b, 8);  b += a; \
    a -= c; a ^= ROT(c, 16); c += b; \
    b -= a; b ^= ROT(a, 19); a += c; \
    c -= b; c ^= ROT(b, 4);  b += a; }
#define FINAL(a, b, c) { \
    c ^= b; c -= ROT(b, 14); \
    a ^= c; a -= ROT(c, 11); \
    b ^= a; b -= ROT(a, 25); \
    c ^= b; c -= ROT(b, 16); \
    a ^= c; a -= ROT(c, 4);  \
    b ^= a; b -= ROT(a, 14); \
    c ^= b; c -= ROT(b, 24); }

static uint32_t le32(const unsigned char *k) {
    return (uint32_t)k[0] | ((uint32_t)k[1] << 8) | ((uint32_t)k[2] << 16) | ((uint32_t)k[3] << 24);
}

static uint64_t hash_bytes(const unsigned char *k, uint32_t len, uint64_t seed) {
    uint32_t a, b, c;
    a = b = c = 0x9e3779b9 + len + 3923095;
    if (seed != 0) {
        a += (uint32_t)(seed >> 32);
        b += (uint32_t)seed;
        MIX(a, b, c);
    }
    while (len >= 12) {
        a += le32(k); b += le32(k + 4); c += le32(k + 8);
        MIX(a, b, c);
        k += 12; len -= 12;
    }
    switch (len) {  /* the lowest byte of c is lookup3's, for the length */
        case 11: c += (uint32_t)k[10] << 24; /* fall through */
        case 10: c += (uint32_t)k[9] << 16;  /* fall through */
        case 9:  c += (uint32_t)k[8] << 8;   /* fall through */
        case 8:  b += (uint32_t)k[7] << 24;  /* fall through */
        case 7:  b += (uint32_t)k[6] << 16;  /* fall through */
        case 6:  b += (uint32_t)k[5] << 8;   /* fall through */
        case 5:  b += k[4];                  /* fall through */
        case 4:  a += (uint32_t)k[3] << 24;  /* fall through */
        case 3:  a += (uint32_t)k[2] << 16;  /* fall through */
        case 2:  a += (uint32_t)k[1] << 8;   /* fall through */
        case 1:  a += k[0];
    }
    FINAL(a, b, c);
    return ((uint64_t)b << 32) | c;
}

static uint64_t hash_uint32(uint32_t k, uint64_t seed) {
    uint32_t a, b, c;
    a = b = c = 0x9e3779b9 + 4 + 3923095;
    if (seed != 0) {
        a += (uint32_t)(seed >> 32);
        b += (uint32_t)seed;
        MIX(a, b, c);
    }
    a += k;
    FINAL(a, b, c);
    return ((uint64_t)b << 32) | c;
}

/* ---- one value, from its binary COPY form (big-endian) ---------------------------------- */
static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint16_t be16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static int64_t be64(const unsigned char *p) { return (int64_t)(((uint64_t)be32(p) << 32) | be32(p + 4)); }

static uint64_t hash_int8(int64_t v, uint64_t seed) {  /* hashint8extended */
    uint32_t lo = (uint32_t)v, hi = (uint32_t)((uint64_t)v >> 32);
    return hash_uint32(lo ^ (v >= 0 ? hi : ~hi), seed);
}

static uint64_t hash_float8(double v, uint64_t seed) {  /* hashfloat8extended, XOR 1 for -0.0 */
    unsigned char bytes[8];
    uint64_t bits;
    if (v == 0)
        return seed ^ (uint64_t)(signbit(v) != 0);
    if (isnan(v))
        bits = 0x7FF8000000000000ULL;  /* the one NaN PostgreSQL hashes */
    else
        memcpy(&bits, &v, 8);
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)(bits >> (8 * i));
    return hash_bytes(bytes, 8, seed);
}

#define NUMERIC_NEG 0x4000
#define NUMERIC_NAN 0xC000
#define NUMERIC_PINF 0xD000
#define NUMERIC_NINF 0xF000

/* hash_numeric_extended (digits without leading and trailing zeros, XOR the weight), XOR 1 for a
 * value below zero: PostgreSQL's numeric hash ignores the sign. NaN and infinities hash as the seed. */
static int hash_numeric(const unsigned char *p, uint32_t len, uint64_t seed, uint64_t *out) {
    if (len < 8)
        return -1;
    int ndigits = be16(p), weight = (int16_t)be16(p + 2), sign = be16(p + 4);
    if (len != 8 + 2u * ndigits)
        return -1;
    const unsigned char *d = p + 8;
    if (sign == NUMERIC_NAN || sign == NUMERIC_PINF || sign == NUMERIC_NINF) {
        if (ndigits != 0) return -1;
        *out = seed ^ (uint64_t)(sign == NUMERIC_NINF);
        return 0;
    }
    if (sign != 0 && sign != NUMERIC_NEG) return -1;
    int start = 0, end = ndigits;
    while (start < end && be16(d + 2 * start) == 0) { start++; weight--; }
    if (start == end) {
        *out = seed - 1;  /* zero */
        return 0;
    }
    while (end > start && be16(d + 2 * (end - 1)) == 0) end--;
    unsigned char small[512], *digits = small;
    uint32_t nbytes = 2u * (end - start);
    if (nbytes > sizeof small) {
        digits = malloc(nbytes);
        if (!digits) return -2;
    }
    for (int i = start; i < end; i++) {  /* NumericDigit (int16) as the server holds it: little-endian */
        digits[2 * (i - start)] = d[2 * i + 1];
        digits[2 * (i - start) + 1] = d[2 * i];
    }
    *out = (hash_bytes(digits, nbytes, seed) ^ (uint64_t)(int64_t)weight) ^ (uint64_t)(sign == NUMERIC_NEG);
    if (digits != small)
        free(digits);
    return 0;
}

/* The hash of one non-NULL value; -1 when its length does not fit its kind, -2 out of memory. */
static int hash_value(int kind, const unsigned char *p, uint32_t len, uint64_t seed, uint64_t *out) {
    float f;
    uint32_t bits;
    switch (kind) {
        case K_INT2:
            if (len != 2) return -1;
            *out = hash_uint32((uint32_t)(int32_t)(int16_t)be16(p), seed);
            return 0;
        case K_INT4:
            if (len != 4) return -1;
            *out = hash_uint32(be32(p), seed);
            return 0;
        case K_BOOL:
            if (len != 1) return -1;
            *out = hash_uint32(p[0] != 0, seed);
            return 0;
        case K_INT8:
            if (len != 8) return -1;
            *out = hash_int8(be64(p), seed);
            return 0;
        case K_FLOAT4:
            if (len != 4) return -1;
            bits = be32(p);
            memcpy(&f, &bits, 4);
            *out = hash_float8((double)f, seed);
            return 0;
        case K_FLOAT8: {
            if (len != 8) return -1;
            int64_t v = be64(p);
            double d;
            memcpy(&d, &v, 8);
            *out = hash_float8(d, seed);
            return 0;
        }
        case K_NUMERIC:
            return hash_numeric(p, len, seed, out);
        case K_BYTES:
            *out = hash_bytes(p, len, seed);
            return 0;
        case K_BPCHAR:  /* hashbpcharextended: trailing spaces do not count */
            while (len > 0 && p[len - 1] == ' ') len--;
            *out = hash_bytes(p, len, seed);
            return 0;
        case K_JSONB:  /* a version byte (1), then the document's text */
            if (len < 1 || p[0] != 1) return -1;
            *out = hash_bytes(p + 1, len - 1, seed);
            return 0;
    }
    return -1;
}

/* ---- the stream ------------------------------------------------------------------------- */
static const unsigned char SIGNATURE[11] = "PGCOPY\n\377\r\n";
#define MAX_FIELD 0x3FFFFFFF  /* PostgreSQL's largest value (1 GB) */

typedef struct {
    PyObject_HEAD
    int ncols;
    unsigned char *kinds;
    uint64_t *nulls;
    unsigned char *carry;       /* the start of a unit (header or row) split across pieces */
    size_t carry_len, carry_cap;
    int header_done, ended;
    int busy;                   /* an update() is running without the GIL */
    uint64_t rows, total;
    const char *error;          /* set while the GIL is released, raised after */
    long error_at;
} CopyHasher;

/* Bytes in the next unit at p (n available): its full length when complete, else 0 with *need
 * set to the bytes needed to learn more; -1 on a malformed stream. */
static Py_ssize_t unit_length(CopyHasher *self, const unsigned char *p, size_t n, size_t *need) {
    if (!self->header_done) {
        *need = 19;
        if (n < 19) return 0;
        if (memcmp(p, SIGNATURE, 11) != 0) { self->error = "not a binary COPY stream"; return -1; }
        if (be32(p + 11) & 0xFFFF0000u) { self->error = "header flags this reader does not know"; return -1; }
        int32_t extension = (int32_t)be32(p + 15);
        if (extension < 0 || extension > MAX_FIELD) { self->error = "a bad header extension length"; return -1; }
        size_t total = 19 + (size_t)extension;
        *need = total;
        return n >= total ? (Py_ssize_t)total : 0;
    }
    *need = 2;
    if (n < 2) return 0;
    int fields = (int16_t)be16(p);
    if (fields == -1) return 2;  /* the trailer */
    if (fields != self->ncols) { self->error = "a row with another number of columns"; return -1; }
    size_t at = 2;
    for (int i = 0; i < fields; i++) {
        *need = at + 4;
        if (n < at + 4) return 0;
        int32_t len = (int32_t)be32(p + at);
        at += 4;
        if (len > MAX_FIELD || len < -1) { self->error = "a value length out of range"; return -1; }
        if (len > 0) at += (size_t)len;
    }
    *need = at;
    return n >= at ? (Py_ssize_t)at : 0;
}

/* Hash the complete unit at p (length len, from unit_length). */
static int take_unit(CopyHasher *self, const unsigned char *p, size_t len) {
    if (!self->header_done) { self->header_done = 1; return 0; }
    if ((int16_t)be16(p) == -1) { self->ended = 1; return 0; }
    uint64_t row = 0;
    size_t at = 2;
    for (int i = 0; i < self->ncols; i++) {
        /* unit_length checked these bounds; checked again in case the caller's buffer changed since */
        if (at + 4 > len) { self->error = "a value past its row's end"; return -1; }
        int32_t vlen = (int32_t)be32(p + at);
        at += 4;
        if (vlen == -1) { row ^= self->nulls[i]; continue; }
        if (vlen < 0 || at + (size_t)vlen > len) { self->error = "a value past its row's end"; return -1; }
        uint64_t h;
        int rc = hash_value(self->kinds[i], p + at, (uint32_t)vlen, (uint64_t)(i + 1), &h);
        if (rc != 0) {
            self->error = rc == -2 ? "out of memory" : "a value whose binary form does not fit its column's type";
            self->error_at = i + 1;
            return -1;
        }
        row ^= h;
        at += (size_t)vlen;
    }
    self->rows++;
    self->total += row;
    return 0;
}

static int carry_reserve(CopyHasher *self, size_t size) {
    if (size <= self->carry_cap) return 0;
    size_t cap = self->carry_cap ? self->carry_cap : 4096;
    while (cap < size) cap *= 2;
    unsigned char *grown = realloc(self->carry, cap);
    if (!grown) { self->error = "out of memory"; return -1; }
    self->carry = grown;
    self->carry_cap = cap;
    return 0;
}

/* Feed n bytes; 0 or -1 with self->error set. Runs without the GIL. */
static int feed(CopyHasher *self, const unsigned char *p, size_t n) {
    size_t need;
    Py_ssize_t len;
    while (self->carry_len && n) {  /* finish the unit the previous piece left open */
        len = unit_length(self, self->carry, self->carry_len, &need);
        if (len < 0) return -1;
        if (len > 0) break;
        size_t take = need - self->carry_len < n ? need - self->carry_len : n;
        if (carry_reserve(self, self->carry_len + take) < 0) return -1;
        memcpy(self->carry + self->carry_len, p, take);
        self->carry_len += take;
        p += take;
        n -= take;
    }
    if (self->carry_len) {
        len = unit_length(self, self->carry, self->carry_len, &need);
        if (len < 0) return -1;
        if (len == 0) return 0;  /* still open: every byte went into it */
        if (take_unit(self, self->carry, (size_t)len) < 0) return -1;
        self->carry_len = 0;
    }
    while (n && !self->ended) {
        len = unit_length(self, p, n, &need);
        if (len < 0) return -1;
        if (len == 0) {
            if (carry_reserve(self, n) < 0) return -1;
            memcpy(self->carry, p, n);
            self->carry_len = n;
            return 0;
        }
        if (take_unit(self, p, (size_t)len) < 0) return -1;
        p += len;
        n -= (size_t)len;
    }
    if (n) { self->error = "data after the end of the stream"; return -1; }
    return 0;
}

static PyObject *raise_stream_error(CopyHasher *self) {
    if (self->error_at)
        PyErr_Format(PyExc_ValueError, "binary COPY stream: %s (column %ld, row %llu)", self->error,
                     self->error_at, (unsigned long long)self->rows + 1);
    else
        PyErr_Format(PyExc_ValueError, "binary COPY stream: %s (after %llu rows)", self->error,
                     (unsigned long long)self->rows);
    return NULL;
}

static int usable(CopyHasher *self) {
    if (!self->kinds) PyErr_SetString(PyExc_RuntimeError, "CopyHasher was not initialised");
    else if (self->busy) PyErr_SetString(PyExc_RuntimeError, "CopyHasher is in use by another thread");
    else return 1;
    return 0;
}

static PyObject *CopyHasher_update(CopyHasher *self, PyObject *arg) {
    Py_buffer view;
    if (!usable(self)) return NULL;
    if (self->error) return raise_stream_error(self);
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int rc;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = feed(self, view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&view);
    if (rc < 0) return raise_stream_error(self);
    Py_RETURN_NONE;
}

static PyObject *CopyHasher_finish(CopyHasher *self, PyObject *Py_UNUSED(ignored)) {
    if (!usable(self)) return NULL;
    if (self->error) return raise_stream_error(self);
    if (!self->ended) {
        self->error = "the stream ended before its last row";
        return raise_stream_error(self);
    }
    return Py_BuildValue("(KK)", (unsigned long long)self->rows, (unsigned long long)self->total);
}

static int CopyHasher_init(CopyHasher *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"kinds", "null_hashes", NULL};
    Py_buffer kinds;
    PyObject *nulls;
    if (self->kinds) {
        PyErr_SetString(PyExc_RuntimeError, "CopyHasher is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*O", names, &kinds, &nulls)) return -1;
    PyObject *seq = PySequence_Tuple(nulls);  /* a copy no __index__ below can shrink */
    int ok = seq != NULL;
    if (ok && (kinds.len < 1 || kinds.len > 1600 || PySequence_Fast_GET_SIZE(seq) != kinds.len)) {
        PyErr_SetString(PyExc_ValueError, "1 to 1600 columns (PostgreSQL's most), one NULL hash for each");
        ok = 0;
    }
    unsigned char *kind_of = NULL;
    uint64_t *null_of = NULL;
    if (ok) {
        kind_of = PyMem_Malloc(kinds.len);
        null_of = PyMem_Malloc(sizeof(uint64_t) * kinds.len);
        if (!kind_of || !null_of) { PyErr_NoMemory(); ok = 0; }
    }
    for (Py_ssize_t i = 0; ok && i < kinds.len; i++) {
        kind_of[i] = ((unsigned char *)kinds.buf)[i];
        if (kind_of[i] < K_INT2 || kind_of[i] > K_JSONB) {
            PyErr_Format(PyExc_ValueError, "unknown kind %d for column %zd", kind_of[i], i + 1);
            ok = 0;
            break;
        }
        null_of[i] = (uint64_t)PyLong_AsUnsignedLongLongMask(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) ok = 0;
    }
    if (ok) {
        self->kinds = kind_of;
        self->nulls = null_of;
        self->ncols = (int)kinds.len;
    } else {
        PyMem_Free(kind_of);
        PyMem_Free(null_of);
    }
    Py_XDECREF(seq);
    PyBuffer_Release(&kinds);
    return ok ? 0 : -1;
}

static void CopyHasher_dealloc(CopyHasher *self) {
    PyMem_Free(self->kinds);
    PyMem_Free(self->nulls);
    free(self->carry);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef CopyHasher_methods[] = {
    {"update", (PyCFunction)CopyHasher_update, METH_O, "Hash the rows completed by the next piece of the stream."},
    {"finish", (PyCFunction)CopyHasher_finish, METH_NOARGS,
     "(rows, wrapping sum of row hashes); ValueError if the stream did not end where a stream ends."},
    {NULL},
};

static PyTypeObject CopyHasherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connectors._hashes.CopyHasher",
    .tp_doc = "Row hashes of a PostgreSQL binary COPY stream (see the module's source).",
    .tp_basicsize = sizeof(CopyHasher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)CopyHasher_init,
    .tp_dealloc = (destructor)CopyHasher_dealloc,
    .tp_methods = CopyHasher_methods,
};

/* ---- whole arrays: the hashes postgres_hash and clickhouse_hash compute over Arrow ---------- */
#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL
#define ROTL64(x, r) (((x) << (r)) | ((x) >> (64 - (r))))

static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }
static uint64_t xxh_round(uint64_t acc, uint64_t lane) { return ROTL64(acc + lane * P2, 31) * P1; }
static uint64_t xxh_merge(uint64_t acc, uint64_t v) { return (acc ^ xxh_round(0, v)) * P1 + P4; }

static uint64_t xxh64(const unsigned char *p, size_t len) {  /* XXH64, seed 0: ClickHouse's xxHash64 */
    size_t left = len;
    uint64_t h;
    if (left >= 32) {
        uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = 0 - P1;
        do {
            v1 = xxh_round(v1, le64(p)); v2 = xxh_round(v2, le64(p + 8));
            v3 = xxh_round(v3, le64(p + 16)); v4 = xxh_round(v4, le64(p + 24));
            p += 32;
            left -= 32;
        } while (left >= 32);
        h = ROTL64(v1, 1) + ROTL64(v2, 7) + ROTL64(v3, 12) + ROTL64(v4, 18);
        h = xxh_merge(xxh_merge(xxh_merge(xxh_merge(h, v1), v2), v3), v4);
    } else {
        h = P5;
    }
    h += len;
    for (; left >= 8; p += 8, left -= 8)
        h = ROTL64(h ^ xxh_round(0, le64(p)), 27) * P1 + P4;
    if (left >= 4) {
        h = ROTL64(h ^ (uint64_t)le32(p) * P1, 23) * P2 + P3;
        p += 4;
        left -= 4;
    }
    for (; left > 0; p++, left--)
        h = ROTL64(h ^ (uint64_t)*p * P5, 11) * P1;
    h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3;
    return h ^ (h >> 32);
}

/* fn(data, starts, lengths, out[, seed]): out[i] = the hash of data[starts[i] : starts[i] + lengths[i]]
 * (starts and lengths int64, out uint64, all of one length). */
static PyObject *hash_each_value(PyObject *args, int lookup3) {
    Py_buffer data, starts, lengths, out;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, lookup3 ? "y*y*y*w*K" : "y*y*y*w*", &data, &starts, &lengths, &out, &seed))
        return NULL;
    Py_ssize_t n = out.len / 8;
    const int64_t *starts_of = starts.buf, *lengths_of = lengths.buf;
    uint64_t *h = out.buf;
    int ok = out.len % 8 == 0 && starts.len == n * 8 && lengths.len == n * 8;
    if (ok) {
        const unsigned char *bytes = data.buf;
        const int64_t size = data.len;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; ok && i < n; i++) {
            int64_t at = starts_of[i], len = lengths_of[i];  /* read once: checked as used */
            ok = at >= 0 && len >= 0 && at <= size && len <= size - at && len <= UINT32_MAX;
            if (ok)
                h[i] = lookup3 ? hash_bytes(bytes + at, (uint32_t)len, seed) : xxh64(bytes + at, (size_t)len);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&data); PyBuffer_Release(&starts); PyBuffer_Release(&lengths); PyBuffer_Release(&out);
    if (!ok) return PyErr_Format(PyExc_ValueError, "starts and lengths must be %zd int64 values within the data", n);
    Py_RETURN_NONE;
}

static PyObject *lookup3_each(PyObject *Py_UNUSED(self), PyObject *args) { return hash_each_value(args, 1); }
static PyObject *xxh64_each(PyObject *Py_UNUSED(self), PyObject *args) { return hash_each_value(args, 0); }

/* fn(values, out[, seed]): out[i] = the hash of values[i] (uint32 for lookup3's
 * hash_bytes_uint32_extended, uint64 as 8 little-endian bytes for XXH64). */
static PyObject *hash_each_word(PyObject *args, int lookup3) {
    Py_buffer values, out;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, lookup3 ? "y*w*K" : "y*w*", &values, &out, &seed))
        return NULL;
    Py_ssize_t n = out.len / 8;
    int ok = out.len % 8 == 0 && values.len == n * (lookup3 ? 4 : 8);
    if (ok) {
        uint64_t *h = out.buf;
        const uint32_t *v32 = values.buf;
        const unsigned char *v64 = values.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++)
            h[i] = lookup3 ? hash_uint32(v32[i], seed) : xxh64(v64 + 8 * i, 8);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&values); PyBuffer_Release(&out);
    if (!ok) return PyErr_Format(PyExc_ValueError, "values must be %zd %s", n, lookup3 ? "uint32" : "uint64");
    Py_RETURN_NONE;
}

static PyObject *lookup3_uint32_each(PyObject *Py_UNUSED(self), PyObject *args) { return hash_each_word(args, 1); }
static PyObject *xxh64_uint64_each(PyObject *Py_UNUSED(self), PyObject *args) { return hash_each_word(args, 0); }

static PyMethodDef functions[] = {
    {"lookup3_each", lookup3_each, METH_VARARGS,
     "lookup3_each(data, starts, lengths, out, seed): PostgreSQL's hash_bytes_extended of each value."},
    {"lookup3_uint32_each", lookup3_uint32_each, METH_VARARGS,
     "lookup3_uint32_each(values, out, seed): PostgreSQL's hash_bytes_uint32_extended of each uint32."},
    {"xxh64_each", xxh64_each, METH_VARARGS, "xxh64_each(data, starts, lengths, out): XXH64 of each value."},
    {"xxh64_uint64_each", xxh64_uint64_each, METH_VARARGS,
     "xxh64_uint64_each(values, out): XXH64 of each uint64's 8 little-endian bytes."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "connectors._hashes",
    .m_doc = "PostgreSQL's and ClickHouse's hashes in C: over a binary COPY stream and over arrays.",
    .m_size = -1,
    .m_methods = functions,
};

PyMODINIT_FUNC PyInit__hashes(void) {
    if (PyType_Ready(&CopyHasherType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&CopyHasherType);
    if (PyModule_AddObject(m, "CopyHasher", (PyObject *)&CopyHasherType) < 0) {
        Py_DECREF(&CopyHasherType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
