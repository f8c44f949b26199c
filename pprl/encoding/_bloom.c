/*
 * pprl.encoding._bloom -- Bloom-filter masks of whole values, as clkhash computes them,
 * for the common features: n-gram or exact comparison, blakeHash, either strategy.
 *
 * Table(key, length, n, positional, per_token, bits, ascii_only) holds one feature's
 * settings and a memo token -> its first 32 bit positions; Table.masks(texts) gives, for
 * every text (already normalised and checked by the caller), the filter mask as a Python
 * int whose big-endian bytes are bitarray's tobytes(), exactly what the Python path of
 * pprl.encoding.masks computes:
 *
 *   tokens:    n >= 1: the n-grams of the text padded with n - 1 spaces on both sides
 *              (by code point), "<i> <gram>" with the 1-based position i if positional;
 *              n == 0: the whole text (clkhash's exact comparison); none for "".
 *   k:         per_token: bits for every token; else divmod(bits, number of tokens): the
 *              first `extra` tokens get k + 1 bits, the rest k (clkhash's bitsPerFeature).
 *   positions: clkhash's blake_hash_token: the little-endian 16-bit words of
 *              BLAKE2b-512(token as UTF-8, key=key, salt=str(i)) for i = 0, 1, ..., the
 *              first k of them, each modulo length (a power of two).
 *
 * BLAKE2b is RFC 7693's; the state after the key block is computed once per salt. Tokens
 * that need more than 32 positions (k > 32) hash their further salts on every use; the
 * caller memoises whole values. The memo holds at most TOKEN_LIMIT tokens (ARENA_LIMIT
 * bytes of them) and is emptied when full (results do not depend on it). ascii_only: a text with a non-ASCII character
 * raises UnicodeError (the caller then takes its Python path, which reports it as before).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SALTS 64             /* k <= 32 * MAX_SALTS */
#define TOKEN_LIMIT (1u << 17)   /* tokens memoised before the memo is emptied */
#define ARENA_LIMIT (1u << 24)   /* or bytes of tokens (long exact values) */

/* ---------------------------------------------------------------- BLAKE2b (RFC 7693) */

static const uint64_t B2_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr64(uint64_t x, int r) { return (x >> r) | (x << (64 - r)); }

static inline uint64_t load64(const uint8_t *p) {
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24) |
           ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

#define B2_G(a, b, c, d, x, y)            \
    do {                                  \
        a = a + b + (x);                  \
        d = rotr64(d ^ a, 32);            \
        c = c + d;                        \
        b = rotr64(b ^ c, 24);            \
        a = a + b + (y);                  \
        d = rotr64(d ^ a, 16);            \
        c = c + d;                        \
        b = rotr64(b ^ c, 63);            \
    } while (0)

/* One compression of the 128-byte block into h; t: bytes so far (including this block). */
static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= t;  /* tokens are far shorter than 2^64 bytes: the high counter word stays 0 */
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = B2_SIGMA[r];
        B2_G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        B2_G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        B2_G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        B2_G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        B2_G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        B2_G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        B2_G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        B2_G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* ---------------------------------------------------------------- the table */

typedef struct {
    uint64_t hash;
    uint32_t off, len;   /* the token's bytes in the arena */
    uint16_t pos[32];    /* its first 32 positions (salt "0") */
} Entry;

typedef struct {
    PyObject_HEAD
    uint8_t key_block[128];         /* the key, zero-padded: BLAKE2b's first block */
    int key_len;
    uint64_t states[MAX_SALTS][8];  /* h after the key block, per salt; computed on demand */
    int nstates;
    uint32_t length_mask;           /* filter length - 1 */
    Py_ssize_t width;               /* filter bytes */
    int n, positional, per_token, ascii_only;
    long bits;
    /* memo: open addressing over `index` (entry number + 1, 0 = empty); entries dense */
    uint32_t *index;
    size_t index_cap;
    Entry *entries;
    size_t count, entries_cap;
    uint8_t *arena;
    size_t arena_len, arena_cap;
} TableObject;

/* h after the key block for salt str(i) (BLAKE2b parameter block: digest 64, key length,
   fanout 1, depth 1, the salt zero-padded to 16 bytes). */
static const uint64_t *salt_state(TableObject *t, int i) {
    while (t->nstates <= i) {
        int s = t->nstates;
        uint8_t salt[16] = {0};
        char digits[16];
        int nd = snprintf(digits, sizeof digits, "%d", s);
        memcpy(salt, digits, (size_t)nd);
        uint64_t *h = t->states[s];
        for (int j = 0; j < 8; j++) h[j] = B2_IV[j];
        h[0] ^= 64u | ((uint64_t)t->key_len << 8) | (1u << 16) | (1u << 24);
        h[4] ^= load64(salt);
        h[5] ^= load64(salt + 8);
        b2_compress(h, t->key_block, 128, 0);
        t->nstates++;
    }
    return t->states[i];
}

