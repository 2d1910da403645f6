/* Content signatures: a small JSON reader for the JWKS and the JWS header,
 * the signed content of docs/protocol.md section 6, Ed25519 (libsodium) and
 * ES256 (mbedTLS). */
#include <stdint.h>
#include <string.h>
#include <sodium.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/sha256.h>
#include "jws.h"

#define MAX_KEYS 8

struct key {
    char kid[128];
    int ec;                /* 0: Ed25519, 1: P-256 */
    unsigned char pub[65]; /* Ed25519: 32 bytes; P-256: 0x04 || x || y */
};
static struct key keys[MAX_KEYS];
static int nkeys;

/* ---- a minimal JSON reader: enough for objects of string members ---- */

static const char *ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Reads a JSON string at p into out (NUL-terminated; escapes \" \\ \/ only,
 * which is all base64url values and ids need). Returns the char after it. */
static const char *str(const char *p, char *out, size_t cap) {
    size_t n = 0;
    if (*p != '"') return NULL;
    for (p++; *p != '"'; p++) {
        char c = *p;
        if (c == '\0') return NULL;
        if (c == '\\') {
            c = *++p;
            if (c != '"' && c != '\\' && c != '/') return NULL;
        }
        if (out != NULL) {
            if (n + 1 >= cap) return NULL;
            out[n++] = c;
        }
    }
    if (out != NULL) out[n] = '\0';
    return p + 1;
}

/* Skips any JSON value. */
static const char *skip(const char *p) {
    p = ws(p);
    if (*p == '"') return str(p, NULL, 0);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                if ((p = str(ws(p), NULL, 0)) == NULL) return NULL;
                p = ws(p);
                if (*p++ != ':') return NULL;
            }
            if ((p = skip(p)) == NULL) return NULL;
            p = ws(p);
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
        }
    }
    while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' || *p == 'E') p++;
    return p;
}

/* Calls member(name, value position) for each member of the object at p;
 * returns the char after the object, or NULL when malformed. */
typedef const char *(*member_fn)(const char *name, const char *value, void *ctx);
static const char *object(const char *p, member_fn member, void *ctx) {
    char name[32];
    p = ws(p);
    if (*p++ != '{') return NULL;
    p = ws(p);
    if (*p == '}') return p + 1;
    for (;;) {
        if ((p = str(ws(p), name, sizeof name)) == NULL) return NULL;
        p = ws(p);
        if (*p++ != ':') return NULL;
        if ((p = member(name, ws(p), ctx)) == NULL) return NULL;
        p = ws(p);
        if (*p == '}') return p + 1;
        if (*p++ != ',') return NULL;
    }
}

/* One JWK's members: kty, crv, kid, x, y. */
struct jwk { char kty[8], crv[16], kid[128], x[64], y[64]; };
static const char *jwk_member(const char *name, const char *v, void *ctx) {
    struct jwk *k = ctx;
    char *out = NULL;
    size_t cap = 0;
    if (strcmp(name, "kty") == 0) out = k->kty, cap = sizeof k->kty;
    else if (strcmp(name, "crv") == 0) out = k->crv, cap = sizeof k->crv;
    else if (strcmp(name, "kid") == 0) out = k->kid, cap = sizeof k->kid;
    else if (strcmp(name, "x") == 0) out = k->x, cap = sizeof k->x;
    else if (strcmp(name, "y") == 0) out = k->y, cap = sizeof k->y;
    if (out == NULL || *v != '"') return skip(v);
    return str(v, out, cap);
}

