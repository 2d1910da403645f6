/**
 * docs/protocol.md's worked example is what the codec produces: the annotated
 * Push frame, the signed content, the JWS signing input and signature, and the
 * sizes the text quotes.
 */
import { createPublicKey, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { decodeFrame, encodeFrame, pushOverhead } from "../../src/wire/index.ts";
import {
  annotatePush,
  annotateSignedContent,
  EXAMPLE_JWK,
  EXAMPLE_PUSH,
  exampleSignature,
  signedContent,
  signedExamplePush,
} from "./protocol-example.ts";
import { hex } from "./samples.ts";

const DOC = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
const flat = DOC.replace(/\s+/g, " ");

/** The text block that follows `<!-- example: NAME`. */
function block(name: string): string {
  const at = DOC.indexOf(`<!-- example: ${name}`);
  if (at < 0) throw new Error(`docs/protocol.md has no example ${name}`);
  const m = /```text\n([\s\S]*?)\n```/.exec(DOC.slice(at));
  if (m === null) throw new Error(`example ${name} has no text block`);
  return m[1] as string;
}

/** The hex bytes at the start of each line of a listing. */
function listingBytes(listing: string): string {
  return listing
    .split("\n")
    .map((line) => /^(?:[0-9a-f]{2}(?: |$))+/.exec(line)?.[0] ?? "")
    .join("")
    .replace(/ /g, "");
}

describe("docs/protocol.md worked example", () => {
  it("shows the Push frame our codec encodes, annotated", () => {
    const frame = encodeFrame({ kind: "push", push: signedExamplePush() });
    expect(listingBytes(block("push-frame"))).toBe(hex(frame));
    expect(block("push-frame")).toBe(annotatePush());
    expect(decodeFrame(frame)).toEqual({ kind: "push", push: signedExamplePush() });
    expect(flat).toContain(`The whole record plaintext, ${frame.length} bytes`);
  });

  it("shows the signed content of the definition", () => {
    expect(listingBytes(block("signed-content"))).toBe(hex(signedContent(EXAMPLE_PUSH)));
    expect(block("signed-content")).toBe(annotateSignedContent());
  });

  it("shows a signing input and signature that verify with the key in the JWKS it shows", () => {
    const input = block("signing-input");
    const signature = block("signature");
    expect(signature).toBe(exampleSignature());
    const [header, sig] = signature.split("..") as [string, string];
    expect(input).toBe(`${header}.${Buffer.from(signedContent(EXAMPLE_PUSH)).toString("base64url")}`);
    expect(DOC).toContain(`"kid":"k1","x":"${EXAMPLE_JWK.x}"`);
    const publicKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: EXAMPLE_JWK.x }, format: "jwk" });
    expect(verify(null, Buffer.from(input, "ascii"), publicKey, Buffer.from(sig, "base64url"))).toBe(true);
    expect(JSON.parse(Buffer.from(header, "base64url").toString())).toEqual({ alg: "EdDSA", kid: "k1" });
  });

  it("quotes the sizes the codec gives", () => {
    const push = signedExamplePush();
    expect(flat).toContain(`(${pushOverhead(push)} bytes of frame around a ${push.payload.length}-byte payload)`);
    let largest = 0;
    while (encodeFrame({ kind: "push", push: { ...push, payload: new Uint8Array(largest + 1) } }).length <= 1171) largest++;
    expect(flat).toContain(`a payload of up to ${largest} bytes fits a 1171-byte AES-CCM_8 record`);
    expect(flat).toContain(`the 4-byte frame \`${hex(encodeFrame({ kind: "ack", ack: { cumulative: 42 } })).replace(/(..)(?!$)/g, "$1 ")}\``);
  });
});
