/*
 * dtlspush-device: a dtlspush device in C99, written from docs/protocol.md and
 * docs/delivery.md. DTLS 1.2 on mbedTLS (PSK with TLS_PSK_WITH_AES_128_CCM_8,
 * or a certificate with ECDHE-ECDSA), frames by nanopb, content signatures
 * checked with libsodium (Ed25519) or mbedTLS (ES256).
 *
 *   dtlspush-device --server HOST:PORT --device ID (--psk HEX | --cert FILE --key FILE --ca FILE)
 *                   [--state FILE] [--count N]
 *
 * Each verified push payload goes to standard output on a line of its own;
 * status goes to standard error. Exits 0 after --count payloads (or on
 * SIGINT/SIGTERM), 1 on a fatal error, 2 on a usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/asn1.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/timing.h>
#include <mbedtls/x509_crt.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include <sodium.h>

#include "dtlspush/v1/frame.pb.h"
#include "jws.h"

#define MTU 1200          /* UDP payload, the server's default (protocol.md section 1) */
#define HELD_MAX 64       /* pushes held above the high-water mark (>= Welcome.limits.window) */
#define REJECTED_MAX 64   /* refused seqs repeated in every Ack (delivery.md section 4) */
#define RECORD_MAX 16384  /* a DTLS record's largest plaintext: read whole records */
#define READ_TICK_MS 20   /* the loop wakes at least this often for its timers */

enum outcome { GO_ON, RECONNECT, DONE, FATAL };

/* ---- options ---- */
static struct {
    const char *host, *port, *device, *cert, *key, *ca, *state;
    unsigned char psk[64];
    size_t psk_len;
    long count;
} opt;

/* ---- persisted state: the high-water mark and the session token ---- */
static uint64_t hwm;
static char token[1200];

/* ---- session ---- */
static struct {
    int welcomed;          /* a Welcome arrived on this DTLS session */
    int hello_pending;     /* a Hello is unanswered: repeat it */
    uint64_t hello_at, hello_delay;
    uint64_t last_sent, last_heard, heartbeat_ms;
    uint64_t refresh_at;   /* wall clock: refresh the token then */
    int64_t offset;        /* server clock - our wall clock, ms */
    int seq_reset;         /* SEQ_AHEAD handled once on this session */
    uint64_t kid_refresh;  /* the seq for which a Hello refreshed the JWKS */
    int ack_due;
} s;

static struct { uint64_t seq; size_t len; unsigned char raw[MTU]; } held[HELD_MAX];
static int held_n;
static uint64_t rejected[REJECTED_MAX];
static int rejected_n;
static long printed;
static struct { long received, duplicates, refused, tombstones, reconnects; } stats;
static volatile sig_atomic_t stop;

static mbedtls_ssl_context ssl;
static mbedtls_ssl_config conf;
static mbedtls_net_context net;
static mbedtls_timing_delay_context timer;
static mbedtls_ctr_drbg_context drbg;
static mbedtls_entropy_context entropy;
static mbedtls_x509_crt cacert, clicert;
static mbedtls_pk_context pkey;

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("dtlspush-device: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint64_t clock_ms(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}
static uint64_t now(void) { return clock_ms(CLOCK_MONOTONIC); }
static uint64_t wall(void) { return clock_ms(CLOCK_REALTIME); }
static uint64_t jitter(uint64_t ms) { return ms * (80 + randombytes_uniform(41)) / 100; } /* +-20% */

static void sleep_ms(uint64_t ms) {
    struct timespec t = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (!stop && nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

/* ---- the state file: "seq N\ntoken T\n", replaced atomically ---- */

static void save_state(void) {
    char tmp[4096];
    FILE *f;
    if (opt.state == NULL) return;
    snprintf(tmp, sizeof tmp, "%s.tmp", opt.state);
    f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "seq %llu\ntoken %s\n", (unsigned long long)hwm, token) < 0 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, opt.state) != 0) {
        say("cannot write the state file %s: %s", opt.state, strerror(errno));
        exit(1); /* acking what we cannot remember would lose messages */
    }
}