static int b64url(const char *in, size_t inlen, unsigned char *out, size_t cap, size_t *outlen) {
    return sodium_base642bin(out, cap, in, inlen, NULL, outlen, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static void add_key(const struct jwk *k) {
    struct key *d = &keys[nkeys];
    size_t n = 0, m = 0;
    if (nkeys >= MAX_KEYS || k->kid[0] == '\0') return;
    if (strcmp(k->kty, "OKP") == 0 && strcmp(k->crv, "Ed25519") == 0) {
        if (b64url(k->x, strlen(k->x), d->pub, 32, &n) != 0 || n != 32) return;
        d->ec = 0;
    } else if (strcmp(k->kty, "EC") == 0 && strcmp(k->crv, "P-256") == 0) {
        d->pub[0] = 0x04;
        if (b64url(k->x, strlen(k->x), d->pub + 1, 32, &n) != 0 || n != 32) return;
        if (b64url(k->y, strlen(k->y), d->pub + 33, 32, &m) != 0 || m != 32) return;
        d->ec = 1;
    } else {
        return; /* a key type this device does not use */
    }
    strcpy(d->kid, k->kid);
    nkeys++;
}

static const char *keys_member(const char *name, const char *v, void *ctx) {
    (void)ctx;
    if (strcmp(name, "keys") != 0) return skip(v);
    if (*v++ != '[') return NULL;
    v = ws(v);
    if (*v == ']') return v + 1;
    for (;;) {
        struct jwk k = {{0}};
        if ((v = object(v, jwk_member, &k)) == NULL) return NULL;
        add_key(&k);
        v = ws(v);
        if (*v == ']') return v + 1;
        if (*v++ != ',') return NULL;
    }
}

int jwks_load(const char *jwks) {
    int before = nkeys;
    nkeys = 0;
    if (object(jwks, keys_member, NULL) == NULL) {
        nkeys = before; /* keep the keys we had */
        return -1;
    }
    return nkeys;
}

/* ---- the signed content (section 6) ---- */

static unsigned char *put32(unsigned char *o, uint32_t v) {
    o[0] = v >> 24; o[1] = v >> 16; o[2] = v >> 8; o[3] = v;
    return o + 4;
}
static unsigned char *put64(unsigned char *o, uint64_t v) {
    return put32(put32(o, (uint32_t)(v >> 32)), (uint32_t)v);
}
static unsigned char *putbytes(unsigned char *o, const void *b, size_t n) {
    o = put32(o, (uint32_t)n);
    memcpy(o, b, n);
    return o + n;
}
#define PUTSTR(o, s) putbytes((o), (s), strlen(s))

/* Each field of a decoded Push is at most 1200 bytes (frame.options): the
 * content is below 10 KiB. */
static size_t signed_content(const dtlspush_v1_Push *p, unsigned char *out) {
    unsigned char *o = out;
    o = PUTSTR(o, "dtlspush-content-v1");
    o = PUTSTR(o, p->message_id);
    o = PUTSTR(o, p->topic);
    o = PUTSTR(o, p->device);
    o = PUTSTR(o, p->content_type);
    o = PUTSTR(o, p->publisher);
    o = PUTSTR(o, p->collapse_key);
    o = putbytes(o, p->payload.bytes, p->payload.size);
    o = put64(o, p->created_at);
    o = put64(o, p->expires_at);
    o = put32(o, p->priority);
    return (size_t)(o - out);
}

struct header { char alg[16], kid[128]; int other; };
static const char *header_member(const char *name, const char *v, void *ctx) {
    struct header *h = ctx;
    if (strcmp(name, "alg") == 0) return str(v, h->alg, sizeof h->alg);
    if (strcmp(name, "kid") == 0) return str(v, h->kid, sizeof h->kid);
    h->other = 1;
    return skip(v);
}

static int es256_verify(const unsigned char pub[65], const unsigned char *msg, size_t len, const unsigned char sig[64]) {
    mbedtls_ecp_group grp;
    mbedtls_ecp_point q;
    mbedtls_mpi r, s;
    unsigned char hash[32];
    int ok;
    mbedtls_ecp_group_init(&grp);
    mbedtls_ecp_point_init(&q);
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    ok = mbedtls_sha256_ret(msg, len, hash, 0) == 0 && mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1) == 0 &&
         mbedtls_ecp_point_read_binary(&grp, &q, pub, 65) == 0 && mbedtls_mpi_read_binary(&r, sig, 32) == 0 &&
         mbedtls_mpi_read_binary(&s, sig + 32, 32) == 0 && mbedtls_ecdsa_verify(&grp, hash, 32, &q, &r, &s) == 0;
    mbedtls_ecp_group_free(&grp);
    mbedtls_ecp_point_free(&q);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    return ok;
}

enum verdict jws_verify_push(const dtlspush_v1_Push *p, const char **why) {
    static unsigned char content[10240];
    static char input[16384];
    char json[512];
    unsigned char sig[64];
    struct header h = {{0}};
    const char *sep = strstr(p->signature, ".."), *end;
    size_t hlen, slen, n, clen;
    const struct key *k = NULL;
    int i;

    /* 1. header ".." signature, both non-empty, nothing else */
    if (sep == NULL || sep == p->signature || sep[2] == '\0' || strchr(sep + 2, '.') != NULL) {
        *why = "malformed signature";
        return SIG_BAD;
    }
    hlen = (size_t)(sep - p->signature);
    slen = strlen(sep + 2);
    /* 2. the header: alg EdDSA or ES256, a kid of the JWKS, a key fitting the alg */
    if (b64url(p->signature, hlen, (unsigned char *)json, sizeof json - 1, &n) != 0) {
        *why = "malformed header";
        return SIG_BAD;
    }
    json[n] = '\0';
    end = object(json, header_member, &h);
    if (end == NULL || *ws(end) != '\0') {
        *why = "malformed header";
        return SIG_BAD;
    }
    if (strcmp(h.alg, "EdDSA") != 0 && strcmp(h.alg, "ES256") != 0) {
        *why = "alg not EdDSA or ES256";
        return SIG_BAD;
    }
    if (h.other) {
        *why = "header has other members";
        return SIG_BAD;
    }
    for (i = 0; i < nkeys; i++)
        if (strcmp(keys[i].kid, h.kid) == 0) k = &keys[i];
    if (k == NULL) {
        *why = "unknown kid";
        return SIG_UNKNOWN_KID;
    }
    if (k->ec != (strcmp(h.alg, "ES256") == 0)) {
        *why = "key type does not fit alg";
        return SIG_BAD;
    }
    if (b64url(sep + 2, slen, sig, sizeof sig, &n) != 0 || n != 64) {
        *why = "malformed signature value";
        return SIG_BAD;
    }
    /* 3. signing input: header part as received "." BASE64URL(signed content) */
    clen = signed_content(p, content);
    memcpy(input, p->signature, hlen);
    input[hlen] = '.';
    sodium_bin2base64(input + hlen + 1, sizeof input - hlen - 1, content, clen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    n = strlen(input);
    /* 4. verify */
    if (k->ec ? !es256_verify(k->pub, (unsigned char *)input, n, sig)
              : crypto_sign_verify_detached(sig, (unsigned char *)input, n, k->pub) != 0) {
        *why = "signature does not verify";
        return SIG_BAD;
    }
    *why = "";
    return SIG_OK;
}