/* The 64-byte digest of `data` under salt i, as 32 positions (little-endian words mod length). */
static void digest_positions(TableObject *t, int i, const uint8_t *data, size_t len, uint16_t out[32]) {
    uint64_t h[8];
    uint8_t block[128];
    memcpy(h, salt_state(t, i), sizeof h);
    uint64_t done = 128;
    while (len > 128) {
        done += 128;
        b2_compress(h, data, done, 0);
        data += 128;
        len -= 128;
    }
    memset(block, 0, sizeof block);
    memcpy(block, data, len);
    b2_compress(h, block, done + len, 1);
    uint32_t mask = t->length_mask;
    for (int w = 0; w < 8; w++)
        for (int j = 0; j < 4; j++) out[4 * w + j] = (uint16_t)(((h[w] >> (16 * j)) & 0xffffu) & mask);
}

static void clear_memo(TableObject *t) {
    if (t->index) memset(t->index, 0, t->index_cap * sizeof(uint32_t));
    t->count = 0;
    t->arena_len = 0;
}

static inline uint64_t hash_bytes(const uint8_t *p, size_t len) {
    uint64_t h = 0x243f6a8885a308d3ULL ^ (len * 0x9e3779b97f4a7c15ULL);
    while (len >= 8) {
        h = (h ^ load64(p)) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++) tail |= (uint64_t)p[i] << (8 * i);
    h = (h ^ tail) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 31;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 32;
    return h;
}

static int grow_index(TableObject *t) {
    size_t cap = t->index_cap ? t->index_cap * 2 : 1024;
    uint32_t *index = calloc(cap, sizeof(uint32_t));
    if (!index) return -1;
    for (size_t e = 0; e < t->count; e++) {
        size_t slot = (size_t)t->entries[e].hash & (cap - 1);
        while (index[slot]) slot = (slot + 1) & (cap - 1);
        index[slot] = (uint32_t)(e + 1);
    }
    free(t->index);
    t->index = index;
    t->index_cap = cap;
    return 0;
}

/* The first 32 positions of a token: from the memo, or hashed and memoised. NULL on no memory. */
static const uint16_t *token_positions(TableObject *t, const uint8_t *tok, size_t len) {
    uint64_t h = hash_bytes(tok, len);
    if (t->index_cap) {
        size_t slot = (size_t)h & (t->index_cap - 1);
        uint32_t e;
        while ((e = t->index[slot]) != 0) {
            Entry *en = &t->entries[e - 1];
            if (en->hash == h && en->len == len && memcmp(t->arena + en->off, tok, len) == 0) return en->pos;
            slot = (slot + 1) & (t->index_cap - 1);
        }
    }
    if (t->count >= TOKEN_LIMIT || t->arena_len + len > ARENA_LIMIT) clear_memo(t);
    if ((t->count + 1) * 2 > t->index_cap && grow_index(t) < 0) return NULL;
    if (t->count == t->entries_cap) {
        size_t cap = t->entries_cap ? t->entries_cap * 2 : 512;
        Entry *entries = realloc(t->entries, cap * sizeof(Entry));
        if (!entries) return NULL;
        t->entries = entries;
        t->entries_cap = cap;
    }
    if (t->arena_len + len > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 4096;
        while (cap < t->arena_len + len) cap *= 2;
        uint8_t *arena = realloc(t->arena, cap);
        if (!arena) return NULL;
        t->arena = arena;
        t->arena_cap = cap;
    }
    Entry *en = &t->entries[t->count];
    en->hash = h;
    en->off = (uint32_t)t->arena_len;
    en->len = (uint32_t)len;
    memcpy(t->arena + t->arena_len, tok, len);
    t->arena_len += len;
    digest_positions(t, 0, tok, len, en->pos);
    size_t slot = (size_t)h & (t->index_cap - 1);
    while (t->index[slot]) slot = (slot + 1) & (t->index_cap - 1);
    t->count++;
    t->index[slot] = (uint32_t)t->count;
    return en->pos;
}

