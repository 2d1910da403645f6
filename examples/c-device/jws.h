/* Content signatures of pushes (docs/protocol.md section 6): the JWKS from
 * Welcome and the detached compact JWS in Push.signature. */
#ifndef DTLSPUSH_JWS_H
#define DTLSPUSH_JWS_H

#include "dtlspush/v1/frame.pb.h"

enum verdict { SIG_OK = 0, SIG_BAD, SIG_UNKNOWN_KID };

/* Replaces the key set with the keys of `jwks` (JSON). Returns the number of
 * usable keys (OKP/Ed25519 and EC/P-256), or -1 when the JSON is malformed. */
int jwks_load(const char *jwks);

/* Verifies p->signature over the signed content built from p's fields.
 * On failure *why names the reason (a static string). */
enum verdict jws_verify_push(const dtlspush_v1_Push *p, const char **why);

#endif