static void load_state(void) {
    unsigned long long seq = 0;
    FILE *f;
    if (opt.state == NULL || (f = fopen(opt.state, "r")) == NULL) return;
    if (fscanf(f, "seq %llu\ntoken ", &seq) != 1) {
        say("state file %s is not readable: starting from seq 0", opt.state);
    } else {
        hwm = seq;
        if (fgets(token, sizeof token, f) == NULL) token[0] = '\0';
        token[strcspn(token, "\n")] = '\0';
    }
    fclose(f);
}

/* ---- frames ---- */

static int send_frame(dtlspush_v1_Frame *f) {
    unsigned char buf[MTU];
    pb_ostream_t os = pb_ostream_from_buffer(buf, sizeof buf);
    int r;
    if (!pb_encode(&os, dtlspush_v1_Frame_fields, f)) {
        say("cannot encode a frame: %s", PB_GET_ERROR(&os));
        return -1;
    }
    do r = mbedtls_ssl_write(&ssl, buf, os.bytes_written);
    while (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE);
    s.last_sent = now();
    return r < 0 ? -1 : 0;
}

static void send_hello(void) {
    dtlspush_v1_Frame f = dtlspush_v1_Frame_init_zero;
    f.which_body = dtlspush_v1_Frame_hello_tag;
    f.body.hello.version = 1;
    f.body.hello.received_seq = hwm;
    strcpy(f.body.hello.session_token, token);
    strcpy(f.body.hello.client, "dtlspush-c-device/1");
    send_frame(&f);
    s.hello_pending = 1;
    s.hello_at = now() + s.hello_delay;
}