/* Set the bits of one token inserted k times into mask. -1 on no memory. */
static int insert_token(TableObject *t, const uint8_t *tok, size_t len, long k, uint8_t *mask) {
    if (k <= 0) return 0;
    const uint16_t *pos = token_positions(t, tok, len);
    if (!pos) return -1;
    long first = k < 32 ? k : 32;
    for (long j = 0; j < first; j++) mask[pos[j] >> 3] |= (uint8_t)(0x80u >> (pos[j] & 7));
    for (int salt = 1; 32L * salt < k; salt++) {
        uint16_t more[32];
        digest_positions(t, salt, tok, len, more);
        long m = k - 32L * salt < 32 ? k - 32L * salt : 32;
        for (long j = 0; j < m; j++) mask[more[j] >> 3] |= (uint8_t)(0x80u >> (more[j] & 7));
    }
    return 0;
}

static PyObject *mask_to_int(const uint8_t *mask, Py_ssize_t width) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(mask, (size_t)width,
                                          Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
#else
    return _PyLong_FromByteArray(mask, (size_t)width, 0, 0);
#endif
}

/* UTF-8 of `text` into out (room for 4 bytes per code point), the byte offset of each code
   point into offs (if not NULL; pad + index, so n-gram padding fits before it); the byte
   count, or -1 with UnicodeError for a surrogate (or, ascii_only, any non-ASCII character).
   Encoding here rather than PyUnicode_AsUTF8 keeps a UTF-8 copy off the caller's strings. */
static Py_ssize_t utf8_of(PyObject *text, int ascii_only, uint8_t *out, Py_ssize_t *offs, Py_ssize_t base) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_IS_ASCII(text)) {
        memcpy(out, PyUnicode_DATA(text), (size_t)len);
        if (offs)
            for (Py_ssize_t i = 0; i < len; i++) offs[i] = base + i;
        return len;
    }
    if (ascii_only) {
        PyErr_SetString(PyExc_UnicodeError, "a text is not ASCII");
        return -1;
    }
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t w = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (offs) offs[i] = base + w;
        if (c < 0x80) {
            out[w++] = (uint8_t)c;
        } else if (c < 0x800) {
            out[w++] = (uint8_t)(0xC0 | (c >> 6));
            out[w++] = (uint8_t)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            if (c >= 0xD800 && c <= 0xDFFF) {
                PyErr_SetString(PyExc_UnicodeError, "a text has a lone surrogate");
                return -1;
            }
            out[w++] = (uint8_t)(0xE0 | (c >> 12));
            out[w++] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            out[w++] = (uint8_t)(0x80 | (c & 0x3F));
        } else {
            out[w++] = (uint8_t)(0xF0 | (c >> 18));
            out[w++] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
            out[w++] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
            out[w++] = (uint8_t)(0x80 | (c & 0x3F));
        }
    }
    return w;
}

/* The mask of one non-empty text into `mask` (zeroed by the caller). word: room for
   24 + 4 * len + 2 * n bytes; offs: len + 2 * n + 1 entries. -1 on error (set). */
