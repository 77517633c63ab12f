/*
 * tube.websocket.core._speedups: the optional C accelerator of the core's hot loops.
 *
 *   apply_mask(data, key, /) -> bytes                XOR with the 4-byte key (RFC 6455 §5.3)
 *   unmask_in_place(buffer, key, start=0, stop=None, /) -> None     the same, in place
 *   utf8_check(data, state, /) -> int               one step of an incremental UTF-8 check
 *   utf8_size(text, /) -> int                       len(text.encode()), without encoding
 *   PayloadBuffer(size)                             a bytes object filled in place, then taken
 *   parse_messages(data, start, end, masked, limit, events, binary, text, /) -> int
 *                                                   the commonest frames: whole data messages
 *
 * Each function gives exactly the result of its pure-Python twin in masking.py and utf8.py
 * (parse_messages: of the general parse loop in receiver.py, for the frames it takes), which
 * stay the fallback when this module was not built (no compiler, no Python headers) or when
 * TUBE_NO_SPEEDUPS=1 is set; tests/core/test_speedups.py checks the equivalence.
 *
 * Plain C99 and the CPython C API, nothing else. The masking loop is written for the compiler
 * to vectorise (gcc -O2/-O3, clang): fixed-size 8-byte loads and stores through memcpy, which
 * compile to single (unaligned-safe) moves, and no data-dependent branch.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/*
 * Work on more than this many bytes runs with the GIL released, so that other Python threads
 * (other connections) run meanwhile. Below it, releasing and taking back the GIL would cost more
 * than it frees (64 KiB are XORed in about 1.5 us). The price is paid by the calling thread when
 * another one is busy: it waits for the GIL afterwards (measured on CPython 3.11: 1 MiB in place
 * takes 22 us alone, ~100 us beside a thread spinning in Python, which ran meanwhile).
 * The Py_buffer export of every buffer touched is held across the release: a bytearray cannot be
 * resized (it raises BufferError) while it is exported, so the memory stays valid.
 */
#define GIL_RELEASE_THRESHOLD (64 * 1024)

/* ------------------------------------------------------------------------------- masking */

/* 0 if nargs is within [low, high], else -1 with the TypeError a Python function would raise. */
static int
check_arg_count(const char *name, Py_ssize_t nargs, Py_ssize_t low, Py_ssize_t high)
{
    if (nargs >= low && nargs <= high) {
        return 0;
    }
    if (low == high) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)",
                     name, low, nargs);
    }
    else {
        PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd arguments (%zd given)",
                     name, low, high, nargs);
    }
    return -1;
}

/*
 * XOR n bytes of src with the key repeated, into dst (dst may be src: in place): src[i] is
 * XORed with key[i % 4].
 */