static int cmp_seq(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Ack: cumulative = hwm, the held seqs as runs, the last refused seqs. */
static void send_ack(void) {
    dtlspush_v1_Frame f = dtlspush_v1_Frame_init_zero;
    dtlspush_v1_Ack *a = &f.body.ack;
    uint64_t seqs[HELD_MAX];
    int i;
    f.which_body = dtlspush_v1_Frame_ack_tag;
    a->cumulative = hwm;
    for (i = 0; i < held_n; i++) seqs[i] = held[i].seq;
    qsort(seqs, (size_t)held_n, sizeof seqs[0], cmp_seq);
    for (i = 0; i < held_n; i++) {
        if (a->ranges_count > 0 && a->ranges[a->ranges_count - 1].last + 1 == seqs[i]) {
            a->ranges[a->ranges_count - 1].last = seqs[i];
        } else {
            a->ranges[a->ranges_count].first = a->ranges[a->ranges_count].last = seqs[i];
            a->ranges_count++;
        }
    }
    for (i = 0; i < rejected_n; i++) a->rejected[a->rejected_count++] = rejected[i];
    send_frame(&f);
    s.ack_due = 0;
}

static void send_bye(void) {
    dtlspush_v1_Frame f = dtlspush_v1_Frame_init_zero;
    f.which_body = dtlspush_v1_Frame_bye_tag;
    send_frame(&f);
    mbedtls_ssl_close_notify(&ssl);
}

static int decode(const unsigned char *buf, size_t len, dtlspush_v1_Frame *f) {
    pb_istream_t is = pb_istream_from_buffer(buf, len);
    *f = (dtlspush_v1_Frame)dtlspush_v1_Frame_init_zero;
    if (pb_decode(&is, dtlspush_v1_Frame_fields, f)) return 0;
    say("dropped an undecodable frame (%zu bytes): %s", len, PB_GET_ERROR(&is));
    return -1;
}

/* ---- receiving pushes (protocol.md section 3.3) ---- */

static int held_find(uint64_t seq) {
    int i;
    for (i = 0; i < held_n; i++)
        if (held[i].seq == seq) return i;
    return -1;
}

static void held_remove(int i) { held[i] = held[--held_n]; }

static void refuse(uint64_t seq, const char *why) {
    if (rejected_n == REJECTED_MAX) memmove(rejected, rejected + 1, sizeof rejected[0] * (REJECTED_MAX - 1)), rejected_n--;
    rejected[rejected_n++] = seq;
    stats.refused++;
    say("refused push seq=%llu: %s", (unsigned long long)seq, why);
}

/* Hands on the held pushes that continue the high-water mark, in order. */
static enum outcome deliver(void) {
    static dtlspush_v1_Frame f;
    int i;
    while ((i = held_find(hwm + 1)) >= 0) {
        dtlspush_v1_Push *p = &f.body.push;
        const char *why = "";
        decode(held[i].raw, held[i].len, &f); /* decoded once already when it arrived */
        if (p->expired) {
            stats.tombstones++;
        } else if (p->expires_at != 0 && p->expires_at <= (uint64_t)((int64_t)wall() + s.offset)) {
            refuse(p->seq, "expired");
        } else {
            enum verdict v = jws_verify_push(p, &why);
            if (v == SIG_UNKNOWN_KID && (s.kid_refresh != p->seq || s.hello_pending)) {
                /* maybe a key rotated in after our Welcome: hold it (no ack), refresh the
                 * JWKS with a Hello, check it again when the Welcome has come */
                if (s.kid_refresh != p->seq) {
                    say("push seq=%llu: unknown kid, refreshing the key set", (unsigned long long)p->seq);
                    s.kid_refresh = p->seq;
                    send_hello();
                }
                return GO_ON;
            }
            if (v != SIG_OK) {
                refuse(p->seq, why);
            } else {
                fwrite(p->payload.bytes, 1, p->payload.size, stdout);
                fputc('\n', stdout);
                fflush(stdout);
                printed++;
            }
        }
        held_remove(i);
        hwm++;
        save_state(); /* after the application took it, before the Ack says so */
        s.ack_due = 1;
        if (opt.count > 0 && printed >= opt.count) return DONE;
    }
    return GO_ON;
}

static enum outcome on_push(const unsigned char *raw, size_t len, const dtlspush_v1_Push *p) {
    if (!s.welcomed || p->seq == 0) return GO_ON; /* before the Welcome: the server sends it again */
    stats.received++;
    s.ack_due = 1;
    if (p->seq <= hwm || held_find(p->seq) >= 0) {
        stats.duplicates++;
        return GO_ON;
    }
    if (held_n == HELD_MAX || len > MTU) return GO_ON; /* cannot hold it: no ack, it comes again */
    held[held_n].seq = p->seq;
    held[held_n].len = len;
    memcpy(held[held_n].raw, raw, len);
    held_n++;
    return deliver();
}

static enum outcome on_welcome(const dtlspush_v1_Welcome *w) {
    int n = jwks_load(w->jwks);
    if (n < 0) say("Welcome.jwks is malformed: keeping the previous keys");
    s.welcomed = 1;
    s.hello_pending = 0;
    s.hello_delay = 1000;
    s.heartbeat_ms = w->heartbeat_interval_ms > 0 ? w->heartbeat_interval_ms : 30000;
    s.offset = (int64_t)w->server_time - (int64_t)wall();
    strcpy(token, w->session_token);
    /* refresh the token at 2/3 of its remaining lifetime */
    s.refresh_at = w->token_expires_at > w->server_time ? wall() + (w->token_expires_at - w->server_time) * 2 / 3 : 0;
    if (w->acked_seq > hwm) { /* our state is older than the server's: those seqs will not come again */
        int i;
        hwm = w->acked_seq;
        for (i = held_n - 1; i >= 0; i--)
            if (held[i].seq <= hwm) held_remove(i);
    }
    save_state();
    say("welcome device=%s resumed=%d acked_seq=%llu hwm=%llu heartbeat=%lums keys=%d window=%lu", w->device_id, (int)w->resumed,
        (unsigned long long)w->acked_seq, (unsigned long long)hwm, (unsigned long)s.heartbeat_ms, n,
        (unsigned long)w->limits.window);
    s.ack_due = 1;
    return deliver();
}

static enum outcome on_error(const dtlspush_v1_Error *e) {
    switch (e->code) {
    case dtlspush_v1_ErrorCode_TOKEN_INVALID:
    case dtlspush_v1_ErrorCode_TOKEN_EXPIRED:
    case dtlspush_v1_ErrorCode_TOKEN_IDENTITY_MISMATCH:
        say("token refused (%d: %s): Hello without a token", (int)e->code, e->message);
        if (token[0] != '\0') {
            token[0] = '\0';
            save_state();
            send_hello();
        }
        break;
    case dtlspush_v1_ErrorCode_SEQ_AHEAD:
        if (s.seq_reset) { /* a repeat of the refused Hello was answered too: ignore */
            say("SEQ_AHEAD again (%s): ignored, the reset is done", e->message);
            break;
        }
        say("SEQ_AHEAD (%s): resetting the high-water mark to 0", e->message);
        s.seq_reset = 1;
        hwm = 0;
        save_state(); /* before anything else */
        held_n = rejected_n = 0;
        send_hello();
        break;
    case dtlspush_v1_ErrorCode_HELLO_REQUIRED:
        say("server asks for Hello");
        s.welcomed = 0;
        if (!s.hello_pending) send_hello();
        break;
    default:
        say("server error %d: %s", (int)e->code, e->message);
    }
    return GO_ON;
}

/* ---- one DTLS session ---- */

/* The server certificate must name the host we connect to. mbedTLS 2.28
 * matches only DNS names, so an IP address given as HOST (--server
 * 127.0.0.1:5684) is checked here against the certificate's IP address
 * subjectAltNames. */
static int host_is_ip(unsigned char ip[16], size_t *len) {
    if (inet_pton(AF_INET, opt.host, ip) == 1) return *len = 4, 1;
    if (inet_pton(AF_INET6, opt.host, ip) == 1) return *len = 16, 1;
    return 0;
}

static int verify_ip(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags) {
    unsigned char ip[16];
    size_t len;
    const mbedtls_x509_sequence *san;
    (void)ctx;
    if (depth != 0 || !host_is_ip(ip, &len)) return 0;
    *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    for (san = &crt->subject_alt_names; san != NULL; san = san->next)
        if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && san->buf.len == len && memcmp(san->buf.p, ip, len) == 0)
            *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

static int handshake(void) {
    int r;
    char err[128];
    unsigned char ip[16];
    size_t iplen;
    mbedtls_net_init(&net);
    mbedtls_ssl_init(&ssl);
    if ((r = mbedtls_net_connect(&net, opt.host, opt.port, MBEDTLS_NET_PROTO_UDP)) != 0 ||
        (r = mbedtls_ssl_setup(&ssl, &conf)) != 0 ||
        (opt.cert != NULL && !host_is_ip(ip, &iplen) && (r = mbedtls_ssl_set_hostname(&ssl, opt.host)) != 0)) {
        mbedtls_strerror(r, err, sizeof err);
        say("cannot set up the connection to %s:%s: %s", opt.host, opt.port, err);
        return -1;
    }
    mbedtls_ssl_set_bio(&ssl, &net, mbedtls_net_send, mbedtls_net_recv, mbedtls_net_recv_timeout);
    mbedtls_ssl_set_timer_cb(&ssl, &timer, mbedtls_timing_set_delay, mbedtls_timing_get_delay);
    mbedtls_ssl_set_mtu(&ssl, MTU);
    do r = mbedtls_ssl_handshake(&ssl);
    while ((r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) && !stop);
    if (r != 0) {
        char why[160] = "";
        mbedtls_strerror(r, err, sizeof err);
        if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) mbedtls_x509_crt_verify_info(why, sizeof why, " ", mbedtls_ssl_get_verify_result(&ssl));
        why[strcspn(why, "\n")] = '\0';
        say("handshake with %s:%s failed: %s%s", opt.host, opt.port, err, why);
        return -1;
    }
    say("connected suite=%s", mbedtls_ssl_get_ciphersuite(&ssl));
    return 0;
}