static int text_mask(TableObject *t, PyObject *text, uint8_t *scratch, Py_ssize_t *offs, uint8_t *mask) {
    uint8_t *word = scratch + 24;  /* 24 bytes before it for a position prefix */
    if (t->n == 0) {  /* exact: the whole text is the token, with all the bits */
        Py_ssize_t w = utf8_of(text, t->ascii_only, word, NULL, 0);
        if (w < 0) return -1;
        return insert_token(t, word, (size_t)w, t->bits, mask) < 0 ? (PyErr_NoMemory(), -1) : 0;
    }
    int n = t->n, pad = n - 1;
    /* the padded text and the byte offset of each code point (plus the end) */
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    for (int i = 0; i < pad; i++) {
        offs[i] = i;
        word[i] = ' ';
    }
    Py_ssize_t w = utf8_of(text, t->ascii_only, word + pad, offs + pad, pad);
    if (w < 0) return -1;
    w += pad;
    Py_ssize_t cps = pad + len;
    for (int i = 0; i < pad; i++) {
        offs[cps++] = w;
        word[w++] = ' ';
    }
    offs[cps] = w;
    Py_ssize_t count = cps - n + 1;
    long k = t->bits, extra = 0;
    if (!t->per_token) {
        k = t->bits / (long)count;
        extra = t->bits % (long)count;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        long kj = j < extra ? k + 1 : k;
        uint8_t *tok = word + offs[j];
        size_t toklen = (size_t)(offs[j + n] - offs[j]);
        int rc;
        if (t->positional) {  /* "<j + 1> <gram>": the prefix goes just before the gram */
            char digits[24];
            int nd = snprintf(digits, sizeof digits, "%zd ", j + 1);
            uint8_t saved[24];
            memcpy(saved, tok - nd, (size_t)nd);
            memcpy(tok - nd, digits, (size_t)nd);
            rc = insert_token(t, tok - nd, toklen + (size_t)nd, kj, mask);
            memcpy(tok - nd, saved, (size_t)nd);
        } else {
            rc = insert_token(t, tok, toklen, kj, mask);
        }
        if (rc < 0) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static PyObject *Table_masks(TableObject *t, PyObject *texts) {
    PyObject *seq = PySequence_Fast(texts, "texts must be a sequence of str");
    if (!seq) return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out = PyList_New(m);
    uint8_t *mask = malloc((size_t)t->width);
    uint8_t *scratch = NULL;
    Py_ssize_t *offs = NULL;
    Py_ssize_t room = 0;  /* code points the scratch buffers hold */
    if (!out || !mask) goto nomem;
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *text = items[i];
        if (!PyUnicode_Check(text)) {
            PyErr_SetString(PyExc_TypeError, "texts must be str");
            goto fail;
        }
        memset(mask, 0, (size_t)t->width);
        Py_ssize_t len = PyUnicode_GET_LENGTH(text);
        if (len > 0) {
            if (len > room) {
                room = len * 2;
                free(scratch);
                free(offs);
                scratch = malloc(24 + 4 * (size_t)room + 2 * (size_t)t->n);
                offs = malloc(((size_t)room + 2 * (size_t)t->n + 1) * sizeof(Py_ssize_t));
                if (!scratch || !offs) goto nomem;
            }
            if (text_mask(t, text, scratch, offs, mask) < 0) goto fail;
        }
        PyObject *value = mask_to_int(mask, t->width);
        if (!value) goto fail;
        PyList_SET_ITEM(out, i, value);
    }
    free(mask);
    free(scratch);
    free(offs);
    Py_DECREF(seq);
    return out;
nomem:
    PyErr_NoMemory();
fail:
    free(mask);
    free(scratch);
    free(offs);
    Py_XDECREF(out);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Table_len(TableObject *t, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSize_t(t->count);
}

static PyObject *Table_clear(TableObject *t, PyObject *Py_UNUSED(ignored)) {
    clear_memo(t);
    Py_RETURN_NONE;
}

static int Table_init(TableObject *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"key", "length", "n", "positional", "per_token", "bits", "ascii_only", NULL};
    Py_buffer key;
    Py_ssize_t length;
    int n, positional, per_token, ascii_only;
    long bits;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*nipplp", kwlist, &key, &length, &n, &positional,
                                     &per_token, &bits, &ascii_only))
        return -1;
    int bad = key.len < 1 || key.len > 64 || length < 8 || length > 65536 || (length & (length - 1)) || n < 0 ||
              n > 64 || bits < 1 || bits > 32L * MAX_SALTS;
    if (bad) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError,
                        "unsupported settings: key of 1..64 bytes, length a power of two in 8..65536, "
                        "0 <= n <= 64, 1 <= bits <= 2048");
        return -1;
    }
    memset(t->key_block, 0, sizeof t->key_block);
    memcpy(t->key_block, key.buf, (size_t)key.len);
    t->key_len = (int)key.len;
    PyBuffer_Release(&key);
    t->nstates = 0;
    t->length_mask = (uint32_t)(length - 1);
    t->width = length / 8;
    t->n = n;
    t->positional = positional;
    t->per_token = per_token;
    t->bits = bits;
    t->ascii_only = ascii_only;
    free(t->index);
    free(t->entries);
    free(t->arena);
    t->index = NULL;
    t->entries = NULL;
    t->arena = NULL;
    t->index_cap = t->entries_cap = t->arena_cap = 0;
    t->count = t->arena_len = 0;
    return 0;
}

static void Table_dealloc(TableObject *t) {
    free(t->index);
    free(t->entries);
    free(t->arena);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef Table_methods[] = {
    {"masks", (PyCFunction)Table_masks, METH_O,
     "masks(texts) -> list[int]: the filter mask of every text (see the module docstring)."},
    {"memo_size", (PyCFunction)Table_len, METH_NOARGS, "Number of tokens memoised."},
    {"clear", (PyCFunction)Table_clear, METH_NOARGS, "Empty the token memo."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pprl.encoding._bloom.Table",
    .tp_basicsize = sizeof(TableObject),
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Table(key, length, n, positional, per_token, bits, ascii_only): one feature's masks.",
    .tp_methods = Table_methods,
    .tp_init = (initproc)Table_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bloom",
    "clkhash's Bloom-filter masks of whole values (n-gram or exact tokens, blakeHash) in C.",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bloom(void) {
    if (PyType_Ready(&TableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