static void
xor_with_key(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
             const unsigned char key[4])
{
    Py_ssize_t i = 0;

    /* Head: byte by byte until dst is 8-byte aligned, so that the main loop's stores never
     * straddle a cache line. */
    while (i < n && ((uintptr_t)(dst + i) & 7) != 0) {
        dst[i] = src[i] ^ key[i & 3];
        i++;
    }
    if (n - i >= 8) {
        /* The key repeated over 8 bytes, starting with the key byte of byte i (the head may
         * have ended at any key phase). A word holds the key exactly twice, so every later
         * word starts at that same phase. memcpy keeps the bytes in memory order, whatever
         * the machine's endianness. */
        unsigned char pattern[8];
        uint64_t word;
        for (int j = 0; j < 8; j++) {
            pattern[j] = key[(i + j) & 3];
        }
        memcpy(&word, pattern, 8);

        /* Main loop: 32 bytes a step, as four independent words that gcc -O2 (SLP) and -O3
         * and clang turn into SSE/AVX code; then the last whole words one by one. All four
         * loads come before the stores, so dst == src needs no alias check. */
        for (; n - i >= 32; i += 32) {
            uint64_t a, b, c, d;
            memcpy(&a, src + i, 8);
            memcpy(&b, src + i + 8, 8);
            memcpy(&c, src + i + 16, 8);
            memcpy(&d, src + i + 24, 8);
            a ^= word;
            b ^= word;
            c ^= word;
            d ^= word;
            memcpy(dst + i, &a, 8);
            memcpy(dst + i + 8, &b, 8);
            memcpy(dst + i + 16, &c, 8);
            memcpy(dst + i + 24, &d, 8);
        }
        for (; n - i >= 8; i += 8) {
            uint64_t a;
            memcpy(&a, src + i, 8);
            a ^= word;
            memcpy(dst + i, &a, 8);
        }
    }
    /* Tail: the last 0-7 bytes. */
    for (; i < n; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

/* Copy the masking key out of `obj` into key[4]; -1 with TypeError/ValueError if it is not a
 * 4-byte buffer. */
static int
read_key(PyObject *obj, unsigned char key[4])
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyErr_Format(PyExc_ValueError, "expected a 4-byte masking key, got %zd bytes", view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(key, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, key, /)\n--\n\n"
"Mask or unmask ``data`` (any bytes-like object) with the 4-byte ``key`` and return the\n"
"result as a new ``bytes`` object (the operation is its own inverse).");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer data;
    PyObject *result;

    if (check_arg_count("apply_mask", nargs, 2, 2) < 0) {
        return NULL;
    }
    if (read_key(args[1], key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        if (data.len > GIL_RELEASE_THRESHOLD) {
            /* `data` stays exported and `result` is not shared yet. */
            Py_BEGIN_ALLOW_THREADS
            xor_with_key(out, data.buf, data.len, key);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_with_key(out, data.buf, data.len, key);
        }
    }
    PyBuffer_Release(&data);
    return result;
}

/* Read an optional offset argument: None (or absent) gives `fallback`; a negative one is an
 * error (the Python twin refuses it too); one past the end is clamped, as in a slice. */
static int
read_offset(PyObject *obj, Py_ssize_t fallback, Py_ssize_t length, Py_ssize_t *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = fallback;
        return 0;
    }
    Py_ssize_t value = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0) {
        PyErr_Format(PyExc_ValueError, "expected a non-negative offset, got %zd", value);
        return -1;
    }
    *out = value < length ? value : length;
    return 0;
}

PyDoc_STRVAR(unmask_in_place_doc,
"unmask_in_place(buffer, key, start=0, stop=None, /)\n--\n\n"
"XOR ``buffer[start:stop]`` with the repeated 4-byte ``key``, in place; the key starts at\n"
"``start``. ``buffer`` is any writable contiguous buffer (``bytearray``, a ``memoryview``\n"
"slice of one). Offsets past the end are clamped as in a slice; negative ones are refused.");