static void teardown(void) {
    mbedtls_ssl_free(&ssl);
    mbedtls_net_free(&net);
}

static enum outcome session(void) {
    static unsigned char buf[RECORD_MAX];
    static dtlspush_v1_Frame f;
    enum outcome out = GO_ON;
    char err[128];

    if (handshake() != 0) return RECONNECT;
    memset(&s, 0, sizeof s);
    s.hello_delay = 1000;
    s.heartbeat_ms = 30000;
    s.last_heard = now();
    held_n = 0; /* held pushes are memory only; the server sends them again on a new session */
    send_hello();
    for (;;) {
        int r = mbedtls_ssl_read(&ssl, buf, sizeof buf);
        uint64_t t = now();
        if (stop) {
            out = DONE;
            break;
        }
        if (r > 0) {
            s.last_heard = t;
            if (decode(buf, (size_t)r, &f) == 0) {
                switch (f.which_body) {
                case dtlspush_v1_Frame_welcome_tag: out = on_welcome(&f.body.welcome); break;
                case dtlspush_v1_Frame_push_tag: out = on_push(buf, (size_t)r, &f.body.push); break;
                case dtlspush_v1_Frame_error_tag: out = on_error(&f.body.error); break;
                case dtlspush_v1_Frame_bye_tag:
                    say("server said Bye (%d: %s)", (int)f.body.bye.reason.code, f.body.bye.reason.message);
                    if (f.body.bye.reason.code == dtlspush_v1_ErrorCode_DEVICE_REVOKED ||
                        f.body.bye.reason.code == dtlspush_v1_ErrorCode_DEVICE_UNKNOWN) {
                        teardown();
                        return FATAL;
                    }
                    if (f.body.bye.reason.code == dtlspush_v1_ErrorCode_SHUTTING_DOWN) sleep_ms(jitter(3000));
                    mbedtls_ssl_close_notify(&ssl);
                    teardown();
                    return RECONNECT;
                default: break; /* Pong, and bodies of newer versions */
                }
                if (out == DONE) break;
            }
            if (mbedtls_ssl_check_pending(&ssl)) continue; /* more records in this datagram */
        } else if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            say("server closed the session");
            teardown();
            return RECONNECT;
        } else if (r != MBEDTLS_ERR_SSL_TIMEOUT && r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) {
            mbedtls_strerror(r, err, sizeof err);
            say("session failed: %s", err);
            teardown();
            return RECONNECT;
        }
        /* timers: the Ack of what this datagram brought, Hello repeats, heartbeat, token refresh */
        if (s.ack_due && s.welcomed) send_ack();
        if (s.hello_pending && t >= s.hello_at) {
            s.hello_delay = s.hello_delay * 2 > 60000 ? 60000 : s.hello_delay * 2;
            send_hello();
        }
        if (s.welcomed && t - s.last_sent >= s.heartbeat_ms / 2) {
            dtlspush_v1_Frame ping = dtlspush_v1_Frame_init_zero;
            ping.which_body = dtlspush_v1_Frame_ping_tag;
            ping.body.ping.time = wall();
            send_frame(&ping);
        }
        if (s.welcomed && !s.hello_pending && s.refresh_at != 0 && wall() >= s.refresh_at) send_hello();
        if (t - s.last_heard > 3 * s.heartbeat_ms) {
            say("nothing heard for %lu ms: reconnecting", (unsigned long)(t - s.last_heard));
            teardown();
            return RECONNECT;
        }
    }
    if (s.welcomed) send_ack();
    send_bye();
    teardown();
    return out;
}