static PyObject *
unmask_in_place(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer buffer;
    Py_ssize_t start, stop;

    if (check_arg_count("unmask_in_place", nargs, 2, 4) < 0) {
        return NULL;
    }
    if (read_key(args[1], key) < 0) {
        return NULL;
    }
    /* PyBUF_WRITABLE refuses bytes and read-only views with BufferError. Holding the export
     * until PyBuffer_Release also forbids resizing a bytearray meanwhile. */
    if (PyObject_GetBuffer(args[0], &buffer, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (read_offset(nargs > 2 ? args[2] : NULL, 0, buffer.len, &start) < 0
        || read_offset(nargs > 3 ? args[3] : NULL, buffer.len, buffer.len, &stop) < 0) {
        PyBuffer_Release(&buffer);
        return NULL;
    }
    if (stop > start) {
        unsigned char *first = (unsigned char *)buffer.buf + start;
        if (stop - start > GIL_RELEASE_THRESHOLD) {
            Py_BEGIN_ALLOW_THREADS
            xor_with_key(first, first, stop - start, key);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_with_key(first, first, stop - start, key);
        }
    }
    PyBuffer_Release(&buffer);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------- UTF-8 */

/*
 * Strict UTF-8 (RFC 3629 §4) as a finite automaton: one table lookup per byte, and the state
 * carried from one call to the next. The states say what the next byte must be:
 */
enum {
    UTF8_ACCEPT = 0,  /* at a character boundary */
    UTF8_TAIL1 = 1,   /* one continuation byte (80..BF) left */
    UTF8_TAIL2 = 2,   /* two left */
    UTF8_TAIL3 = 3,   /* three left */
    UTF8_E0 = 4,      /* after E0: A0..BF (shorter forms are overlong) */
    UTF8_ED = 5,      /* after ED: 80..9F (A0..BF would encode a UTF-16 surrogate) */
    UTF8_F0 = 6,      /* after F0: 90..BF (shorter forms are overlong) */
    UTF8_F4 = 7,      /* after F4: 80..8F (anything higher is above U+10FFFF) */
    UTF8_REJECT = 8,  /* invalid, for good */
    UTF8_STATES = 9
};

/* Byte classes: bytes that every state treats alike. */
enum {
    C_ASCII,      /* 00..7F */
    C_CONT_LOW,   /* 80..8F */
    C_CONT_MID,   /* 90..9F */
    C_CONT_HIGH,  /* A0..BF */
    C_INVALID,    /* C0, C1 (overlong 2-byte forms), F5..FF (beyond U+10FFFF) */
    C_LEAD2,      /* C2..DF */
    C_E0,
    C_LEAD3,      /* E1..EC, EE, EF */
    C_ED,
    C_F0,
    C_LEAD4,      /* F1..F3 */
    C_F4,
    CLASSES
};

static unsigned char utf8_class[256];  /* filled by init_utf8_class() at import */

#define R UTF8_REJECT
static const unsigned char utf8_next[UTF8_STATES][CLASSES] = {
    /*             ASCII  80-8F  90-9F  A0-BF  inval  C2-DF  E0  E1-EF  ED  F0  F1-F3  F4 */
    [UTF8_ACCEPT] = {0,     R,     R,     R,     R,     1,     4,  2,     5,  6,  3,     7},
    [UTF8_TAIL1] =  {R,     0,     0,     0,     R,     R,     R,  R,     R,  R,  R,     R},
    [UTF8_TAIL2] =  {R,     1,     1,     1,     R,     R,     R,  R,     R,  R,  R,     R},
    [UTF8_TAIL3] =  {R,     2,     2,     2,     R,     R,     R,  R,     R,  R,  R,     R},
    [UTF8_E0] =     {R,     R,     R,     1,     R,     R,     R,  R,     R,  R,  R,     R},
    [UTF8_ED] =     {R,     1,     1,     R,     R,     R,     R,  R,     R,  R,  R,     R},
    [UTF8_F0] =     {R,     R,     2,     2,     R,     R,     R,  R,     R,  R,  R,     R},
    [UTF8_F4] =     {R,     2,     R,     R,     R,     R,     R,  R,     R,  R,  R,     R},
    [UTF8_REJECT] = {R,     R,     R,     R,     R,     R,     R,  R,     R,  R,  R,     R},
};
#undef R

static void
init_utf8_class(void)
{
    for (int b = 0; b < 256; b++) {
        unsigned char c;
        if (b < 0x80) c = C_ASCII;
        else if (b < 0x90) c = C_CONT_LOW;
        else if (b < 0xA0) c = C_CONT_MID;
        else if (b < 0xC0) c = C_CONT_HIGH;
        else if (b < 0xC2) c = C_INVALID;
        else if (b < 0xE0) c = C_LEAD2;
        else if (b == 0xE0) c = C_E0;
        else if (b == 0xED) c = C_ED;
        else if (b < 0xF0) c = C_LEAD3;
        else if (b == 0xF0) c = C_F0;
        else if (b < 0xF4) c = C_LEAD4;
        else if (b == 0xF4) c = C_F4;
        else c = C_INVALID;
        utf8_class[b] = c;
    }
}

/* Run the automaton over s[i:n] from `state`, stopping early at UTF8_REJECT. */
static int
utf8_automaton(const unsigned char *s, Py_ssize_t i, Py_ssize_t n, int state)
{
    for (; i < n && state != UTF8_REJECT; i++) {
        state = utf8_next[state][utf8_class[s[i]]];
    }
    return state;
}

/* Skip the ASCII bytes from s[i]: 32 bytes a step, then 8 (a byte >= 0x80 has its high bit
 * set); return the offset of the first byte that may not be ASCII (or of the last < 8). */
static Py_ssize_t
skip_ascii(const unsigned char *s, Py_ssize_t i, Py_ssize_t n)
{
    const uint64_t high_bits = 0x8080808080808080u;
    while (n - i >= 32) {
        uint64_t a, b, c, d;
        memcpy(&a, s + i, 8);
        memcpy(&b, s + i + 8, 8);
        memcpy(&c, s + i + 16, 8);
        memcpy(&d, s + i + 24, 8);
        if ((a | b | c | d) & high_bits) {
            break;
        }
        i += 32;
    }
    while (n - i >= 8) {
        uint64_t a;
        memcpy(&a, s + i, 8);
        if (a & high_bits) {
            break;
        }
        i += 8;
    }
    return i;
}

/* Whether b is a continuation byte (80..BF). */
#define IS_CONT(b) (((b) & 0xC0) == 0x80)

/*
 * Check s[0:n] as the continuation of a UTF-8 stream in `state`; return the state reached
 * (UTF8_REJECT as soon as a byte is impossible: the rest is not read).
 *
 * The automaton alone is correct but walks one dependent table lookup per byte (about 0.5 GB/s).
 * So it only finishes a character begun in an earlier piece and checks the last character when
 * the piece cuts it; in between, whole characters are checked with range comparisons on the
 * lead byte's known length, and runs of ASCII a word at a time.
 */
static int
utf8_scan(const unsigned char *s, Py_ssize_t n, int state)
{
    Py_ssize_t i = 0;

    /* A character begun in the previous piece: at most three more bytes. */
    while (i < n && state != UTF8_ACCEPT) {
        state = utf8_next[state][utf8_class[s[i]]];
        if (state == UTF8_REJECT) {
            return UTF8_REJECT;
        }
        i++;
    }
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i = skip_ascii(s, i + 1, n);
        }
        else if (b >= 0xC2 && b <= 0xDF) {
            if (n - i < 2) {
                break;
            }
            if (!IS_CONT(s[i + 1])) {
                return UTF8_REJECT;
            }
            i += 2;
        }
        else if (b >= 0xE0 && b <= 0xEF) {
            if (n - i < 3) {
                break;
            }
            /* RFC 3629: E0 needs A0..BF (no overlong forms), ED 80..9F (no surrogates). */
            unsigned char low = b == 0xE0 ? 0xA0 : 0x80, high = b == 0xED ? 0x9F : 0xBF;
            if (s[i + 1] < low || s[i + 1] > high || !IS_CONT(s[i + 2])) {
                return UTF8_REJECT;
            }
            i += 3;
        }
        else if (b >= 0xF0 && b <= 0xF4) {
            if (n - i < 4) {
                break;
            }
            /* F0 needs 90..BF (no overlong forms), F4 80..8F (nothing above U+10FFFF). */
            unsigned char low = b == 0xF0 ? 0x90 : 0x80, high = b == 0xF4 ? 0x8F : 0xBF;
            if (s[i + 1] < low || s[i + 1] > high || !IS_CONT(s[i + 2]) || !IS_CONT(s[i + 3])) {
                return UTF8_REJECT;
            }
            i += 4;
        }
        else {
            return UTF8_REJECT;  /* 80..C1 (a stray continuation, overlong), F5..FF */
        }
    }
    /* The last character, cut by the end of the piece (or nothing left): it may already be
     * impossible (E0 80...), which the automaton sees. */
    return utf8_automaton(s, i, n, state);
}

PyDoc_STRVAR(utf8_check_doc,
"utf8_check(data, state, /)\n--\n\n"
"Continue a strict UTF-8 check (RFC 3629: no overlong forms, no surrogates, nothing above\n"
"U+10FFFF) over the bytes-like ``data``, from ``state`` (0 to begin). Return the state to\n"
"pass with the next piece: 0 at a character boundary, 1 to 7 inside a character, or -1 as\n"
"soon as the bytes seen so far cannot begin valid UTF-8 (-1 stays -1).");

static PyObject *
utf8_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;

    if (check_arg_count("utf8_check", nargs, 2, 2) < 0) {
        return NULL;
    }
    long state = PyLong_AsLong(args[1]);
    if (state == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (state == -1) {
        return PyLong_FromLong(-1);
    }
    if (state < 0 || state >= UTF8_REJECT) {
        PyErr_Format(PyExc_ValueError, "expected a state from -1 to %d, got %ld",
                     UTF8_REJECT - 1, state);
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int result;
    if (data.len > GIL_RELEASE_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        result = utf8_scan(data.buf, data.len, (int)state);
        Py_END_ALLOW_THREADS
    }
    else {
        result = utf8_scan(data.buf, data.len, (int)state);
    }
    PyBuffer_Release(&data);
    return PyLong_FromLong(result == UTF8_REJECT ? -1 : result);
}

/* ---------------------------------------------------------------------- UTF-8 length */

PyDoc_STRVAR(utf8_size_doc,
"utf8_size(text, /)\n--\n\n"
"Return ``len(text.encode())`` without encoding: the UTF-8 length of a ``str``, counted from\n"
"its code points. A lone surrogate raises UnicodeEncodeError, as ``encode`` does.");

static PyObject *
utf8_size(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_arg_count("utf8_size", nargs, 1, 1) < 0) {
        return NULL;
    }
    PyObject *text = args[0];
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "utf8_size takes a str, got %.200s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_IS_ASCII(text)) {
        return PyLong_FromSsize_t(length);
    }
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t size = length;  /* one byte per code point, plus the extra bytes below */
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *chars = data;
        for (Py_ssize_t i = 0; i < length; i++) {
            size += chars[i] >> 7;  /* 80..FF: two bytes */
        }
        return PyLong_FromSsize_t(size);
    }
    int surrogate = 0;
    if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *chars = data;
        for (Py_ssize_t i = 0; i < length; i++) {
            Py_UCS2 c = chars[i];
            size += (c >= 0x80) + (c >= 0x800);
            surrogate |= (c & 0xF800) == 0xD800;
        }
    }
    else {
        const Py_UCS4 *chars = data;
        for (Py_ssize_t i = 0; i < length; i++) {
            Py_UCS4 c = chars[i];
            size += (c >= 0x80) + (c >= 0x800) + (c >= 0x10000);
            surrogate |= (c & 0xFFFFF800) == 0xD800;
        }
    }
    if (surrogate) {
        /* Not encodable: let the codec raise its usual error. */
        PyObject *encoded = PyUnicode_AsUTF8String(text);
        if (encoded == NULL) {
            return NULL;
        }
        size = PyBytes_GET_SIZE(encoded);
        Py_DECREF(encoded);
    }
    return PyLong_FromSsize_t(size);
}