/* ---- command line ---- */

static void usage(const char *fmt, const char *arg) {
    fputs("dtlspush-device: error: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nUsage: dtlspush-device --server HOST:PORT --device ID (--psk HEX | --cert FILE --key FILE --ca FILE)\n"
          "                       [--state FILE] [--count N]\n", stderr);
    exit(2);
}

static void parse_args(int argc, char **argv) {
    static char server[512];
    const char *psk = NULL;
    char *end;
    int i;
    for (i = 1; i < argc; i += 2) {
        const char *name = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) usage("%s", "help asked for");
        if (strncmp(name, "--", 2) != 0) usage("unexpected argument '%s'", name);
        if (v == NULL) usage("%s needs a value", name);
        if (strcmp(name, "--server") == 0) {
            char *colon;
            if (strlen(v) >= sizeof server) usage("--server %s: too long", v);
            strcpy(server, v);
            colon = strrchr(server, ':');
            if (colon == NULL || colon == server || colon[1] == '\0') usage("--server %s: expected HOST:PORT", v);
            *colon = '\0';
            opt.host = server[0] == '[' && colon[-1] == ']' ? (colon[-1] = '\0', server + 1) : server;
            opt.port = colon + 1;
            if (strtol(opt.port, &end, 10) <= 0 || *end != '\0' || atoi(opt.port) > 65535) usage("--server %s: bad port", v);
        } else if (strcmp(name, "--device") == 0) opt.device = v;
        else if (strcmp(name, "--psk") == 0) psk = v;
        else if (strcmp(name, "--cert") == 0) opt.cert = v;
        else if (strcmp(name, "--key") == 0) opt.key = v;
        else if (strcmp(name, "--ca") == 0) opt.ca = v;
        else if (strcmp(name, "--state") == 0) opt.state = v;
        else if (strcmp(name, "--count") == 0) {
            opt.count = strtol(v, &end, 10);
            if (opt.count <= 0 || *end != '\0') usage("--count %s: expected a positive integer", v);
        } else usage("unknown option '%s'", name);
    }
    if (opt.host == NULL) usage("%s", "--server is required");
    if (opt.device == NULL || opt.device[0] == '\0') usage("%s", "--device is required");
    if ((psk != NULL) == (opt.cert != NULL || opt.key != NULL || opt.ca != NULL))
        usage("%s", "give either --psk or --cert, --key and --ca");
    if (psk != NULL) {
        size_t n = strlen(psk);
        if (n == 0 || n % 2 != 0 || n / 2 > sizeof opt.psk ||
            sodium_hex2bin(opt.psk, sizeof opt.psk, psk, n, NULL, &opt.psk_len, NULL) != 0 || opt.psk_len != n / 2)
            usage("--psk: expected 1 to 64 bytes as hex digits, got '%s'", psk);
    } else if (opt.cert == NULL || opt.key == NULL || opt.ca == NULL) {
        usage("%s", "--cert, --key and --ca go together");
    }
}

static const int psk_suites[] = { MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8, 0 };
static const int cert_suites[] = { MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 0 };

static void setup_tls(void) {
    int r;
    char err[128];
    mbedtls_ssl_config_init(&conf);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_entropy_init(&entropy);
    mbedtls_x509_crt_init(&cacert);
    mbedtls_x509_crt_init(&clicert);
    mbedtls_pk_init(&pkey);
    if ((r = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)"dtlspush", 8)) != 0 ||
        (r = mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM, MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
        goto fail;
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3); /* DTLS 1.2 */
    mbedtls_ssl_conf_extended_master_secret(&conf, MBEDTLS_SSL_EXTENDED_MS_ENABLED);
    mbedtls_ssl_conf_read_timeout(&conf, READ_TICK_MS);
    mbedtls_ssl_conf_handshake_timeout(&conf, 1000, 16000);
    if (opt.psk_len > 0) {
        mbedtls_ssl_conf_ciphersuites(&conf, psk_suites);
        r = mbedtls_ssl_conf_psk(&conf, opt.psk, opt.psk_len, (const unsigned char *)opt.device, strlen(opt.device));
    } else {
        mbedtls_ssl_conf_ciphersuites(&conf, cert_suites);
        if ((r = mbedtls_x509_crt_parse_file(&cacert, opt.ca)) != 0 || (r = mbedtls_x509_crt_parse_file(&clicert, opt.cert)) != 0 ||
            (r = mbedtls_pk_parse_keyfile(&pkey, opt.key, NULL)) != 0)
            goto fail;
        mbedtls_ssl_conf_ca_chain(&conf, &cacert, NULL);
        mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
        mbedtls_ssl_conf_verify(&conf, verify_ip, NULL);
        r = mbedtls_ssl_conf_own_cert(&conf, &clicert, &pkey);
    }
    if (r == 0) return;
fail:
    mbedtls_strerror(r, err, sizeof err);
    say("cannot set up DTLS: %s", err);
    exit(1);
}

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    uint64_t backoff = 500;
    struct sigaction sa;
    if (sodium_init() < 0) {
        say("libsodium does not initialise");
        return 1;
    }
    parse_args(argc, argv);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    setup_tls();
    load_state();
    say("device %s, state seq %llu%s", opt.device, (unsigned long long)hwm, token[0] ? " with a token" : "");
    for (;;) {
        enum outcome out = stop ? DONE : session();
        if (out == DONE || out == FATAL) {
            say("stats printed=%ld received=%ld duplicates=%ld refused=%ld tombstones=%ld reconnects=%ld", printed,
                stats.received, stats.duplicates, stats.refused, stats.tombstones, stats.reconnects);
            return out == DONE ? 0 : 1;
        }
        stats.reconnects++;
        if (s.welcomed) backoff = 500; /* the last session worked */
        say("reconnecting in ~%llu ms", (unsigned long long)backoff);
        sleep_ms(jitter(backoff));
        backoff = backoff * 2 > 10000 ? 10000 : backoff * 2;
    }
}