/* ------------------------------------------------------------------- payload buffer */

/*
 * PayloadBuffer: a bytes object filled in place, so that a large frame's payload is read by the
 * transport straight into the bytes the application receives (no copy from a receive buffer,
 * none at the end). It holds the only reference to its bytes object until take(): before that,
 * nobody can observe the bytes changing. The buffer protocol exports the bytes' storage,
 * writable; resize() (a realloc, free of copying for large blocks) is refused while a view is
 * exported, take() is not: a view still held then (a transport's local variable, about to be
 * dropped) keeps the storage alive, and no new view is given out.
 */
typedef struct {
    PyObject_HEAD
    PyObject *bytes;      /* the bytes object being filled (never NULL after __new__) */
    Py_ssize_t exports;   /* views given out and not yet released */
    int taken;            /* take() was called: the bytes belong to someone else now */
} PayloadBufferObject;

static PyObject *
payload_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t size;
    static char *keywords[] = {"size", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:PayloadBuffer", keywords, &size)) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "PayloadBuffer size must be >= 0");
        return NULL;
    }
    PayloadBufferObject *self = (PayloadBufferObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    /* Uninitialised storage: every byte is written before take() hands it out. */
    self->bytes = PyBytes_FromStringAndSize(NULL, size);
    if (self->bytes == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->exports = 0;
    self->taken = 0;
    return (PyObject *)self;
}

static void
payload_dealloc(PayloadBufferObject *self)
{
    Py_XDECREF(self->bytes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
payload_getbuffer(PayloadBufferObject *self, Py_buffer *view, int flags)
{
    if (self->taken) {
        PyErr_SetString(PyExc_BufferError, "the PayloadBuffer's bytes were taken");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(self->bytes),
                          PyBytes_GET_SIZE(self->bytes), 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
payload_releasebuffer(PayloadBufferObject *self, Py_buffer *view)
{
    self->exports--;
}

static PyBufferProcs payload_as_buffer = {
    (getbufferproc)payload_getbuffer,
    (releasebufferproc)payload_releasebuffer,
};

static Py_ssize_t
payload_length(PayloadBufferObject *self)
{
    return PyBytes_GET_SIZE(self->bytes);
}

static PySequenceMethods payload_as_sequence = {
    .sq_length = (lenfunc)payload_length,
};

PyDoc_STRVAR(payload_resize_doc,
"resize(size, /)\n--\n\n"
"Change the size, keeping the bytes before it (BufferError while a view is exported or after\n"
"take()).");

static PyObject *
payload_resize(PayloadBufferObject *self, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "PayloadBuffer size must be >= 0");
        return NULL;
    }
    if (self->taken || self->exports > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "cannot resize a PayloadBuffer that is exported or taken");
        return NULL;
    }
    /* We hold the only reference (never shared before take()), which _PyBytes_Resize needs. */
    if (_PyBytes_Resize(&self->bytes, size) < 0) {
        self->bytes = PyBytes_FromStringAndSize(NULL, 0);  /* keep the invariant: never NULL */
        if (self->bytes == NULL) {
            return NULL;
        }
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(payload_take_doc,
"take(/)\n--\n\n"
"Return the filled bytes object; the PayloadBuffer exports no more views after it.");

static PyObject *
payload_take(PayloadBufferObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->taken) {
        PyErr_SetString(PyExc_BufferError, "the PayloadBuffer's bytes were taken already");
        return NULL;
    }
    self->taken = 1;
    return Py_NewRef(self->bytes);
}

static PyMethodDef payload_methods[] = {
    {"resize", (PyCFunction)payload_resize, METH_O, payload_resize_doc},
    {"take", (PyCFunction)payload_take, METH_NOARGS, payload_take_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(payload_doc,
"PayloadBuffer(size)\n--\n\n"
"A ``bytes`` object of ``size`` bytes filled in place through the buffer protocol (writable),\n"
"then handed out once by :meth:`take`: a large frame's payload is read straight into the\n"
"bytes that the application receives.");

static PyTypeObject PayloadBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tube.websocket.core._speedups.PayloadBuffer",
    .tp_basicsize = sizeof(PayloadBufferObject),
    .tp_dealloc = (destructor)payload_dealloc,
    .tp_as_sequence = &payload_as_sequence,
    .tp_as_buffer = &payload_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = payload_doc,
    .tp_methods = payload_methods,
    .tp_new = payload_new,
};

/* ------------------------------------------------------------------------- frame parsing */

PyDoc_STRVAR(parse_messages_doc,
"parse_messages(data, start, end, masked, limit, events, binary, text, /)\n--\n\n"
"Parse the complete single-frame data messages at ``data[start:end]``: frames with FIN set,\n"
"RSV1-3 clear, opcode 0x1 or 0x2, the mask bit equal to ``masked`` (0x80 or 0) and a payload\n"
"of at most ``limit`` bytes (-1: no limit). Append ``binary(payload)`` (bytes, unmasked) or\n"
"``text(payload)`` (str) to the list ``events`` for each; return the offset of the first\n"
"frame left, which is incomplete or is any other kind (a control frame, a fragment, RSV set,\n"
"a wrong mask bit, too long, a text payload that is not UTF-8): the caller's general parser\n"
"takes it from there and reports what is wrong with it.");

static PyObject *
parse_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    Py_ssize_t position, end, limit;
    long masked;
    PyObject *events, *binary, *text;

    if (check_arg_count("parse_messages", nargs, 8, 8) < 0) {
        return NULL;
    }
    position = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (position == -1 && PyErr_Occurred()) {
        return NULL;
    }
    end = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    masked = PyLong_AsLong(args[3]);
    if (masked == -1 && PyErr_Occurred()) {
        return NULL;
    }
    limit = PyNumber_AsSsize_t(args[4], PyExc_OverflowError);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    events = args[5];
    binary = args[6];
    text = args[7];
    if (!PyList_Check(events)) {
        PyErr_Format(PyExc_TypeError, "events must be a list, not %.100s",
                     Py_TYPE(events)->tp_name);
        return NULL;
    }
    if (masked != 0 && masked != 0x80) {
        PyErr_Format(PyExc_ValueError, "masked must be 0x80 or 0, got %ld", masked);
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (position < 0 || end < position || end > data.len) {
        PyErr_Format(PyExc_ValueError, "expected 0 <= start <= end <= %zd, got %zd and %zd",
                     data.len, position, end);
        PyBuffer_Release(&data);
        return NULL;
    }
    const unsigned char *buf = data.buf;
    const Py_ssize_t header_mask = masked ? 4 : 0;

    for (;;) {
        Py_ssize_t available = end - position;
        if (available < 2) {
            break;
        }
        unsigned char first = buf[position];
        unsigned char second = buf[position + 1];
        /* FIN, no RSV bit, TEXT or BINARY; the mask bit as required. Anything else is the
         * general parser's (it raises the errors, with their messages). */
        if ((first != 0x81 && first != 0x82) || (second & 0x80) != masked) {
            break;
        }
        uint64_t length = second & 0x7F;
        Py_ssize_t header = 2;
        if (length == 126) {
            if (available < 4) {
                break;
            }
            length = ((uint64_t)buf[position + 2] << 8) | buf[position + 3];
            header = 4;
        }
        else if (length == 127) {
            if (available < 10) {
                break;
            }
            length = 0;
            for (int j = 2; j < 10; j++) {
                length = (length << 8) | buf[position + j];
            }
            header = 10;
            if (length >> 62) {  /* MSB set (refused there) or beyond any buffer */
                break;
            }
        }
        if (limit >= 0 && length > (uint64_t)limit) {
            break;
        }
        header += header_mask;
        if (available < header || (uint64_t)(available - header) < length) {
            break;  /* incomplete */
        }
        Py_ssize_t size = (Py_ssize_t)length;
        const unsigned char *payload = buf + position + header;
        PyObject *bytes = PyBytes_FromStringAndSize(masked ? NULL : (const char *)payload, size);
        if (bytes == NULL) {
            PyBuffer_Release(&data);
            return NULL;
        }
        if (masked) {
            unsigned char key[4];
            unsigned char *out = (unsigned char *)PyBytes_AS_STRING(bytes);
            memcpy(key, payload - 4, 4);
            if (size > GIL_RELEASE_THRESHOLD) {
                /* `data` stays exported and `bytes` is not shared yet. */
                Py_BEGIN_ALLOW_THREADS
                xor_with_key(out, payload, size, key);
                Py_END_ALLOW_THREADS
            }
            else {
                xor_with_key(out, payload, size, key);
            }
        }
        PyObject *message;
        if (first == 0x82) {
            message = PyObject_CallOneArg(binary, bytes);
            Py_DECREF(bytes);
        }
        else {
            PyObject *string = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(bytes), size, "strict");
            Py_DECREF(bytes);
            if (string == NULL) {
                if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    PyErr_Clear();  /* the general parser refuses it, with close code 1007 */
                    break;
                }
                PyBuffer_Release(&data);
                return NULL;
            }
            message = PyObject_CallOneArg(text, string);
            Py_DECREF(string);
        }
        if (message == NULL || PyList_Append(events, message) < 0) {
            Py_XDECREF(message);
            PyBuffer_Release(&data);
            return NULL;
        }
        Py_DECREF(message);
        position += header + size;
    }
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(position);
}

/* ------------------------------------------------------------------------------- module */

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {"unmask_in_place", (PyCFunction)(void (*)(void))unmask_in_place, METH_FASTCALL,
     unmask_in_place_doc},
    {"utf8_check", (PyCFunction)(void (*)(void))utf8_check, METH_FASTCALL, utf8_check_doc},
    {"utf8_size", (PyCFunction)(void (*)(void))utf8_size, METH_FASTCALL, utf8_size_doc},
    {"parse_messages", (PyCFunction)(void (*)(void))parse_messages, METH_FASTCALL,
     parse_messages_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *module)
{
    if (PyType_Ready(&PayloadBufferType) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "PayloadBuffer", (PyObject *)&PayloadBufferType);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tube.websocket.core._speedups",
    .m_doc = "Optional C accelerator of Tube's core: masking, UTF-8 validation and length, "
             "payload buffers, whole data messages parsed.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_utf8_class();
    return PyModuleDef_Init(&speedups_module);
}
